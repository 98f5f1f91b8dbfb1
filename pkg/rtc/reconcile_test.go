package rtc

import (
	"slices"
	"strconv"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// fromReconcile marks e as re-read from the room's current state by the
// ingest's reconciliation, received at recv.
func fromReconcile(e rawevent.RawEvent, recv int64) rawevent.RawEvent {
	e.Source = rawevent.SourceReconcile
	e.ReceivedAt = recv
	return e
}

// redactedCopy is e as the current state returns it after a redaction:
// content stripped (custom types keep no content key) and
// unsigned.redacted_because (RedactedBy, RedactedAt) set.
func redactedCopy(e rawevent.RawEvent, by id.EventID, at int64) rawevent.RawEvent {
	e.Content = []byte(`{}`)
	e.RedactedBy, e.RedactedAt = by, at
	return e
}

// TestReconcileSemantics: what a reconcile input does (docs/aggregator.md
// "Reconciliation"). A reconcile input is an ordinary event input; these
// are the situations reconciliation exists for.
func TestReconcileSemantics(t *testing.T) {
	join := callJoin(alice, "A", "", T0, "")
	leave := callLeave(alice, "A", T0+10_000)
	later := T0 + 60_000 // when the ingest re-read the state
	tests := []struct {
		name    string
		in      []rawevent.RawEvent
		kinds   []string // of the last input only
		members []string
		check   func(t *testing.T, st *RoomState, last []events.SessionEvent)
	}{
		{
			name:  "missed leave: the state's newer {} is applied as a late event",
			in:    []rawevent.RawEvent{join, fromReconcile(leave, later)},
			kinds: []string{"member_left/leave", "session_ended/leave"},
			check: func(t *testing.T, _ *RoomState, last []events.SessionEvent) {
				if last[0].At != leave.OriginServerTS {
					t.Errorf("left at %d, want the leave's origin_server_ts %d", last[0].At, leave.OriginServerTS)
				}
			},
		},
		{
			name:  "missed redaction: the held event comes back redacted",
			in:    []rawevent.RawEvent{join, fromReconcile(redactedCopy(join, "$red", T0+5_000), later)},
			kinds: []string{"member_left/redacted", "session_ended/redacted"},
			check: func(t *testing.T, st *RoomState, last []events.SessionEvent) {
				if last[0].At != T0+5_000 {
					t.Errorf("left at %d, want the redaction's time %d", last[0].At, T0+5_000)
				}
				if !slices.Contains(st.Redacted, join.EventID) {
					t.Errorf("the redaction is not remembered: %v", st.Redacted)
				}
			},
		},
		{
			name: "missed event that is redacted in the current state: it replaces the older event, as redacted",
			in: []rawevent.RawEvent{join,
				fromReconcile(redactedCopy(callJoin(alice, "A", "", T0+20_000, ""), "$red2", T0+30_000), later)},
			kinds: []string{"member_left/redacted", "session_ended/redacted"},
		},
		{
			name:    "the state holds what we hold: stale, nothing emitted",
			in:      []rawevent.RawEvent{join, fromReconcile(join, later)},
			kinds:   []string{},
			members: []string{"m.call| @alice:example.org/A"},
		},
		{
			name:  "missed join: applied as a late join",
			in:    []rawevent.RawEvent{fromReconcile(join, later)},
			kinds: []string{"session_started", "member_joined"},
			check: func(t *testing.T, _ *RoomState, last []events.SessionEvent) {
				if m := last[1].Member; m.JoinedAt != T0 || m.ExpiresAt != T0+4*hour {
					t.Errorf("joined %d expires %d, want %d and %d", m.JoinedAt, m.ExpiresAt, T0, T0+4*hour)
				}
			},
			members: []string{"m.call| @alice:example.org/A"},
		},
		{
			name:  "missed room leave of a caller",
			in:    []rawevent.RawEvent{join, fromReconcile(roomMember(alice, "leave", T0+10_000), later)},
			kinds: []string{"member_left/left_room", "session_ended/left_room"},
		},
		{
			name: "case 14 rollback to an older leave: the newer join we hold stays (last writer wins) until it expires",
			in: []rawevent.RawEvent{callLeave(alice, "A", T0-10_000), join,
				fromReconcile(callLeave(alice, "A", T0-10_000), later)},
			kinds:   []string{},
			members: []string{"m.call| @alice:example.org/A"},
			check: func(t *testing.T, st *RoomState, _ []events.SessionEvent) {
				if d := st.NextDeadline(); d != T0+4*hour {
					t.Errorf("the kept join expires at %d, want %d (expiry bounds it)", d, T0+4*hour)
				}
			},
		},
		{
			name: "case 14 rollback to an older join: the newer leave we hold stays, no ghost returns",
			in:   []rawevent.RawEvent{join, leave, fromReconcile(join, later)},
			// the join is held in no register any more: it is older than the leave
			kinds: []string{},
		},
		{
			// (the reason is the one a pushed redaction of the slot gives:
			// the members no longer count because the slot is closed)
			name:  "a slot whose held open event comes back redacted closes",
			in:    []rawevent.RawEvent{slot("open", T0-1000), join, fromReconcile(redactedCopy(slot("open", T0-1000), "$red3", T0+5_000), later)},
			kinds: []string{"member_left/slot_closed", "session_ended/slot_closed"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, _, _ := run(t, tc.in[:len(tc.in)-1]...)
			last := tc.in[len(tc.in)-1]
			res := Apply(DefaultConfig(), st, &last)
			checkInvariants(t, st)
			if tc.kinds == nil {
				tc.kinds = []string{}
			}
			wantKinds(t, res.Events, tc.kinds...)
			if got := members(st); !slices.Equal(got, tc.members) {
				t.Errorf("members %v, want %v", got, tc.members)
			}
			if tc.check != nil {
				tc.check(t, st, res.Events)
			}
			// Idempotent: the same reconcile input again changes nothing.
			again := Apply(DefaultConfig(), st, &last)
			if len(again.Events) != 0 {
				t.Errorf("the reconcile input applied twice emitted %v", kinds(again.Events))
			}
		})
	}
}

// TestReconcileOrderIndependent: a reconcile input and the push it repairs
// give the same outcome in either order (the push may arrive late, after
// the reconciliation, e.g. a homeserver retrying a transaction).
func TestReconcileOrderIndependent(t *testing.T) {
	join := callJoin(alice, "A", "", T0, "")
	leave := callLeave(alice, "A", T0+10_000)
	newer := callJoin(alice, "A", "", T0+20_000, "")
	later := T0 + 60_000
	cases := [][]rawevent.RawEvent{
		{join, fromReconcile(leave, later), withRecv(leave, later+1000)},
		{join, fromReconcile(redactedCopy(join, "$red", T0+5_000), later),
			ev{typ: "m.room.redaction", sender: alice, id: "$red", ts: T0 + 5_000, noState: true, redacts: string(join.EventID), content: `{}`}.raw()},
		{join, fromReconcile(redactedCopy(newer, "$red", T0+30_000), later), withRecv(newer, later+1000)},
	}
	for i, in := range cases {
		want := ""
		for p, perm := range permutations(in) {
			st, evs, _ := run(t, perm...)
			checkSessionGrammar(t, evs)
			got := fingerprint(st)
			if p == 0 {
				want = got
			} else if got != want {
				t.Fatalf("case %d perm %d: %s, want %s", i, p, got, want)
			}
		}
		if want != "clock="+strconv.FormatInt(later+1000, 10)+" []" && want != "clock="+strconv.FormatInt(later, 10)+" []" {
			t.Errorf("case %d: %s, want no member left", i, want)
		}
	}
}

// permutations lists every order of in (in is small).
func permutations(in []rawevent.RawEvent) [][]rawevent.RawEvent {
	if len(in) <= 1 {
		return [][]rawevent.RawEvent{slices.Clone(in)}
	}
	var out [][]rawevent.RawEvent
	for i := range in {
		rest := slices.Concat(in[:i:i], in[i+1:])
		for _, p := range permutations(rest) {
			out = append(out, append([]rawevent.RawEvent{in[i]}, p...))
		}
	}
	return out
}
