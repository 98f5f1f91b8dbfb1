package rtc

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// gcConfig has a short horizon (20 s + 2 s), so that histories of minutes
// collect registers all the time.
func gcConfig() Config {
	return Config{DefaultExpiresMS: 10_000, MaxExpiresMS: 20_000, ClockSkewMS: 2_000}
}

// runWith applies inputs in order with cfg, checking the invariants after
// each, and returns the state and the events.
func runWith(t testing.TB, cfg Config, inputs ...rawevent.RawEvent) (*RoomState, []events.SessionEvent) {
	t.Helper()
	st := NewRoomState(room)
	var evs []events.SessionEvent
	for i := range inputs {
		res := Apply(cfg, st, &inputs[i])
		evs = append(evs, res.Events...)
		checkInvariants(t, st)
		if cfg.keepRegisters {
			continue
		}
		for key, reg := range st.Registers {
			if collectable(key) && gcAt(cfg, reg) < st.Clock {
				t.Fatalf("input %d: register %q (rank %d, ts %d) outlived the horizon at clock %d", i, key, reg.Rank, reg.TS, st.Clock)
			}
		}
		for key, at := range st.LastEnded {
			if at+gcHorizon(cfg) < st.Clock {
				t.Fatalf("input %d: the end %d of session %q outlived the horizon at clock %d", i, at, key, st.Clock)
			}
		}
	}
	return st, evs
}

func TestRegistersAreCollectedPastTheHorizon(t *testing.T) {
	cfg := gcConfig()
	join := callJoin(alice, "A", "", T0, `,"expires":5000`)
	leave := callLeave(alice, "A", T0+3_000)
	st, evs := runWith(t, cfg, join, leave)
	if got := kinds(evs); !slices.Equal(got, []string{"session_started", "member_joined", "member_left/leave", "session_ended/leave"}) {
		t.Fatalf("events %v", got)
	}
	if len(st.Registers) != 1 {
		t.Fatalf("%d registers after the leave, want its 1", len(st.Registers))
	}
	horizon := T0 + 3_000 + gcHorizon(cfg)
	st.TrackChanges()
	if res := Apply(cfg, st, ptr(tick(horizon))); len(res.Events) != 0 || len(st.Registers) != 1 {
		t.Fatalf("at the horizon: events %v, %d registers; want none and the register kept", kinds(res.Events), len(st.Registers))
	}
	if res := Apply(cfg, st, ptr(tick(horizon+1))); len(res.Events) != 0 || len(st.Registers) != 0 {
		t.Fatalf("past the horizon: events %v, %d registers; want none and no register", kinds(res.Events), len(st.Registers))
	}
	// A store writes the collected register's deletion.
	if c := st.TakeChanges(); c == nil || len(c.Registers) != 1 {
		t.Fatalf("changes %+v: want the collected register", c)
	}
	// The join arriving again (a late copy) counts for nobody and is
	// collected at once: its claims expired as long ago.
	late := join
	late.ReceivedAt = horizon + 2
	res := Apply(cfg, st, &late)
	if len(res.Events) != 0 || len(st.Registers) != 0 || len(st.claims) != 0 {
		t.Fatalf("late join: events %v, %d registers, %d claims; want none", kinds(res.Events), len(st.Registers), len(st.claims))
	}
	checkInvariants(t, st)
}

// A long-lived room: devices join and leave over hours; the registers held
// are those of the last horizon, not every device that ever joined.
func TestRegistersStayBoundedInALongLivedRoom(t *testing.T) {
	cfg := gcConfig()
	st := NewRoomState(room)
	most := 0
	for i := range 2_000 {
		at := T0 + int64(i)*1_000
		dev := fmt.Sprintf("D%d", i)
		for _, in := range []rawevent.RawEvent{callJoin(alice, dev, "", at, `,"expires":5000`), callLeave(alice, dev, at+500)} {
			Apply(cfg, st, &in)
		}
		most = max(most, len(st.Registers))
	}
	checkInvariants(t, st)
	// One device a second, a register per device, a horizon of 22 s.
	if most > 25 {
		t.Fatalf("%d registers held at most, want those of the horizon (about 23)", most)
	}
}

