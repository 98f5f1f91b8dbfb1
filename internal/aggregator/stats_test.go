package aggregator

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// TestGaugesTellTheTruth: the live session and member gauges follow
// rtc_sessions (sessions of every size, also after they end), and a
// partition that is stuck shows its backlog in consumer_lag without any
// delivery moving it.
func TestGaugesTellTheTruth(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	const stuckID = "$stuck"
	cfg := testWorkerConfig()
	cfg.StatsInterval = 200 * time.Millisecond
	w := e.startWorkerCfg("w1", cfg, hooks{beforeApply: func(in *events.RawEvent, _ uint64) {
		if in.EventID == stuckID {
			<-release
		}
	}})
	e.waitOwned(w)
	now := time.Now().UnixMilli()
	var evs []events.RawEvent
	sizes := []int{1, 3, 20} // one large session: members in keys
	for r, n := range sizes {
		room := id.RoomID(fmt.Sprintf("!gauge%d:%s", r, testHS))
		for m := range n {
			evs = append(evs, joinEv(room, id.UserID(fmt.Sprintf("@u%d:%s", m, testHS)), "D", now+int64(m), 0, fmt.Sprintf("$g%d-%d", r, m)))
		}
	}
	e.publish(evs)
	e.waitIdle(countEvents(offline(evs)), 30*time.Second)
	waitGauge := func(what string, get func() float64, want float64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for get() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s = %v, want %v", what, get(), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitGauge("live_sessions", func() float64 { return testutil.ToFloat64(w.w.m.LiveSessions) }, 3)
	waitGauge("live_members", func() float64 { return testutil.ToFloat64(w.w.m.LiveMembers) }, 24)
	leave := leaveEv(evs[0].RoomID, "@u0:"+testHS, "D", now+100, "$gleave")
	e.publish([]events.RawEvent{leave})
	waitGauge("live_sessions after an end", func() float64 { return testutil.ToFloat64(w.w.m.LiveSessions) }, 2)
	waitGauge("live_members after an end", func() float64 { return testutil.ToFloat64(w.w.m.LiveMembers) }, 23)

	// A stuck partition: its first input blocks, five more wait behind it.
	room := id.RoomID("!stuck:" + testHS)
	part := strconv.Itoa(events.Partition(events.Token(string(room)), e.topo.Partitions))
	stuck := []events.RawEvent{joinEv(room, "@s:"+testHS, "S", now+200, 0, stuckID)}
	for i := range 5 {
		stuck = append(stuck, joinEv(room, id.UserID(fmt.Sprintf("@s%d:%s", i, testHS)), "S", now+300+int64(i), 0, fmt.Sprintf("$s%d", i)))
	}
	e.publish(stuck[:1])
	time.Sleep(300 * time.Millisecond) // the first is being applied, alone in its batch
	e.publish(stuck[1:])
	waitGauge("consumer_lag of the stuck partition", func() float64 { return testutil.ToFloat64(w.w.m.ConsumerLag.WithLabelValues(part)) }, 6)
	close(release)
	waitGauge("consumer_lag once it flows", func() float64 { return testutil.ToFloat64(w.w.m.ConsumerLag.WithLabelValues(part)) }, 0)
}
