package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rtcsessions/rtc-sessions/internal/pipelinetest"
	"github.com/rtcsessions/rtc-sessions/internal/proctest"
)

func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }

// The chaos schedule, as offsets from T0 (when sending starts).
const (
	feed          = 60 * time.Second // inputs are planned over this long
	natsRestartAt = 26 * time.Second
	natsDown      = time.Second
	// killAllBurst is the burst at which every aggregator is SIGKILLed at
	// once (as when a node fails); at the others one is.
	killAllBurst  = 1
	numAggregator = 3
	partitions    = 8
)

// bursts are the big calls' starts, out of the nats restart's quiet window.
var bursts = []time.Duration{5 * time.Second, 12 * time.Second, 42 * time.Second, 50 * time.Second}

func defaultWorkloadConfig(seed uint64) pipelinetest.WorkloadConfig {
	return pipelinetest.WorkloadConfig{Seed: seed, Rooms: 40, Feed: feed, Bursts: bursts, BurstDevices: 16,
		// The outage lasts from the SIGTERM to the clients' reconnection
		// (about natsDown plus a second); a publish stamped before it may be
		// stored up to the ingest's ack timeout (2s) after it.
		Quiet: []pipelinetest.Window{{From: natsRestartAt - 2*time.Second, To: natsRestartAt + 12*time.Second}}}
}

// TestChaos is the chaos test of the whole pipeline. See the package comment.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test: about two minutes of real processes; skipped with -short")
	}
	began := time.Now()
	seed := pipelinetest.Seed(t, "RTC_CHAOS_SEED", "chaos")
	wl := pipelinetest.Generate(defaultWorkloadConfig(seed))
	t.Logf("workload: %d rooms, %d events (%d forwarded), %d deliveries, last short deadline at T0+%s",
		wl.Cfg.Rooms, len(wl.Events), wl.ForwardedCount(), len(wl.Deliveries), wl.LastShortDeadline)

	h := proctest.New(t)
	t.Logf("binaries ready after %s", time.Since(began).Round(time.Millisecond))
	c := &chaos{t: t, h: h, rng: rand.New(rand.NewPCG(seed, 0xc4a05)), accepted: make(chan struct{}, 1),
		sending:      make(chan struct{}, 1),
		hardDeadline: began.Add(225 * time.Second)}
	c.ns = h.StartNATS("")
	c.start()
	t.Logf("nats-server, %d aggregators and the ingest ready after %s", numAggregator,
		time.Since(began).Round(time.Millisecond))

	c.t0 = time.Now().Add(500 * time.Millisecond).Truncate(time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		c.run(ctx)
	}()
	sender := &pipelinetest.Sender{URL: func() string { return c.ingestURL }, Tokens: c.tokens, T0: c.t0,
		Deadline: c.hardDeadline, OnSending: func() { notify(c.sending) }, OnAccepted: func() { notify(c.accepted) }}
	sendErr := sender.Send(wl)
	cancel()
	<-chaosDone
	if sendErr != nil {
		t.Fatalf("sending the workload: %v", sendErr)
	}
	st := sender.Stats()
	t.Logf("workload sent at T0+%s: %d transactions, %d attempts (%d refused or failed: %v); chaos: %s",
		time.Since(c.t0).Round(time.Millisecond), st.Txns, st.Attempts, st.FailedAttempts, st.Outcomes, c.summary())
	c.settle()

	// Every expiry of the workload must have fired: wait past the last
	// short deadline (timers fire at the deadline rounded up to the second).
	until := c.t0.Add(wl.LastShortDeadline + 2*time.Second)
	time.Sleep(time.Until(until))
	_, js := c.ns.Connect()
	v := &pipelinetest.Verifier{T: t, JS: js, RTCCtl: h.Bins.RTCCtl, T0: c.t0, WL: wl}
	v.Run(time.Now().UnixMilli(), c.hardDeadline)
	c.logMu.Lock()
	t.Logf("chaos timeline:\n  %s", strings.Join(c.timeline, "\n  "))
	c.logMu.Unlock()
	t.Logf("T0 = %d (Unix ms); nats-server outage from T0%+.3fs to T0%+.3fs", c.t0.UnixMilli(),
		c.outage[0].Sub(c.t0).Seconds(), c.outage[1].Sub(c.t0).Seconds())
	for _, p := range h.Procs() {
		if p.ExitedOnItsOwn() {
			t.Errorf("%s exited without being killed: %s", p.Name, p.State())
		}
	}
	t.Logf("chaos test done in %s", time.Since(began).Round(time.Millisecond))
}

