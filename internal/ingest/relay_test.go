package ingest

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// callEvent is a call-member state event of sender on keyUser's device key
// (a leave when content is {}).
func callEvent(eventID, room, sender, keyUser, content string) string {
	return fmt.Sprintf(`{"type":"org.matrix.msc3401.call.member","state_key":"_%s_DEV_m.call","sender":%q,`+
		`"event_id":%q,"room_id":%q,"origin_server_ts":1700000000000,"content":%s}`, keyUser, sender, eventID, room, content)
}

// roomMemberEvent is an m.room.member event of sender about target.
func roomMemberEvent(eventID, room, sender, target, membership string) string {
	return fmt.Sprintf(`{"type":"m.room.member","state_key":%q,"sender":%q,"event_id":%q,"room_id":%q,`+
		`"origin_server_ts":1700000000000,"content":{"membership":%q}}`, target, sender, eventID, room, membership)
}

// Users of the listed homeservers of the relay tests, and of a server that
// is not listed.
const (
	alice   = "@alice:hs1.test"
	bob     = "@bob:hs2.test"
	mallory = "@mallory:hs2.test"
	carol   = "@carol:elsewhere.org"
	leave   = `{}`
	joinC   = `{"application":"m.call","call_id":"","scope":"m.room","device_id":"DEV","expires":14400000}`
)

// relayHomeservers of the tests: hs1 and hs2 with the default (rooms), hs3
// relaying never, hs4 always.
func testRelay(m *Metrics, log *zap.Logger, maxRooms int) *Relay {
	return NewRelay([]RelayHomeserver{
		{Name: "hs1", ServerName: "hs1.test"},
		{Name: "hs2", ServerName: "hs2.test", Mode: RelayRooms},
		{Name: "hs3", ServerName: "hs3.test", Mode: RelayNever},
		{Name: "hs4", ServerName: "hs4.test", Mode: RelayAlways},
	}, maxRooms, m, log)
}

// delivery is one event delivered by a homeserver through a source, and
// the refusal reason expected ("" admitted).
type delivery struct {
	hs   string
	src  rawevent.Source
	json string
	want string
}

