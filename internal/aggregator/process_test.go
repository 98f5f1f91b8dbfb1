package aggregator

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/proctest"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// buildAggregator builds cmd/aggregator once per test into a temporary
// directory.
func buildAggregator(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH: cannot build cmd/aggregator")
	}
	bin := filepath.Join(t.TempDir(), "aggregator")
	start := time.Now()
	cmd := exec.Command(goBin, "build", "-o", bin, "github.com/rtcsessions/rtc-sessions/cmd/aggregator")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/aggregator: %v\n%s", err, out)
	}
	t.Logf("built cmd/aggregator in %s", time.Since(start).Round(time.Millisecond))
	return bin
}

// syncBuffer collects a subprocess's stderr.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// aggProc is one cmd/aggregator subprocess.
type aggProc struct {
	id     string
	cmd    *exec.Cmd
	stderr *syncBuffer
	addr   string // its /metrics listener
	exited chan struct{}
}

var httpListeningRe = regexp.MustCompile(`"msg":"http listening"[^\n]*"addr":"([^"]+)"`)

// startProc runs cmd/aggregator against the test's nats-server with the
// test topology, configured only through RTC_AGG_* variables (the way the
// Kubernetes Deployment does it). Its stderr (JSON logs) goes to the test
// log when the test fails; it is SIGKILLed at cleanup if still running.
func (e *env) startProc(bin, id string, env ...string) *aggProc {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, EnvPrefix+"_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	set := func(k, v string) { cmd.Env = append(cmd.Env, EnvPrefix+"_"+k+"="+v) }
	set("NATS_URLS", e.url)
	set("NATS_NAME", id)
	set("TOPOLOGY_MODE", "verify") // newEnv created it with e.topo
	set("TOPOLOGY_PARTITIONS", strconv.Itoa(e.topo.Partitions))
	set("TOPOLOGY_ACK_WAIT", e.topo.AckWait.String())
	set("TOPOLOGY_PINNED_TTL", e.topo.PinnedTTL.String())
	set("TOPOLOGY_WORKER_TTL", e.topo.WorkerTTL.String())
	wc := testWorkerConfig()
	set("WORKER_ID", id)
	set("WORKER_MAX_DELIVER", strconv.Itoa(wc.MaxDeliver))
	set("WORKER_RETRY_BACKOFF", wc.RetryBackoff.String())
	set("WORKER_OP_TIMEOUT", wc.OpTimeout.String())
	set("WORKER_STATS_INTERVAL", "0s")
	set("HTTP_LISTEN", "127.0.0.1:0")
	set("LOG_FORMAT", "json")
	set("LOG_LEVEL", "info")
	set("SHUTDOWN_GRACE", "5s")
	cmd.Env = append(cmd.Env, env...)
	p := &aggProc{id: id, cmd: cmd, stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	cmd.Stdout = p.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		e.t.Fatalf("start %s: %v", id, err)
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	e.t.Cleanup(func() {
		cancel() // SIGKILL if still running
		<-p.exited
		if e.t.Failed() {
			e.t.Logf("---- stderr of %s (%s) ----\n%s", id, cmd.ProcessState, tail(p.stderr.String(), 16<<10))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for p.addr == "" {
		if m := httpListeningRe.FindStringSubmatch(p.stderr.String()); m != nil {
			p.addr = m[1]
			break
		}
		select {
		case <-p.exited:
			e.t.Fatalf("%s exited at start: %s\n%s", id, cmd.ProcessState, p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: no http listener after 20s", id)
		}
	}
	return p
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// kill is SIGKILL: no hand-off, no unpin, the heartbeat is left to expire.
func (p *aggProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", p.id, err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not exit after SIGKILL", p.id)
	}
}

// metrics returns the process's /metrics samples by series; nil when it
// cannot be read.
func (p *aggProc) metrics() map[string]float64 {
	m, err := proctest.Scrape("http://" + p.addr + "/metrics")
	if err != nil {
		return nil
	}
	return m
}

const (
	metricOwned   = "rtc_aggregator_owned_partitions"
	metricLive    = "rtc_aggregator_live_workers"
	metricApplied = `rtc_aggregator_inputs_total{kind="event",result="applied"}`
	metricDup     = `rtc_aggregator_inputs_total{kind="event",result="duplicate"}`
)

// share is what rendezvous hashing gives id among live.
func share(live []string, id string, partitions int) []int {
	var out []int
	for p := 0; p < partitions; p++ {
		if Owner(live, p) == id {
			out = append(out, p)
		}
	}
	return out
}

// waitProcsOwn waits until every process reports live_workers = len(ps)
// and owns its rendezvous share of the partitions.
func (e *env) waitProcsOwn(timeout time.Duration, ps ...*aggProc) {
	e.t.Helper()
	ids := make([]string, len(ps))
	for i, p := range ps {
		ids[i] = p.id
	}
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		var state []string
		for _, p := range ps {
			m := p.metrics()
			want := len(share(ids, p.id, e.topo.Partitions))
			state = append(state, fmt.Sprintf("%s: owned %v/%d live %v", p.id, m[metricOwned], want, m[metricLive]))
			ok = ok && m != nil && int(m[metricOwned]) == want && int(m[metricLive]) == len(ps)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("partitions not assigned after %s: %v", timeout, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ackFloors returns the ack floor (stream sequence) and the inputs pending
// or in flight of each of some partitions.
func (e *env) ackFloors(parts []int) (floor map[int]uint64, busy map[int]int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	floor, busy = map[int]uint64{}, map[int]int{}
	for _, p := range parts {
		c, err := e.h.Raw.Consumer(ctx, topology.ConsumerName(p))
		if err != nil {
			return nil, nil, err
		}
		ci, err := c.Info(ctx)
		if err != nil {
			return nil, nil, err
		}
		floor[p] = ci.AckFloor.Stream
		busy[p] = int(ci.NumPending) + ci.NumAckPending
	}
	return floor, busy, nil
}

// partitionsBusy sums NumPending + NumAckPending of some partitions.
func (e *env) partitionsBusy(parts []int) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	busy := 0
	for _, p := range parts {
		c, err := e.h.Raw.Consumer(ctx, topology.ConsumerName(p))
		if err != nil {
			return 0, err
		}
		ci, err := c.Info(ctx)
		if err != nil {
			return 0, err
		}
		busy += int(ci.NumPending) + ci.NumAckPending
	}
	return busy, nil
}

// TestProcessKillUnderLoad runs three real cmd/aggregator processes against
// one nats-server, SIGKILLs the busiest one while inputs flow into its
// partitions, and checks that the other two take its partitions over and
// that RTC_EVENTS is, byte for byte per room, what rtc.Apply computes offline
// over the same inputs (what a single worker produces, see
// TestPipelineMatchesOffline): no transition lost, none duplicated, per-room
// seq without gap or repeat.
func TestProcessKillUnderLoad(t *testing.T) {
	start := time.Now()
	bin := buildAggregator(t)
	e := newEnv(t)
	ids := []string{"proc-a", "proc-b", "proc-c"}
	var procs []*aggProc
	for _, id := range ids {
		procs = append(procs, e.startProc(bin, id))
	}
	e.waitProcsOwn(20*time.Second, procs...)
	// The victim is the process with the most partitions (deterministic for
	// these ids); its partitions are where the kill hurts.
	victim := 0
	for i, id := range ids {
		if len(share(ids, id, e.topo.Partitions)) > len(share(ids, ids[victim], e.topo.Partitions)) {
			victim = i
		}
	}
	vParts := share(ids, ids[victim], e.topo.Partitions)
	var survivors []*aggProc
	for i, p := range procs {
		if i != victim {
			survivors = append(survivors, p)
		}
	}
	t.Logf("processes ready after %s; victim %s owns partitions %v", time.Since(start).Round(time.Millisecond),
		ids[victim], vParts)

	evs := workload(150, 3, time.Now().UnixMilli())
	want := offline(evs)
	// The take-over is complete when every partition of the victim has
	// acked an input stored after the kill (only a survivor can have done
	// that), or, once publishing is over, has nothing left.
	var killedAt time.Time
	var lastSeqAtKill uint64
	var takeover time.Duration
	published := false
	checkTakeover := func() {
		if killedAt.IsZero() || takeover != 0 {
			return
		}
		floor, busy, err := e.ackFloors(vParts)
		if err != nil {
			return
		}
		for _, p := range vParts {
			if floor[p] <= lastSeqAtKill && (busy[p] > 0 || !published) {
				return
			}
		}
		takeover = time.Since(killedAt)
	}
	const chunk = 15
	var appliedAtKill float64
	for i := 0; i < len(evs); i += chunk {
		e.publish(evs[i:min(i+chunk, len(evs))])
		if killedAt.IsZero() {
			// Kill once the victim has applied a good number of inputs and
			// still has inputs pending or in flight in its partitions: it is
			// in the middle of its work, and more keeps arriving.
			m := procs[victim].metrics()
			busy, err := e.partitionsBusy(vParts)
			if err == nil && m[metricApplied] >= 150 && busy > 0 {
				appliedAtKill = m[metricApplied]
				procs[victim].kill(t)
				killedAt = time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				si, err := e.h.Raw.Info(ctx)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				lastSeqAtKill = si.State.LastSeq
				t.Logf("SIGKILLed %s after publishing %d/%d inputs: it had applied %v, %d pending/in flight in its partitions",
					ids[victim], i+chunk, len(evs), appliedAtKill, busy)
			}
		}
		checkTakeover()
		time.Sleep(25 * time.Millisecond)
	}
	if killedAt.IsZero() {
		t.Fatalf("the victim was never caught busy (applied %v)", procs[victim].metrics()[metricApplied])
	}
	published = true
	e.waitProcsOwn(15*time.Second, survivors...)
	t.Logf("survivors own every partition %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	for takeover == 0 {
		if time.Since(killedAt) > 20*time.Second {
			t.Fatalf("the victim's partitions do not move 20s after the kill (RTC_RAW seq %d at the kill)", lastSeqAtKill)
		}
		time.Sleep(50 * time.Millisecond)
		checkTakeover()
	}
	t.Logf("the victim's partitions flow again %s after the kill", takeover.Round(time.Millisecond))
	if takeover > 15*time.Second {
		t.Errorf("take-over after SIGKILL took %s (target 15s)", takeover)
	}
	e.waitIdle(countEvents(want), 30*time.Second)
	got := e.sessionEvents()
	assertMatches(t, got, want)
	// Same check against what RTC_RAW holds (the inputs the pipeline saw).
	assertMatches(t, got, offline(e.rawInputs()))
	kc := kindCounts(got)
	if kc[events.KindSessionStarted] != 150 || kc[events.KindSessionEnded] != 150 ||
		kc[events.KindMemberJoined] != 450 || kc[events.KindMemberLeft] != 450 {
		t.Errorf("transitions by kind: %v", kc)
	}
	// Every RTC_EVENTS message has a distinct Nats-Msg-Id: nothing was
	// stored twice (a re-published outbox must have been de-duplicated).
	seen := map[string]uint64{}
	for _, m := range e.readStream(events.StreamEvents, events.SessionPrefix+".") {
		mid := m.hdr.Get(jetstream.MsgIDHeader)
		if prev, dup := seen[mid]; dup {
			t.Errorf("event %s stored twice (seq %d and %d)", mid, prev, m.seq)
		}
		seen[mid] = m.seq
	}
	if n := liveKeys(t, e); n != 0 {
		t.Errorf("rtc_sessions holds %d keys after every session ended", n)
	}
	var applied, dups float64
	for _, p := range survivors {
		m := p.metrics()
		applied += m[metricApplied]
		dups += m[metricDup]
	}
	t.Logf("survivors applied %v inputs (%v redelivered ones recognised as applied); the victim %v; total %s",
		applied, dups, appliedAtKill, time.Since(start).Round(time.Millisecond))
}