// chaos runs the processes and disturbs them.
type chaos struct {
	t   *testing.T
	h   *proctest.Harness
	rng *rand.Rand
	t0  time.Time

	ns *proctest.NATSServer
	// mu serializes process starts with the nats-server restart: an
	// aggregator refuses to start while NATS is unreachable (it exits, as a
	// pod would crash-loop), which is not what this test is about.
	mu     sync.Mutex
	aggs   [numAggregator]*proctest.Aggregator
	aggGen int
	ing    *proctest.Ingest
	ingGen int
	tokens map[string]string
	// ingestURL stays the same across ingest restarts (the homeservers'
	// registrations point at it).
	ingestURL string

	logMu    sync.Mutex
	timeline []string
	counts   struct{ aggKills, ingestKills, natsRestarts int }
	outage   [2]time.Time // nats-server stopped, ready again

	// accepted receives a value (without blocking) whenever a transaction
	// was answered 200: its inputs are being processed right then, which is
	// when a SIGKILL hurts most.
	accepted chan struct{}
	// sending receives a value (without blocking) just before a
	// transaction is sent: an ingest SIGKILLed a moment later dies with
	// the transaction half published, and the retry must complete it.
	sending chan struct{}
	// hardDeadline bounds the whole test.
	hardDeadline time.Time
}

func (c *chaos) note(format string, args ...any) {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	at := "setup"
	if !c.t0.IsZero() {
		at = "T0" + fmt.Sprintf("%+.3fs", time.Since(c.t0).Seconds())
	}
	c.timeline = append(c.timeline, at+" "+fmt.Sprintf(format, args...))
}

func (c *chaos) summary() string {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	return fmt.Sprintf("%d aggregator SIGKILLs, %d ingest SIGKILLs, %d nats-server restarts (down %s)",
		c.counts.aggKills, c.counts.ingestKills, c.counts.natsRestarts, c.outage[1].Sub(c.outage[0]).Round(time.Millisecond))
}

// start brings up the aggregators and the ingest and waits until they are
// ready.
func (c *chaos) start() {
	c.t.Helper()
	c.tokens = map[string]string{}
	for i := range pipelinetest.NumHomeservers {
		c.tokens[pipelinetest.HSName(i)] = fmt.Sprintf("hs-token-%d-%d", i, c.rng.Uint64())
	}
	for slot := range c.aggs {
		c.startAggregator(slot)
	}
	for _, a := range c.aggs {
		if err := a.WaitReady(60 * time.Second); err != nil {
			c.t.Fatal(err)
		}
	}
	c.startIngest("")
	c.ingestURL = c.ing.URL()
	if err := c.ing.WaitReady(60 * time.Second); err != nil {
		c.t.Fatal(err)
	}
}

func (c *chaos) startAggregator(slot int) {
	c.aggGen++
	id := fmt.Sprintf("agg%d-%02d", slot, c.aggGen)
	a, err := c.h.StartAggregator(proctest.AggregatorConfig{ID: id, NATSURL: c.ns.URL(), Partitions: partitions})
	if err != nil {
		c.t.Error(err)
		return
	}
	c.aggs[slot] = a
	c.note("started aggregator %s (pid %d)", id, a.Pid())
}

func (c *chaos) startIngest(addr string) {
	c.ingGen++
	in, err := c.h.StartIngest(proctest.IngestConfig{Name: fmt.Sprintf("#%d", c.ingGen), NATSURL: c.ns.URL(),
		Partitions: partitions, HSTokens: c.tokens}, addr)
	if err != nil {
		c.t.Error(err)
		return
	}
	c.ing = in
	c.note("started ingest #%d (pid %d)", c.ingGen, in.Pid())
}

// action is one scheduled disturbance.
type action struct {
	at time.Duration
	do func()
}

