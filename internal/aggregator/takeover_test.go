package aggregator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// TestTakeoverBackToBack kills the owner of a partition, then the worker
// that took it over. The pins live 30 s (pinned_ttl) but heartbeats only
// 2 s: each time, the next owner releases the dead worker's pin as soon as
// its heartbeat is gone and consumes the partition within a few seconds,
// well under the 15 s target, instead of waiting for the pin to time out.
// No worker releases a pin that a live worker holds, and the output equals
// the offline reduction.
func TestTakeoverBackToBack(t *testing.T) {
	e := newEnv(t)
	e.topo.PinnedTTL = 30 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if _, err := topology.Ensure(ctx, e.js, e.topo, topology.ModeCreate); err != nil {
		t.Fatal(err)
	}
	cancel()
	ws := map[string]*testWorker{}
	for _, name := range []string{"w1", "w2", "w3"} {
		ws[name] = e.startWorker(name, hooks{})
	}
	e.waitOwned(ws["w1"], ws["w2"], ws["w3"])

	const part = 0
	var rooms []id.RoomID
	for i := 0; len(rooms) < 3; i++ {
		if r := id.RoomID(fmt.Sprintf("!takeover%d:%s", i, testHS)); rawevent.Partition(events.Token(string(r)), e.topo.Partitions) == part {
			rooms = append(rooms, r)
		}
	}
	var inputs []rawevent.RawEvent
	probe := func(i int) time.Duration {
		start := time.Now()
		in := joinEv(rooms[i], id.UserID(fmt.Sprintf("@probe%d:%s", i, testHS)), "P", time.Now().UnixMilli(), 0, fmt.Sprintf("$probe%d", i))
		inputs = append(inputs, in)
		e.publish([]rawevent.RawEvent{in})
		e.waitIdle(countEvents(offline(inputs)), 60*time.Second)
		return time.Since(start)
	}
	probe(0) // the owner of the partition is pinned now
	alive := []string{"w1", "w2", "w3"}
	for round := 1; round <= 2; round++ {
		victim := Owner(alive, part)
		ws[victim].w.kill()
		var rest []string
		for _, n := range alive {
			if n != victim {
				rest = append(rest, n)
			}
		}
		alive = rest
		took := probe(round)
		t.Logf("death %d (%s): partition %d consumed again by %s after %s", round, victim, part, Owner(alive, part), took.Round(100*time.Millisecond))
		if took > 15*time.Second {
			t.Errorf("death %d: partition consumed again after %s, want <= 15 s", round, took)
		}
		if took > e.topo.PinnedTTL {
			t.Errorf("death %d: take-over waited for the pin to time out (%s)", round, took)
		}
	}
	released := 0.0
	for _, w := range ws { // the second death's victim released the first one's pin
		released += testutil.ToFloat64(w.w.m.DeadPinsReleased)
	}
	if released < 2 {
		t.Errorf("dead pins released: %v, want at least 2 (one per death)", released)
	}
	assertMatches(t, e.sessionEvents(), offline(inputs))
}

// TestStartingWorkerTakesOnlyItsShare: a worker that joins running workers
// learns them before its first assignment, so it acquires exactly the
// partitions the final assignment gives it and never one it must give back.
func TestStartingWorkerTakesOnlyItsShare(t *testing.T) {
	e := newEnv(t)
	w1, w2 := e.startWorker("w1", hooks{}), e.startWorker("w2", hooks{})
	e.waitOwned(w1, w2)
	w3 := e.startWorker("w3", hooks{})
	e.waitOwned(w1, w2, w3)
	share := len(w3.w.Owned())
	acquired := testutil.ToFloat64(w3.w.m.Handoffs.WithLabelValues("acquired"))
	released := testutil.ToFloat64(w3.w.m.Handoffs.WithLabelValues("released"))
	if acquired != float64(share) || released != 0 {
		t.Errorf("w3 acquired %v and released %v partitions, want exactly its share of %d and none", acquired, released, share)
	}
}