func TestRelayRule(t *testing.T) {
	const r1, r2 = "!r1:hs1.test", "!r2:hs2.test"
	as := rawevent.SourceAppservice
	tests := []struct {
		name string
		seq  []delivery
	}{
		{"own user in any room", []delivery{
			{"hs1", as, callEvent("$1", r1, alice, alice, joinC), ""},
			{"hs2", as, callEvent("$2", r1, bob, bob, joinC), ""},
			{"hs2", as, roomMemberEvent("$3", "!new:x", bob, bob, "join"), ""},
		}},
		{"foreign user in a room the homeserver showed its own user in", []delivery{
			{"hs2", as, roomMemberEvent("$1", r1, bob, bob, "join"), ""},
			{"hs2", as, callEvent("$2", r1, alice, alice, joinC), ""},
			{"hs2", as, callEvent("$3", r1, alice, alice, leave), ""},
		}},
		{"foreign user in a room the homeserver never showed: refused", []delivery{
			{"hs2", as, roomMemberEvent("$1", r2, bob, bob, "join"), ""}, // another room
			{"hs2", as, callEvent("$2", r1, alice, alice, joinC), RefuseUnknownRoom},
		}},
		{"leave {} forged by hs2 for alice in a room hs2 never showed", []delivery{
			{"hs1", as, callEvent("$1", r1, alice, alice, joinC), ""},
			{"hs2", as, callEvent("$2", r1, alice, alice, leave), RefuseUnknownRoom},
		}},
		{"hs2's own user clearing alice's key in a room hs2 never showed", []delivery{
			{"hs2", as, callEvent("$1", r1, mallory, alice, leave), RefuseUnknownRoom},
			// The refused event did not show hs2 in the room.
			{"hs2", as, callEvent("$2", r1, alice, alice, leave), RefuseUnknownRoom},
		}},
		{"hs2's own user kicking alice in a room hs2 never showed", []delivery{
			{"hs2", as, roomMemberEvent("$1", r1, mallory, alice, "leave"), RefuseUnknownRoom},
		}},
		{"kick of alice by hs2's user in a room hs2 is in", []delivery{
			{"hs2", as, roomMemberEvent("$1", r1, mallory, mallory, "join"), ""},
			{"hs2", as, roomMemberEvent("$2", r1, mallory, alice, "leave"), ""},
		}},
		{"server name compared without case", []delivery{
			{"hs2", as, callEvent("$1", r1, "@alice:HS1.Test", "@alice:HS1.Test", leave), RefuseUnknownRoom},
			{"hs1", as, callEvent("$2", r1, "@alice:HS1.Test", "@alice:HS1.Test", joinC), ""},
		}},
		{"user of a server not listed: any homeserver relays it", []delivery{
			{"hs2", as, callEvent("$1", r1, carol, carol, joinC), ""},
			{"hs3", as, callEvent("$2", r1, carol, carol, leave), ""},
			// Relaying a stranger does not show hs2 in the room.
			{"hs2", as, callEvent("$3", r1, alice, alice, leave), RefuseUnknownRoom},
		}},
		{"relay never: not even in its own rooms", []delivery{
			{"hs3", as, roomMemberEvent("$1", r1, "@dave:hs3.test", "@dave:hs3.test", "join"), ""},
			{"hs3", as, callEvent("$2", r1, alice, alice, leave), RefuseNotRelayed},
			{"hs3", rawevent.SourceSync, callEvent("$3", r1, alice, alice, leave), RefuseNotRelayed},
		}},
		{"relay always: anywhere", []delivery{
			{"hs4", as, callEvent("$1", r1, alice, alice, leave), ""},
			{"hs4", as, callEvent("$2", r2, bob, bob, joinC), ""},
		}},
		{"a sync bot, a sync state block and a state reader are joined to their rooms", []delivery{
			{"hs2", rawevent.SourceSync, callEvent("$1", "!s1:x", alice, alice, joinC), ""},
			{"hs2", rawevent.SourceSyncState, callEvent("$2", "!s2:x", alice, alice, joinC), ""},
			{"hs2", rawevent.SourceReconcile, callEvent("$3", "!s3:x", alice, alice, leave), ""},
			// ... and what they showed counts for pushes too.
			{"hs2", as, callEvent("$4", "!s1:x", alice, alice, leave), ""},
		}},
		{"the operator's replay file and homeservers not listed are not judged", []delivery{
			{"hs2", rawevent.SourceReplay, callEvent("$1", r1, alice, alice, leave), ""},
			{"replay", rawevent.SourceReplay, callEvent("$2", r1, alice, alice, leave), ""},
			{"unlisted", as, callEvent("$3", r1, alice, alice, leave), ""},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMetrics(nil)
			core, logs := observer.New(zapcore.DebugLevel)
			r := testRelay(m, zap.New(core), 0)
			wantRefused := map[string]float64{}
			for i, d := range tt.seq {
				ev, err := Prepare([]byte(d.json), "", 1700000000001, d.hs, d.src)
				if err != nil {
					t.Fatalf("#%d: %v", i, err)
				}
				got := r.Admit(d.hs, d.src, []rawevent.RawEvent{ev})
				if d.want == "" {
					if len(got) != 1 || got[0].EventID != ev.EventID {
						t.Errorf("#%d %s from %s/%s: refused, want admitted", i, ev.EventID, d.hs, d.src)
					}
					continue
				}
				if len(got) != 0 {
					t.Errorf("#%d %s from %s/%s: admitted, want refused (%s)", i, ev.EventID, d.hs, d.src, d.want)
				}
				wantRefused[d.hs+"/"+string(d.src)+"/"+d.want]++
				entries := logs.FilterField(zap.String("event_id", string(ev.EventID))).FilterField(zap.String("reason", d.want)).All()
				if len(entries) != 1 {
					t.Errorf("#%d: %d log entries for the refusal, want 1", i, len(entries))
					continue
				}
				f := entries[0].ContextMap()
				if f["room_id"] != string(ev.RoomID) || f["sender"] != string(ev.Sender) || f["homeserver"] != d.hs {
					t.Errorf("#%d: log fields %v", i, f)
				}
			}
			for _, hs := range []string{"hs1", "hs2", "hs3", "hs4"} {
				for _, src := range []rawevent.Source{as, rawevent.SourceSync, rawevent.SourceSyncState, rawevent.SourceReconcile} {
					for _, reason := range refuseReasons {
						k := hs + "/" + string(src) + "/" + reason
						if got := testutil.ToFloat64(m.Refused.WithLabelValues(hs, string(src), reason)); got != wantRefused[k] {
							t.Errorf("refused{%s} = %v, want %v", k, got, wantRefused[k])
						}
					}
				}
			}
		})
	}
}

