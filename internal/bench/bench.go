// Package bench is the operator-grade benchmark of rtc-sessions:
// it builds a standalone nats-server (the version go.mod requires) and
// cmd/aggregator, runs them as separate processes on 127.0.0.1 with
// JetStream file storage, as in production, and prints one table in which
// every figure stands next to a baseline measured in the same run.
//
// The aggregator is a black box: it is driven only through its binary, a
// generated configuration, RTC_RAW (inputs in, partition consumers agg-pNN
// observed) and RTC_EVENTS / the KV buckets (outputs observed).
//
// Each scenario starts its own nats-server on a fresh data directory, so a
// failing or slow scenario cannot distort the next one; the raw baseline is
// measured on the server the pipeline figures are measured on.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// Options selects and sizes the scenarios.
type Options struct {
	Bins    Binaries
	WorkDir string // scenario data directories go below it
	Keep    bool   // keep the data directories and logs
	// ProfileDir: CPU profiles of the server and the aggregators during the
	// measured phases go there (profile.go); "" takes none.
	ProfileDir string
	Log        io.Writer

	Partitions int // RTC_RAW partitions of the generated aggregator config

	RawMsgs         int // messages of the raw publish baseline
	PipelineRooms   int
	PipelineDevices int

	SteadyRate     int // inputs/s of the latency and CPU figures
	SteadyDuration time.Duration

	LiveRooms   int // rooms with one live session each
	LiveDevices int // devices per live session
	LiveRate    int // joins/s while filling; 0: as fast as the server stores them

	CallDevices  int // devices of the big call
	SmallDevices int // members of the small room
	Refreshes    int // refreshes timed in each

	TakeoverRate int // inputs/s while aggregators are killed
}

// DefaultOptions are the full figures (the README's table).
func DefaultOptions() Options {
	return Options{
		Partitions: 32, RawMsgs: 100_000, PipelineRooms: 2000, PipelineDevices: 10,
		SteadyRate: 1000, SteadyDuration: 20 * time.Second,
		LiveRooms: 100_000, LiveDevices: 3,
		CallDevices: 10_000, SmallDevices: 10, Refreshes: 1000,
		TakeoverRate: 500,
	}
}

// Quick shrinks the run to about a third of the time: fewer messages, a
// tenth of the live sessions, a shorter steady phase.
func (o *Options) Quick() {
	o.RawMsgs = 30_000
	o.PipelineRooms = 500
	o.SteadyDuration = 8 * time.Second
	o.LiveRooms = 10_000
	o.Refreshes = 300
}

// Validate reports every size or rate that cannot work.
func (o *Options) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{{"partitions", o.Partitions}, {"raw-msgs", o.RawMsgs}, {"pipeline-rooms", o.PipelineRooms},
		{"pipeline-devices", o.PipelineDevices}, {"rate", o.SteadyRate}, {"live-sessions", o.LiveRooms},
		{"live-devices", o.LiveDevices}, {"call-devices", o.CallDevices}, {"small-devices", o.SmallDevices},
		{"refreshes", o.Refreshes}, {"takeover-rate", o.TakeoverRate}} {
		if f.v < 1 {
			errs = append(errs, fmt.Errorf("%s %d: must be at least 1", f.name, f.v))
		}
	}
	if o.Partitions > 1024 {
		errs = append(errs, fmt.Errorf("partitions %d: at most 1024", o.Partitions))
	}
	if o.LiveRate < 0 {
		errs = append(errs, fmt.Errorf("live-rate %d: must not be negative", o.LiveRate))
	}
	if o.SteadyDuration < time.Second {
		errs = append(errs, fmt.Errorf("steady %s: must be at least 1s", o.SteadyDuration))
	}
	return errors.Join(errs...)
}

// Scenario is one group of figures.
type Scenario struct {
	Name string
	// Figures and Targets name the rows it produces, so that a failure
	// still prints them.
	Figures, Targets []string
	// Budget bounds the scenario (its context's deadline).
	Budget func(o *Options) time.Duration
	run    func(ctx context.Context, e *env) ([]Row, error)
}

