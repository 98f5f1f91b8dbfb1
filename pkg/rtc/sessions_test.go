package rtc

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// sessionsOf lists the session ids in the order the sessions started.
func sessionsOf(evs []events.SessionEvent) []string {
	var out []string
	for _, e := range evs {
		if e.Kind == events.KindSessionStarted {
			out = append(out, e.SessionID)
		}
	}
	return out
}

// endOf returns the session_ended of session id.
func endOf(t *testing.T, evs []events.SessionEvent, id string) events.SessionEvent {
	t.Helper()
	for _, e := range evs {
		if e.Kind == events.KindSessionEnded && e.SessionID == id {
			return e
		}
	}
	t.Fatalf("session %s did not end", id)
	return events.SessionEvent{}
}

// A user in a call leaves the room and rejoins it while the membership is
// still valid: the membership is restored with its old created_ts(), and
// the session it starts is a new one, with an id of its own and a start
// no earlier than the end of the one before.
func TestRestoredMembershipStartsANewSession(t *testing.T) {
	join := callJoin(alice, "A", "", T0, "")
	leaveRoom := roomMember(alice, "leave", T0+10_000)
	rejoinRoom := roomMember(alice, "join", T0+10_400)
	leaveAgain := roomMember(alice, "leave", T0+20_000)
	rejoinAgain := roomMember(alice, "join", T0+20_160)
	st, evs, _ := run(t, join, leaveRoom, rejoinRoom, leaveAgain, rejoinAgain)
	wantKinds(t, evs,
		"session_started", "member_joined", "member_left/left_room", "session_ended/left_room",
		"session_started", "member_joined", "member_left/left_room", "session_ended/left_room",
		"session_started", "member_joined")
	ids := sessionsOf(evs)
	if len(ids) != 3 || ids[0] == ids[1] || ids[1] == ids[2] || ids[0] == ids[2] {
		t.Fatalf("session ids %v: want three different ids", ids)
	}
	first, second := endOf(t, evs, ids[0]), endOf(t, evs, ids[1])
	if first.Summary.StartedAt != T0 || first.Summary.EndedAt != T0+10_000 {
		t.Fatalf("first session %+v: want [T0, T0+10s]", first.Summary)
	}
	// The restored membership keeps its created_ts(): the member joined
	// at T0, the session starts at the previous end.
	if m := evs[5].Member; m.JoinedAt != T0 || evs[5].At != T0+10_400 {
		t.Fatalf("restored member joined_at %d at %d: want the membership's T0, told at the rejoin", m.JoinedAt, evs[5].At)
	}
	if second.Summary.StartedAt != first.Summary.EndedAt || second.Summary.EndedAt != T0+20_000 {
		t.Fatalf("second session %+v: want it to start at the first one's end %d", second.Summary, first.Summary.EndedAt)
	}
	ls, ok := st.LiveSession(AppCall, "")
	if !ok || ls.SessionID != ids[2] || ls.StartedAt != second.Summary.EndedAt {
		t.Fatalf("live session %+v: want id %s started at %d", ls, ids[2], second.Summary.EndedAt)
	}
	// Every event names the session it belongs to.
	checkSessionGrammar(t, evs)
	// A replay assigns the same ids.
	_, again, _ := run(t, join, leaveRoom, rejoinRoom, leaveAgain, rejoinAgain)
	if !slices.Equal(sessionsOf(again), ids) {
		t.Fatalf("replay: ids %v, want %v", sessionsOf(again), ids)
	}
}

