package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

const (
	figRSS = "aggregator RSS, peak (VmHWM)"
	figKV  = "KV bytes per live member"
	tgtRSS = "≤ 300 MiB"
	tgtKV  = "≤ 1 KiB"

	maxRSS       = 300 << 20
	rssSettle    = 10 * time.Second
	maxKVPerUser = 1024
	// workersBucketStream is the heartbeat bucket's stream: not session state.
	workersBucketStream = "KV_" + rawevent.BucketWorkers
)

// runLive fills the aggregator with LiveRooms sessions of LiveDevices
// members each (long expiries, so nothing ends) and reads its memory and
// the size of the state the KV buckets hold.
func runLive(ctx context.Context, e *env) ([]Row, error) {
	agg, err := e.startReadyAggregator(ctx)
	if err != nil {
		return nil, err
	}
	idle, err := readMemory(agg.Pid())
	if err != nil {
		return nil, err
	}
	rawBefore, _, err := streamBytes(ctx, e.c.js, rawevent.StreamRaw)
	if err != nil {
		return nil, err
	}
	kvBefore, _, err := e.stateBytes(ctx)
	if err != nil {
		return nil, err
	}

	w := &Workload{Prefix: "live", Rooms: e.o.LiveRooms, Devices: e.o.LiveDevices,
		ExpiresMS: 7 * 24 * 3_600_000, BaseMS: time.Now().UnixMilli()}
	members := w.Rooms * w.Devices // the first Rooms*Devices inputs are cycle 0's joins
	label := fmt.Sprintf(" @ %s sessions / %s members", fmtCount(int64(w.Rooms)), fmtCount(int64(members)))
	start := time.Now()
	next := func(i int) (*nats.Msg, error) { ev := w.Input(i); return rawMsg(&ev) }
	feed := "fed the joins as fast as the server stores them (a backlog: the peak includes what is in flight; -live-rate paces the fill)"
	if e.o.LiveRate > 0 {
		feed = fmt.Sprintf("fed the joins at %s", fmtRate(float64(e.o.LiveRate)))
		if _, _, err := e.c.paced(ctx, e.o.LiveRate, members, 24*time.Hour, next, nil); err != nil {
			return nil, fmt.Errorf("publish joins: %w", err)
		}
	} else if err := e.c.publishAll(ctx, members, next); err != nil {
		return nil, fmt.Errorf("publish joins: %w", err)
	}
	e.logf("published %s joins at %s", fmtCount(int64(members)), fmtRate(float64(members)/time.Since(start).Seconds()))
	lastLog := time.Now()
	if _, err := e.drain(ctx, 60*time.Second, func(st partitionState) {
		if time.Since(lastLog) > 10*time.Second {
			lastLog = time.Now()
			e.logf("%s of %s joins left", fmtCount(int64(st.backlog())), fmtCount(int64(members)))
		}
	}); err != nil {
		return nil, fmt.Errorf("joins not consumed: %w", err)
	}
	e.logf("%s joins consumed in %s", fmtCount(int64(members)), time.Since(start).Round(time.Second))

	mem, err := readMemory(agg.Pid())
	if err != nil {
		return nil, err
	}
	// What it keeps once the backlog is gone: the Go runtime returns freed
	// heap to the system only gradually.
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(rssSettle):
	}
	settled, err := readMemory(agg.Pid())
	if err != nil {
		return nil, err
	}
	rawAfter, _, err := streamBytes(ctx, e.c.js, rawevent.StreamRaw)
	if err != nil {
		return nil, err
	}
	kvAfter, parts, err := e.stateBytes(ctx)
	if err != nil {
		return nil, err
	}
	var rows []Row
	v := Met
	if settled.HWM > maxRSS {
		v = Missed
	}
	rows = append(rows, Row{Figure: figRSS + label,
		Measured: fmt.Sprintf("%s (%s %s later)", fmtMiB(settled.HWM), fmtMiB(settled.RSS), rssSettle),
		Baseline: fmtMiB(idle.HWM) + " idle, same binary", Target: tgtRSS, Verdict: v,
		Note: fmt.Sprintf("VmHWM and VmRSS from /proc/PID/status of the one aggregator holding every partition, "+
			"%s; %s when the backlog was done; the target applies to the peak", feed, fmtMiB(mem.RSS))})

	perMember := float64(kvAfter-kvBefore) / float64(members)
	v = Met
	if perMember > maxKVPerUser {
		v = Missed
	}
	dlq, _ := dlqCount(ctx, e.c.js)
	note := fmt.Sprintf("bytes of the KV streams (%s) after the joins, divided by the members", strings.Join(parts, " + "))
	if dlq > 0 {
		note += fmt.Sprintf("; %d inputs in RTC_DLQ", dlq)
	}
	rows = append(rows, Row{Figure: figKV + label, Measured: fmt.Sprintf("%.0f B", perMember),
		Baseline: fmt.Sprintf("%.0f B of RTC_RAW per join", float64(rawAfter-rawBefore)/float64(members)),
		Target:   tgtKV, Verdict: v, Note: note})
	return rows, nil
}

// stateBytes sums the bytes of every rtc KV bucket except the worker
// heartbeats (today rtc_rooms and rtc_sessions; whatever buckets a new
// layout adds are counted too) and describes each.
func (e *env) stateBytes(ctx context.Context) (uint64, []string, error) {
	var names []string
	l := e.c.js.StreamNames(ctx)
	for n := range l.Name() {
		if strings.HasPrefix(n, "KV_rtc_") && n != workersBucketStream {
			names = append(names, n)
		}
	}
	if err := l.Err(); err != nil {
		return 0, nil, fmt.Errorf("list streams: %w", err)
	}
	slices.Sort(names)
	var total uint64
	var parts []string
	for _, n := range names {
		b, msgs, err := streamBytes(ctx, e.c.js, n)
		if err != nil {
			return 0, nil, err
		}
		total += b
		parts = append(parts, fmt.Sprintf("%s %s keys %s", strings.TrimPrefix(n, "KV_"), fmtCount(int64(msgs)), fmtMiB(int64(b))))
	}
	return total, parts, nil
}
