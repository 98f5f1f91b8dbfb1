package aggregator

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
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
	w := e.startWorkerCfg("w1", cfg, hooks{beforeApply: func(in *rawevent.RawEvent, _ uint64) {
		if in.EventID == stuckID {
			<-release
		}
	}})
	e.waitOwned(w)
	now := time.Now().UnixMilli()
	var evs []rawevent.RawEvent
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
	e.publish([]rawevent.RawEvent{leave})
	waitGauge("live_sessions after an end", func() float64 { return testutil.ToFloat64(w.w.m.LiveSessions) }, 2)
	waitGauge("live_members after an end", func() float64 { return testutil.ToFloat64(w.w.m.LiveMembers) }, 23)

	// A stuck partition: its first input blocks, five more wait behind it.
	room := id.RoomID("!stuck:" + testHS)
	part := strconv.Itoa(rawevent.Partition(events.Token(string(room)), e.topo.Partitions))
	stuck := []rawevent.RawEvent{joinEv(room, "@s:"+testHS, "S", now+200, 0, stuckID)}
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

// TestEndedSessionsLeaveNothing: an ended session is purged from
// rtc_sessions with a marker that expires (session_marker_ttl), so the
// bucket does not keep one marker per session that ever ended; a watcher
// still sees the end.
func TestEndedSessionsLeaveNothing(t *testing.T) {
	e := newEnv(t)
	w := e.startWorker("w1", hooks{})
	e.waitOwned(w)
	now := time.Now().UnixMilli()
	var evs []rawevent.RawEvent
	for r := range 5 {
		room := id.RoomID(fmt.Sprintf("!ended%d:%s", r, testHS))
		evs = append(evs, joinEv(room, "@u:"+testHS, "D", now+int64(r), 0, fmt.Sprintf("$j%d", r)),
			leaveEv(room, "@u:"+testHS, "D", now+100+int64(r), fmt.Sprintf("$l%d", r)))
	}
	ended := make(chan string, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watching := make(chan struct{})
	go func() {
		_ = events.WatchSessions(ctx, e.js, func(key string, s *events.LiveSession) error {
			if s == nil {
				ended <- key
			}
			return nil
		}, func() { close(watching) })
	}()
	<-watching
	e.publish(evs)
	e.waitIdle(countEvents(offline(evs)), 30*time.Second)
	for range 5 {
		select {
		case <-ended:
		case <-ctx.Done():
			t.Fatal("a watcher did not see every session end")
		}
	}
	s, err := e.js.Stream(ctx, "KV_"+events.BucketSessions)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rtc_sessions still holds %d messages after every session ended", info.State.Msgs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
