package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

const (
	figRaw   = "raw JetStream async publish (the baseline)"
	figPipe1 = "pipeline inputs/s, 1 aggregator"
	figPipe2 = "pipeline inputs/s, 2 aggregators"
	figPipeL = "pipeline inputs/s fed while 1 aggregator runs"
	tgtRatio = "≥ 0.20 × raw"

	minRatio = 0.20
	// stallPipeline is how long the backlog may stay unchanged before a
	// figure is declared stuck.
	stallPipeline = 30 * time.Second
)

// measureRaw is the baseline: how many ~256 B messages per second a fresh
// file-storage stream on the same server stores, published asynchronously
// with asyncPending in flight and a Nats-Msg-Id each (as the ingest does).
func measureRaw(ctx context.Context, e *env) (float64, error) {
	s, err := e.c.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "BENCH_RAW", Subjects: []string{"bench.raw.*"}, Storage: jetstream.FileStorage,
		Duplicates: 10 * time.Minute,
	})
	if err != nil {
		return 0, fmt.Errorf("create stream BENCH_RAW: %w", err)
	}
	defer func() { _ = e.c.js.DeleteStream(context.WithoutCancel(ctx), s.CachedInfo().Config.Name) }()
	// Payloads of random bytes (incompressible), subjects spread over as
	// many rooms as the pipeline workload has.
	rng := rand.New(rand.NewPCG(1, 2))
	payloads := make([][]byte, 64)
	for i := range payloads {
		payloads[i] = make([]byte, 256)
		for j := range payloads[i] {
			payloads[i][j] = byte(rng.UintN(256))
		}
	}
	subjects := make([]string, 2000)
	for i := range subjects {
		subjects[i] = "bench.raw." + events.Token(fmt.Sprintf("!raw%06d:%s", i, benchHS))
	}
	n := e.o.RawMsgs
	start := time.Now()
	err = e.c.publishAll(ctx, n, func(i int) (*nats.Msg, error) {
		m := nats.NewMsg(subjects[i%len(subjects)])
		m.Data = payloads[i%len(payloads)]
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("$raw%09d", i))
		return m, nil
	})
	if err != nil {
		return 0, fmt.Errorf("raw publish: %w", err)
	}
	rate := float64(n) / time.Since(start).Seconds()
	e.logf("raw baseline: %s msgs of 256 B at %s", fmtCount(int64(n)), fmtRate(rate))
	return rate, nil
}

func rawRow(rate float64, n int) Row {
	return Row{Figure: figRaw, Measured: fmtCount(int64(math.Round(rate))) + " msgs/s", Verdict: Info,
		Note: fmt.Sprintf("%s msgs of 256 B, %d awaiting PubAck, Nats-Msg-Id each, fresh file stream on the same server",
			fmtCount(int64(n)), asyncPending)}
}

func runRawOnly(ctx context.Context, e *env) ([]Row, error) {
	rate, err := measureRaw(ctx, e)
	if err != nil {
		return nil, err
	}
	return []Row{rawRow(rate, e.o.RawMsgs)}, nil
}

func runPipeline(ctx context.Context, e *env) ([]Row, error) {
	raw, err := measureRaw(ctx, e)
	if err != nil {
		return nil, err
	}
	rows := []Row{rawRow(raw, e.o.RawMsgs)}

	// Let an aggregator create the topology (and prove it works), then stop
	// it: the inputs are loaded while no aggregator runs.
	boot, err := e.startAggregator()
	if err != nil {
		return rows, err
	}
	if err := e.waitTopology(ctx, 30*time.Second); err != nil {
		return rows, err
	}
	if err := e.warm(ctx); err != nil {
		return rows, err
	}
	if err := e.stopAggregator(boot); err != nil {
		return rows, err
	}

	for _, k := range []int{1, 2} {
		fig := figPipe1
		if k == 2 {
			fig = figPipe2
		}
		rate, note, err := e.pipelineRun(ctx, k)
		if err != nil {
			return rows, fmt.Errorf("%s: %w", fig, err)
		}
		rows = append(rows, ratioRow(fig, rate, raw, note))
	}
	rate, note, err := e.pipelineLive(ctx)
	if err != nil {
		return rows, fmt.Errorf("%s: %w", figPipeL, err)
	}
	return append(rows, ratioRow(figPipeL, rate, raw, note)), nil
}

// ratioRow is a pipeline figure: its rate against the raw publish rate.
func ratioRow(fig string, rate, raw float64, note string) Row {
	ratio := rate / raw
	v := Met
	if ratio < minRatio {
		v = Missed
		note = fmt.Sprintf("%.3f of the raw publish rate, below %.2f. %s", ratio, minRatio, note)
	}
	return Row{Figure: fig, Measured: fmt.Sprintf("%s = %.3f × raw", fmtRate(rate), ratio),
		Baseline: fmtCount(int64(math.Round(raw))) + " raw msgs/s", Target: tgtRatio, Verdict: v, Note: note}
}