// The previous end bounds a session that starts with a new membership too,
// when that membership's created_ts() is before the end (a late join).
func TestSessionNeverStartsBeforeThePreviousEnd(t *testing.T) {
	a := callJoin(alice, "A", "", T0, "")
	aLeave := callLeave(alice, "A", T0+5_000)
	// Bob's join was sent at T0+1s but is received after Alice's leave.
	b := withRecv(callJoin(bob, "B", "", T0+1_000, ""), T0+6_000)
	_, evs, _ := run(t, a, aLeave, b)
	wantKinds(t, evs, "session_started", "member_joined", "member_left/leave", "session_ended/leave",
		"session_started", "member_joined")
	checkSessionGrammar(t, evs)
	st, _, _ := run(t, a, aLeave, b)
	ls, _ := st.LiveSession(AppCall, "")
	if ls.StartedAt != T0+5_000 || ls.Members[0].JoinedAt != T0+1_000 {
		t.Fatalf("started_at %d, member joined %d: want the previous end %d and the member's own %d",
			ls.StartedAt, ls.Members[0].JoinedAt, T0+5_000, T0+1_000)
	}
}

// The end of a session is forgotten past the horizon, and what the room
// records of it changes with it (a store keeps it as a part).
func TestLastEndedIsCollectedPastTheHorizon(t *testing.T) {
	cfg := gcConfig()
	st, _ := runWith(t, cfg, callJoin(alice, "A", "", T0, `,"expires":5000`), callLeave(alice, "A", T0+3_000))
	if got := st.LastEnded[SessionKey(AppCall, "")]; got != T0+3_000 {
		t.Fatalf("last end %d, want %d", got, T0+3_000)
	}
	st.TrackChanges()
	horizon := T0 + 3_000 + gcHorizon(cfg)
	Apply(cfg, st, ptr(tick(horizon)))
	if len(st.LastEnded) != 1 {
		t.Fatal("the end was forgotten at the horizon")
	}
	Apply(cfg, st, ptr(tick(horizon+1)))
	if len(st.LastEnded) != 0 {
		t.Fatalf("last ends %v past the horizon: want none", st.LastEnded)
	}
	if c := st.TakeChanges(); c == nil || len(c.LastEnded) != 1 {
		t.Fatalf("changes %+v: want the collected end", c)
	}
}

// checkSessionIDs checks the promises of session ids and starts over one
// room's events: a session_started names a session never seen before,
// every event of a session names it, and no session starts before the
// previous session of its key ended (a session's start is in its summary
// when it ends, and in live, the live sessions at the end). It returns how
// many members joined a session with a created_ts() before the end of the
// previous session of its key (whose start the end therefore bounded).
func checkSessionIDs(t *testing.T, evs []events.SessionEvent, live []events.LiveSession) (bounded int) {
	t.Helper()
	seen := map[string]bool{}
	open := map[string]string{}    // key -> session id
	lastEnd := map[string]*int64{} // key -> ended_at of its last session
	for _, e := range evs {
		k := e.Application + "|" + e.CallID
		switch e.Kind {
		case events.KindSessionStarted:
			if seen[e.SessionID] {
				t.Fatalf("seq %d: session id %s started twice", e.Seq, e.SessionID)
			}
			seen[e.SessionID] = true
			open[k] = e.SessionID
		case events.KindSessionEnded:
			if end := lastEnd[k]; end != nil && e.Summary.StartedAt < *end {
				t.Fatalf("seq %d: session %s started at %d, before the previous end %d", e.Seq, e.SessionID, e.Summary.StartedAt, *end)
			}
			lastEnd[k] = &e.Summary.EndedAt
		case events.KindMemberJoined:
			if end := lastEnd[k]; end != nil && e.Member.JoinedAt < *end {
				bounded++
			}
		}
		if e.SessionID != open[k] {
			t.Fatalf("seq %d: %s names session %s, the open one is %s", e.Seq, e.Kind, e.SessionID, open[k])
		}
		if e.Kind == events.KindSessionEnded {
			delete(open, k)
		}
	}
	for _, ls := range live {
		k := ls.Application + "|" + ls.CallID
		if end := lastEnd[k]; end != nil && ls.StartedAt < *end {
			t.Fatalf("live session %s started at %d, before the previous end %d", ls.SessionID, ls.StartedAt, *end)
		}
		if ls.SessionID != open[k] {
			t.Fatalf("live session %s, the events' open one is %s", ls.SessionID, open[k])
		}
	}
	return bounded
}