// Scenarios lists every scenario in the order they run.
func Scenarios() []Scenario {
	return []Scenario{
		{Name: "raw", Figures: []string{figRaw}, Targets: []string{"-"},
			Budget: func(*Options) time.Duration { return 2 * time.Minute }, run: runRawOnly},
		{Name: "pipeline", Figures: []string{figRaw, figPipe1, figPipe2, figPipeL}, Targets: []string{"-", tgtRatio, tgtRatio, tgtRatio},
			Budget: func(*Options) time.Duration { return 5 * time.Minute }, run: runPipeline},
		{Name: "latency", Figures: []string{figLatency, figCPU}, Targets: []string{tgtLatency, tgtCPU},
			Budget: func(o *Options) time.Duration { return 2*time.Minute + 2*o.SteadyDuration }, run: runLatency},
		{Name: "live", Figures: []string{figRSS, figKV}, Targets: []string{tgtRSS, tgtKV},
			Budget: func(o *Options) time.Duration {
				rate := 1000
				if o.LiveRate > 0 {
					rate = min(rate, o.LiveRate)
				}
				return time.Minute + time.Duration(o.LiveRooms*o.LiveDevices/rate)*time.Second
			}, run: runLive},
		{Name: "call", Figures: []string{figCall}, Targets: []string{tgtCall},
			Budget: func(*Options) time.Duration { return 4 * time.Minute }, run: runCall},
		{Name: "takeover", Figures: []string{figTakeover1, figTakeover2}, Targets: []string{tgtTakeover1, tgtTakeover2},
			Budget: func(*Options) time.Duration { return 4 * time.Minute }, run: runTakeover},
		{Name: "history", Figures: []string{figHistory}, Targets: []string{tgtHistory},
			Budget: func(*Options) time.Duration { return 4 * time.Minute }, run: runHistory},
		{Name: "simulate", Figures: []string{figSimulate}, Targets: []string{tgtSimulate},
			Budget: func(*Options) time.Duration { return 4 * time.Minute }, run: runSimulate},
	}
}

// ScenarioNames are the names -only accepts.
func ScenarioNames() []string {
	var out []string
	for _, s := range Scenarios() {
		out = append(out, s.Name)
	}
	return out
}

// Report is the outcome of a run.
type Report struct {
	Rows []Row
	// Load is the 1-minute load average at the start of each scenario
	// ("pipeline 0.4"): more than the core count means other work competed
	// for the CPU and the figures are pessimistic.
	Load []string
}

// Run runs the selected scenarios (all when only is empty; "raw" is part of
// "pipeline" and runs alone only when pipeline is not selected) and returns
// the rows of the table. A scenario that fails yields error rows; the
// others still run.
func Run(ctx context.Context, o Options, only []string) (Report, error) {
	var rep Report
	if err := o.Validate(); err != nil {
		return rep, err
	}
	for _, n := range only {
		if !slices.Contains(ScenarioNames(), n) {
			return rep, fmt.Errorf("unknown scenario %q (have %s)", n, strings.Join(ScenarioNames(), ", "))
		}
	}
	selected := func(name string) bool {
		if len(only) == 0 {
			return name != "raw"
		}
		if name == "raw" && slices.Contains(only, "pipeline") {
			return false
		}
		return slices.Contains(only, name)
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	for _, s := range Scenarios() {
		if !selected(s.Name) {
			continue
		}
		if ctx.Err() != nil {
			rep.Rows = append(rep.Rows, failedRows(s.Figures, s.Targets, fmt.Errorf("not run: %w", ctx.Err()))...)
			continue
		}
		start := time.Now()
		load := LoadAverage()
		rep.Load = append(rep.Load, s.Name+" "+load)
		fmt.Fprintf(o.Log, "[%s] start (budget %s, load average %s)\n", s.Name, s.Budget(&o).Round(time.Second), load)
		r, err := runScenario(ctx, &o, s)
		if err != nil {
			fmt.Fprintf(o.Log, "[%s] FAILED after %s: %v\n", s.Name, time.Since(start).Round(time.Second), err)
			// Keep the rows it did produce; the others say why they are missing.
			have := map[string]bool{}
			for _, row := range r {
				have[figureOf(row.Figure, s.Figures)] = true
			}
			var figs, tgts []string
			for i, f := range s.Figures {
				if !have[f] {
					figs, tgts = append(figs, f), append(tgts, s.Targets[i])
				}
			}
			r = append(r, failedRows(figs, tgts, err)...)
		} else {
			fmt.Fprintf(o.Log, "[%s] done in %s\n", s.Name, time.Since(start).Round(time.Second))
		}
		rep.Rows = append(rep.Rows, orderRows(r, s.Figures)...)
	}
	return rep, nil
}

// orderRows puts rows in the scenario's figure order.
func orderRows(rows []Row, figures []string) []Row {
	slices.SortStableFunc(rows, func(a, b Row) int {
		return slices.Index(figures, figureOf(a.Figure, figures)) - slices.Index(figures, figureOf(b.Figure, figures))
	})
	return rows
}

// figureOf is the scenario figure a row's figure starts with (rows may add
// the rate or size they were measured at).
func figureOf(row string, figures []string) string {
	for _, f := range figures {
		if strings.HasPrefix(row, f) {
			return f
		}
	}
	return row
}

// env is what one scenario runs in: a data directory, a nats-server, a
// client, and the aggregator processes it started.
type env struct {
	o    *Options
	name string
	dir  string
	nats *natsServer
	c    *client
	aggs []*aggregatorProc
	n    int // aggregators started, for unique ids
}

func runScenario(ctx context.Context, o *Options, s Scenario) (rows []Row, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.Budget(o))
	defer cancel()
	dir, err := os.MkdirTemp(o.WorkDir, "rtcbench-"+s.Name+"-")
	if err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	e := &env{o: o, name: s.Name, dir: dir}
	defer func() {
		e.shutdown()
		if o.Keep || err != nil {
			fmt.Fprintf(o.Log, "[%s] logs and data kept in %s\n", s.Name, dir)
		} else {
			_ = os.RemoveAll(dir)
		}
	}()
	e.nats, err = startNATS(ctx, o.Bins.NATSServer, dir, e.profiling())
	if err != nil {
		return nil, err
	}
	e.c, err = connect(e.nats.url, "rtcbench-"+s.Name)
	if err != nil {
		return nil, err
	}
	rows, err = s.run(ctx, e)
	if err == nil {
		// A scenario that timed out inside may still return rows; make the
		// deadline visible.
		err = ctx.Err()
	}
	return rows, err
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.o.Log, "[%s] %s\n", e.name, fmt.Sprintf(format, args...))
}

