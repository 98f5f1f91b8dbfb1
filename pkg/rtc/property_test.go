package rtc

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// randomEvents builds a random but plausible history of one room: every
// membership format, leaves, room membership changes, slots, redactions and
// malformed content, over a few users, devices and calls.
func randomEvents(rng *rand.Rand, n int) []rawevent.RawEvent {
	users := []string{alice, bob, carol}
	devices := []string{"A", "B"}
	calls := []string{"", "ROOM", "x"}
	var out []rawevent.RawEvent
	var ids []string
	for i := 0; i < n; i++ {
		ts := T0 + rng.Int64N(100_000)
		u := users[rng.IntN(len(users))]
		d := devices[rng.IntN(len(devices))]
		var e rawevent.RawEvent
		switch k := rng.IntN(12); {
		case k < 4:
			extra := ""
			if rng.IntN(2) == 0 {
				extra += fmt.Sprintf(`,"created_ts":%d`, ts-rng.Int64N(50_000))
			}
			if rng.IntN(2) == 0 {
				extra += fmt.Sprintf(`,"expires":%d`, 1000+rng.Int64N(120_000))
			}
			e = callJoin(u, d, calls[rng.IntN(len(calls))], ts, extra)
			if rng.IntN(3) == 0 {
				e = withKey(e, "_"+u+"_"+d) // the older key form: same device, another register
			}
		case k < 6:
			e = callLeave(u, d, ts)
		case k == 6:
			e = sticky(u, d, fmt.Sprintf("m-%s-%d", d, rng.IntN(2)), ts, "")
			e.StickyDurationMS = ptr(1000 + rng.Int64N(60_000))
		case k == 7:
			e = stickyLeave(u, fmt.Sprintf("m-%s-%d", d, rng.IntN(2)), ts)
		case k == 8:
			e = roomMember(u, []string{"join", "leave", "ban"}[rng.IntN(3)], ts)
		case k == 9:
			e = slot([]string{"open", "closed"}[rng.IntN(2)], ts)
		case k == 10 && len(ids) > 0:
			e = ev{typ: "m.room.redaction", sender: u, id: fmt.Sprintf("$red-%d", i), ts: ts, noState: true,
				redacts: ids[rng.IntN(len(ids))], content: `{}`}.raw()
		default:
			e = ev{typ: rawevent.TypeCallMember.Type, stateKey: u, sender: u, id: fmt.Sprintf("$arr-%d", i), ts: ts,
				content: fmt.Sprintf(`{"memberships":[{"application":"m.call","call_id":"","device_id":%q,"expires":%d}]}`, d, 1000+rng.Int64N(60_000))}.raw()
		}
		e.EventID += idSuffix(i)
		e.ReceivedAt = ts + rng.Int64N(5000)
		switch rng.IntN(10) {
		case 0: // a sender's clock far ahead: not believed (EffectiveTime)
			e.OriginServerTS = e.ReceivedAt + DefaultConfig().ClockSkewMS + 1 + rng.Int64N(80*365*24*hour)
		case 1: // a sender's clock ahead within the skew allowance: believed
			e.OriginServerTS = e.ReceivedAt + rng.Int64N(DefaultConfig().ClockSkewMS+1)
		}
		ids = append(ids, string(e.EventID))
		out = append(out, e)
	}
	return out
}

// recopy returns a copy of e as received again at another time (a
// re-delivery outside the ingest's duplicate window, or from another
// homeserver), or false when no other receive time keeps the copy's
// effective time: the same event id then differs only in what the earliest
// received copy decides (sticky deadline, the cap past receipt).
func recopy(rng *rand.Rand, e rawevent.RawEvent) (rawevent.RawEvent, bool) {
	skew := DefaultConfig().ClockSkewMS
	if e.Kind != rawevent.InputEvent || e.OriginServerTS > e.ReceivedAt+skew {
		return e, false
	}
	// Any receive time from origin_server_ts - skew on keeps the effective
	// time at origin_server_ts.
	e.ReceivedAt = e.OriginServerTS - skew + rng.Int64N(2*skew)
	return e, true
}