// pipelineLive is the pipeline fed as fast as the server takes inputs
// while one aggregator runs (ready, every partition consumed): from the
// first publish to an empty backlog. Unlike a backlog loaded beforehand,
// the inputs are consumed moments after they were written, as under a
// sustained peak.
func (e *env) pipelineLive(ctx context.Context) (rate float64, note string, err error) {
	agg, err := e.startReadyAggregator(ctx)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = e.stopAggregator(agg) }()
	if _, err := e.waitServerIdle(ctx, 10*time.Second); err != nil {
		return 0, "", err
	}
	w := &Workload{Prefix: "pipelive", Rooms: e.o.PipelineRooms, Devices: e.o.PipelineDevices,
		ExpiresMS: 4 * 3_600_000, BaseMS: time.Now().UnixMilli()}
	n := w.Rooms * w.StepsPerCycle()
	cpu0, err1 := e.cpuOfAll([]*aggregatorProc{agg})
	server0, err2 := cpuTime(e.nats.Pid())
	if err := errors.Join(err1, err2); err != nil {
		return 0, "", err
	}
	start := time.Now()
	if err := e.c.publishAll(ctx, n, func(i int) (*nats.Msg, error) { ev := w.Input(i); return rawMsg(&ev) }); err != nil {
		return 0, "", fmt.Errorf("feed RTC_RAW: %w", err)
	}
	published := time.Since(start)
	st, err := e.drain(ctx, stallPipeline, nil)
	if err != nil {
		return 0, "", err
	}
	cpu1, err1 := e.cpuOfAll([]*aggregatorProc{agg})
	server1, err2 := cpuTime(e.nats.Pid())
	if err := errors.Join(err1, err2); err != nil {
		return 0, "", err
	}
	elapsed := st.at.Sub(start)
	rate = float64(n) / elapsed.Seconds()
	e.logf("fed while running: %s inputs published in %s, processed in %s = %s", fmtCount(int64(n)),
		published.Round(time.Millisecond), elapsed.Round(time.Millisecond), fmtRate(rate))
	all, server := (cpu1-cpu0)/time.Duration(n), (server1-server0)/time.Duration(n)
	note = fmt.Sprintf("%s inputs published as fast as the server stored them (in %s) while one aggregator ran, "+
		"timed from the first publish to an empty backlog; CPU per input %.1f µs (aggregator %.1f + nats-server %.1f, "+
		"which here includes storing the input)", fmtCount(int64(n)), published.Round(time.Millisecond), us(all), us(all-server), us(server))
	return rate, note, nil
}

// stopAggregator stops a with SIGTERM (its graceful hand-off).
func (e *env) stopAggregator(a *aggregatorProc) error {
	if err := stopProc(a.Proc, 30*time.Second); err != nil {
		return fmt.Errorf("stop aggregator %s: %w", a.id, err)
	}
	return nil
}

// killAggregator SIGKILLs a.
func (e *env) killAggregator(a *aggregatorProc) error {
	if err := a.Kill(); err != nil {
		return fmt.Errorf("kill aggregator %s: %w", a.id, err)
	}
	return nil
}

