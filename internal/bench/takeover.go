package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

const (
	figTakeover1 = "takeover after SIGKILL of 1 of 2 aggregators"
	figTakeover2 = "takeover after SIGKILL of the next owner too"
	tgtTakeover1 = "≤ 10 s"
	tgtTakeover2 = "≤ 15 s"

	maxTakeover1 = 10 * time.Second
	maxTakeover2 = 15 * time.Second
	// recoveryTimeout bounds the wait for every partition after a death.
	recoveryTimeout = 45 * time.Second
)

// recovery is how long the partitions took to be consumed again.
type recovery struct {
	worst   time.Duration
	slowest []string // the slowest partitions with their times
	stuck   []string // partitions never consumed again within the timeout
	// worstDelivery is when the last partition got a delivery again: it can
	// come well before its ack floor moves, when inputs that were in flight
	// to the dead process wait for their AckWait.
	worstDelivery time.Duration
}

func (r recovery) String() string {
	if len(r.stuck) > 0 {
		return fmt.Sprintf("> %s (%d partitions not consumed again)", recoveryTimeout, len(r.stuck))
	}
	return fmt.Sprintf("%.1f s", r.worst.Seconds())
}

// measureRecovery snapshots the partition consumers (call it once the dead
// process has exited) and waits until every partition's ack floor has
// advanced past the snapshot: a live aggregator consumes it again, and
// nothing of it is stuck with the dead one. Times are counted from `from`
// (the signal).
func (e *env) measureRecovery(ctx context.Context, from time.Time) (recovery, error) {
	st0, err := readPartitions(ctx, e.c.js)
	if err != nil {
		return recovery{}, err
	}
	floors0 := st0.ackFloors()
	delivered0 := map[string]uint64{}
	for n, ci := range st0.consumers {
		delivered0[n] = ci.Delivered.Consumer
	}
	at := map[string]time.Duration{}
	delivered := map[string]time.Duration{}
	deadline := time.Now().Add(recoveryTimeout)
	for len(at) < len(floors0) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		st, err := readPartitions(ctx, e.c.js)
		if err != nil {
			continue // a slow answer under load: try again
		}
		for name, f := range st.ackFloors() {
			if _, done := at[name]; !done && f > floors0[name] {
				at[name] = st.at.Sub(from)
			}
			if _, done := delivered[name]; !done && st.consumers[name].Delivered.Consumer > delivered0[name] {
				delivered[name] = st.at.Sub(from)
			}
		}
	}
	var r recovery
	for _, d := range delivered {
		r.worstDelivery = max(r.worstDelivery, d)
	}
	names := st0.names()
	for _, n := range names {
		if _, ok := at[n]; !ok {
			r.stuck = append(r.stuck, n)
		}
		r.worst = max(r.worst, at[n])
	}
	slices.SortFunc(names, func(a, b string) int { return int(at[b] - at[a]) })
	for _, n := range names[:min(3, len(names))] {
		if _, ok := at[n]; ok {
			r.slowest = append(r.slowest, fmt.Sprintf("%s %.1fs", n, at[n].Seconds()))
		}
	}
	return r, nil
}

