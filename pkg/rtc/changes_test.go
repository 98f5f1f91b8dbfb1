package rtc

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/wire"
)

// parts flattens a state into the parts Changes names, each encoded, so that
// a test can tell which parts an Apply touched.
func parts(t testing.TB, st *RoomState) map[string]string {
	t.Helper()
	out := map[string]string{}
	put := func(k string, v any) {
		b, err := wire.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out[k] = string(b)
	}
	for k, r := range st.Registers {
		put("r|"+k, r)
	}
	for u, m := range st.RoomMembers {
		put("u|"+string(u), m)
	}
	for s, v := range st.Slots {
		put("s|"+s, v)
	}
	for sk, s := range st.Sessions {
		put("x|"+sk, []any{s.App, s.CallID, s.ID, s.StartedAt, s.Peak, s.Joins})
		for mk, m := range s.Members {
			put("m|"+sk+"|"+mk, m)
		}
		for u := range s.SeenUsers {
			put("v|"+sk+"|"+string(u), true)
		}
	}
	for sk, at := range st.LastEnded {
		put("e|"+sk, at)
	}
	return out
}

func changedParts(c *Changes) map[string]bool {
	out := map[string]bool{}
	for k := range c.Registers {
		out["r|"+k] = true
	}
	for u := range c.RoomMembers {
		out["u|"+string(u)] = true
	}
	for s := range c.Slots {
		out["s|"+s] = true
	}
	for s := range c.Sessions {
		out["x|"+s] = true
	}
	for m := range c.Members {
		out["m|"+m.Session+"|"+m.Member] = true
	}
	for v := range c.SeenUsers {
		out["v|"+v.Session+"|"+string(v.User)] = true
	}
	for sk := range c.LastEnded {
		out["e|"+sk] = true
	}
	for sk, ended := range c.Ended {
		for _, s := range ended {
			for u := range s.SeenUsers {
				out["v|"+sk+"|"+string(u)] = true
			}
		}
	}
	return out
}

// TestChangesCoverEveryChange applies random histories with change tracking
// and checks after every input that each part of the state that differs
// from before (added, changed or removed) is named in the changes: a store
// that writes only the changed parts stores exactly the state.
func TestChangesCoverEveryChange(t *testing.T) {
	for seed := uint64(0); seed < 40; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		st := NewRoomState(room)
		st.TrackChanges()
		evs := randomEvents(rng, 120)
		var clock int64
		for i := range evs {
			in := &evs[i]
			if rng.IntN(6) == 0 { // a timer firing between events
				tm := rawevent.RawEvent{Kind: rawevent.InputTimer, RoomID: room, Deadline: clock + rng.Int64N(60_000)}
				tm.ReceivedAt = tm.Deadline
				in = &tm
			}
			clock = max(clock, in.ReceivedAt)
			applyTracked(t, st, in)
		}
	}
}

// applyTracked applies one input to a tracked state and fails the test if
// a part of the state that differs from before (added, changed or removed)
// is not named in the changes.
func applyTracked(t testing.TB, st *RoomState, in *rawevent.RawEvent) {
	t.Helper()
	before := parts(t, st)
	Apply(DefaultConfig(), st, in)
	after := parts(t, st)
	named := changedParts(st.TakeChanges())
	for k, v := range after {
		if before[k] != v && !named[k] {
			t.Fatalf("input %s: part %q changed but is not in the changes", in.EventID, k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok && !named[k] {
			t.Fatalf("input %s: part %q removed but is not in the changes", in.EventID, k)
		}
	}
}

// TestChangesSameMembershipNewEvent: a refresh that changes nothing visible
// still changes the member's event id, which a store must write.
func TestChangesSameMembershipNewEvent(t *testing.T) {
	st := NewRoomState(room)
	st.TrackChanges()
	extra := fmt.Sprintf(`,"created_ts":%d,"expires":3600000`, T0)
	applyTracked(t, st, ptr(callJoin(alice, "A", "", T0, extra)))
	again := callJoin(alice, "A", "", T0, extra)
	again.EventID += "-again"
	again.OriginServerTS++
	applyTracked(t, st, &again)
}

func TestChangesOffByDefault(t *testing.T) {
	st := NewRoomState(room)
	Apply(DefaultConfig(), st, ptr(callJoin(alice, "A", "", T0, "")))
	if c := st.TakeChanges(); c != nil {
		t.Fatalf("changes recorded without TrackChanges: %+v", c)
	}
	st.TrackChanges()
	Apply(DefaultConfig(), st, ptr(callJoin(bob, "B", "", T0+1, "")))
	c := st.TakeChanges()
	if c.Empty() {
		t.Fatal("a join recorded no changes")
	}
	if !st.TakeChanges().Empty() {
		t.Fatal("TakeChanges did not start a new set")
	}
}

func TestRebuildDerived(t *testing.T) {
	st, _, _ := run(t, callJoin(alice, "A", "", T0, ""), callJoin(alice, "B", "", T0+1, ""), callJoin(bob, "B", "", T0+2, ""))
	want := map[string]map[id.UserID]int{}
	for k, s := range st.Sessions {
		want[k] = map[id.UserID]int(s.UserDevices)
		s.UserDevices = nil
	}
	st.RebuildDerived()
	for k, s := range st.Sessions {
		if !reflect.DeepEqual(map[id.UserID]int(s.UserDevices), want[k]) {
			t.Fatalf("session %q: rebuilt %v, want %v", k, s.UserDevices, want[k])
		}
	}
}

// TestEventIDMatches: the reducer's allocation-free event id is
// eventcodec.EventID.
func TestEventIDMatches(t *testing.T) {
	rooms := []id.RoomID{"", "!call:example.org", id.RoomID("!" + strings.Repeat("r", 254)), id.RoomID("!" + strings.Repeat("r", 300))}
	for _, r := range rooms {
		for _, seq := range []uint64{0, 1, 255, 1 << 40, ^uint64(0)} {
			if got, want := eventID(r, seq), eventcodec.EventID(r, seq); got != want {
				t.Fatalf("eventID(%q, %d) = %s, want %s", r, seq, got, want)
			}
		}
	}
}

// TestRebuildMembers: after every input of random histories, the members
// rebuilt from the registers equal the members Apply maintained.
func TestRebuildMembers(t *testing.T) {
	for seed := uint64(0); seed < 40; seed++ {
		rng := rand.New(rand.NewPCG(seed, 11))
		st := NewRoomState(room)
		evs := randomEvents(rng, 120)
		for i := range evs {
			Apply(DefaultConfig(), st, &evs[i])
			want := parts(t, st)
			cp := NewRoomState(room)
			b, err := wire.Marshal(st)
			if err != nil {
				t.Fatal(err)
			}
			if err := wire.Unmarshal(b, cp); err != nil {
				t.Fatal(err)
			}
			for _, s := range cp.Sessions {
				s.Members = nil // what a store that keeps no members loads
			}
			if err := cp.RebuildMembers(); err != nil {
				t.Fatalf("seed %d input %d: %v", seed, i, err)
			}
			got := parts(t, cp)
			for k, v := range want {
				if got[k] != v {
					t.Fatalf("seed %d input %d: part %q rebuilt differently", seed, i, k)
				}
			}
			if len(got) != len(want) {
				t.Fatalf("seed %d input %d: %d parts rebuilt, want %d", seed, i, len(got), len(want))
			}
		}
	}
}