// pipelineRun loads RTC_RAW with the workload while no aggregator runs,
// starts k aggregators and times them from the last moment nothing was
// acknowledged to the moment every partition consumer has nothing pending
// and nothing unacknowledged.
func (e *env) pipelineRun(ctx context.Context, k int) (rate float64, note string, err error) {
	w := &Workload{Prefix: fmt.Sprintf("pipe%d", k), Rooms: e.o.PipelineRooms, Devices: e.o.PipelineDevices,
		ExpiresMS: 4 * 3_600_000, BaseMS: time.Now().UnixMilli()}
	n := w.Rooms * w.StepsPerCycle()
	eventsBefore, _, err := e.streamMsgs(ctx, events.StreamEvents)
	if err != nil {
		return 0, "", err
	}
	pubStart := time.Now()
	if err := e.c.publishAll(ctx, n, func(i int) (*nats.Msg, error) { ev := w.Input(i); return rawMsg(&ev) }); err != nil {
		return 0, "", fmt.Errorf("load RTC_RAW: %w", err)
	}
	e.logf("%d aggregator(s): loaded %s inputs (%d rooms × %d devices × join/refresh/leave) into RTC_RAW at %s",
		k, fmtCount(int64(n)), w.Rooms, w.Devices, fmtRate(float64(n)/time.Since(pubStart).Seconds()))

	// The server writes what it has just stored for a while after the last
	// PubAck (work the raw baseline's rate does not include either): start
	// the aggregators once it is idle, so that the figure is the pipeline's.
	settled, err := e.waitServerIdle(ctx, 10*time.Second)
	if err != nil {
		return 0, "", err
	}
	e.logf("%d aggregator(s): nats-server idle %s after the load", k, settled.Round(10*time.Millisecond))
	started := time.Now()
	var procs []*aggregatorProc
	for range k {
		a, err := e.startAggregator()
		if err != nil {
			return 0, "", err
		}
		procs = append(procs, a)
	}
	var waitProfiles func()
	if k == 1 { // the profile spans most of the drain (about 15-20k inputs/s here)
		waitProfiles = e.startProfiles(ctx, "1agg", time.Duration(n/20_000)*time.Second, procs)
	}
	var startAt time.Time
	var cpuStart, serverStart time.Duration
	lastLog := time.Now()
	st, err := e.drain(ctx, stallPipeline, func(st partitionState) {
		if st.backlog() >= uint64(n) {
			startAt = st.at // nothing acknowledged yet
			cpuStart, _ = e.cpuOfAll(procs)
			serverStart, _ = cpuTime(e.nats.Pid())
		}
		if time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			e.logf("%d aggregator(s): %s of %s inputs left", k, fmtCount(int64(st.backlog())), fmtCount(int64(n)))
		}
	})
	if err != nil {
		return 0, "", err
	}
	if startAt.IsZero() {
		startAt = started
	}
	cpuEnd, cpuErr := e.cpuOfAll(procs)
	serverEnd, serverErr := cpuTime(e.nats.Pid())
	if waitProfiles != nil {
		waitProfiles()
	}
	elapsed := st.at.Sub(startAt)
	rate = float64(n) / elapsed.Seconds()
	e.logf("%d aggregator(s): %s inputs in %s = %s (start-up %s not counted)", k, fmtCount(int64(n)),
		elapsed.Round(time.Millisecond), fmtRate(rate), startAt.Sub(started).Round(time.Millisecond))

	eventsAfter, _, err := e.streamMsgs(ctx, events.StreamEvents)
	if err != nil {
		return 0, "", err
	}
	note = fmt.Sprintf("%s inputs loaded beforehand, timed from the first ack to an empty backlog; %s session events stored",
		fmtCount(int64(n)), fmtCount(int64(eventsAfter-eventsBefore)))
	if cpuErr == nil && serverErr == nil && cpuStart > 0 {
		all, server := (cpuEnd-cpuStart)/time.Duration(n), (serverEnd-serverStart)/time.Duration(n)
		note += fmt.Sprintf("; CPU per input %.1f µs (aggregators %.1f + nats-server %.1f)",
			us(all), us(all-server), us(server))
	}
	if dlq, err := dlqCount(ctx, e.c.js); err == nil && dlq > 0 {
		note += fmt.Sprintf("; %d inputs in RTC_DLQ", dlq)
	}
	if eventsAfter == eventsBefore {
		return 0, "", fmt.Errorf("no session events stored for %d inputs", n)
	}
	for _, a := range procs {
		if err := e.stopAggregator(a); err != nil {
			return 0, "", err
		}
	}
	return rate, note, nil
}

// streamMsgs returns a stream's message count and bytes.
func (e *env) streamMsgs(ctx context.Context, name string) (msgs, bytes uint64, err error) {
	bytes, msgs, err = streamBytes(ctx, e.c.js, name)
	return msgs, bytes, err
}

// roomToken is the RTC_RAW subject token of a room.
func roomToken(r id.RoomID) string { return events.Token(string(r)) }

// cpuOfAll is the CPU time of the aggregators plus the server.
func (e *env) cpuOfAll(aggs []*aggregatorProc) (time.Duration, error) {
	total, err := cpuTime(e.nats.Pid())
	if err != nil {
		return 0, err
	}
	for _, a := range aggs {
		c, err := cpuTime(a.Pid())
		if err != nil {
			return 0, err
		}
		total += c
	}
	return total, nil
}

// us is d in microseconds.
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// waitServerIdle waits until nats-server uses less than a tenth of a core
// over two consecutive 100 ms intervals, or max has passed; it returns how
// long it waited.
func (e *env) waitServerIdle(ctx context.Context, max time.Duration) (time.Duration, error) {
	const interval = 100 * time.Millisecond
	start := time.Now()
	last, err := cpuTime(e.nats.Pid())
	if err != nil {
		return 0, err
	}
	quiet := 0
	for quiet < 2 && time.Since(start) < max {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(interval):
		}
		now, err := cpuTime(e.nats.Pid())
		if err != nil {
			return 0, err
		}
		if now-last < interval/10 {
			quiet++
		} else {
			quiet = 0
		}
		last = now
	}
	return time.Since(start), nil
}
