package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

const (
	figCall = "cost per refresh in a big call"
	tgtCall = "≤ 3 × small room"

	maxCallRatio = 3.0
)

// runCall times refreshes in a small room and in a call of CallDevices
// devices, once each is built, on one aggregator.
func runCall(ctx context.Context, e *env) ([]Row, error) {
	agg, err := e.startReadyAggregator(ctx)
	if err != nil {
		return nil, err
	}
	fig := figCall + fmt.Sprintf(" of %s devices", fmtCount(int64(e.o.CallDevices)))
	now := time.Now().UnixMilli()
	small := &Workload{Prefix: "small", Rooms: 1, Devices: e.o.SmallDevices, ExpiresMS: 4 * 3_600_000, BaseMS: now}
	if _, err := e.buildCall(ctx, small, 30*time.Second); err != nil {
		return nil, fmt.Errorf("build the %d-member room: %w", small.Devices, err)
	}
	smallCost, smallCPU, err := e.timedRefreshes(ctx, agg, small)
	if err != nil {
		return nil, fmt.Errorf("refreshes in the %d-member room: %w", small.Devices, err)
	}
	e.logf("%d-member room: %s ms per refresh (CPU %s ms)", small.Devices, fmtMS(smallCost), fmtMS(smallCPU))
	baseline := fmt.Sprintf("%s ms/input in a %d-member room", fmtMS(smallCost), small.Devices)

	big := &Workload{Prefix: "call", Rooms: 1, Devices: e.o.CallDevices, ExpiresMS: 4 * 3_600_000, BaseMS: now + 1000}
	if done, err := e.buildCall(ctx, big, 30*time.Second); err != nil {
		if !errors.Is(err, errStalled) {
			return nil, fmt.Errorf("build the %d-device call: %w", big.Devices, err)
		}
		// A stuck call is a measurement, not a failure of the benchmark.
		return []Row{{Figure: fig, Measured: fmt.Sprintf("stuck: %s of %s joins consumed", fmtCount(int64(done)), fmtCount(int64(big.Devices))),
			Baseline: baseline, Target: tgtCall, Verdict: Missed,
			Note: fmt.Sprintf("the call never reached %s devices: %v; last aggregator log line: %s",
				fmtCount(int64(big.Devices)), err, lastLogLine(agg))}}, nil
	}
	bigCost, bigCPU, err := e.timedRefreshes(ctx, agg, big)
	if err != nil {
		return nil, fmt.Errorf("refreshes in the %d-device call: %w", big.Devices, err)
	}
	ratio := float64(bigCost) / float64(smallCost)
	e.logf("%d-device call: %s ms per refresh (CPU %s ms), %.1f × the small room", big.Devices, fmtMS(bigCost), fmtMS(bigCPU), ratio)
	v := Met
	if ratio > maxCallRatio {
		v = Missed
	}
	note := fmt.Sprintf("%d refreshes of distinct members, loaded at once, timed to an empty backlog; CPU (aggregator + nats-server) "+
		"%s ms vs %s ms per input", e.o.Refreshes, fmtMS(bigCPU), fmtMS(smallCPU))
	if dlq, err := dlqCount(ctx, e.c.js); err == nil && dlq > 0 {
		note += fmt.Sprintf("; %d inputs in RTC_DLQ", dlq)
		v = Missed
	}
	return []Row{{Figure: fig, Measured: fmt.Sprintf("%s ms/input = %.1f ×", fmtMS(bigCost), ratio),
		Baseline: baseline, Target: tgtCall, Verdict: v, Note: note}}, nil
}

// buildCall publishes the joins of every device of room 0 and waits until
// they are consumed; on a stall it returns how many were.
func (e *env) buildCall(ctx context.Context, w *Workload, stall time.Duration) (int, error) {
	start := time.Now()
	if err := e.c.publishAll(ctx, w.Devices, func(d int) (*nats.Msg, error) { ev := w.Join(0, d, 0); return rawMsg(&ev) }); err != nil {
		return 0, fmt.Errorf("publish joins: %w", err)
	}
	lastLog := time.Now()
	st, err := e.drain(ctx, stall, func(st partitionState) {
		if time.Since(lastLog) > 10*time.Second {
			lastLog = time.Now()
			e.logf("building a %s-device call: %s joins left", fmtCount(int64(w.Devices)), fmtCount(int64(st.backlog())))
		}
	})
	done := w.Devices - int(min(st.backlog(), uint64(w.Devices)))
	if err != nil {
		return done, err
	}
	e.logf("built a %s-device call in %s", fmtCount(int64(w.Devices)), time.Since(start).Round(time.Millisecond))
	return done, nil
}

// timedRefreshes loads Refreshes refreshes of room 0's members (round-robin
// over the devices) at once and returns the wall time and the CPU
// (aggregator + nats-server) per refresh until the backlog is empty.
func (e *env) timedRefreshes(ctx context.Context, agg *aggregatorProc, w *Workload) (perInput, cpuPerInput time.Duration, err error) {
	n := e.o.Refreshes
	cpu0, err := e.cpuOf(agg)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	if err := e.c.publishAll(ctx, n, func(k int) (*nats.Msg, error) {
		ev := w.Refresh(0, k%w.Devices, 0, 2+k/w.Devices)
		return rawMsg(&ev)
	}); err != nil {
		return 0, 0, fmt.Errorf("publish refreshes: %w", err)
	}
	st, err := e.drain(ctx, 30*time.Second, nil)
	if err != nil {
		return 0, 0, err
	}
	cpu1, err := e.cpuOf(agg)
	if err != nil {
		return 0, 0, err
	}
	return st.at.Sub(start) / time.Duration(n), (cpu1 - cpu0) / time.Duration(n), nil
}

// cpuOf is the CPU time of the aggregator plus the server.
func (e *env) cpuOf(agg *aggregatorProc) (time.Duration, error) {
	return e.cpuOfAll([]*aggregatorProc{agg})
}

// lastLogLine is the aggregator's last log line: its message and error
// when it is a JSON log line, shortened.
func lastLogLine(a *aggregatorProc) string {
	lines := a.Tail(1)
	if len(lines) == 0 || strings.TrimSpace(lines[0]) == "" {
		return "(none)"
	}
	l := strings.TrimSpace(lines[0])
	var entry struct {
		Msg   string `json:"msg"`
		Error string `json:"error"`
	}
	if json.Unmarshal([]byte(l), &entry) == nil && entry.Msg != "" {
		l = entry.Msg
		if entry.Error != "" {
			l += ": " + entry.Error
		}
	}
	return shorten(l, 100, 160)
}

// shorten keeps the first head and the last tail runes of a long s: an
// error's context and its cause.
func shorten(s string, head, tail int) string {
	r := []rune(s)
	if len(r) <= head+tail+1 {
		return s
	}
	return string(r[:head]) + "…" + string(r[len(r)-tail:])
}
