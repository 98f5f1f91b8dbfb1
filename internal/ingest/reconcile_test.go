package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/ctlapi"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// fakeStateHS is NOT a homeserver: it serves GET /rooms/{roomId}/state for
// the rooms it holds, to the one token it knows, and 403 for other rooms
// (as a homeserver answers a reader that never joined). The reconciliation
// against a real homeserver is test/e2e/reconcile_test.go.
type fakeStateHS struct {
	mu       sync.Mutex
	token    string
	state    map[id.RoomID]string // the JSON array the room's state is
	requests []string             // room ids asked for, in order
	status   int                  // when not 0, every answer has this status
}

func (f *fakeStateHS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	room, ok := strings.CutPrefix(r.URL.Path, "/_matrix/client/v3/rooms/")
	room, ok2 := strings.CutSuffix(room, "/state")
	if !ok || !ok2 || r.Method != http.MethodGet {
		http.Error(w, `{"errcode":"M_UNRECOGNIZED"}`, http.StatusNotFound)
		return
	}
	f.requests = append(f.requests, room)
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		http.Error(w, `{"errcode":"M_UNKNOWN_TOKEN"}`, http.StatusUnauthorized)
		return
	}
	if f.status != 0 {
		http.Error(w, `{"errcode":"M_UNKNOWN"}`, f.status)
		return
	}
	st, ok := f.state[id.RoomID(room)]
	if !ok {
		http.Error(w, `{"errcode":"M_FORBIDDEN","error":"user has never joined this room"}`, http.StatusForbidden)
		return
	}
	_, _ = w.Write([]byte(st))
}

func (f *fakeStateHS) asked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

// stateEvent renders one client event of a room state answer.
func stateEvent(typ, key, sender, eventID string, ts int64, content string, unsigned string) string {
	s := fmt.Sprintf(`{"type":%q,"state_key":%q,"sender":%q,"event_id":%q,"origin_server_ts":%d,"content":%s`,
		typ, key, sender, eventID, ts, content)
	if unsigned != "" {
		s += `,"unsigned":` + unsigned
	}
	return s + "}"
}

const (
	rcRoom  = id.RoomID("!call:hs.test")
	rcOther = id.RoomID("!other:hs.test")
	rcAlice = "@alice:hs.test"
	rcBob   = "@bob:hs.test"
	rcTS    = int64(1767225600000)
)

// callRoomState is the state of a room: alice in a call, bob's membership
// redacted, carol (no call) a member, and state of no interest.
func callRoomState() string {
	evs := []string{
		stateEvent("m.room.create", "", rcAlice, "$create", rcTS-10, `{"room_version":"10"}`, ""),
		stateEvent("m.room.member", rcAlice, rcAlice, "$ma", rcTS-9, `{"membership":"join"}`, ""),
		stateEvent("m.room.member", rcBob, rcBob, "$mb", rcTS-8, `{"membership":"join"}`, ""),
		stateEvent("m.room.member", "@carol:hs.test", "@carol:hs.test", "$mc", rcTS-7, `{"membership":"join"}`, ""),
		stateEvent("m.room.power_levels", "", rcAlice, "$pl", rcTS-6, `{"users_default":0}`, ""),
		stateEvent(rawevent.TypeCallMember.Type, "_"+rcAlice+"_A_m.call", rcAlice, "$join-a", rcTS,
			`{"application":"m.call","call_id":"","device_id":"A","expires":14400000}`, ""),
		stateEvent(rawevent.TypeCallMember.Type, "_"+rcBob+"_B_m.call", rcBob, "$join-b", rcTS+1, `{}`,
			`{"redacted_because":{"event_id":"$red-b","origin_server_ts":1767225605000,"type":"m.room.redaction"}}`),
	}
	return "[" + strings.Join(evs, ",") + "]"
}