func idSuffix(i int) id.EventID { return id.EventID(fmt.Sprintf("#%d", i)) }

// fingerprint is the order-independent outcome: who is joined to what, with
// which membership, and the clock.
func fingerprint(st *RoomState) string {
	var out []string
	for _, s := range st.LiveSessions() {
		for _, m := range s.Members {
			out = append(out, fmt.Sprintf("%s|%s %s/%s %s joined=%d expires=%d ev=%s", s.Application, s.CallID,
				m.UserID, m.DeviceID, m.MembershipID, m.JoinedAt, m.ExpiresAt, m.EventID))
		}
	}
	slices.Sort(out)
	return fmt.Sprintf("clock=%d %v", st.Clock, out)
}

// TestPropertyOrderIndependence: every permutation (with duplicates) of the
// same events converges to the same joined members and live sessions. The
// events include senders' clocks far ahead (not believed) and within the
// skew allowance, and copies of events received at other times.
func TestPropertyOrderIndependence(t *testing.T) {
	for seed := uint64(1); seed <= 60; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		in := randomEvents(rng, 10+rng.IntN(40))
		for d := rng.IntN(6); d > 0; d-- { // copies received at other times
			if c, ok := recopy(rng, in[rng.IntN(len(in))]); ok {
				in = append(in, c)
			}
		}
		st, _, _ := run(t, in...)
		want := fingerprint(st)
		for p := 0; p < 8; p++ {
			perm := slices.Clone(in)
			rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
			for d := rng.IntN(5); d > 0; d-- { // duplicates, anywhere
				at := rng.IntN(len(perm) + 1)
				perm = slices.Insert(perm, at, in[rng.IntN(len(in))])
			}

			st, _, _ := run(t, perm...)
			if got := fingerprint(st); got != want {
				t.Fatalf("seed %d perm %d diverged:\n got  %s\n want %s", seed, p, got, want)
			}
		}
	}
}

// TestPropertyDeterministicReplay: the same input order gives byte-identical
// output events, and every event's seq and id follow from the room.
func TestPropertyDeterministicReplay(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		in := randomEvents(rand.New(rand.NewPCG(seed, 11)), 60)
		_, a, _ := run(t, in...)
		_, b, _ := run(t, in...)
		ab, _ := wire.Marshal(a)
		bb, _ := wire.Marshal(b)
		if string(ab) != string(bb) {
			t.Fatalf("seed %d: replay differs", seed)
		}
		for i, e := range a {
			if e.Seq != uint64(i+1) || e.ID != eventcodec.EventID(room, e.Seq) {
				t.Fatalf("seed %d: event %d has seq %d id %s", seed, i, e.Seq, e.ID)
			}
		}
		checkSessionGrammar(t, a)
	}
}

// checkSessionGrammar: per session, started comes first, ended last, joins
// and leaves balance, and participant counts follow them.
func checkSessionGrammar(t *testing.T, evs []events.SessionEvent) {
	t.Helper()
	count := map[string]int{}
	open := map[string]bool{}
	for _, e := range evs {
		k := e.Application + "|" + e.CallID
		switch e.Kind {
		case events.KindSessionStarted:
			if open[k] {
				t.Fatalf("seq %d: session %s started twice", e.Seq, k)
			}
			open[k] = true
		case events.KindMemberJoined:
			count[k]++
		case events.KindMemberLeft:
			count[k]--
		case events.KindSessionEnded:
			if count[k] != 0 {
				t.Fatalf("seq %d: session %s ended with %d members", e.Seq, k, count[k])
			}
			delete(open, k)
		}
		if e.Kind != events.KindSessionStarted && e.Kind != events.KindSessionEnded && !open[k] {
			t.Fatalf("seq %d: %s outside a session", e.Seq, e.Kind)
		}
		if e.Participants != count[k] && e.Kind != events.KindSessionEnded {
			t.Fatalf("seq %d: participants %d, joins-leaves %d", e.Seq, e.Participants, count[k])
		}
	}
}