// TestPropertyUniqueSessions: over random histories (restored memberships
// among them: users leave and rejoin the room), in random orders, with and
// without collection, no two sessions share an id and no session starts
// before the previous session of its key ended.
func TestPropertyUniqueSessions(t *testing.T) {
	bounded := 0
	for seed := uint64(1); seed <= 150; seed++ {
		rng := rand.New(rand.NewPCG(seed, 29))
		var in []rawevent.RawEvent
		cfg := DefaultConfig()
		if seed%2 == 0 {
			in = gcHistory(rng, 30+rng.IntN(60), seed%4 == 0)
			cfg = gcConfig()
		} else {
			in = randomEvents(rng, 30+rng.IntN(60))
		}
		// Users leave and rejoin the room often: the restores.
		users := []string{alice, bob, carol}
		for i := rng.IntN(12); i > 0; i-- {
			at := in[rng.IntN(len(in))].OriginServerTS
			u := users[rng.IntN(len(users))]
			in = append(in, roomMember(u, "leave", at), roomMember(u, "join", at+1+rng.Int64N(2_000)))
		}
		for p := 0; p < 4; p++ {
			perm := slices.Clone(in)
			if p > 0 {
				rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
			}
			st, evs := runWith(t, cfg, perm...)
			checkSessionGrammar(t, evs)
			bounded += checkSessionIDs(t, evs, st.LiveSessions())
		}
	}
	if bounded == 0 {
		t.Fatal("no member joined with a created_ts() before the previous end: the histories do not exercise the bound")
	}
}

// intentJoin is Element Call's membership with an m.call.intent.
func intentJoin(device string, ts, created int64, intent, extra string) rawevent.RawEvent {
	return callJoin(alice, device, "", ts, fmt.Sprintf(`,"created_ts":%d,"m.call.intent":%q%s`, created, intent, extra))
}

// A membership's new events that neither join nor leave reach subscribers
// as member_updated, naming what changed, and the live session names the
// current event (matrix-js-sdk's updateCallIntent, a refresh, new foci, an
// event re-sent unchanged).
func TestMemberUpdatedNamesWhatChanged(t *testing.T) {
	join := intentJoin("A", T0, T0, "video", "")
	tests := []struct {
		name    string
		update  rawevent.RawEvent
		changed string
		check   func(t *testing.T, m events.Member)
	}{
		{name: "call intent (updateCallIntent)", update: intentJoin("A", T0+1_000, T0, "audio", ""),
			changed: "call_intent,event_id",
			check: func(t *testing.T, m events.Member) {
				if m.CallIntent != "audio" {
					t.Fatalf("call intent %q, want audio", m.CallIntent)
				}
			}},
		{name: "the same content again", update: intentJoin("A", T0+1_000, T0, "video", ""), changed: "event_id"},
		{name: "refresh", update: intentJoin("A", T0+1_000, T0, "video", `,"expires":28800000`),
			changed: "expires_at,event_id",
			check: func(t *testing.T, m events.Member) {
				if m.ExpiresAt != T0+8*hour {
					t.Fatalf("expires at %d, want %d", m.ExpiresAt, T0+8*hour)
				}
			}},
		{name: "intent dropped", update: callJoin(alice, "A", "", T0+1_000, fmt.Sprintf(`,"created_ts":%d`, T0)),
			changed: "call_intent,event_id"},
		{name: "foci", update: withContent(join, fmt.Sprintf(`{"application":"m.call","call_id":"","device_id":"A","created_ts":%d,"m.call.intent":"video","focus_active":{"type":"livekit","focus_selection":"oldest_membership"},"foci_preferred":[{"type":"livekit","livekit_service_url":"https://other.example.org"}]}`, T0)),
			changed: "focus_active,foci_preferred,event_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := tc.update
			if up.EventID == join.EventID {
				up.EventID, up.OriginServerTS, up.ReceivedAt = "$update", T0+1_000, T0+1_000
			}
			st, evs, rej := run(t, join, up)
			if len(rej) != 0 {
				t.Fatalf("rejections %v", rej)
			}
			wantKinds(t, evs, "session_started", "member_joined", "member_updated")
			if evs[1].Member.CallIntent != "video" {
				t.Fatalf("joined with call intent %q, want video", evs[1].Member.CallIntent)
			}
			u := evs[2]
			if got := strings.Join(u.Changed, ","); got != tc.changed {
				t.Fatalf("changed %q, want %q", got, tc.changed)
			}
			if u.Member.EventID != up.EventID || u.Member.JoinedAt != T0 || u.Member.MembershipID != evs[1].Member.MembershipID {
				t.Fatalf("updated member %+v: want the same membership, event %s", u.Member, up.EventID)
			}
			ls, _ := st.LiveSession(AppCall, "")
			if len(ls.Members) != 1 || !sameMember(ls.Members[0], *u.Member) || ls.Members[0].CallIntent != u.Member.CallIntent {
				t.Fatalf("live session members %+v: want the updated member %+v", ls.Members, *u.Member)
			}
			if tc.check != nil {
				tc.check(t, *u.Member)
			}
			// The same event again changes nothing.
			if res := Apply(DefaultConfig(), st, &up); len(res.Events) != 0 {
				t.Fatalf("the update again: %v", kinds(res.Events))
			}
		})
	}
}