func TestStateReaderKeepsCallStateAndTheirSenders(t *testing.T) {
	hs := &fakeStateHS{token: "as-token", state: map[id.RoomID]string{rcRoom: callRoomState()}}
	srv := httptest.NewServer(hs)
	defer srv.Close()
	rd := &StateReader{Homeserver: "hs1", URL: srv.URL, Kind: "appservice", Token: func() string { return "as-token" }, MaxBytes: 1 << 20}
	raws, err := rd.RoomState(context.Background(), rcRoom)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, raw := range raws {
		var e struct {
			EventID string `json:"event_id"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatal(err)
		}
		got = append(got, e.EventID)
	}
	// the call events in state order, then the senders' memberships
	// sorted by user: not carol (no call), nothing else
	if want := []string{"$join-a", "$join-b", "$ma", "$mb"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("kept %v, want %v", got, want)
	}
	if asked := hs.asked(); len(asked) != 1 || asked[0] != string(rcRoom) {
		t.Fatalf("asked for %v", asked)
	}
}

func TestStateReaderFailures(t *testing.T) {
	big := "[" + strings.Repeat(stateEvent("m.room.member", rcAlice, rcAlice, "$x", rcTS, `{"membership":"join"}`, "")+",", 20000) +
		stateEvent("m.room.member", rcAlice, rcAlice, "$x", rcTS, `{"membership":"join"}`, "") + "]"
	tests := []struct {
		name   string
		hs     *fakeStateHS
		token  string
		room   id.RoomID
		reason string
	}{
		{"not joined", &fakeStateHS{token: "t", state: map[id.RoomID]string{}}, "t", rcRoom, ReconcileForbidden},
		{"wrong token", &fakeStateHS{token: "t", state: map[id.RoomID]string{rcRoom: "[]"}}, "other", rcRoom, ReconcileForbidden},
		{"no token yet", &fakeStateHS{token: "t"}, "", rcRoom, ReconcileForbidden},
		{"server error", &fakeStateHS{token: "t", status: 502}, "t", rcRoom, ReconcileHTTPStatus},
		{"not found", &fakeStateHS{token: "t", status: 404}, "t", rcRoom, ReconcileNotFound},
		{"not an array", &fakeStateHS{token: "t", state: map[id.RoomID]string{rcRoom: `{"a":1}`}}, "t", rcRoom, ReconcileMalformed},
		{"truncated", &fakeStateHS{token: "t", state: map[id.RoomID]string{rcRoom: `[{"type":"m.room.member"`}}, "t", rcRoom, ReconcileMalformed},
		{"too large", &fakeStateHS{token: "t", state: map[id.RoomID]string{rcRoom: big}}, "t", rcRoom, ReconcileTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.hs)
			defer srv.Close()
			tok := tt.token
			rd := &StateReader{Homeserver: "hs1", URL: srv.URL, Token: func() string { return tok }, MaxBytes: 1 << 20}
			_, err := rd.RoomState(context.Background(), tt.room)
			if err == nil {
				t.Fatal("no error")
			}
			if got := reconcileReason(err); got != tt.reason {
				t.Fatalf("reason %q (%v), want %q", got, err, tt.reason)
			}
		})
	}
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close() // nothing listens there any more
	rd := &StateReader{Homeserver: "hs1", URL: srv.URL, Token: func() string { return "t" }, MaxBytes: 1 << 20}
	if _, err := rd.RoomState(context.Background(), rcRoom); reconcileReason(err) != ReconcileUnreachable {
		t.Fatalf("closed server: %v, want reason %s", err, ReconcileUnreachable)
	}
}

// putLiveSession writes a session key of room into rtc_sessions, as the
// aggregator does (the value does not matter to the reconciliation).
func putLiveSession(t *testing.T, js jetstream.JetStream, room id.RoomID) {
	t.Helper()
	ctx := context.Background()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: events.BucketSessions})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, events.SessionKey("m.call", room, ""), []byte("live")); err != nil {
		t.Fatal(err)
	}
	// a member key of a large session: not a session, ignored
	if _, err := kv.Put(ctx, events.SessionKey("m.call", room, "")+".member", []byte("m")); err != nil {
		t.Fatal(err)
	}
}

// TestReconcilePassPublishesState: a pass reads the rooms with live
// sessions (rtc_sessions) and the rooms recently seen with call events,
// publishes their call state as reconcile inputs (event ids as msg ids, a
// redacted copy as its own input), and a second pass stores nothing new.
func TestReconcilePassPublishesState(t *testing.T) {
	e := newEnv(t)
	hs := &fakeStateHS{token: "as-token", state: map[id.RoomID]string{
		rcRoom:  callRoomState(),
		rcOther: "[" + stateEvent(rawevent.TypeRTCSlot.Type, "m.call#ROOM", rcBob, "$slot", rcTS, `{"status":"closed"}`, "") + "]",
	}}
	srv := httptest.NewServer(hs)
	defer srv.Close()
	putLiveSession(t, e.pub.JetStream(), rcRoom)
	tracker := NewRoomTracker(time.Hour, 100)
	tracker.Note("hs1", []rawevent.RawEvent{{RoomID: rcOther, Type: rawevent.TypeRTCSlot.Type, StateKey: new(string)}}, time.Now())
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	pub, err := NewPublisher(e.nc, PublisherConfig{MaxInFlight: 64, AckTimeout: 2 * time.Second}, m, e.log)
	if err != nil {
		t.Fatal(err)
	}
	rd := &StateReader{Homeserver: "hs1", URL: srv.URL, Kind: "appservice", Token: func() string { return "as-token" }, MaxBytes: 1 << 20}
	r := NewReconciler([]*StateReader{rd}, pub, pub.JetStream(), tracker, m, e.log,
		ReconcileOptions{MaxRoomsPerPass: 10, RequestsPerSecond: 1000})

	st := r.Pass(context.Background(), TriggerStart)
	if st.Candidates != 2 || st.Rooms != 2 || st.Failed != 0 || st.Stored != 5 {
		t.Fatalf("pass %+v, want 2 rooms, 5 events stored", st)
	}
	if asked := hs.asked(); strings.Join(asked, " ") != string(rcRoom)+" "+string(rcOther) {
		t.Fatalf("asked %v: want the live room, then the recent one", asked)
	}
	raws := rawContents(t, e.url)
	var got []string
	for _, ev := range raws {
		if ev.Source != rawevent.SourceReconcile || ev.Homeserver != "hs1" || ev.ReceivedAt <= 0 {
			t.Errorf("%s: source %q homeserver %q received_at %d", ev.EventID, ev.Source, ev.Homeserver, ev.ReceivedAt)
		}
		got = append(got, ev.MsgID())
	}
	want := "$join-a $join-b#redacted $ma $mb $slot"
	if strings.Join(got, " ") != want {
		t.Fatalf("RTC_RAW holds %v, want %s", got, want)
	}
	for _, ev := range raws {
		if ev.EventID == "$join-b" && (ev.RedactedBy != "$red-b" || ev.RedactedAt != 1767225605000) {
			t.Errorf("redacted copy: redacted_by %q at %d", ev.RedactedBy, ev.RedactedAt)
		}
	}

	st = r.Pass(context.Background(), TriggerPeriodic)
	if st.Rooms != 2 || st.Stored != 0 {
		t.Fatalf("second pass %+v: want the same rooms, nothing new stored", st)
	}
	if n := len(rawContents(t, e.url)); n != 5 {
		t.Fatalf("RTC_RAW holds %d inputs after the second pass, want 5", n)
	}
	for series, want := range map[string]float64{
		`rtc_ingest_reconcile_rooms_total{homeserver="hs1"}`:                                          4,
		`rtc_ingest_reconcile_events_stored_total{homeserver="hs1"}`:                                  5,
		`rtc_ingest_reconcile_passes_total{trigger="start"}`:                                          1,
		`rtc_ingest_reconcile_passes_total{trigger="periodic"}`:                                       1,
		`rtc_ingest_events_duplicate_total{homeserver="hs1",source="reconcile"}`:                      5,
		`rtc_ingest_reconcile_failures_total{homeserver="hs1",reason="forbidden"}`:                    0,
		`rtc_ingest_events_forwarded_total{homeserver="hs1",source="reconcile",type="m.room.member"}`: 2,
	} {
		if got := metricValue(t, reg, series); got != want {
			t.Errorf("%s = %g, want %g", series, got, want)
		}
	}
}

// TestReconcileBoundedAndFailures: max_rooms_per_pass caps a pass (the
// rest counted as skipped) and the selection rotates, so that the next pass
// takes the others; a room no homeserver can read is one failure, counted
// for the last homeserver tried; a homeserver that cannot read a room
// another one reads is no failure.
func TestReconcileBoundedAndFailures(t *testing.T) {
	e := newEnv(t)
	rooms := []id.RoomID{"!r1:hs.test", "!r2:hs.test", "!r3:hs.test"}
	hs1 := &fakeStateHS{token: "t1", state: map[id.RoomID]string{rooms[0]: "[]", rooms[1]: "[]"}}
	hs2 := &fakeStateHS{token: "t2", state: map[id.RoomID]string{rooms[1]: "[]"}}
	s1, s2 := httptest.NewServer(hs1), httptest.NewServer(hs2)
	defer s1.Close()
	defer s2.Close()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	tracker := NewRoomTracker(time.Hour, 100)
	now := time.Now()
	for i, room := range rooms { // r3 most recent
		tracker.Note("hs2", []rawevent.RawEvent{{RoomID: room, Type: rawevent.TypeCallMember.Type, StateKey: new(string)}}, now.Add(time.Duration(i)*time.Second))
	}
	readers := []*StateReader{
		{Homeserver: "hs1", URL: s1.URL, Token: func() string { return "t1" }, MaxBytes: 1 << 20},
		{Homeserver: "hs2", URL: s2.URL, Token: func() string { return "t2" }, MaxBytes: 1 << 20},
	}
	r := NewReconciler(readers, e.pub, nil, tracker, m, e.log, ReconcileOptions{MaxRoomsPerPass: 2, RequestsPerSecond: 1000})
	st := r.Pass(context.Background(), TriggerPeriodic)
	// r3 then r2 (most recent first): r3 is read by no one (hs2 then hs1:
	// the room's homeserver first); r2 by hs2
	if st.Candidates != 3 || st.Rooms != 1 || st.Failed != 1 || st.Skipped != 1 {
		t.Fatalf("first pass %+v", st)
	}
	if got := strings.Join(hs2.asked(), " ") + " | " + strings.Join(hs1.asked(), " "); got != "!r3:hs.test !r2:hs.test | !r3:hs.test" {
		t.Fatalf("asked %s", got)
	}
	st = r.Pass(context.Background(), TriggerPeriodic)
	if st.Rooms != 1 || st.Failed != 1 || st.Skipped != 1 { // r1 (hs2: 403, hs1 reads it), then r3 again
		t.Fatalf("second pass %+v", st)
	}
	for series, want := range map[string]float64{
		`rtc_ingest_reconcile_failures_total{homeserver="hs1",reason="forbidden"}`: 2, // r3, twice
		`rtc_ingest_reconcile_failures_total{homeserver="hs2",reason="forbidden"}`: 0,
		`rtc_ingest_reconcile_rooms_skipped_total`:                                 2,
		`rtc_ingest_reconcile_rooms_total{homeserver="hs1"}`:                       1,
		`rtc_ingest_reconcile_rooms_total{homeserver="hs2"}`:                       1,
		`rtc_ingest_reconcile_pass_rooms`:                                          2,
	} {
		if got := metricValue(t, reg, series); got != want {
			t.Errorf("%s = %g, want %g", series, got, want)
		}
	}
}

// TestReconcileOnDemand: `rtcctl reconcile` is a NATS request on
// ctlapi.ReconcileSubject; the reconciler answers it with what it did.
func TestReconcileOnDemand(t *testing.T) {
	e := newEnv(t)
	hs := &fakeStateHS{token: "t", state: map[id.RoomID]string{rcRoom: callRoomState()}}
	srv := httptest.NewServer(hs)
	defer srv.Close()
	rd := &StateReader{Homeserver: "hs1", URL: srv.URL, Token: func() string { return "t" }, MaxBytes: 1 << 20}
	r := NewReconciler([]*StateReader{rd}, e.pub, e.pub.JetStream(), NewRoomTracker(time.Hour, 10), e.m, e.log,
		ReconcileOptions{MaxRoomsPerPass: 10, RequestsPerSecond: 1000, OnDemand: true})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, e.nc) }()
	defer func() { cancel(); <-done }()

	ask := func(req string) ctlapi.ReconcileReply {
		t.Helper()
		var reply ctlapi.ReconcileReply
		deadline := time.Now().Add(10 * time.Second)
		for { // the subscription may not be there yet
			msg, err := e.nc.Request(ctlapi.ReconcileSubject, []byte(req), 2*time.Second)
			if err == nil {
				if err := json.Unmarshal(msg.Data, &reply); err != nil {
					t.Fatal(err)
				}
				return reply
			}
			if time.Now().After(deadline) {
				t.Fatalf("request %s: %v", req, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	reply := ask(`{"room_id":"` + string(rcRoom) + `"}`)
	if reply.Error != "" || len(reply.Attempts) != 1 || reply.Attempts[0].Homeserver != "hs1" ||
		reply.Attempts[0].Events != 4 || reply.Attempts[0].Stored != 4 {
		t.Fatalf("reply %+v", reply)
	}
	reply = ask(`{"room_id":"` + string(rcRoom) + `"}`)
	if reply.Error != "" || reply.Attempts[0].Stored != 0 || reply.Attempts[0].Duplicates != 4 {
		t.Fatalf("second reply %+v: want the same events as duplicates", reply)
	}
	reply = ask(`{"room_id":"!elsewhere:hs.test"}`)
	if reply.Error == "" || len(reply.Attempts) != 1 || reply.Attempts[0].Reason != ReconcileForbidden {
		t.Fatalf("unreadable room: %+v", reply)
	}
	for _, bad := range []string{`{"room_id":"not-a-room"}`, `not json`, `{"room_id":"` + string(rcRoom) + `","homeserver":"nope"}`} {
		if reply := ask(bad); reply.Error == "" || len(reply.Attempts) != 0 {
			t.Errorf("request %s: reply %+v, want an error and no attempt", bad, reply)
		}
	}
}

func TestRoomTrackerBounded(t *testing.T) {
	tr := NewRoomTracker(time.Minute, 2)
	now := time.Now()
	note := func(room id.RoomID, hs, typ string, at time.Time) {
		tr.Note(hs, []rawevent.RawEvent{{RoomID: room, Type: typ, StateKey: new(string)}}, at)
	}
	note("!a:x", "hs1", rawevent.TypeCallMember.Type, now)
	note("!b:x", "hs1", rawevent.TypeRoomMember.Type, now) // not a call event
	note("!c:x", "hs1", rawevent.TypeRTCMember.Type, now.Add(time.Second))
	note("!a:x", "hs2", rawevent.TypeCallMember.Type, now.Add(2*time.Second))
	note("!d:x", "hs1", rawevent.TypeCallMember.Type, now.Add(3*time.Second)) // evicts !c (least recent)
	got := tr.Recent(now.Add(3 * time.Second))
	if len(got) != 2 || got[0].room != "!d:x" || got[1].room != "!a:x" || strings.Join(got[1].hs, ",") != "hs1,hs2" {
		t.Fatalf("recent %+v", got)
	}
	if got := tr.Recent(now.Add(2 * time.Minute)); len(got) != 0 {
		t.Fatalf("after the window: %+v", got)
	}
}

func TestReconcileConfig(t *testing.T) {
	c := DefaultConfig()
	c.Reconcile.Interval = time.Second
	c.Reconcile.MaxRoomsPerPass = 0
	c.Reconcile.RequestsPerSecond = 0
	c.Reconcile.RequestTimeout = 0
	c.Reconcile.MaxStateBytes = 10
	c.Reconcile.RecentWindow = -time.Second
	c.Homeservers = []HomeserverConfig{{Name: "hs1", HSTokenFile: "x", ASTokenFile: "y"}}
	err := c.Validate()
	for _, want := range []string{"reconcile.interval", "max_rooms_per_pass", "requests_per_second", "request_timeout",
		"max_state_bytes", "recent_window", "as_token_file needs url"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	d := DefaultConfig().Reconcile
	if !d.AtStart || !d.OnDemand || d.Interval != 10*time.Minute || d.MaxRoomsPerPass != 500 {
		t.Errorf("defaults %+v", d)
	}
	ex, err := LoadConfig("../../configs/ingest.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if ex.Reconcile != d {
		t.Errorf("configs/ingest.yaml reconcile %+v, defaults %+v", ex.Reconcile, d)
	}
	t.Setenv("RTC_INGEST_RECONCILE_INTERVAL", "0s")
	t.Setenv("RTC_INGEST_RECONCILE_REQUESTS_PER_SECOND", "0.5")
	c2, err := LoadConfig("")
	if err != nil || c2.Reconcile.Interval != 0 || c2.Reconcile.RequestsPerSecond != 0.5 {
		t.Fatalf("env overrides: %+v %v", c2.Reconcile, err)
	}
}

// TestMetricsDocumented: every metric the ingest registers is named in
// docs/ingest.md.
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/ingest.md")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	// Vectors without a series yet are not gathered: the names come from
	// the collectors' descriptions too.
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	descs := make(chan *prometheus.Desc, 256)
	go func() {
		for _, c := range NewMetrics(nil).collectors() {
			c.Describe(descs)
		}
		close(descs)
	}()
	re := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range descs {
		if m := re.FindStringSubmatch(d.String()); m != nil {
			names[m[1]] = true
		}
	}
	if len(names) < 20 {
		t.Fatalf("found only %d metric names", len(names))
	}
	for n := range names {
		if !strings.Contains(string(doc), n) {
			t.Errorf("docs/ingest.md does not document %s", n)
		}
	}
}

func metricValue(t *testing.T, g prometheus.Gatherer, series string) float64 {
	t.Helper()
	name, _, _ := strings.Cut(series, "{")
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			s := name
			if len(labels) > 0 {
				s += "{" + strings.Join(labels, ",") + "}"
			}
			if s != series {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// TestSyncSourceFeedsReconciliation: a sync bot that logs in with a
// password hands its token to the reconciliation's reader once logged in,
// and notes the rooms of the call state events it stores; the readers are
// the appservice's sender where an as_token is configured, else the bot.
func TestSyncSourceFeedsReconciliation(t *testing.T) {
	e := newEnv(t)
	fake := &fakeSync{}
	hs := httptest.NewServer(fake.handler(t))
	t.Cleanup(hs.Close)
	store := NewFileTokenStore(t.TempDir(), "hs3")
	src, err := NewSyncSource(SyncOptions{Homeserver: "hs3", URL: hs.URL, UserID: "@bot:hs3.test", Password: "bot-password",
		DeviceID: "RTCBOT", Timeout: time.Second}, e.pub, store, e.m, e.log)
	if err != nil {
		t.Fatal(err)
	}
	tracker := NewRoomTracker(time.Hour, 10)
	src.SetRoomTracker(tracker)
	if tok := src.AccessToken(); tok != "" {
		t.Fatalf("token %q before the login", tok)
	}
	ctx := context.Background()
	if err := src.login(ctx); err != nil {
		t.Fatal(err)
	}
	if err := src.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if tok := src.AccessToken(); tok != "logged-in-token" {
		t.Fatalf("token %q after the login, want the one it returned", tok)
	}
	if got := tracker.Recent(time.Now()); len(got) != 1 || got[0].room != "!sync:hs3.test" || strings.Join(got[0].hs, ",") != "hs3" {
		t.Fatalf("rooms noted: %+v", got)
	}

	cfg := DefaultConfig()
	hss := []Homeserver{
		{Name: "as-only", URL: "http://as.test", ASToken: "a"},
		{Name: "hs3", URL: hs.URL},                            // sync bot only
		{Name: "both", URL: "http://both.test", ASToken: "b"}, // appservice preferred over its bot
		{Name: "push-only", URL: "http://push.test"},          // hs_token only: cannot read
	}
	readers := stateReaders(cfg, hss, map[string]*SyncSource{"hs3": src, "both": src}, e.log)
	var got []string
	for _, r := range readers {
		got = append(got, r.Homeserver+"/"+r.Kind+"/"+r.Token())
	}
	if want := "as-only/appservice/a hs3/sync/logged-in-token both/appservice/b"; strings.Join(got, " ") != want {
		t.Fatalf("readers %v, want %s", got, want)
	}
}

// FuzzDecodeCallState: a homeserver's room state answer never panics the
// decoder, and what it keeps is call state (with a state key) or the
// m.room.member of one of the call events' senders.
func FuzzDecodeCallState(f *testing.F) {
	f.Add([]byte(callRoomState()))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"type":"m.room.member","state_key":"@a:x","sender":"@a:x"},{"type":"m.rtc.slot","state_key":"s","sender":"@a:x"}]`))
	f.Add([]byte(`[1,"x",null,{"type":7}]`))
	f.Add([]byte(`{"not":"an array"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		kept, err := decodeCallState(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		senders := map[string]bool{}
		type peek struct {
			Type     string  `json:"type"`
			StateKey *string `json:"state_key"`
			Sender   string  `json:"sender"`
		}
		var members []peek
		for _, raw := range kept {
			var p peek
			if err := json.Unmarshal(raw, &p); err != nil || p.StateKey == nil {
				t.Fatalf("kept %s: %v", raw, err)
			}
			switch {
			case callStateTypes[p.Type]:
				senders[p.Sender] = true
			case p.Type == rawevent.TypeRoomMember.Type:
				members = append(members, p)
			default:
				t.Fatalf("kept an event of type %q", p.Type)
			}
		}
		for _, m := range members {
			if !senders[*m.StateKey] {
				t.Fatalf("kept the membership of %q, who sent no call event", *m.StateKey)
			}
		}
	})
}