// reconcileInputs adds what a reconciliation of the room could publish for
// the history in: for some state events, the copy the current state returns
// (source reconcile, received later), sometimes redacted
// (unsigned.redacted_because: content stripped), which also stands for an
// event the ingest never received otherwise (drop, when set, removes the
// original from the history: a missed push).
func reconcileInputs(rng *rand.Rand, in []rawevent.RawEvent, drop bool) []rawevent.RawEvent {
	out := slices.Clone(in)
	for i := 0; i < len(in); i++ {
		e := in[i]
		if !e.IsState() || rng.IntN(3) != 0 {
			continue
		}
		if e.OriginServerTS > e.ReceivedAt+DefaultConfig().ClockSkewMS {
			// A sender's clock not believed ranks the event at its receive
			// time: copies received at other times rank differently, as
			// for any re-delivery (see recopy), reconcile or not.
			continue
		}
		c := e
		c.Source = rawevent.SourceReconcile
		c.ReceivedAt = e.ReceivedAt + 1 + rng.Int64N(200_000)
		redactable := e.Type == rawevent.TypeCallMember.Type || e.Type == rawevent.TypeRTCSlot.Type
		if redactable && rng.IntN(2) == 0 {
			c.Content = []byte(`{}`)
			c.RedactedBy = id.EventID(fmt.Sprintf("$rr-%d", i))
			c.RedactedAt = e.OriginServerTS + rng.Int64N(20_000)
		}
		if drop && rng.IntN(3) == 0 {
			out = slices.DeleteFunc(out, func(o rawevent.RawEvent) bool { return o.EventID == e.EventID && o.RedactedBy == "" })
		}
		out = append(out, c)
	}
	return out
}

// TestPropertyReconcileOrderIndependence: with reconcile inputs (current
// state copies, redacted copies, events only the reconciliation brought),
// every permutation with duplicates still converges, and applying the same
// reconcile inputs once more (a second pass) changes nothing.
func TestPropertyReconcileOrderIndependence(t *testing.T) {
	for seed := uint64(1); seed <= 60; seed++ {
		rng := rand.New(rand.NewPCG(seed, 13))
		base := randomEvents(rng, 10+rng.IntN(40))
		in := reconcileInputs(rng, base, seed%2 == 0)
		st, _, _ := run(t, in...)
		want := fingerprint(st)
		var again []rawevent.RawEvent
		for _, e := range in {
			if e.Source == rawevent.SourceReconcile {
				again = append(again, e)
			}
		}
		for i := range again {
			if res := Apply(DefaultConfig(), st, &again[i]); len(res.Events) != 0 {
				t.Fatalf("seed %d: a second reconcile pass emitted %v", seed, kinds(res.Events))
			}
		}
		if got := fingerprint(st); got != want {
			t.Fatalf("seed %d: a second reconcile pass changed the outcome:\n got  %s\n want %s", seed, got, want)
		}
		for p := 0; p < 8; p++ {
			perm := slices.Clone(in)
			rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
			for d := rng.IntN(5); d > 0; d-- {
				at := rng.IntN(len(perm) + 1)
				perm = slices.Insert(perm, at, in[rng.IntN(len(in))])
			}
			st, evs, _ := run(t, perm...)
			checkSessionGrammar(t, evs)
			if got := fingerprint(st); got != want {
				t.Fatalf("seed %d perm %d diverged:\n got  %s\n want %s", seed, p, got, want)
			}
		}
	}
}

// TestPropertyReconcileDeterministicReplay: a history with reconcile inputs
// replays to byte-identical session events.
func TestPropertyReconcileDeterministicReplay(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		rng := rand.New(rand.NewPCG(seed, 17))
		in := reconcileInputs(rng, randomEvents(rng, 60), true)
		_, a, _ := run(t, in...)
		_, b, _ := run(t, in...)
		ab, _ := wire.Marshal(a)
		bb, _ := wire.Marshal(b)
		if string(ab) != string(bb) {
			t.Fatalf("seed %d: replay differs", seed)
		}
		checkSessionGrammar(t, a)
	}
}