// settle waits until the running aggregators together own every partition
// and each owns some (their owned-partitions gauge). When the gauge cannot
// be read within 10 s (an engine without it), it waits 12 s (more than the
// worker TTL) instead. It returns a note when it could not see a settled
// assignment.
func (e *env) settle(ctx context.Context, aggs ...*aggregatorProc) string {
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		total, readable, each := 0, true, true
		for _, a := range aggs {
			n, ok := a.ownedPartitions()
			readable = readable && ok
			each = each && n > 0
			total += n
		}
		if readable && each && total == e.o.Partitions {
			return ""
		}
		if !readable && time.Since(start) > 10*time.Second {
			time.Sleep(time.Until(start.Add(12 * time.Second)))
			return "assignment not observable (no rtc_aggregator_owned_partitions gauge): waited 12 s"
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "the aggregators did not settle on an assignment within 30 s"
}

// runTakeover kills aggregators under a steady load: first one of two
// (a replacement starts at once, as a Deployment would start one), then,
// once every partition is consumed again, the survivor that took over its
// partitions. The baseline is a graceful stop (SIGTERM) measured the same
// way.
func runTakeover(ctx context.Context, e *env) ([]Row, error) {
	a, err := e.startAggregator()
	if err != nil {
		return nil, err
	}
	b, err := e.startReadyAggregator(ctx)
	if err != nil {
		return nil, err
	}

	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan error, 1)
	w := &Workload{Prefix: "take", Rooms: 2000, Devices: 10, ExpiresMS: 4 * 3_600_000, BaseMS: time.Now().UnixMilli()}
	go func() {
		_, _, err := e.c.paced(loadCtx, e.o.TakeoverRate, 0, 24*time.Hour, func(i int) (*nats.Msg, error) {
			ev := w.Input(i)
			return rawMsg(&ev)
		}, nil)
		loadDone <- err
	}()
	finishLoad := sync.OnceValue(func() error { stopLoad(); return <-loadDone })
	defer func() { _ = finishLoad() }()

	var notes []string
	if n := e.settle(ctx, a, b); n != "" {
		notes = append(notes, n)
	}
	// First death: SIGKILL a; its replacement starts right away.
	t0 := time.Now()
	if err := e.killAggregator(a); err != nil {
		return nil, err
	}
	a2, err := e.startAggregator()
	if err != nil {
		return nil, err
	}
	r1, err := e.measureRecovery(ctx, t0)
	if err != nil {
		return nil, err
	}
	e.logf("SIGKILL of 1 of 2: every partition consumed again after %s (slowest %s)", r1, strings.Join(r1.slowest, ", "))

	// Second death: the survivor, which took over a's partitions.
	t1 := time.Now()
	if err := e.killAggregator(b); err != nil {
		return nil, err
	}
	r2, err := e.measureRecovery(ctx, t1)
	if err != nil {
		return nil, err
	}
	e.logf("SIGKILL of the next owner: every partition consumed again after %s (slowest %s)", r2, strings.Join(r2.slowest, ", "))

	// Baseline: a graceful stop of one of two.
	baseline := "-"
	b2, err := e.startAggregator()
	if err != nil {
		return nil, err
	}
	if n := e.settle(ctx, a2, b2); n != "" {
		notes = append(notes, "baseline: "+n)
	}
	tg := time.Now()
	if err := e.stopAggregator(a2); err != nil {
		notes = append(notes, "baseline: "+err.Error())
	} else if rg, err := e.measureRecovery(ctx, tg); err != nil {
		notes = append(notes, "baseline: "+err.Error())
	} else {
		baseline = "graceful SIGTERM: " + rg.String()
		e.logf("SIGTERM of 1 of 2: every partition consumed again after %s", rg)
	}
	if err := finishLoad(); err != nil {
		notes = append(notes, "load: "+err.Error())
	}

	common := fmt.Sprintf("%d partitions, %d inputs/s; a partition counts as consumed again when its consumer's ack floor advances",
		e.o.Partitions, e.o.TakeoverRate)
	if len(notes) > 0 {
		common += "; " + strings.Join(notes, "; ")
	}
	row := func(fig, tgt string, limit time.Duration, r recovery, what string) Row {
		v := Met
		if len(r.stuck) > 0 || r.worst > limit {
			v = Missed
		}
		note := fmt.Sprintf("%s; slowest %s; every partition had a delivery again after %.1f s; %s",
			what, strings.Join(r.slowest, ", "), r.worstDelivery.Seconds(), common)
		if len(r.stuck) > 0 {
			note = "not consumed again: " + strings.Join(r.stuck, " ") + "; " + note
		}
		return Row{Figure: fig, Measured: r.String(), Baseline: baseline, Target: tgt, Verdict: v, Note: note}
	}
	return []Row{
		row(figTakeover1, tgtTakeover1, maxTakeover1, r1, "from SIGKILL until every partition is consumed again (a replacement started at once)"),
		row(figTakeover2, tgtTakeover2, maxTakeover2, r2, "the survivor that took over the first one's partitions SIGKILLed right after"),
	}, nil
}