// shutdown stops every aggregator, then the server.
func (e *env) shutdown() {
	for _, a := range e.aggs {
		_ = a.Kill()
	}
	if e.c != nil {
		e.c.close()
	}
	if e.nats != nil {
		_ = stopProc(e.nats.Proc, 10*time.Second)
	}
}

// startAggregator starts one more aggregator process.
// startReadyAggregator starts an aggregator and waits until the topology
// exists and the pipeline has processed a first input (warm).
func (e *env) startReadyAggregator(ctx context.Context) (*aggregatorProc, error) {
	agg, err := e.startAggregator()
	if err != nil {
		return nil, err
	}
	if err := e.waitTopology(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	if err := e.warm(ctx); err != nil {
		return nil, err
	}
	return agg, nil
}

func (e *env) startAggregator() (*aggregatorProc, error) {
	e.n++
	a, err := startAggregator(e.o.Bins.Aggregator, e.dir, e.nats.url, fmt.Sprintf("bench-%s-%d", e.name, e.n), e.o.Partitions, e.profiling())
	if err != nil {
		return nil, err
	}
	e.aggs = append(e.aggs, a)
	return a, nil
}

// aggregatorExited is an error if a started aggregator died on its own
// (not stopped or killed by the scenario).
func (e *env) aggregatorExited() error {
	var errs []error
	for _, a := range e.aggs {
		if a.ExitedOnItsOwn() {
			errs = append(errs, fmt.Errorf("aggregator %s exited unexpectedly: %s\n%s", a.id, a.State(), logTail(a.Proc)))
		}
	}
	return errors.Join(errs...)
}

// waitTopology waits until the aggregator has created every partition
// consumer.
func (e *env) waitTopology(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := readPartitions(ctx, e.c.js)
		if err == nil && len(st.consumers) >= e.o.Partitions {
			return nil
		}
		if err := e.aggregatorExited(); err != nil {
			return err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the aggregator did not create its %d partition consumers within %s (have %d, last error: %v)",
				e.o.Partitions, timeout, len(st.consumers), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// drain waits for the partition consumers to drain, failing early when an
// aggregator dies.
func (e *env) drain(ctx context.Context, stall time.Duration, progress func(partitionState)) (partitionState, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				if err := e.aggregatorExited(); err != nil {
					cancel(err)
					return
				}
			}
		}
	}()
	st, err := waitDrained(ctx, e.c.js, e.o.Partitions, stall, progress)
	if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		return st, cause
	}
	return st, err
}

// warm runs a few inputs through the pipeline so that what is measured next
// does not include start-up: the partitions are assigned and consumed.
func (e *env) warm(ctx context.Context) error {
	w := &Workload{Prefix: e.name + "warm", Rooms: 100, Devices: 2, ExpiresMS: 3_600_000, BaseMS: time.Now().UnixMilli()}
	n := w.Rooms * w.StepsPerCycle()
	if err := e.c.publishAll(ctx, n, func(i int) (*natsMsg, error) { ev := w.Input(i); return rawMsg(&ev) }); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if _, err := e.drain(ctx, 45*time.Second, nil); err != nil {
		return fmt.Errorf("warm-up inputs not consumed: %w", err)
	}
	return nil
}