// TestRelayBatchKeepsTheRest: a refused event costs only itself; the rest
// of its batch is admitted in order, and an own user's event earlier in the
// same batch shows the homeserver in the room for the events after it.
func TestRelayBatchKeepsTheRest(t *testing.T) {
	r := testRelay(NewMetrics(nil), zap.NewNop(), 0)
	var evs []rawevent.RawEvent
	for _, j := range []string{
		callEvent("$forged", "!a:x", alice, alice, leave),
		roomMemberEvent("$bob", "!a:x", bob, bob, "join"),
		callEvent("$relayed", "!a:x", alice, alice, leave),
		callEvent("$carol", "!b:x", carol, carol, joinC),
	} {
		ev, err := Prepare([]byte(j), "", 1700000000001, "hs2", rawevent.SourceAppservice)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	got := r.Admit("hs2", rawevent.SourceAppservice, evs)
	var ids []string
	for _, ev := range got {
		ids = append(ids, string(ev.EventID))
	}
	if want := "$bob $relayed $carol"; strings.Join(ids, " ") != want {
		t.Errorf("admitted %v, want %s", ids, want)
	}
}

// TestRelayRoomsBounded: the rooms a homeserver showed are bounded per
// homeserver; the least recently shown is forgotten first, and one
// homeserver filling its set does not evict another's.
func TestRelayRoomsBounded(t *testing.T) {
	r := testRelay(NewMetrics(nil), zap.NewNop(), 2)
	show := func(hs, user, room string) {
		ev, err := Prepare([]byte(roomMemberEvent("$"+hs+room, room, user, user, "join")), "", 1, hs, rawevent.SourceAppservice)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Admit(hs, rawevent.SourceAppservice, []rawevent.RawEvent{ev})) != 1 {
			t.Fatalf("%s's own join in %s refused", hs, room)
		}
	}
	relayed := func(hs, user, room string) bool {
		ev, err := Prepare([]byte(callEvent("$relay"+hs+room, room, user, user, leave)), "", 1, hs, rawevent.SourceAppservice)
		if err != nil {
			t.Fatal(err)
		}
		return len(r.Admit(hs, rawevent.SourceAppservice, []rawevent.RawEvent{ev})) == 1
	}
	show("hs1", alice, "!kept:x")
	show("hs2", bob, "!a:x")
	show("hs2", bob, "!b:x")
	show("hs2", bob, "!a:x") // shown again: most recent
	show("hs2", bob, "!c:x") // evicts !b:x
	if n := r.Rooms("hs2"); n != 2 {
		t.Errorf("hs2 remembered in %d rooms, want 2", n)
	}
	for room, want := range map[string]bool{"!a:x": true, "!b:x": false, "!c:x": true} {
		if got := relayed("hs2", alice, room); got != want {
			t.Errorf("hs2 relaying alice in %s: admitted %v, want %v", room, got, want)
		}
	}
	if !relayed("hs1", bob, "!kept:x") {
		t.Error("hs2's rooms evicted hs1's")
	}
}

