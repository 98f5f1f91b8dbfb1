package aggregator

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// TestTimerArmedOnlyEarlier: a room's timer is armed for its first
// deadline and again only when a deadline comes earlier than the armed
// one; refreshes that move the soonest deadline later leave the armed
// schedule (it fires early as a no-op and arms the deadline of then). The
// member still expires at its deadline, by the timer alone.
func TestTimerArmedOnlyEarlier(t *testing.T) {
	e := newEnv(t)
	w := e.startWorker("w1", hooks{})
	e.waitOwned(w)
	room := id.RoomID("!timers:" + testHS)
	now := time.Now().UnixMilli()
	armed := func() float64 { return testutil.ToFloat64(w.w.m.TimersArmed) }
	var inputs []rawevent.RawEvent
	step := func(ev rawevent.RawEvent, wantArmed float64) {
		t.Helper()
		inputs = append(inputs, ev)
		e.publish([]rawevent.RawEvent{ev})
		e.waitIdle(countEvents(offline(inputs)), 20*time.Second)
		if got := armed(); got != wantArmed {
			t.Fatalf("after %s: %v timers armed, want %v", ev.EventID, got, wantArmed)
		}
	}
	alice := id.UserID("@alice:" + testHS)
	step(joinEv(room, alice, "A", now, 60_000, "$a"), 1) // first deadline: armed
	for i := range 3 {                                   // refreshes: the deadline moves later, nothing armed
		step(callMember(room, alice, "A", now+int64(i+1)*10, fmt.Sprintf("$r%d", i), fmt.Sprintf(
			`{"application":"m.call","call_id":"","scope":"m.room","device_id":"A","expires":%d,"created_ts":%d,%s}`,
			120_000+i*10_000, now, focus)), 1)
	}
	step(joinEv(room, "@bob:"+testHS, "B", now+100, 3_000, "$b"), 2) // an earlier deadline: armed
	// Bob expires by the timer alone, 3 s after his join.
	inputs = e.rawInputs()
	want := offline(inputs)
	deadline := time.Now().Add(15 * time.Second)
	for countEvents(e.sessionEvents()) < countEvents(want)+1 {
		if time.Now().After(deadline) {
			t.Fatalf("Bob did not expire: %d events", countEvents(e.sessionEvents()))
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.waitIdle(-1, 20*time.Second)
	assertMatches(t, e.sessionEvents(), offline(e.rawInputs()))
}
