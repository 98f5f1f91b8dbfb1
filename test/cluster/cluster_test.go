package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/pipelinetest"
	"github.com/rtcsessions/rtc-sessions/internal/proctest"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }

const (
	nodes         = 3
	numAggregator = 3
	partitions    = 8
	feed          = 60 * time.Second
	// How long the nodes killed and restarted at once stay down, and the
	// one that stays down for a while.
	shortDown = 2 * time.Second
	longDown  = 20 * time.Second
)

// The faults, as offsets from T0 (when sending starts). The RTC_EVENTS
// leaders are killed when a big call starts, when the aggregators publish
// the most events at once.
const (
	rawLeaderAt    = 6 * time.Second
	eventsLeaderAt = 24 * time.Second
	aggregatorAt   = 30 * time.Second
	longOutageAt   = 37 * time.Second
)

var bursts = []time.Duration{11 * time.Second, eventsLeaderAt, longOutageAt, 48 * time.Second}

// stepDownWindows are when the RTC_EVENTS leader is asked to step down
// again and again (out of the node kills' outages).
var stepDownWindows = []pipelinetest.Window{{From: 13 * time.Second, To: 22 * time.Second},
	{From: 44 * time.Second, To: 56 * time.Second}}

// workloadConfig keeps deadlines out of a window around each node kill: a
// client of the killed node reconnects to another and flushes what it
// buffered meanwhile, so an input stamped before a deadline could be stored
// after the timer of the deadline fired (see internal/pipelinetest). The
// big calls' deadlines (8 and 10 s after each start) are out of them.
func workloadConfig(seed uint64) pipelinetest.WorkloadConfig {
	var quiet []pipelinetest.Window
	for _, at := range []time.Duration{rawLeaderAt, eventsLeaderAt, longOutageAt} {
		quiet = append(quiet, pipelinetest.Window{From: at - 2*time.Second, To: at + 5*time.Second})
	}
	return pipelinetest.WorkloadConfig{Seed: seed, Rooms: 100, Feed: feed, Bursts: bursts, BurstDevices: 20,
		Quiet: quiet}
}

// TestCluster: see the package comment.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: about three minutes of real processes; skipped with -short")
	}
	began := time.Now()
	seed := pipelinetest.Seed(t, "RTC_CLUSTER_SEED", "cluster")
	wl := pipelinetest.Generate(workloadConfig(seed))
	t.Logf("workload: %d rooms, %d events (%d forwarded), %d deliveries, last short deadline at T0+%s",
		wl.Cfg.Rooms, len(wl.Events), wl.ForwardedCount(), len(wl.Deliveries), wl.LastShortDeadline)

	h := proctest.New(t)
	t.Logf("binaries ready after %s", time.Since(began).Round(time.Millisecond))
	c := &run{t: t, h: h, rng: rand.New(rand.NewPCG(seed, 0xc105)), accepted: make(chan struct{}, 1),
		hardDeadline: began.Add(330 * time.Second)}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		t.Logf("timeline:\n  %s", strings.Join(c.timeline, "\n  "))
	})
	c.cluster = h.StartNATSCluster(nodes)
	c.nc, c.js = c.cluster.Connect()
	t.Logf("%d-node nats cluster ready after %s", nodes, time.Since(began).Round(time.Millisecond))
	c.startTogether()

	c.t0 = time.Now().Add(500 * time.Millisecond).Truncate(time.Millisecond)
	faultsDone := make(chan struct{})
	var faults sync.WaitGroup
	faults.Go(c.runFaults)
	for i, w := range stepDownWindows {
		// Each goroutine draws from its own generator.
		rng := rand.New(rand.NewPCG(seed, 0x5d0+uint64(i)))
		faults.Go(func() { c.stepDowns(rng, w.From, w.To) })
	}
	go func() {
		defer close(faultsDone)
		faults.Wait()
	}()
	sender := &pipelinetest.Sender{URL: c.ing.URL, Tokens: c.tokens, T0: c.t0, Deadline: c.hardDeadline,
		OnAccepted: func() {
			select {
			case c.accepted <- struct{}{}:
			default:
			}
		}}
	sendErr := sender.Send(wl)
	<-faultsDone
	if sendErr != nil {
		t.Fatalf("sending the workload: %v", sendErr)
	}
	st := sender.Stats()
	t.Logf("workload sent at T0+%s: %d transactions, %d attempts (%d refused or failed: %v)",
		time.Since(c.t0).Round(time.Millisecond), st.Txns, st.Attempts, st.FailedAttempts, st.Outcomes)
	c.settle()

	// Every expiry of the workload must have fired: wait past the last
	// short deadline (timers fire at the deadline rounded up to the second).
	time.Sleep(time.Until(c.t0.Add(wl.LastShortDeadline + 2*time.Second)))
	v := &pipelinetest.Verifier{T: t, JS: c.js, RTCCtl: h.Bins.RTCCtl, T0: c.t0, WL: wl}
	v.Run(time.Now().UnixMilli(), c.hardDeadline)
	c.reportStalls(v)
	c.reportEffects()
	for _, p := range h.Procs() {
		if p.ExitedOnItsOwn() {
			t.Errorf("%s exited without being killed: %s", p.Name, p.State())
		}
	}
	t.Logf("cluster test done in %s", time.Since(began).Round(time.Millisecond))
}

