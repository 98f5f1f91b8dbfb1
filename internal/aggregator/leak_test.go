package aggregator

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestWorkerLeavesNoGoroutine runs a worker through inputs and a graceful
// stop, then checks that every goroutine running this package's code has
// ended (partition runners, pin watchers, heartbeat, watches, stats). The
// embedded server's goroutines stay: the test's server lives on.
func TestWorkerLeavesNoGoroutine(t *testing.T) {
	e := newEnv(t)
	tw := e.startWorker("leak", hooks{})
	e.waitOwned(tw)
	in := workload(5, 3, time.Now().UnixMilli())
	e.publish(in)
	e.waitIdle(countEvents(offline(in)), 30*time.Second)
	if n := len(ours()); n == 0 {
		t.Fatal("no goroutine of the worker seen while it runs: the check would see nothing")
	}
	tw.stop()
	tw.nc.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := ours()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of the worker still run after its stop:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ours are the stacks of the goroutines running code of this package
// (other than the test's own).
func ours() []string {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "rtc-sessions/internal/aggregator.") && !strings.Contains(g, "testing.tRunner") &&
			!strings.Contains(g, "aggregator.ours(") {
			out = append(out, g)
		}
	}
	return out
}
