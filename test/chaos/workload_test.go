package chaos

import (
	"slices"
	"testing"
	"time"

	"github.com/rtcsessions/rtc-sessions/internal/pipelinetest"
)

// TestWorkloadRules checks the generator: sizes within the range,
// the deadline guards and the quiet window hold, deliveries are in time
// order, and the same seed gives the same workload.
func TestWorkloadRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		seed uint64
	}{{"seed 1", 1}, {"seed 42", 42}, {"seed 20261201", 20261201}, {"seed max", ^uint64(0)}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaultWorkloadConfig(tc.seed)
			w := pipelinetest.Generate(cfg)
			if n := w.ForwardedCount(); n < 300 || n > 750 {
				t.Errorf("%d forwarded inputs, want 300-750", n)
			}
			kinds := map[string]int{}
			for _, e := range w.Events {
				k := e.Type
				switch {
				case e.Hangup:
					k += "/hangup"
				case e.Refresh:
					k += "/refresh"
				case e.Type == pipelinetest.RoomMember:
					k += "/" + e.Membership
				}
				kinds[k]++
			}
			for _, k := range []string{pipelinetest.CallMember, pipelinetest.CallMember + "/refresh", pipelinetest.CallMember + "/hangup",
				pipelinetest.RoomMember + "/join", pipelinetest.RoomMember + "/leave", pipelinetest.RoomMsg} {
				if kinds[k] == 0 {
					t.Errorf("no %s events: %v", k, kinds)
				}
			}
			expiring := 0
			for room, dls := range w.Deadlines {
				for _, d := range dls {
					if d < time.Hour && d > cfg.Feed+10*time.Second {
						t.Errorf("room %s: deadline %s too late: the test would wait for it", room, d)
					}
					if q := cfg.Quiet[0]; d >= q.From && d < q.To {
						t.Errorf("room %s: deadline %s in the quiet window", room, d)
					}
					if d < time.Hour {
						expiring++
					}
				}
			}
			if expiring < 50 {
				t.Errorf("only %d short deadlines", expiring)
			}
			byRoom := map[string][]*pipelinetest.GenEvent{}
			for _, e := range w.Events {
				byRoom[e.Room] = append(byRoom[e.Room], e)
			}
			for room, evs := range byRoom {
				if !pipelinetest.RoomRespectsGuards(evs, w.Deadlines[room]) {
					t.Errorf("room %s: an input is planned within the guard of a deadline", room)
				}
			}
			if !slices.IsSortedFunc(w.Deliveries, func(a, b pipelinetest.Delivery) int { return int(a.At - b.At) }) {
				t.Error("deliveries not in time order")
			}
			again := pipelinetest.Generate(cfg)
			if len(again.Deliveries) != len(w.Deliveries) {
				t.Fatal("the same seed gave another workload")
			}
			for i := range w.Deliveries {
				a, b := w.Deliveries[i], again.Deliveries[i]
				if a.At != b.At || a.HS != b.HS || string(a.Ev.JSON(1)) != string(b.Ev.JSON(1)) {
					t.Fatalf("delivery %d differs for the same seed", i)
				}
			}
			t.Logf("%d events (%d forwarded), %d deliveries, %d short deadlines, last at %s; %v",
				len(w.Events), w.ForwardedCount(), len(w.Deliveries), expiring, w.LastShortDeadline, kinds)
		})
	}
}