// The call intent of each format: top level in the session (and seed)
// form, in the application object of a sticky member; a session-form
// intent that is not a string makes the membership invalid (as js-sdk),
// a sticky one is ignored (as js-sdk).
func TestCallIntentOfEachFormat(t *testing.T) {
	stickyContent := func(app string) string {
		return `{"slot_id":"m.call#ROOM","application":` + app + `,"member":{"user_id":"@alice:example.org","device_id":"S","id":"m1"},"rtc_transports":[{"type":"livekit"}],"msc4354_sticky_key":"m1"}`
	}
	tests := []struct {
		name    string
		in      rawevent.RawEvent
		want    string
		invalid bool
	}{
		{name: "session form", in: intentJoin("A", T0, T0, "audio", ""), want: "audio"},
		{name: "session form without intent", in: callJoin(alice, "A", "", T0, ""), want: ""},
		{name: "session form, spaced (general parser)", in: withContent(callJoin(alice, "A", "", T0, ""),
			`{ "application": "m.call", "call_id": "", "device_id": "A", "focus_active": {"type": "livekit"}, "m.call.intent": "video" }`), want: "video"},
		{name: "session form, not a string", in: withContent(callJoin(alice, "A", "", T0, ""),
			`{"application":"m.call","call_id":"","device_id":"A","focus_active":{"type":"livekit"},"m.call.intent":5}`), invalid: true},
		{name: "session form, null", in: withContent(callJoin(alice, "A", "", T0, ""),
			`{"application":"m.call","call_id":"","device_id":"A","focus_active":{"type":"livekit"},"m.call.intent":null}`), want: ""},
		{name: "sticky", in: withContent(sticky(alice, "S", "m1", T0, ""), stickyContent(`{"type":"m.call","m.call.intent":"audio"}`)), want: "audio"},
		{name: "sticky, not a string", in: withContent(sticky(alice, "S", "m1", T0, ""), stickyContent(`{"type":"m.call","m.call.intent":["audio"]}`)), want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, evs, rej := run(t, tc.in)
			if tc.invalid {
				if len(evs) != 0 || len(rej) != 1 || !strings.Contains(rej[0].Reason, "m.call.intent must be a string") {
					t.Fatalf("events %v, rejections %v: want the membership rejected for its intent", kinds(evs), rej)
				}
				return
			}
			if len(rej) != 0 || len(evs) != 2 {
				t.Fatalf("events %v, rejections %v", kinds(evs), rej)
			}
			if got := evs[1].Member.CallIntent; got != tc.want {
				t.Fatalf("call intent %q, want %q", got, tc.want)
			}
			ls, _ := st.LiveSession(AppCall, "")
			if ls.Members[0].CallIntent != tc.want {
				t.Fatalf("live member's call intent %q, want %q", ls.Members[0].CallIntent, tc.want)
			}
		})
	}
}