// plan draws the chaos schedule: an aggregator SIGKILL every 1.5-4s
// (sometimes two back to back), each restarted 0.1-3s later under a new
// worker id; SIGKILLs in the big calls' bursts, once of every aggregator at
// the same time; three ingest SIGKILLs, restarted 0.2-1.5s later on the same
// address, each while a transaction is in flight; one nats-server restart.
func (c *chaos) plan() []action {
	var acts []action
	restartAgg := func(slot int) func() {
		return func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.aggs[slot] == nil || !c.aggs[slot].Running() {
				c.startAggregator(slot)
			}
		}
	}
	// kill SIGKILLs the aggregators of some slots 0-4ms after the next
	// transaction is stored: its inputs are then being applied, stored,
	// published or acknowledged.
	kill := func(slots ...int) func() {
		after := pipelinetest.Uniform(c.rng, 0, 4*time.Millisecond)
		return func() {
			select { // a notice from before this action does not count
			case <-c.accepted:
			default:
			}
			select {
			case <-c.accepted:
				time.Sleep(after)
			case <-time.After(time.Second):
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, slot := range slots {
				a := c.aggs[slot]
				if a == nil || !a.Running() {
					continue
				}
				if err := a.Kill(); err != nil {
					c.t.Error(err)
				}
				c.logMu.Lock()
				c.counts.aggKills++
				c.logMu.Unlock()
				c.note("SIGKILLed aggregator %s", a.Cfg.ID)
			}
		}
	}
	killAgg := func(slot int) func() { return kill(slot) }
	for k, b := range bursts {
		if k == killAllBurst {
			all := make([]int, numAggregator)
			for i := range all {
				all[i] = i
			}
			acts = append(acts, action{b, kill(all...)})
			for _, slot := range all {
				acts = append(acts, action{b + pipelinetest.Uniform(c.rng, 300*time.Millisecond, 2*time.Second), restartAgg(slot)})
			}
		} else {
			slot := c.rng.IntN(numAggregator)
			acts = append(acts, action{b, killAgg(slot)},
				action{b + pipelinetest.Uniform(c.rng, 300*time.Millisecond, 2*time.Second), restartAgg(slot)})
		}
		for _, stage := range []time.Duration{3 * time.Second, 6 * time.Second} { // refreshes, hang-ups
			slot := c.rng.IntN(numAggregator)
			acts = append(acts, action{b + stage, killAgg(slot)},
				action{b + stage + pipelinetest.Uniform(c.rng, 300*time.Millisecond, 2*time.Second), restartAgg(slot)})
		}
	}
	for at := 2 * time.Second; at < feed; at += pipelinetest.Uniform(c.rng, 1500*time.Millisecond, 4*time.Second) {
		slot := c.rng.IntN(numAggregator)
		acts = append(acts, action{at, killAgg(slot)},
			action{at + pipelinetest.Uniform(c.rng, 100*time.Millisecond, 3*time.Second), restartAgg(slot)})
		if c.rng.IntN(10) < 3 { // the next owner dies too
			other := (slot + 1 + c.rng.IntN(numAggregator-1)) % numAggregator
			at2 := at + pipelinetest.Uniform(c.rng, 500*time.Millisecond, 2500*time.Millisecond)
			acts = append(acts, action{at2, killAgg(other)},
				action{at2 + pipelinetest.Uniform(c.rng, 100*time.Millisecond, 3*time.Second), restartAgg(other)})
		}
	}
	for _, at := range []time.Duration{12 * time.Second, 38 * time.Second, 52 * time.Second} {
		at += pipelinetest.Uniform(c.rng, 0, 3*time.Second)
		down := pipelinetest.Uniform(c.rng, 200*time.Millisecond, 1500*time.Millisecond)
		midRequest := pipelinetest.Uniform(c.rng, 0, 3*time.Millisecond)
		acts = append(acts, action{at, func() {
			select { // a notice from before this action does not count
			case <-c.sending:
			default:
			}
			select {
			case <-c.sending:
				time.Sleep(midRequest)
			case <-time.After(time.Second):
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if err := c.ing.Kill(); err != nil {
				c.t.Error(err)
			}
			c.logMu.Lock()
			c.counts.ingestKills++
			c.logMu.Unlock()
			c.note("SIGKILLed ingest (down for %s)", down.Round(time.Millisecond))
		}}, action{at + down, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.startIngest(c.ing.AppserviceAddr)
		}})
	}
	acts = append(acts, action{natsRestartAt, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.note("stopping nats-server (SIGTERM)")
		stopAt := time.Now()
		if err := c.ns.Stop(); err != nil {
			c.note("nats-server stop: %v", err)
		}
		time.Sleep(natsDown)
		if err := c.ns.Start(); err != nil {
			c.t.Errorf("restart nats-server: %v", err)
		}
		c.logMu.Lock()
		c.counts.natsRestarts++
		c.outage = [2]time.Time{stopAt, time.Now()}
		c.logMu.Unlock()
		c.note("nats-server ready again")
	}})
	sort.SliceStable(acts, func(i, j int) bool { return acts[i].at < acts[j].at })
	return acts
}

// run executes the plan until ctx ends (the workload is sent).
func (c *chaos) run(ctx context.Context) {
	for _, a := range c.plan() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(c.t0.Add(a.at))):
		}
		a.do()
	}
}

// settle restarts what the chaos left down and waits until every process
// is ready.
func (c *chaos) settle() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for slot, a := range c.aggs {
		if a == nil || !a.Running() {
			c.startAggregator(slot)
		}
	}
	if !c.ing.Running() {
		c.startIngest(c.ing.AppserviceAddr)
	}
	for _, a := range c.aggs {
		if err := a.WaitReady(30 * time.Second); err != nil {
			c.t.Errorf("after the chaos: %v", err)
		}
	}
	c.note("settled: %d aggregators ready", numAggregator)
}

// notify sends on ch without blocking.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
