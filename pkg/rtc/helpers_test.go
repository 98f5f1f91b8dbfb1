package rtc

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

const (
	room = id.RoomID("!call:example.org")
	// NOW is the reference clock of the example events.
	NOW int64 = 1767231000000
)

// example loads an example event file from testdata.
func example(t testing.TB, name string) []rawevent.RawEvent {
	t.Helper()
	f, err := os.Open("testdata/examples/" + name + ".jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []rawevent.RawEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		ev, err := rawevent.ParseClientEvent(sc.Bytes(), "", 0)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out = append(out, ev)
	}
	return out
}

// received returns the events with received_at set to at.
func received(evs []rawevent.RawEvent, at int64) []rawevent.RawEvent {
	out := slices.Clone(evs)
	for i := range out {
		out[i].ReceivedAt = at
	}
	return out
}

// run applies inputs to a fresh room and returns the state, the events and
// the rejections.
func run(t testing.TB, inputs ...rawevent.RawEvent) (*RoomState, []events.SessionEvent, []Rejection) {
	t.Helper()
	st := NewRoomState(room)
	var evs []events.SessionEvent
	var rej []Rejection
	for i := range inputs {
		res := Apply(DefaultConfig(), st, &inputs[i])
		evs = append(evs, res.Events...)
		rej = append(rej, res.Rejections...)
		checkInvariants(t, st)
	}
	return st, evs, rej
}

func tick(at int64) rawevent.RawEvent {
	return rawevent.RawEvent{V: 1, Kind: rawevent.InputTimer, RoomID: room, Deadline: at, ReceivedAt: at}
}

// kinds renders events as "kind[/reason]" strings for compact assertions.
func kinds(evs []events.SessionEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = string(e.Kind)
		if e.Reason != "" {
			out[i] += "/" + string(e.Reason)
		}
	}
	return out
}

func wantKinds(t testing.TB, evs []events.SessionEvent, want ...string) {
	t.Helper()
	if got := kinds(evs); !slices.Equal(got, want) {
		t.Fatalf("events:\n got  %v\n want %v", got, want)
	}
}

// members lists the live members as "session user/device" strings.
func members(st *RoomState) []string {
	var out []string
	for _, s := range st.LiveSessions() {
		for _, m := range s.Members {
			out = append(out, fmt.Sprintf("%s|%s %s/%s", s.Application, s.CallID, m.UserID, m.DeviceID))
		}
	}
	slices.Sort(out)
	return out
}

// checkInvariants asserts what must hold after every input: each live member
// is exactly the winner of its identity at the room's clock, every claimed
// identity with a winner is a live member, counts add up, no session is
// empty, and NextDeadline is in the future.
func checkInvariants(t testing.TB, st *RoomState) {
	t.Helper()
	live := map[ident]*SessionMember{}
	for k, s := range st.Sessions {
		if len(s.Members) == 0 {
			t.Fatalf("session %q is live with no members", k)
		}
		users := map[id.UserID]int{}
		for _, m := range s.Members {
			live[identOf(s, m)] = m
			users[m.Member.UserID]++
		}
		if len(users) != len(s.UserDevices) {
			t.Fatalf("session %q: user count %d, index says %d", k, len(users), len(s.UserDevices))
		}
		if s.Peak < len(s.Members) {
			t.Fatalf("session %q: peak %d < %d members", k, s.Peak, len(s.Members))
		}
	}
	for i := range st.claims {
		w := st.winner(i, st.Clock)
		m := live[i]
		switch {
		case w == nil && m != nil:
			t.Fatalf("%v is live but has no eligible claim at %d", i, st.Clock)
		case w != nil && m == nil:
			t.Fatalf("%v has eligible claim %s but is not live", i, w.EventID)
		case w != nil && m.Member.MembershipID != w.MembershipID:
			t.Fatalf("%v: live membership %s, winner %s", i, m.Member.MembershipID, w.MembershipID)
		case w != nil && !sameMember(m.Member, toMember(w)):
			// A store may keep sessions without their members and rebuild
			// them from the registers (RebuildMembers): they must be equal.
			t.Fatalf("%v: live member %+v differs from its winning claim %+v", i, m.Member, toMember(w))
		}
	}
	for i := range live {
		if _, ok := st.claims[i]; !ok {
			t.Fatalf("%v is live but unclaimed", i)
		}
	}
	var soonest int64
	for _, m := range live {
		if soonest == 0 || m.Member.ExpiresAt < soonest {
			soonest = m.Member.ExpiresAt
		}
	}
	if d := st.NextDeadline(); d != soonest {
		t.Fatalf("next deadline %d, the members say %d", d, soonest)
	}
	if soonest != 0 && soonest <= st.Clock {
		t.Fatalf("next deadline %d is not after the clock %d", soonest, st.Clock)
	}
}

// ev builds a Matrix event for tests.
type ev struct {
	typ, stateKey, sender, id string
	ts, recv                  int64
	content                   string
	sticky                    int64
	noState                   bool
	redacts                   string
}

func (e ev) raw() rawevent.RawEvent {
	r := rawevent.RawEvent{V: 1, Kind: rawevent.InputEvent, RoomID: room, EventID: id.EventID(e.id),
		Type: e.typ, Sender: id.UserID(e.sender), OriginServerTS: e.ts, ReceivedAt: e.recv,
		Content: json.RawMessage(e.content), Redacts: id.EventID(e.redacts)}
	if r.ReceivedAt == 0 {
		r.ReceivedAt = e.ts
	}
	if !e.noState {
		k := e.stateKey
		r.StateKey = &k
	}
	if e.sticky > 0 {
		d := e.sticky
		r.StickyDurationMS = &d
	}
	return r
}

// callJoin is an Element Call per-device membership.
func callJoin(user, device, callID string, ts int64, extra string) rawevent.RawEvent {
	content := fmt.Sprintf(`{"application":"m.call","call_id":%q,"scope":"m.room","device_id":%q,"focus_active":{"type":"livekit","focus_selection":"multi_sfu"},"foci_preferred":[{"type":"livekit","livekit_service_url":"https://rtc.example.org"}]%s}`,
		callID, device, extra)
	return ev{typ: rawevent.TypeCallMember.Type, stateKey: "_" + user + "_" + device + "_m.call", sender: user,
		id: fmt.Sprintf("$%s-%s-%d", strings.TrimPrefix(user, "@"), device, ts), ts: ts, content: content}.raw()
}

func callLeave(user, device string, ts int64) rawevent.RawEvent {
	return ev{typ: rawevent.TypeCallMember.Type, stateKey: "_" + user + "_" + device + "_m.call", sender: user,
		id: fmt.Sprintf("$leave-%s-%s-%d", strings.TrimPrefix(user, "@"), device, ts), ts: ts, content: `{}`}.raw()
}

func roomMember(user, membership string, ts int64) rawevent.RawEvent {
	return ev{typ: rawevent.TypeRoomMember.Type, stateKey: user, sender: user,
		id: fmt.Sprintf("$rm-%s-%s-%d", strings.TrimPrefix(user, "@"), membership, ts), ts: ts,
		content: fmt.Sprintf(`{"membership":%q}`, membership)}.raw()
}

func sameMember(a, b events.Member) bool {
	return a.UserID == b.UserID && a.DeviceID == b.DeviceID && a.MembershipID == b.MembershipID &&
		a.JoinedAt == b.JoinedAt && a.ExpiresAt == b.ExpiresAt && string(a.FocusActive) == string(b.FocusActive) &&
		string(a.FociPreferred) == string(b.FociPreferred) && a.Format == b.Format && a.EventID == b.EventID
}
