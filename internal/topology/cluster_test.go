package topology_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/rtcsessions/rtc-sessions/internal/proctest"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }

// TestTimersOnACluster: on a 3-node cluster with 3 replicas, Ensure creates
// the topology and then verifies it (the effective configurations a
// clustered server reports pass the checks, the timer source included), and
// schedules in RTC_TIMERS fire into their rooms' partitions of RTC_RAW.
func TestTimersOnACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("three nats-server processes; skipped with -short")
	}
	c := proctest.New(t).StartNATSCluster(3)
	_, js := c.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := small()
	cfg.Replicas = 3
	h, err := topology.Ensure(ctx, js, cfg, topology.ModeCreate)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := topology.Ensure(ctx, js, cfg, topology.ModeVerify); err != nil {
		t.Fatalf("verify on the cluster: %v", err)
	}
	if _, err := topology.EnsureRaw(ctx, js, cfg, topology.ModeVerify); err != nil {
		t.Fatalf("EnsureRaw on the cluster: %v", err)
	}
	for i := range 8 {
		tok := events.Token(fmt.Sprintf("!cluster%d:example.org", i))
		if _, err := js.PublishMsg(ctx, schedule(tok, time.Now(), "timer "+tok)); err != nil {
			t.Fatalf("schedule a timer: %v", err)
		}
		subj := fmt.Sprintf("%s.%d.%s.%s", rawevent.PartPrefix, rawevent.Partition(tok, cfg.Partitions), tok, rawevent.TimerPathToken)
		if m := waitMsg(ctx, t, h.Raw, subj); string(m.Data) != "timer "+tok {
			t.Fatalf("%s: %q", subj, m.Data)
		}
	}
}