// TestAppserviceRelayRule: through the appservice and a real JetStream,
// hs2's token cannot end the membership of a user of hs1 in a room hs2
// never showed itself in; the transaction is still answered 200 (a refusal
// would make the homeserver retry it forever) and the rest of it is
// stored. Once one of hs2's own users is in the room, hs2's relayed copy
// of alice's events is stored as federation delivers it.
func TestAppserviceRelayRule(t *testing.T) {
	e := newEnv(t)
	hss := []Homeserver{{Name: "hs1", HSToken: tokHS1, ServerName: "hs1.test"}, {Name: "hs2", HSToken: tokHS2, ServerName: "hs2.test"}}
	e.pub.SetRelay(NewRelay(relayHomeservers(hss), 0, e.m, e.log))
	as := NewAppservice(hss, e.pub, e.m, e.log, AppserviceOptions{})
	tracker := NewRoomTracker(time.Hour, 100)
	as.SetRoomTracker(tracker)
	srv := httptest.NewServer(as.Handler())
	t.Cleanup(srv.Close)
	put := func(tok, id string, evs ...string) {
		t.Helper()
		if code, errcode := do(t, srv.URL, asReq{"PUT", "/_matrix/app/v1/transactions/" + id, tok, false, txn(evs...)}); code != 200 {
			t.Fatalf("transaction %s: %d %s", id, code, errcode)
		}
	}
	const room = "!call:hs1.test"
	put(tokHS1, "1", callEvent("$alice-join", room, alice, alice, joinC))
	put(tokHS2, "1", callEvent("$forged-leave", room, alice, alice, leave),
		callEvent("$forged-clear", room, mallory, alice, leave),
		callEvent("$carol-join", room, carol, carol, joinC),
		callEvent("$forged-elsewhere", "!elsewhere:hs1.test", alice, alice, leave))
	assertStored(t, rawContents(t, e.url), map[string]string{"$alice-join": "hs1", "$carol-join": "hs2"})
	if got := testutil.ToFloat64(e.m.Refused.WithLabelValues("hs2", "appservice", RefuseUnknownRoom)); got != 3 {
		t.Errorf("refused{hs2,appservice,%s} = %v, want 3", RefuseUnknownRoom, got)
	}
	// Refused events make no room a reconciliation candidate.
	var recent []string
	for _, r := range tracker.Recent(time.Now()) {
		recent = append(recent, fmt.Sprintf("%s%v", r.room, r.hs))
	}
	if want := "!call:hs1.test[hs1 hs2]"; strings.Join(recent, " ") != want {
		t.Errorf("rooms tracked for reconciliation: %v, want %s", recent, want)
	}

	put(tokHS2, "2", roomMemberEvent("$bob-join", room, bob, bob, "join"), callEvent("$alice-leave", room, alice, alice, leave))
	assertStored(t, rawContents(t, e.url), map[string]string{"$alice-join": "hs1", "$carol-join": "hs2",
		"$bob-join": "hs2", "$alice-leave": "hs2"})
}

// TestRelayDemoFederationNotRefused: the demo file played as federation
// delivers it (each event from the homeserver of every sender seen in its
// room so far, the sender's own included), with the homeservers named by
// their server names, is stored whole: the default rule refuses no copy of
// real federation traffic in rooms the homeservers share.
func TestRelayDemoFederationNotRefused(t *testing.T) {
	e := newEnv(t)
	tokens := map[string]string{"hs1.example": "tok-1", "hs2.example": "tok-2", "hs3.example": "tok-3"}
	var hss []Homeserver
	for name, tok := range tokens {
		hss = append(hss, Homeserver{Name: name, HSToken: tok, ServerName: name})
	}
	e.pub.SetRelay(NewRelay(relayHomeservers(hss), 0, e.m, e.log))
	srv := httptest.NewServer(NewAppservice(hss, e.pub, e.m, e.log, AppserviceOptions{}).Handler())
	t.Cleanup(srv.Close)
	f, err := os.Open("../../configs/demo/sample.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Push(context.Background(), f, PushOptions{URL: srv.URL, Tokens: tokens, RetryFor: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	var relayed float64
	for name := range tokens {
		relayed += testutil.ToFloat64(e.m.Duplicates.WithLabelValues(name, "appservice"))
		for _, reason := range refuseReasons {
			if n := testutil.ToFloat64(e.m.Refused.WithLabelValues(name, "appservice", reason)); n != 0 {
				t.Errorf("%s: %v events refused (%s)", name, n, reason)
			}
		}
	}
	if relayed == 0 {
		t.Error("no event arrived from two homeservers: the file exercises no relay")
	}
	want := map[string]bool{}
	b, err := os.ReadFile("../../configs/demo/sample.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if ev, err := Prepare([]byte(line), "", 1, "x", rawevent.SourceAppservice); err == nil {
			want[string(ev.EventID)] = true
		}
	}
	for _, ev := range rawContents(t, e.url) {
		delete(want, string(ev.EventID))
	}
	if len(want) > 0 {
		t.Errorf("%d forwarded events of the file not stored: %v", len(want), want)
	}
}
