package rtc

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

const (
	alice = "@alice:example.org"
	bob   = "@bob:example.org"
	carol = "@carol:other.example"
	T0    = int64(1767225600000)
	hour  = int64(3_600_000)
)

func withKey(e rawevent.RawEvent, key string) rawevent.RawEvent {
	e.StateKey = &key
	e.EventID += id.EventID("-" + key)
	return e
}

// TestDecisions covers every decision of the semantics (docs/aggregator.md and the README's table) and the edge cases of
// of the MatrixRTC edge cases that apply to a server-side reducer (case numbers in names).
func TestDecisions(t *testing.T) {
	tests := []struct {
		name    string
		in      []rawevent.RawEvent
		kinds   []string
		members []string
		reject  string // substring of a rejection, if one is expected
		check   func(t *testing.T, st *RoomState, evs []events.SessionEvent)
	}{
		{
			name:    "case1 update with created_ts keeps membership and start",
			in:      []rawevent.RawEvent{callJoin(alice, "A", "", T0, ""), callJoin(alice, "A", "", T0+hour, fmt.Sprintf(`,"created_ts":%d,"expires":%d`, T0, 8*hour))},
			kinds:   []string{"session_started", "member_joined", "member_updated"},
			members: []string{"m.call| @alice:example.org/A"},
			check: func(t *testing.T, st *RoomState, evs []events.SessionEvent) {
				if m := evs[2].Member; m.JoinedAt != T0 || m.ExpiresAt != T0+8*hour {
					t.Fatalf("updated member %+v", m)
				}
			},
		},
		{
			name:    "case2 event without created_ts on a joined key is a rejoin: replaced, session continues",
			in:      []rawevent.RawEvent{callJoin(alice, "A", "", T0, ""), callJoin(alice, "A", "", T0+hour, "")},
			kinds:   []string{"session_started", "member_joined", "member_left/replaced", "member_joined"},
			members: []string{"m.call| @alice:example.org/A"},
			check: func(t *testing.T, st *RoomState, evs []events.SessionEvent) {
				if evs[3].Member.JoinedAt != T0+hour || evs[2].Participants != 0 || evs[3].Participants != 1 {
					t.Fatalf("rejoin %+v", evs[3])
				}
				s := st.Sessions[sessionKey("m.call", "")]
				if s.Joins != 2 || s.StartedAt != T0 {
					t.Fatalf("session %+v", s)
				}
			},
		},
		{
			name:  "case3 created_ts in the future is clamped to origin_server_ts",
			in:    []rawevent.RawEvent{callJoin(alice, "A", "", T0, fmt.Sprintf(`,"created_ts":%d`, T0+10*hour))},
			kinds: []string{"session_started", "member_joined"},
			check: func(t *testing.T, st *RoomState, evs []events.SessionEvent) {
				if m := evs[1].Member; m.JoinedAt != T0 || m.ExpiresAt != T0+4*hour {
					t.Fatalf("member %+v", m)
				}
			},
		},
		{
			name:   "case3 negative created_ts is invalid",
			in:     []rawevent.RawEvent{callJoin(alice, "A", "", T0, `,"created_ts":-5`)},
			reject: "created_ts must not be negative",
		},
		{
			name:   "case4 expires as a string is invalid",
			in:     []rawevent.RawEvent{callJoin(alice, "A", "", T0, `,"expires":"14400000"`)},
			reject: "expires must be a number",
		},
		{
			name:   "case4 fractional expires is invalid",
			in:     []rawevent.RawEvent{callJoin(alice, "A", "", T0, `,"expires":1.5`)},
			reject: "expires must be an integer",
		},
		{
			name:  "case4 huge expires is capped at 7 days",
			in:    []rawevent.RawEvent{callJoin(alice, "A", "", T0, fmt.Sprintf(`,"expires":%d`, 365*24*hour))},
			kinds: []string{"session_started", "member_joined"},
			check: func(t *testing.T, st *RoomState, evs []events.SessionEvent) {
				if evs[1].Member.ExpiresAt != T0+7*24*hour {
					t.Fatalf("expires at %d", evs[1].Member.ExpiresAt)
				}
			},
		},
		{
			name:  "case4 integral float expires is accepted",
			in:    []rawevent.RawEvent{callJoin(alice, "A", "", T0, `,"expires":1.8e7`)},
			kinds: []string{"session_started", "member_joined"},
		},
		{
			name:  "case5 expiry without input, by timer at the deadline",
			in:    []rawevent.RawEvent{callJoin(alice, "A", "", T0, `,"expires":5000`), tick(T0 + 5000)},
			kinds: []string{"session_started", "member_joined", "member_left/expired", "session_ended/expired"},
			check: func(t *testing.T, st *RoomState, evs []events.SessionEvent) {
				if evs[3].At != T0+5000 || evs[3].Summary.DurationMS != 5000 {
					t.Fatalf("ended %+v", evs[3])
				}
			},
		},
		{
			name: "case5 expiry is applied before a later event, at the deadline, not at the event",
			in: []rawevent.RawEvent{callJoin(alice, "A", "", T0, `,"expires":5000`),
				callJoin(bob, "B", "", T0+9000, "")},
			kinds:   []string{"session_started", "member_joined", "member_left/expired", "session_ended/expired", "session_started", "member_joined"},
			members: []string{"m.call| @bob:example.org/B"},
			check: func(t *testing.T, st *RoomState, evs []events.SessionEvent) {
				if evs[3].At != T0+5000 || evs[0].SessionID == evs[4].SessionID {
					t.Fatalf("end at %d; sessions %s %s", evs[3].At, evs[0].SessionID, evs[4].SessionID)
				}
			},
		},
		{
			name: "expiry of several members, each at its own deadline",
			in: []rawevent.RawEvent{callJoin(alice, "A", "", T0, `,"expires":5000`),
				callJoin(bob, "B", "", T0+1000, `,"expires":2000`), tick(T0 + 10000)},
			kinds: []string{"session_started", "member_joined", "member_joined", "member_left/expired", "member_left/expired", "session_ended/expired"},
			check: func(t *testing.T, st *RoomState, evs []events.SessionEvent) {
				if evs[3].Member.UserID != bob || evs[3].At != T0+3000 || evs[4].At != T0+5000 || evs[5].At != T0+5000 {
					t.Fatalf("expiry order/times: %v %d %d %d", evs[3].Member.UserID, evs[3].At, evs[4].At, evs[5].At)
				}
				if evs[5].Summary.PeakParticipants != 2 || evs[5].Summary.DistinctUsers != 2 || evs[5].Summary.Joins != 2 {
					t.Fatalf("summary %+v", evs[5].Summary)
				}
			},
		},
		{
			name:  "expiry boundary: a member is joined while now < deadline",
			in:    []rawevent.RawEvent{callJoin(alice, "A", "", T0, `,"expires":5000`), tick(T0 + 4999)},
			kinds: []string{"session_started", "member_joined"},
		},
		{
			name:  "a join already expired when received is never a member",
			in:    []rawevent.RawEvent{withRecv(callJoin(alice, "A", "", T0, `,"expires":5000`), T0+5000)},
			kinds: []string{},
		},
		{
			name: "case7 leave from another user (moderator clearing a ghost) is honoured",
			in: []rawevent.RawEvent{callJoin(alice, "A", "", T0, ""),
				withSender(callLeave(alice, "A", T0+1000), bob)},
			kinds: []string{"session_started", "member_joined", "member_left/leave", "session_ended/leave"},
		},
		{
			name:   "case7 join content on another user's key is ignored",
			in:     []rawevent.RawEvent{withSender(callJoin(alice, "A", "", T0, ""), bob)},
			reject: "state key names @alice:example.org but the sender is @bob:example.org",
		},
		{
			name:    "case8 device comes from content, never from the state key",
			in:      []rawevent.RawEvent{withKey(callJoin(alice, "CONTENTDEV", "", T0, ""), "_@alice:example.org_KEYDEV_m.call")},
			members: []string{"m.call| @alice:example.org/CONTENTDEV"},
			kinds:   []string{"session_started", "member_joined"},
		},
		{
			name: "case9 same device under two state keys is one member; the latest created_ts represents it",
			in: []rawevent.RawEvent{withKey(callJoin(alice, "A", "", T0, ""), "_@alice:example.org_A"),
				callJoin(alice, "A", "", T0+1000, "")},
			kinds:   []string{"session_started", "member_joined", "member_left/replaced", "member_joined"},
			members: []string{"m.call| @alice:example.org/A"},
			check: func(t *testing.T, st *RoomState, evs []events.SessionEvent) {
				if evs[3].Member.JoinedAt != T0+1000 {
					t.Fatalf("representative %+v", evs[3].Member)
				}
				// When the newer key leaves, the older membership still holds.
				res := Apply(DefaultConfig(), st, ptr(callLeave(alice, "A", T0+2000)))
				wantKinds(t, res.Events, "member_left/replaced", "member_joined")
				if res.Events[1].Member.JoinedAt != T0 || res.Events[1].Participants != 1 {
					t.Fatalf("fallback %+v", res.Events[1])
				}
			},
		},
		{
			name:    "case10 one user on two devices: two participants, one user",
			in:      []rawevent.RawEvent{callJoin(alice, "PHONE", "", T0, ""), callJoin(alice, "LAPTOP", "", T0+1, "")},
			kinds:   []string{"session_started", "member_joined", "member_joined"},
			members: []string{"m.call| @alice:example.org/LAPTOP", "m.call| @alice:example.org/PHONE"},
			check: func(t *testing.T, st *RoomState, evs []events.SessionEvent) {
				if evs[2].Participants != 2 || evs[2].Users != 1 {
					t.Fatalf("counts %d/%d", evs[2].Participants, evs[2].Users)
				}
			},
		},
		{
			name: "case13 out of order: an update delivered before its join wins, the join is stale",
			in: []rawevent.RawEvent{callJoin(alice, "A", "", T0+hour, fmt.Sprintf(`,"created_ts":%d,"expires":%d`, T0, 8*hour)),
				callJoin(alice, "A", "", T0, "")},
			kinds: []string{"session_started", "member_joined"},
			check: func(t *testing.T, st *RoomState, evs []events.SessionEvent) {
				if evs[1].Member.JoinedAt != T0 || evs[1].Member.ExpiresAt != T0+8*hour {
					t.Fatalf("member %+v", evs[1].Member)
				}
			},
		},
		{
			name: "case16 redaction before the event: the event counts as redacted",
			in: []rawevent.RawEvent{ev{typ: "m.room.redaction", sender: bob, id: "$red", ts: T0 + 5, redacts: "$alice:example.org-A-1767225600000", noState: true, content: `{}`}.raw(),
				callJoin(alice, "A", "", T0, "")},
			kinds: []string{},
		},
		{
			name: "case16 redaction of the current event is a leave",
			in: []rawevent.RawEvent{callJoin(alice, "A", "", T0, ""),
				ev{typ: "m.room.redaction", sender: bob, id: "$red", ts: T0 + 5, noState: true, content: `{"redacts":"$alice:example.org-A-1767225600000"}`}.raw()},
			kinds: []string{"session_started", "member_joined", "member_left/redacted", "session_ended/redacted"},
		},
		{
			name:  "case18 content with only leave_reason is a leave",
			in:    []rawevent.RawEvent{callJoin(alice, "A", "", T0, ""), withContent(callLeave(alice, "A", T0+5), `{"leave_reason":"m.lost_connection"}`)},
			kinds: []string{"session_started", "member_joined", "member_left/leave", "session_ended/leave"},
		},
		{
			name:    "case20 unknown application is a session of its own",
			in:      []rawevent.RawEvent{callJoin(alice, "A", "", T0, ""), withContent(withKey(callJoin(bob, "B", "", T0, ""), "_@bob:example.org_B_io.game"), `{"application":"io.game","call_id":"ROOM","device_id":"B","focus_active":{"type":"x"}}`)},
			members: []string{"io.game|ROOM @bob:example.org/B", "m.call| @alice:example.org/A"},
			kinds:   []string{"session_started", "member_joined", "session_started", "member_joined"},
		},
		{
			name:    "case21 m.call call_id \"\" and \"ROOM\" are the same session",
			in:      []rawevent.RawEvent{callJoin(alice, "A", "", T0, ""), callJoin(bob, "B", "ROOM", T0+1, "")},
			kinds:   []string{"session_started", "member_joined", "member_joined"},
			members: []string{"m.call| @alice:example.org/A", "m.call| @bob:example.org/B"},
		},
		{
			name:    "case21 other call ids are other sessions",
			in:      []rawevent.RawEvent{callJoin(alice, "A", "", T0, ""), callJoin(bob, "B", "breakout", T0+1, "")},
			kinds:   []string{"session_started", "member_joined", "session_started", "member_joined"},
			members: []string{"m.call| @alice:example.org/A", "m.call|breakout @bob:example.org/B"},
		},
		{
			name: "case23 leaving the room removes the member; rejoining the room restores the valid membership",
			in: []rawevent.RawEvent{callJoin(alice, "A", "", T0, ""), callJoin(bob, "B", "", T0, ""),
				roomMember(alice, "leave", T0+1000), roomMember(alice, "join", T0+2000)},
			kinds: []string{"session_started", "member_joined", "member_joined", "member_left/left_room", "member_joined"},
		},
		{
			name: "case23 a ban ends the session when the banned user was alone",
			in: []rawevent.RawEvent{callJoin(alice, "A", "", T0, ""),
				withSender(roomMember(alice, "ban", T0+1000), bob)},
			kinds: []string{"session_started", "member_joined", "member_left/left_room", "session_ended/left_room"},
		},
		{
			name: "case24 legacy array entries only for the room call",
			in: []rawevent.RawEvent{ev{typ: rawevent.TypeCallMember.Type, stateKey: alice, sender: alice, id: "$arr", ts: T0,
				content: `{"memberships":[{"application":"m.call","call_id":"","scope":"m.room","device_id":"A","expires":3600000},{"application":"m.call","call_id":"other","device_id":"B","expires":3600000},{"application":"m.call","call_id":"","device_id":"C","expires_ts":1767229200000}]}`}.raw()},
			kinds:   []string{"session_started", "member_joined", "member_joined"},
			members: []string{"m.call| @alice:example.org/A", "m.call| @alice:example.org/C"},
			reject:  "only the room call",
		},
		{
			name: "case25 legacy: expires wins over an inconsistent expires_ts",
			in: []rawevent.RawEvent{ev{typ: rawevent.TypeCallMember.Type, stateKey: alice, sender: alice, id: "$arr", ts: T0,
				content: `{"memberships":[{"application":"m.call","call_id":"","device_id":"A","expires":1000,"expires_ts":9999999999999}]}`}.raw()},
			kinds: []string{"session_started", "member_joined"},
			check: func(t *testing.T, st *RoomState, evs []events.SessionEvent) {
				if evs[1].Member.ExpiresAt != T0+1000 {
					t.Fatalf("expires at %d", evs[1].Member.ExpiresAt)
				}
			},
		},
		{
			name: "one input that swaps members never ends the session (legacy array device swap)",
			in: []rawevent.RawEvent{
				ev{typ: rawevent.TypeCallMember.Type, stateKey: alice, sender: alice, id: "$arr1", ts: T0,
					content: `{"memberships":[{"application":"m.call","call_id":"","device_id":"A","expires":3600000}]}`}.raw(),
				ev{typ: rawevent.TypeCallMember.Type, stateKey: alice, sender: alice, id: "$arr2", ts: T0 + 1,
					content: `{"memberships":[{"application":"m.call","call_id":"","device_id":"B","expires":3600000}]}`}.raw()},
			kinds:   []string{"session_started", "member_joined", "member_joined", "member_left/leave"},
			members: []string{"m.call| @alice:example.org/B"},
		},
		{
			name:   "case17 foci_preferred entries must be typed objects",
			in:     []rawevent.RawEvent{callJoin(alice, "A", "", T0, ""), withContent(callJoin(alice, "A", "", T0+1, ""), `{"application":"m.call","call_id":"","device_id":"A","focus_active":{"type":"livekit"},"foci_preferred":["junk"]}`)},
			kinds:  []string{"session_started", "member_joined", "member_left/invalid", "session_ended/invalid"},
			reject: "foci_preferred[0]",
		},
		{
			name:  "case28 unknown focus type still counts",
			in:    []rawevent.RawEvent{withContent(callJoin(alice, "A", "", T0, ""), `{"application":"m.call","call_id":"","device_id":"A","focus_active":{"type":"some-future-sfu","focus_selection":"whatever"}}`)},
			kinds: []string{"session_started", "member_joined"},
		},
		{
			name: "case29 sticky and state membership for the same device: one member",
			in: []rawevent.RawEvent{callJoin(alice, "A", "", T0, ""),
				sticky(alice, "A", "mid-1", T0+1000, "")},
			kinds:   []string{"session_started", "member_joined", "member_left/replaced", "member_joined"},
			members: []string{"m.call| @alice:example.org/A"},
		},
		{
			name: "case30 sticky conflict: the longest-lived event wins whatever the order",
			in: []rawevent.RawEvent{sticky(alice, "A", "mid-1", T0+1000, `,"x":1`),
				sticky(alice, "A", "mid-1", T0, "")},
			kinds: []string{"session_started", "member_joined", "member_updated"},
			check: func(t *testing.T, st *RoomState, evs []events.SessionEvent) {
				// The older event does not replace the register, but it is
				// the membership's join: the start moves back to it.
				if m := evs[2].Member; m.JoinedAt != T0 || m.ExpiresAt != T0+1000+hour {
					t.Fatalf("member %+v", m)
				}
			},
		},
		{
			name:  "sticky leave from another sender does not touch the member (key includes sender)",
			in:    []rawevent.RawEvent{sticky(alice, "A", "mid-1", T0, ""), withSender(stickyLeave(alice, "mid-1", T0+1), bob)},
			kinds: []string{"session_started", "member_joined"},
		},
		{
			name:   "sticky member.user_id must be the sender",
			in:     []rawevent.RawEvent{withSender(sticky(alice, "A", "mid-1", T0, ""), bob)},
			reject: "is not the sender",
		},
		{
			name:  "case32 slot closed ends the session; reopening restores unexpired members",
			in:    []rawevent.RawEvent{slot("open", T0), callJoin(alice, "A", "", T0+1, ""), slot("closed", T0+2), slot("open", T0+3)},
			kinds: []string{"session_started", "member_joined", "member_left/slot_closed", "session_ended/slot_closed", "session_started", "member_joined"},
		},
		{
			name:  "a slot only gates rooms that have one: invalid slot counts as closed",
			in:    []rawevent.RawEvent{withContent(slot("open", T0), `{"status":"open","application":{"type":"io.other"}}`), callJoin(alice, "A", "", T0+1, "")},
			kinds: []string{}, reject: "does not belong to application",
		},
		{
			name:  "case35 notifications and other types are ignored",
			in:    []rawevent.RawEvent{ev{typ: "org.matrix.msc4075.rtc.notification", sender: alice, id: "$n", ts: T0, noState: true, content: `{}`}.raw()},
			kinds: []string{}, reject: "does not concern calls",
		},
		{
			name: "a session id differs between two sessions of the same call",
			in: []rawevent.RawEvent{callJoin(alice, "A", "", T0, ""), callLeave(alice, "A", T0+1),
				callJoin(alice, "A", "", T0+2, "")},
			kinds: []string{"session_started", "member_joined", "member_left/leave", "session_ended/leave", "session_started", "member_joined"},
			check: func(t *testing.T, st *RoomState, evs []events.SessionEvent) {
				if evs[0].SessionID == evs[4].SessionID {
					t.Fatal("same session id for two sessions")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, evs, rej := run(t, tt.in...)
			if tt.kinds != nil {
				wantKinds(t, evs, tt.kinds...)
			}
			if tt.members != nil {
				if got := members(st); !slices.Equal(got, tt.members) {
					t.Fatalf("members:\n got  %v\n want %v", got, tt.members)
				}
			}
			if tt.reject != "" {
				found := false
				for _, r := range rej {
					found = found || strings.Contains(r.Reason, tt.reject)
				}
				if !found {
					t.Fatalf("no rejection containing %q in %v", tt.reject, rej)
				}
			}
			if tt.check != nil {
				tt.check(t, st, evs)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func withRecv(e rawevent.RawEvent, at int64) rawevent.RawEvent    { e.ReceivedAt = at; return e }
func withSender(e rawevent.RawEvent, s string) rawevent.RawEvent  { e.Sender = id.UserID(s); return e }
func withContent(e rawevent.RawEvent, c string) rawevent.RawEvent { e.Content = []byte(c); return e }

func sticky(user, device, memberID string, ts int64, extra string) rawevent.RawEvent {
	return ev{typ: rawevent.TypeRTCMemberUnstable.Type, sender: user, noState: true, sticky: hour,
		id: fmt.Sprintf("$st-%s-%d", memberID, ts), ts: ts,
		content: fmt.Sprintf(`{"slot_id":"m.call#ROOM","application":{"type":"m.call"},"member":{"user_id":%q,"device_id":%q,"id":%q},"rtc_transports":[{"type":"livekit"}],"versions":[],"msc4354_sticky_key":%q%s}`,
			user, device, memberID, memberID, extra)}.raw()
}

func stickyLeave(user, memberID string, ts int64) rawevent.RawEvent {
	return ev{typ: rawevent.TypeRTCMemberUnstable.Type, sender: user, noState: true, sticky: hour,
		id: fmt.Sprintf("$stl-%s-%d", memberID, ts), ts: ts, content: fmt.Sprintf(`{"msc4354_sticky_key":%q}`, memberID)}.raw()
}

func slot(status string, ts int64) rawevent.RawEvent {
	return ev{typ: "m.rtc.slot", stateKey: "m.call#ROOM", sender: "@admin:example.org", id: fmt.Sprintf("$slot-%s-%d", status, ts),
		ts: ts, content: fmt.Sprintf(`{"status":%q,"application":{"type":"m.call"}}`, status)}.raw()
}

func TestIdempotentAndStale(t *testing.T) {
	st := NewRoomState(room)
	in := callJoin(alice, "A", "", T0, "")
	if res := Apply(DefaultConfig(), st, &in); len(res.Events) != 2 || res.Stale {
		t.Fatalf("first apply: %+v", res)
	}
	before, _ := wire.Marshal(st)
	for i := 0; i < 3; i++ {
		res := Apply(DefaultConfig(), st, &in)
		if len(res.Events) != 0 || !res.Stale {
			t.Fatalf("re-apply %d: %+v", i, res)
		}
	}
	after, _ := wire.Marshal(st)
	if string(before) != string(after) {
		t.Fatal("re-applying an input changed the state")
	}
}

func TestWrongRoomRejected(t *testing.T) {
	st := NewRoomState("!other:example.org")
	in := callJoin(alice, "A", "", T0, "")
	res := Apply(DefaultConfig(), st, &in)
	if len(res.Events) != 0 || len(res.Rejections) != 1 || len(st.Registers) != 0 {
		t.Fatalf("%+v", res)
	}
}

func TestNextDeadline(t *testing.T) {
	st, _, _ := run(t, callJoin(alice, "A", "", T0, `,"expires":9000`), callJoin(bob, "B", "x", T0, `,"expires":4000`))
	if d := st.NextDeadline(); d != T0+4000 {
		t.Fatalf("next deadline %d", d)
	}
	Apply(DefaultConfig(), st, ptr(tick(T0+4000)))
	if d := st.NextDeadline(); d != T0+9000 {
		t.Fatalf("after tick: next deadline %d", d)
	}
}

// TestStateRoundTrip: encoding the state between inputs (as the aggregator
// does through KV) changes nothing about the outputs.
func TestStateRoundTrip(t *testing.T) {
	in := scenario()
	_, want, _ := run(t, in...)
	st := NewRoomState(room)
	var got []events.SessionEvent
	for i := range in {
		b, err := wire.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		st = &RoomState{}
		if err := wire.Unmarshal(b, st); err != nil {
			t.Fatal(err)
		}
		got = append(got, Apply(DefaultConfig(), st, &in[i]).Events...)
	}
	wb, _ := wire.Marshal(want)
	gb, _ := wire.Marshal(got)
	if string(wb) != string(gb) {
		t.Fatalf("outputs differ after state round trips:\n%v\n%v", kinds(want), kinds(got))
	}
}

// scenario is a busy room: every format, rejoins, room leaves, a slot,
// redactions and expiries.
func scenario() []rawevent.RawEvent {
	return []rawevent.RawEvent{
		callJoin(alice, "A", "", T0, ""),
		callJoin(bob, "B", "", T0+100, `,"expires":60000`),
		sticky(carol, "C", "m-c", T0+200, ""),
		callJoin(alice, "A", "", T0+300, fmt.Sprintf(`,"created_ts":%d,"expires":%d`, T0, 8*hour)),
		roomMember(bob, "leave", T0+400),
		roomMember(bob, "join", T0+500),
		callJoin(bob, "B2", "breakout", T0+600, ""),
		ev{typ: "m.room.redaction", sender: alice, id: "$red1", ts: T0 + 700, noState: true, redacts: "$bob-B2-1767225600600", content: `{}`}.raw(),
		tick(T0 + 70000),
		stickyLeave(carol, "m-c", T0+80000),
		callLeave(alice, "A", T0+90000),
	}
}

// TestStateEncodingDeterministic: equal states give equal bytes, whatever
// the map iteration order (Go randomises it on every range), so the stored
// record and its compressed size are stable.
func TestStateEncodingDeterministic(t *testing.T) {
	st, _, _ := run(t, scenario()[:7]...)
	if len(st.Registers) < 3 || len(st.Sessions) < 1 {
		t.Fatalf("scenario too small: %d registers, %d sessions", len(st.Registers), len(st.Sessions))
	}
	first, err := wire.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		again, _ := wire.Marshal(st)
		if string(again) != string(first) {
			t.Fatalf("encoding %d differs from the first", i)
		}
	}
}

// TestDeadlineHeapRebuilds: many refreshes in a room of 100 members make the
// deadline heap rebuild itself (mostly stale entries) again and again; after
// every step the next deadline is still the soonest member's, and members
// expire in deadline order.
func TestDeadlineHeapRebuilds(t *testing.T) {
	const n = 100
	st, updates := roomWithMembers(t, room, n)
	for i := 0; i < 20*n; i++ {
		u := updates[(i/n)%2][(i*37)%n]
		u.OriginServerTS += int64(i) * 10
		u.ReceivedAt = u.OriginServerTS
		u.EventID = id.EventID(fmt.Sprint("$h", i))
		Apply(DefaultConfig(), st, &u)
		checkInvariants(t, st)
	}
	if len(st.deadlines) > 2*n+64 {
		t.Fatalf("heap of %d entries for %d members", len(st.deadlines), n)
	}
	var last int64
	for st.NextDeadline() != 0 {
		d := st.NextDeadline()
		res := Apply(DefaultConfig(), st, ptr(tick(d)))
		if len(res.Events) == 0 || d < last {
			t.Fatalf("tick at %d (after %d): %v", d, last, kinds(res.Events))
		}
		last = d
		checkInvariants(t, st)
	}
}