// gcHistory is a random history of one room over minutes: memberships of
// every format with expiries around the horizon, leaves, room membership
// changes, slots, redactions, timer ticks, and copies of earlier events:
// redeliveries minutes later (lateCopies: where collection matters; such a
// copy may change what the earliest receipt decides, a documented order
// dependence of its own), or copies that keep their effective time.
func gcHistory(rng *rand.Rand, n int, lateCopies bool) []rawevent.RawEvent {
	in := randomEvents(rng, n)
	for i := range in {
		// Spread the history over about ten horizons.
		shift := rng.Int64N(200_000)
		in[i].ReceivedAt += shift
		in[i].OriginServerTS += shift
	}
	for d := 5 + rng.IntN(10); d > 0; d-- {
		c := in[rng.IntN(len(in))]
		if lateCopies {
			c.ReceivedAt += rng.Int64N(120_000)
		} else if c, ok := recopy(rng, c); ok {
			in = append(in, c)
		}
		if lateCopies {
			in = append(in, c)
		}
	}
	for d := rng.IntN(6); d > 0; d-- {
		in = append(in, tick(T0+rng.Int64N(300_000)))
	}
	return in
}

// TestPropertyCollectionChangesNoEvent: for random histories in random
// orders, the session events with collection equal those without it, byte
// for byte, and so do the live sessions.
func TestPropertyCollectionChangesNoEvent(t *testing.T) {
	keep := gcConfig()
	keep.keepRegisters = true
	collected, endsCollected := 0, 0
	for seed := uint64(1); seed <= 200; seed++ {
		rng := rand.New(rand.NewPCG(seed, 21))
		in := gcHistory(rng, 20+rng.IntN(60), true)
		rng.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
		stGC, evGC := runWith(t, gcConfig(), in...)
		stKeep, evKeep := runWith(t, keep, in...)
		if !reflect.DeepEqual(evGC, evKeep) {
			t.Fatalf("seed %d: events differ with collection:\n got  %v\n want %v", seed, kinds(evGC), kinds(evKeep))
		}
		if got, want := fingerprint(stGC), fingerprint(stKeep); got != want {
			t.Fatalf("seed %d: live sessions differ with collection:\n got  %s\n want %s", seed, got, want)
		}
		collected += len(stKeep.Registers) - len(stGC.Registers)
		endsCollected += len(stKeep.LastEnded) - len(stGC.LastEnded)
	}
	if collected == 0 {
		t.Fatal("no register was ever collected: the histories do not exercise collection")
	}
	if endsCollected == 0 {
		t.Fatal("no session end was ever collected: the histories do not exercise its collection")
	}
}

// TestPropertyCollectionOrderIndependence: with collection, every
// permutation (with duplicates) of a history still converges to the same
// live sessions.
func TestPropertyCollectionOrderIndependence(t *testing.T) {
	for seed := uint64(1); seed <= 60; seed++ {
		rng := rand.New(rand.NewPCG(seed, 23))
		in := gcHistory(rng, 20+rng.IntN(40), false)
		st, _ := runWith(t, gcConfig(), in...)
		want := fingerprint(st)
		for p := 0; p < 6; p++ {
			perm := slices.Clone(in)
			rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
			for d := rng.IntN(5); d > 0; d-- {
				perm = slices.Insert(perm, rng.IntN(len(perm)+1), in[rng.IntN(len(in))])
			}
			st, _ := runWith(t, gcConfig(), perm...)
			if got := fingerprint(st); got != want {
				t.Fatalf("seed %d perm %d diverged:\n got  %s\n want %s", seed, p, got, want)
			}
		}
	}
}