// run is one run of the test: the processes, the faults and what happened.
type run struct {
	t            *testing.T
	h            *proctest.Harness
	rng          *rand.Rand // the setup's and runFaults'
	t0           time.Time
	hardDeadline time.Time
	cluster      *proctest.NATSCluster
	nc           *nats.Conn
	js           jetstream.JetStream

	aggs   [numAggregator]*proctest.Aggregator
	aggGen int
	ing    *proctest.Ingest
	tokens map[string]string
	// accepted receives a value (without blocking) whenever a transaction
	// was answered 200: its inputs are being processed right then.
	accepted chan struct{}

	mu       sync.Mutex
	timeline []string
	faults   []fault
}

// fault is one disturbance, for the stall report.
type fault struct {
	at   time.Time
	what string
}

func (c *run) note(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	at := "setup"
	if !c.t0.IsZero() {
		at = "T0" + fmt.Sprintf("%+.3fs", time.Since(c.t0).Seconds())
	}
	c.timeline = append(c.timeline, at+" "+fmt.Sprintf(format, args...))
}

// urlsEnv is the environment variable of a service's NATS urls: every
// node, so that a client survives the loss of any.
func (c *run) urlsEnv(prefix string) []string {
	return []string{prefix + "_NATS_URLS=" + strings.Join(c.cluster.URLs(), ","), prefix + "_TOPOLOGY_REPLICAS=3"}
}

