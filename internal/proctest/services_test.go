package proctest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// TestServices runs the real binaries through the harness: nats-server,
// an aggregator that becomes ready, `ingest replay` of the demo file, the
// aggregator's session events, a nats-server restart the aggregator rides
// out, and a SIGKILL.
func TestServices(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries; skipped with -short")
	}
	h := New(t)
	ns := h.StartNATS("")
	agg, err := h.StartAggregator(AggregatorConfig{ID: "svc-a", NATSURL: ns.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if err := agg.WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	sample, err := filepath.Abs("../../configs/demo/sample.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	out, err := h.IngestReplay(IngestConfig{Name: "replay", NATSURL: ns.URL()}, sample)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "stored") {
		t.Errorf("ingest replay printed %q", out)
	}
	_, js := ns.Connect()
	sessionEvents := func() (uint64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, events.StreamEvents)
		if err != nil {
			return 0, err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return 0, err
		}
		return info.State.Msgs, nil
	}
	var n uint64
	if err := agg.WaitFor(30*time.Second, func() error {
		n, err = sessionEvents()
		if err == nil && n == 0 {
			err = os.ErrNotExist
		}
		return err
	}); err != nil {
		t.Fatalf("no session events from the replayed demo: %v", err)
	}

	if err := ns.Restart(200 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := agg.WaitReady(30 * time.Second); err != nil {
		t.Fatalf("the aggregator after the nats-server restart: %v", err)
	}
	if after, err := sessionEvents(); err != nil || after < n {
		t.Errorf("after the restart RTC_EVENTS holds %d (err %v), before %d: the store was not kept", after, err, n)
	}
	if err := agg.Kill(); err != nil {
		t.Fatal(err)
	}
	if agg.ExitedOnItsOwn() || agg.Err() == nil {
		t.Errorf("after SIGKILL: %s", agg.State())
	}
}
