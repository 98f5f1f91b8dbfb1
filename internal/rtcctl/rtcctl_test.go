package rtcctl

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/roomstore"
	"github.com/rtcsessions/rtc-sessions/internal/testutil"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

func embedded(t *testing.T) (string, jetstream.JetStream) {
	t.Helper()
	ns := testutil.NATS(t, "", -1)
	_, js := testutil.JetStream(t, ns)
	c := topology.DefaultConfig()
	c.Partitions = 2
	if _, err := topology.Ensure(context.Background(), js, c, topology.ModeCreate); err != nil {
		t.Fatal(err)
	}
	return ns.ClientURL(), js
}

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	// Cancelled after a while, but without a deadline: a deadline would
	// replace the --timeout of every JetStream request, as in production
	// (signal.NotifyContext) there is none.
	ctx, cancel := context.WithCancel(context.Background())
	defer time.AfterFunc(20*time.Second, cancel).Stop()
	defer cancel()
	var out, errb bytes.Buffer
	code := Main(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

const roomA, roomB = id.RoomID("!a:hs1.test"), id.RoomID("!b:hs2.test")

func sessionEvent(room id.RoomID, seq uint64, kind events.Kind, user id.UserID) *events.SessionEvent {
	e := &events.SessionEvent{ID: eventcodec.EventID(room, seq), Seq: seq, Kind: kind, SessionID: "sess-" + string(room),
		RoomID: room, Application: "m.call", CallID: "", At: 1700000000000 + int64(seq)*1000, Participants: 1, Users: 1}
	if kind != events.KindSessionStarted && kind != events.KindSessionEnded {
		e.Member = &events.Member{UserID: user, DeviceID: "DEV", JoinedAt: 1700000000000, ExpiresAt: 1700014400000, Format: events.FormatSession}
	}
	if kind == events.KindMemberLeft {
		e.Reason = events.ReasonExpired
		e.Participants, e.Users = 0, 0
	}
	if kind == events.KindSessionEnded {
		e.Reason = events.ReasonExpired
		e.Participants, e.Users = 0, 0
		e.Summary = &events.Summary{StartedAt: 1700000000000, EndedAt: 1700000004000, DurationMS: 4000, PeakParticipants: 1, DistinctUsers: 1, Joins: 1}
	}
	return e
}

func publish(t *testing.T, js jetstream.JetStream, evs ...*events.SessionEvent) {
	t.Helper()
	for _, e := range evs {
		b, err := eventcodec.EncodeSessionEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(context.Background(), e.Subject(), b, jetstream.WithMsgID(e.ID)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSessions(t *testing.T) {
	url, js := embedded(t)
	// A fixed now: the FOR column is the same in every run below.
	now = func() time.Time { return time.UnixMilli(1700000061000) }
	t.Cleanup(func() { now = time.Now })
	code, out, _ := run(t, "sessions", "--nats", url)
	if code != 0 || !strings.Contains(out, "no live sessions") {
		t.Fatalf("empty bucket: %d %q", code, out)
	}
	kv, _ := js.KeyValue(context.Background(), events.BucketSessions)
	for _, s := range []*events.LiveSession{
		{SessionID: "s1", RoomID: roomB, Application: "m.call", CallID: "", StartedAt: 1700000000000, Participants: 2, Users: 2,
			Members: []events.Member{{UserID: "@a:hs2.test", DeviceID: "A1"}, {UserID: "@b:hs2.test", DeviceID: "B1"}}, Seq: 3},
		{SessionID: "s2", RoomID: roomA, Application: "io.example.game", CallID: "table-1", StartedAt: 1700000001000, Participants: 1, Users: 1,
			Members: []events.Member{{UserID: "@c:hs1.test", DeviceID: "C1"}}, Seq: 1},
	} {
		// Both layouts the aggregator writes: a small session in one value
		// (s2), a large one with each member under a key of its own, then
		// the session's own key without its members (s1, as if large).
		if s.SessionID == "s2" {
			b, err := eventcodec.EncodeLiveSession(s)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(context.Background(), s.Key(), b); err != nil {
				t.Fatal(err)
			}
			continue
		}
		for i := range s.Members {
			b, err := eventcodec.EncodeLiveMember(&s.Members[i])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(context.Background(), eventcodec.SessionMemberKey(s.Key(), &s.Members[i]), b); err != nil {
				t.Fatal(err)
			}
		}
		head := *s
		head.Members, head.MembersInKeys = nil, true
		b, err := eventcodec.EncodeLiveSession(&head)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(context.Background(), s.Key(), b); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errs := run(t, "sessions", "--nats", url)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ROOM") || !strings.Contains(lines[1], "!a:hs1.test") ||
		!strings.Contains(lines[1], "  1m0s  ") || !strings.Contains(lines[2], "  1m1s  ") ||
		!strings.Contains(lines[1], "call=table-1") || !strings.Contains(lines[2], "@a:hs2.test/A1,@b:hs2.test/B1") {
		t.Fatalf("table:\n%s", out)
	}
	// Connection flags go anywhere, as with the nats CLI.
	for _, args := range [][]string{{"--server", url, "sessions"}, {"-s", url, "sessions"}, {"sessions", "-s", url}} {
		if code, out2, errs := run(t, args...); code != 0 || out2 != out {
			t.Fatalf("%v: exit %d %q %s", args, code, out2, errs)
		}
	}
	code, out, _ = run(t, "sessions", "--json", "--nats", url)
	var got []events.LiveSession
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || len(got) != 2 || got[1].Participants != 2 {
		t.Fatalf("json: %d %s", code, out)
	}
	// --room and --app select sessions; the table and --json agree.
	filters := []struct {
		args     []string
		sessions []string // session ids
		empty    string
	}{
		{[]string{"--room", string(roomA)}, []string{"s2"}, ""},
		{[]string{"--room", string(roomB)}, []string{"s1"}, ""},
		{[]string{"--app", "m.call"}, []string{"s1"}, ""},
		{[]string{"--app", "io.example.game", "--room", string(roomA)}, []string{"s2"}, ""},
		{[]string{"--app", "m.call", "--room", string(roomA)}, nil, "no live sessions in room !a:hs1.test of application m.call"},
		{[]string{"--room", "!none:hs1.test"}, nil, "no live sessions in room !none:hs1.test"},
	}
	for _, f := range filters {
		code, out, errs := run(t, append([]string{"sessions", "--json", "--nats", url}, f.args...)...)
		var got []events.LiveSession
		if code != 0 || json.Unmarshal([]byte(out), &got) != nil {
			t.Fatalf("%v --json: exit %d %s%s", f.args, code, out, errs)
		}
		var ids []string
		for _, s := range got {
			ids = append(ids, s.SessionID)
		}
		if strings.Join(ids, ",") != strings.Join(f.sessions, ",") {
			t.Errorf("%v: sessions %v, want %v", f.args, ids, f.sessions)
		}
		code, out, errs = run(t, append([]string{"sessions", "--nats", url}, f.args...)...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		switch {
		case code != 0:
			t.Errorf("%v: exit %d %s", f.args, code, errs)
		case f.empty != "" && strings.TrimSpace(out) != f.empty:
			t.Errorf("%v: %q, want %q", f.args, out, f.empty)
		case f.empty == "" && len(lines) != 1+len(f.sessions):
			t.Errorf("%v: table\n%s", f.args, out)
		}
	}
	if code, _, errs := run(t, "sessions", "--room", "gaming", "--nats", url); code != 2 || !strings.Contains(errs, "is not a room id") {
		t.Errorf("--room gaming: exit %d %s", code, errs)
	}
}

func TestSessionsWithoutAggregator(t *testing.T) {
	ns := testutil.NATS(t, "", -1)
	code, _, errs := run(t, "sessions", "--nats", ns.ClientURL())
	if code != 1 || !strings.Contains(errs, "aggregator") {
		t.Fatalf("exit %d: %s", code, errs)
	}
	code, _, errs = run(t, "sessions", "--nats", "nats://127.0.0.1:1")
	if code != 1 || !strings.Contains(errs, "connect") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

func TestTail(t *testing.T) {
	url, js := embedded(t)
	publish(t, js,
		sessionEvent(roomA, 1, events.KindSessionStarted, ""),
		sessionEvent(roomA, 2, events.KindMemberJoined, "@alice:hs1.test"),
		sessionEvent(roomB, 1, events.KindSessionStarted, ""))
	time.Sleep(20 * time.Millisecond)
	mid := time.Now()
	time.Sleep(20 * time.Millisecond)
	publish(t, js, sessionEvent(roomA, 3, events.KindMemberLeft, "@alice:hs1.test"),
		sessionEvent(roomA, 4, events.KindSessionEnded, ""))

	tests := []struct {
		name  string
		args  []string
		lines []string // substrings, one per expected line
	}{
		{"all", []string{"--all", "--max", "5"}, []string{"session_started  !a:hs1.test", "member_joined    !a:hs1.test", "session_started  !b:hs2.test", "member_left", "session_ended"}},
		{"room filter", []string{"--all", "--room", string(roomB), "--max", "1"}, []string{"!b:hs2.test  m.call call=\"\""}},
		{"kind filter", []string{"--all", "--kind", "member_left", "--max", "1"}, []string{"@alice:hs1.test/DEV  reason=expired  devices=0 users=0"}},
		{"since RFC 3339", []string{"--since", mid.UTC().Format(time.RFC3339Nano), "--max", "2"}, []string{"member_left", "session_ended    !a:hs1.test  m.call call=\"\"  reason=expired  devices=0 users=0  duration=4s peak=1 distinct_users=1 joins=1  seq=4"}},
		{"since duration", []string{"--since", "1h", "--app", "m.call", "--max", "5"}, []string{"seq=1", "seq=2", "seq=1", "seq=3", "seq=4"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := run(t, append([]string{"tail", "--nats", url}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != len(tc.lines) {
				t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(tc.lines), out)
			}
			for i, want := range tc.lines {
				if !strings.Contains(lines[i], want) {
					t.Errorf("line %d %q lacks %q", i, lines[i], want)
				}
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		code, out, _ := run(t, "tail", "--nats", url, "--all", "--json", "--room", string(roomA), "--max", "4")
		if code != 0 {
			t.Fatal(code)
		}
		var seqs []uint64
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var e events.SessionEvent
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatalf("%q: %v", l, err)
			}
			seqs = append(seqs, e.Seq)
		}
		if len(seqs) != 4 || seqs[0] != 1 || seqs[3] != 4 {
			t.Fatalf("seqs %v", seqs)
		}
	})

	t.Run("from now", func(t *testing.T) {
		var wg sync.WaitGroup
		var code int
		var out string
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, out, _ = run(t, "tail", "--nats", url, "--max", "1")
		}()
		// Publish until the tail has seen one: it must be a new event, not
		// one of the stored ones.
		deadline := time.Now().Add(5 * time.Second)
		for seq := uint64(10); ; seq++ {
			publish(t, js, sessionEvent(roomB, seq, events.KindMemberJoined, "@new:hs2.test"))
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(100 * time.Millisecond):
				if time.Now().After(deadline) {
					t.Fatal("tail saw nothing")
				}
				continue
			}
			break
		}
		if code != 0 || !strings.Contains(out, "@new:hs2.test") {
			t.Fatalf("exit %d: %q", code, out)
		}
	})

	for _, bad := range [][]string{{"tail", "--since", "yesterday"}, {"tail", "--all", "--since", "1m"}, {"tail", "--kind", "nope"}, {"tail", "extra"}} {
		if code, _, _ := run(t, append(bad, "--nats", url)...); code != 2 {
			t.Errorf("%v: exit %d, want 2", bad, code)
		}
	}
}

func TestRoom(t *testing.T) {
	url, js := embedded(t)
	if code, _, errs := run(t, "room", string(roomA), "--nats", url); code != 1 || !strings.Contains(errs, "no state") {
		t.Fatalf("missing room: %d %s", code, errs)
	}
	st := rtc.NewRoomState(roomA)
	st.Clock, st.Seq = 1700000002000, 2
	st.Registers = map[string]*rtc.Register{
		"org.matrix.msc3401.call.member|_@alice:hs1.test_AD_m.call": {EventID: "$e1", Sender: "@alice:hs1.test", TS: 1700000000000, Kind: rtc.RegisterJoin,
			Claims: []rtc.Claim{{App: "m.call", User: "@alice:hs1.test", Device: "AD", MemberKey: "AD", CreatedTS: 1700000000000,
				Deadline: 1700014400000, Format: events.FormatSession, EventID: "$e1", TS: 1700000000000}}},
		"org.matrix.msc3401.call.member|_@bob:hs1.test_BD_m.call": {EventID: "$e2", Sender: "@bob:hs1.test", TS: 1700000001000, Kind: rtc.RegisterLeave},
		"org.matrix.msc3401.call.member|_@dave:hs1.test_DD_m.call": {EventID: "$e4", Sender: "@dave:hs1.test", TS: 1700000000000, Kind: rtc.RegisterJoin,
			Claims: []rtc.Claim{{App: "m.call", User: "@dave:hs1.test", Device: "DD", MemberKey: "DD", CreatedTS: 1700000000000,
				Deadline: 1700000001000, Format: events.FormatSession, EventID: "$e4", TS: 1700000000000}}},
		"s\x00org.matrix.msc3401.call.member\x00_@carol:hs1.test_CD_m.call": {EventID: "$e3", Sender: "@mallory:hs1.test", TS: 1700000001000,
			Kind: rtc.RegisterInvalid, WhyCode: rtc.RejectForeignStateKey, Why: "state key names @carol:hs1.test, sender is @mallory:hs1.test"},
	}
	st.RoomMembers = map[id.UserID]rtc.RoomMember{"@bob:hs1.test": {Membership: "leave", TS: 1700000001500}}
	st.Sessions = map[string]*rtc.Session{"m.call\x00": {App: "m.call", ID: "sess-1", StartedAt: 1700000000000, Peak: 2, Joins: 2,
		UserDevices: map[id.UserID]int{"@alice:hs1.test": 1},
		Members: map[string]*rtc.SessionMember{"@alice:hs1.test\x00AD": {MemberKey: "AD", Member: events.Member{UserID: "@alice:hs1.test", DeviceID: "AD",
			JoinedAt: 1700000000000, ExpiresAt: 1700014400000, Format: events.FormatSession, EventID: "$e1"}}}}}
	rm := roomstore.New(roomA)
	rm.State = st
	c, err := rm.Prepare(7, 1700014400000, nil, roomstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(context.Background(), c.Header); err != nil {
		t.Fatal(err)
	}
	code, out, errs := run(t, "room", string(roomA), "--nats", url)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"room !a:hs1.test", "seq 2", "RTC_RAW #7", "sessions (1)", "m.call call=\"\"  id sess-1",
		"devices 1  users 1  peak 2  joins 2", "@alice:hs1.test/AD  joined 2023-11-14T22:13:20.000Z", "registers (4)", "leave",
		"expired at 2023-11-14T22:13:21.000Z", "a leave (no membership)",
		"s|org.matrix.msc3401.call.member|_@carol:hs1.test_CD_m.call", "foreign_state_key: state key names @carol:hs1.test",
		"until 2023-11-15T02:13:20.000Z", "room members (1)", "@bob:hs1.test  leave"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = run(t, "room", "--json", "--nats", url, string(roomA))
	var back RoomView
	if code != 0 || json.Unmarshal([]byte(out), &back) != nil || back.LastIn != 7 || back.State.Sessions["m.call|"].ID != "sess-1" ||
		back.State.Sessions["m.call|"].Members["@alice:hs1.test|AD"] == nil {
		t.Fatalf("json: %d %s", code, out)
	}
	// Keys with NUL separators are readable in JSON too.
	if strings.Contains(out, `\u0000`) || back.State.Registers["s|org.matrix.msc3401.call.member|_@carol:hs1.test_CD_m.call"] == nil {
		t.Fatalf("json keys not readable:\n%s", out)
	}
	if code, _, _ := run(t, "room", "--nats", url); code != 2 {
		t.Errorf("no room id: exit %d", code)
	}
}

func TestDispatch(t *testing.T) {
	if code, _, _ := run(t); code != 2 {
		t.Errorf("no command: %d", code)
	}
	if code, _, _ := run(t, "frobnicate"); code != 2 {
		t.Errorf("unknown command: %d", code)
	}
	if code, out, _ := run(t, "help"); code != 0 || !strings.Contains(out, "Usage: rtcctl <command>") {
		t.Errorf("help: %d", code)
	}
	// simulate is dispatched to internal/simulate: a usage error there is
	// its exit status 2, not rtcctl's "unknown command".
	if code, _, errs := run(t, "simulate"); code == 0 || strings.Contains(errs, "unknown command") {
		t.Errorf("simulate: %d %s", code, errs)
	}
}