// startTogether starts the aggregators and the ingest at the same moment on
// the fresh cluster, and waits until every one is ready: none may exit.
func (c *run) startTogether() {
	t := c.t
	c.tokens = map[string]string{}
	for i := range pipelinetest.NumHomeservers {
		c.tokens[pipelinetest.HSName(i)] = fmt.Sprintf("hs-token-%d-%d", i, c.rng.Uint64())
	}
	start := time.Now()
	for slot := range c.aggs {
		c.startAggregator(slot)
	}
	in, err := c.h.StartIngest(proctest.IngestConfig{Name: "#1", NATSURL: c.cluster.URLs()[0], Partitions: partitions,
		HSTokens: c.tokens, Env: c.urlsEnv("RTC_INGEST")}, "")
	if err != nil {
		t.Fatal(err)
	}
	c.ing = in
	type waiter interface {
		WaitReady(time.Duration) error
		Output() string
	}
	procs := []waiter{c.ing}
	names := []string{"ingest"}
	for _, a := range c.aggs {
		procs, names = append(procs, a), append(names, "aggregator "+a.Cfg.ID)
	}
	ready := make([]string, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Go(func() {
			if err := p.WaitReady(150 * time.Second); err != nil {
				t.Errorf("started together on a fresh cluster: %v", err)
				return
			}
			retries := strings.Count(p.Output(), "not ready yet; retrying")
			ready[i] = fmt.Sprintf("%s ready after %s (%d retries)", names[i], time.Since(start).Round(time.Millisecond), retries)
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("started together on the fresh cluster: %s", strings.Join(ready, "; "))
}

func (c *run) startAggregator(slot int) {
	c.aggGen++
	id := fmt.Sprintf("agg%d-%02d", slot, c.aggGen)
	a, err := c.h.StartAggregator(proctest.AggregatorConfig{ID: id, NATSURL: c.cluster.URLs()[0],
		Partitions: partitions, Env: c.urlsEnv("RTC_AGG")})
	if err != nil {
		c.t.Error(err)
		return
	}
	c.aggs[slot] = a
	c.note("started aggregator %s (pid %d)", id, a.Pid())
}

// waitAccepted waits (at most a second) for the next transaction to be
// stored, then a moment more: its inputs are being processed.
func (c *run) waitAccepted(after time.Duration) {
	select { // a notice from before now does not count
	case <-c.accepted:
	default:
	}
	select {
	case <-c.accepted:
		time.Sleep(after)
	case <-time.After(time.Second):
	}
}

// leader is the server name of a stream's leader, asked until it answers.
func (c *run) leader(stream string) (string, error) {
	var err error
	for range 20 {
		var s jetstream.Stream
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s, err = c.js.Stream(ctx, stream)
		if err == nil {
			var info *jetstream.StreamInfo
			info, err = s.Info(ctx)
			if err == nil && (info.Cluster == nil || info.Cluster.Leader == "") {
				err = errors.New("no leader")
			}
			if err == nil {
				cancel()
				return info.Cluster.Leader, nil
			}
		}
		cancel()
		time.Sleep(250 * time.Millisecond)
	}
	return "", fmt.Errorf("leader of %s: %w", stream, err)
}

// killLeader SIGKILLs the node leading stream and starts it again after
// down.
func (c *run) killLeader(stream string, after, down time.Duration) {
	name, err := c.leader(stream)
	if err != nil {
		c.t.Error(err)
		return
	}
	node := c.cluster.Node(name)
	c.waitAccepted(after)
	if err := node.Proc.Kill(); err != nil {
		c.t.Error(err)
		return
	}
	what := fmt.Sprintf("SIGKILL of %s (the %s leader), down %s", name, stream, down)
	c.mu.Lock()
	c.faults = append(c.faults, fault{at: time.Now(), what: what})
	c.mu.Unlock()
	c.note("%s", what)
	time.Sleep(down)
	if err := node.Start(); err != nil {
		c.t.Errorf("restart %s: %v", name, err)
		return
	}
	c.note("%s ready again", name)
}

// runFaults executes the faults at their times.
func (c *run) runFaults() {
	at := func(d time.Duration) { time.Sleep(time.Until(c.t0.Add(d))) }
	at(rawLeaderAt)
	c.killLeader(rawevent.StreamRaw, 0, shortDown)
	at(eventsLeaderAt)
	c.killLeader(events.StreamEvents, pipelinetest.Uniform(c.rng, 0, 20*time.Millisecond), shortDown)
	at(aggregatorAt)
	slot := c.rng.IntN(numAggregator)
	c.waitAccepted(pipelinetest.Uniform(c.rng, 0, 4*time.Millisecond))
	if a := c.aggs[slot]; a != nil {
		if err := a.Kill(); err != nil {
			c.t.Error(err)
		}
		what := "SIGKILL of aggregator " + a.Cfg.ID
		c.mu.Lock()
		c.faults = append(c.faults, fault{at: time.Now(), what: what})
		c.mu.Unlock()
		c.note("%s", what)
		time.Sleep(pipelinetest.Uniform(c.rng, 300*time.Millisecond, 2*time.Second))
		c.startAggregator(slot)
	}
	at(longOutageAt)
	c.killLeader(events.StreamEvents, pipelinetest.Uniform(c.rng, 0, 20*time.Millisecond), longDown)
}

// stepDowns asks the RTC_EVENTS leader to step down every 1.5-3 s within
// [from, to), each right after a transaction was stored: as in a rolling
// upgrade, when each server hands its leaderships over before it stops.
// An election then happens while the aggregators publish, many times per
// run, which a SIGKILL alone rarely hits.
func (c *run) stepDowns(rng *rand.Rand, from, to time.Duration) {
	time.Sleep(time.Until(c.t0.Add(from)))
	for time.Until(c.t0.Add(to)) > 0 {
		c.waitAccepted(pipelinetest.Uniform(rng, 0, 5*time.Millisecond))
		name, err := c.leader(events.StreamEvents)
		if err != nil {
			c.t.Error(err)
			return
		}
		at := time.Now()
		var resp struct {
			Success bool `json:"success"`
			Error   *struct {
				Description string `json:"description"`
			} `json:"error"`
		}
		msg, err := c.nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+events.StreamEvents, nil, 5*time.Second)
		if err == nil {
			err = json.Unmarshal(msg.Data, &resp)
		}
		if err == nil && !resp.Success && resp.Error != nil {
			err = errors.New(resp.Error.Description)
		}
		what := fmt.Sprintf("step-down of %s (the %s leader)", name, events.StreamEvents)
		if err != nil {
			c.note("%s: %v", what, err) // a leader still being elected refuses it: not a failure
		} else {
			c.mu.Lock()
			c.faults = append(c.faults, fault{at: at, what: what})
			c.mu.Unlock()
			c.note("%s", what)
		}
		time.Sleep(pipelinetest.Uniform(rng, 1500*time.Millisecond, 3*time.Second))
	}
}

// settle waits until every process is ready again after the faults. A
// process that exited on its own ends the test at once: the pipeline would
// not drain.
func (c *run) settle() {
	c.t.Helper()
	for _, p := range c.h.Procs() {
		if p.ExitedOnItsOwn() {
			c.t.Fatalf("%s exited without being killed: %s", p.Name, p.State())
		}
	}
	for _, a := range c.aggs {
		if err := a.WaitReady(30 * time.Second); err != nil {
			c.t.Errorf("after the faults: %v", err)
		}
	}
	if err := c.ing.WaitReady(30 * time.Second); err != nil {
		c.t.Errorf("after the faults: %v", err)
	}
	for _, n := range c.cluster.Nodes {
		if !n.Proc.Running() {
			c.t.Errorf("after the faults: %s is not running", n.Name())
		}
	}
	if c.t.Failed() {
		c.t.FailNow()
	}
	c.note("settled")
}

// reportStalls logs, for each fault, how long after it the next input and
// the next session event were stored, and the longest pause of each
// stream until the next fault (at most 15 s).
func (c *run) reportStalls(v *pipelinetest.Verifier) {
	c.mu.Lock()
	faults := slices.Clone(c.faults)
	c.mu.Unlock()
	slices.SortFunc(faults, func(a, b fault) int { return a.at.Compare(b.at) })
	var lines []string
	for i, f := range faults {
		within := 15 * time.Second
		if i+1 < len(faults) {
			within = min(within, faults[i+1].at.Sub(f.at))
		}
		line := fmt.Sprintf("T0%+.3fs %s:", f.at.Sub(c.t0).Seconds(), f.what)
		for _, s := range []string{rawevent.StreamRaw, events.StreamEvents} {
			next, ok := v.FirstStoredAfter(s, f.at)
			gap := v.LongestGap(s, f.at, within)
			if ok {
				line += fmt.Sprintf(" %s next stored after %s (longest pause in the next %s: %s);", s,
					next.Round(time.Millisecond), within.Round(100*time.Millisecond), gap.Round(time.Millisecond))
			} else {
				line += fmt.Sprintf(" %s: nothing stored after it;", s)
			}
		}
		lines = append(lines, strings.TrimSuffix(line, ";"))
	}
	c.t.Logf("stall after each fault:\n  %s", strings.Join(lines, "\n  "))
}

// reportEffects logs how the running aggregators published their session
// events (fast batches by result) and the conditional writes that found
// another state, since their last start: what the order checks above were
// exercised with.
func (c *run) reportEffects() {
	var series []string
	for _, r := range []string{"stored", "stopped", "failed"} {
		series = append(series, fmt.Sprintf(`rtc_aggregator_event_batches_total{result=%q}`, r))
	}
	for _, k := range []string{"event_order", "live_session", "fenced"} {
		series = append(series, fmt.Sprintf(`rtc_aggregator_effect_conflicts_total{kind=%q}`, k))
	}
	for _, a := range c.aggs {
		if a == nil || !a.Running() {
			continue
		}
		m, err := a.Metrics()
		if err != nil {
			c.t.Logf("%s: metrics: %v", a.Name, err)
			continue
		}
		line := ""
		for _, s := range series {
			line += fmt.Sprintf(" %s=%v", s, m[s])
		}
		c.t.Logf("%s since its start:%s", a.Name, line)
	}
}
