package aggregator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/assign"
	"github.com/rtcsessions/rtc-sessions/internal/ctlapi"
	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/jsutil"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// ErrNotReady is what Worker.Ready returns while the worker does not consume
// its share of the partitions.
var ErrNotReady = errors.New("worker not ready")

// WorkerOptions are what a Worker needs besides its connection.
type WorkerOptions struct {
	ID       string          // empty: generated (see WorkerConfig.ID)
	Topology topology.Config // partitions, TTLs
	Worker   WorkerConfig
	Reducer  rtc.Config
	Log      *zap.Logger
	Metrics  *Metrics // nil: unregistered metrics
	// Grace bounds the graceful hand-off when Run's context ends.
	Grace time.Duration

	hooks hooks
}

// hooks let tests inject faults at precise points of the protocol.
type hooks struct {
	// afterCommit runs after a room's header was committed and before its
	// effects (parts, session events, live sessions, timer) are published.
	afterCommit func(partition int, room id.RoomID, lastIn uint64)
	// beforeApply runs in apply just before the reducer, under apply's
	// recover: a panic there is handled exactly like a reducer panic.
	beforeApply func(in *rawevent.RawEvent, seq uint64)
}

// Worker is one aggregator replica: it heartbeats into rtc_workers, computes
// which partitions it owns by rendezvous hashing over the live workers, and
// consumes exactly those.
type Worker struct {
	id    string
	opts  WorkerOptions
	nc    *nats.Conn
	js    jetstream.JetStream
	h     *topology.Handles
	log   *zap.Logger
	m     *Metrics
	cache *roomCache
	// sessionsStream is rtc_sessions' stream (KV_rtc_sessions): the fenced
	// live-session writes look up a key's latest message with its headers,
	// which the KV API does not show.
	sessionsStream jetstream.Stream
	// batcher publishes a room's session events as one fast batch; nil
	// when RTC_EVENTS does not allow batch publishing (an older server).
	batcher *jsutil.FastBatcher
	// batchSlots bounds the partitions processing a batch at once
	// (WorkerConfig.ConcurrentBatches).
	batchSlots chan struct{}
	// rejectLog is log, sampled, shared by the partition runners.
	rejectLog *zap.Logger

	// procCtx is cancelled only when the worker is killed or the grace
	// period is exceeded: in-flight inputs finish during a graceful stop.
	procCtx    context.Context
	procCancel context.CancelFunc
	started    time.Time

	changed chan struct{} // live set changed: reconcile

	mu   sync.Mutex
	live map[string]bool
	// pins holds the pin ids each live worker advertises in its heartbeat
	// (pin id -> worker): a pin nobody alive advertises belongs to a dead
	// worker and may be released at once.
	pins       map[string]string
	owned      map[int]*partRunner
	reconciled bool
	selfLive   bool
	killed     bool
	hbRev      uint64
}

// NewWorker prepares a worker on an existing connection and topology.
func NewWorker(nc *nats.Conn, js jetstream.JetStream, h *topology.Handles, o WorkerOptions) *Worker {
	if o.ID == "" {
		o.ID = defaultWorkerID()
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.Grace <= 0 {
		o.Grace = 20 * time.Second
	}
	if def := DefaultConfig().Worker; o.Worker.BatchSize <= 0 {
		o.Worker.BatchSize, o.Worker.BatchLinger = def.BatchSize, def.BatchLinger
	}
	pctx, cancel := context.WithCancel(context.Background())
	log := o.Log.With(zap.String("worker", o.ID))
	return &Worker{
		rejectLog: sampled(log, o.Metrics.LogSampledOut),
		id:        o.ID, opts: o, nc: nc, js: js, h: h, log: o.Log.With(zap.String("worker", o.ID)), m: o.Metrics,
		cache: newRoomCache(o.Worker.CacheRooms), batchSlots: make(chan struct{}, max(1, o.Worker.ConcurrentBatches)), procCtx: pctx, procCancel: cancel, started: time.Now(),
		changed: make(chan struct{}, 1), live: map[string]bool{}, pins: map[string]string{}, owned: map[int]*partRunner{},
	}
}

// ID is the worker's key in rtc_workers.
func (w *Worker) ID() string { return w.id }

// Ready is nil when the worker is connected, registered, and consumes every
// partition it owns.
func (w *Worker) Ready() error {
	if !w.nc.IsConnected() {
		return fmt.Errorf("%w: nats not connected", ErrNotReady)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.reconciled || !w.selfLive {
		return fmt.Errorf("%w: partitions not assigned yet", ErrNotReady)
	}
	return nil
}

// Owned returns the partitions the worker consumes, sorted.
func (w *Worker) Owned() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]int, 0, len(w.owned))
	for p := range w.owned {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

// Owner is the rendezvous-hashing owner of a partition among the live
// workers (internal/assign, shared with rtcctl workers): every worker
// computes the same answer from the same live set.
func Owner(live []string, partition int) string { return assign.Owner(live, partition) }

// Run registers the worker and consumes its partitions until ctx ends, then
// hands its partitions off: it deletes its heartbeat (so that the others
// start pulling at once), stops its consumers, waits for the input in
// flight, and unpins each partition. It returns after the hand-off, or when
// Grace is exceeded.
func (w *Worker) Run(ctx context.Context) error {
	var err error
	if w.sessionsStream, err = w.js.Stream(ctx, kvStreamName(events.BucketSessions)); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("look up the stream of bucket %s: %w", events.BucketSessions, err)
	}
	if w.h.Events.CachedInfo().Config.AllowBatchPublish {
		if w.batcher, err = jsutil.NewFastBatcher(w.nc); err != nil {
			return err
		}
		defer w.batcher.Close()
	} else {
		w.log.Warn("RTC_EVENTS does not allow batch publishing (nats-server before 2.14, or the stream was not updated): " +
			"a room's session events are published one round trip each, which bounds the throughput of a backlog")
	}
	if err := w.register(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: nothing to hand off
		}
		return err
	}
	// Learn the live workers before computing the first assignment:
	// counting only itself, a starting worker would start consuming
	// partitions that belong to others, however briefly. Workers started
	// at the same moment register within the join delay of each other.
	sleepCtx(ctx, w.opts.Worker.JoinDelay)
	w.resync(ctx)
	w.log.Info("worker registered", zap.Int("partitions", w.opts.Topology.Partitions))
	loopCtx, stopLoops := context.WithCancel(ctx)
	context.AfterFunc(w.procCtx, stopLoops) // kill
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); w.heartbeatLoop(loopCtx) }()
	go func() { defer wg.Done(); w.watchLoop(loopCtx) }()
	go func() { defer wg.Done(); w.statsLoop(loopCtx) }()
	w.reconcileLoop(loopCtx)
	stopLoops()
	wg.Wait()

	w.mu.Lock()
	killed := w.killed
	w.mu.Unlock()
	if killed {
		w.stopAll(false)
		return nil
	}
	// Graceful hand-off.
	timer := time.AfterFunc(w.opts.Grace, func() {
		w.log.Warn("graceful hand-off exceeded its grace period; stopping hard")
		w.procCancel()
	})
	defer timer.Stop()
	dctx, cancel := context.WithTimeout(w.procCtx, 5*time.Second)
	if err := w.h.Workers.Delete(dctx, w.id); err != nil {
		w.log.Warn("delete heartbeat", zap.Error(err))
	}
	cancel()
	w.stopAll(true)
	w.procCancel()
	w.log.Info("worker stopped, partitions handed off")
	return nil
}

// kill simulates a crash (tests): the connection is closed abruptly, nothing
// is unpinned and the heartbeat is left to expire.
func (w *Worker) kill() {
	w.mu.Lock()
	w.killed = true
	w.mu.Unlock()
	w.procCancel()
	w.nc.Close()
}

// partDeps is what the worker's partition runners work with.
func (w *Worker) partDeps() partDeps {
	return partDeps{js: w.js, raw: w.h.Raw, rooms: w.h.Rooms, eventsStream: w.h.Events,
		sessions: w.sessionsStream, timers: w.h.Timers, cache: w.cache, cfg: w.opts.Worker,
		reducer: w.opts.Reducer, m: w.m, log: w.log, rejectLog: w.rejectLog, hooks: w.opts.hooks, live: w.procCtx,
		pinHeld: w.pinHeld, pinGrace: w.opts.Topology.WorkerTTL/3 + time.Second,
		sessionMarkerTTL: w.opts.Topology.SessionMarkerTTL, batchSlots: w.batchSlots,
		batcher: w.batcher}
}

func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (w *Worker) workerSubject() string { return "$KV." + rawevent.BucketWorkers + "." + w.id }

// heartbeat is the value of a worker's key in rtc_workers.
type heartbeat = ctlapi.Heartbeat

func (w *Worker) heartbeatValue() []byte {
	hb := heartbeat{Started: w.started.UTC().Format(time.RFC3339), Pins: map[string]string{}}
	w.mu.Lock()
	for p, r := range w.owned {
		if id := r.pin(); id != "" {
			hb.Pins[strconv.Itoa(p)] = id
		}
	}
	w.mu.Unlock()
	b, _ := json.Marshal(hb)
	return b
}

// pinHeld reports whether a live worker advertises pin id.
func (w *Worker) pinHeld(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	owner, ok := w.pins[id]
	return ok && w.live[owner]
}

// setPins records the pins a worker advertises.
func (w *Worker) setPins(worker string, value []byte) {
	var hb heartbeat
	_ = json.Unmarshal(value, &hb)
	for id, owner := range w.pins {
		if owner == worker {
			delete(w.pins, id)
		}
	}
	for _, id := range hb.Pins {
		w.pins[id] = worker
	}
}

// register writes the heartbeat key with a per-key TTL. A raw publish with
// Nats-TTL (rather than kv.Create) also works when the key still exists
// from an earlier run under the same id.
func (w *Worker) register(ctx context.Context) error {
	m := nats.NewMsg(w.workerSubject())
	m.Data = w.heartbeatValue()
	rctx, cancel := context.WithTimeout(ctx, w.opts.Worker.OpTimeout)
	defer cancel()
	pa, err := w.js.PublishMsg(rctx, m, jetstream.WithMsgTTL(w.opts.Topology.WorkerTTL))
	if err != nil {
		return fmt.Errorf("register worker %s in %s: %w", w.id, rawevent.BucketWorkers, err)
	}
	w.mu.Lock()
	w.hbRev = pa.Sequence
	w.live[w.id] = true
	w.selfLive = true
	w.mu.Unlock()
	w.poke()
	return nil
}

// heartbeatLoop refreshes the heartbeat's TTL every third of it with a CAS
// publish (expected last subject sequence): if the key expired or was
// replaced meanwhile, the worker registers anew.
func (w *Worker) heartbeatLoop(ctx context.Context) {
	every := w.opts.Topology.WorkerTTL / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		rev := w.hbRev
		w.mu.Unlock()
		m := nats.NewMsg(w.workerSubject())
		m.Data = w.heartbeatValue()
		hctx, cancel := context.WithTimeout(ctx, every)
		pa, err := w.js.PublishMsg(hctx, m, jetstream.WithExpectLastSequencePerSubject(rev),
			jetstream.WithMsgTTL(w.opts.Topology.WorkerTTL))
		cancel()
		switch {
		case err == nil:
			w.mu.Lock()
			w.hbRev = pa.Sequence
			w.mu.Unlock()
		case ctx.Err() != nil:
			return
		default:
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
				w.log.Warn("heartbeat lost (expired or replaced); registering again")
				if err := w.register(ctx); err != nil {
					w.log.Warn("re-register", zap.Error(err))
				}
				continue
			}
			w.log.Warn("heartbeat refresh failed", zap.Error(err))
		}
	}
}

func (w *Worker) poke() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// watchLoop follows rtc_workers. The watcher is recreated if it ends (for
// instance across a server restart); reconcileLoop also re-lists the keys
// periodically, so a stalled watcher only delays changes.
func (w *Worker) watchLoop(ctx context.Context) {
	for ctx.Err() == nil {
		kw, err := w.h.Workers.WatchAll(ctx)
		if err != nil {
			w.log.Warn("watch workers", zap.Error(err))
			sleepCtx(ctx, time.Second)
			continue
		}
		for e := range kw.Updates() {
			if e == nil {
				continue
			}
			w.mu.Lock()
			if e.Operation() == jetstream.KeyValuePut {
				w.live[e.Key()] = true
				w.setPins(e.Key(), e.Value())
			} else {
				w.setPins(e.Key(), nil)
				delete(w.live, e.Key())
				if e.Key() == w.id {
					w.selfLive = false
				}
			}
			w.mu.Unlock()
			w.poke()
		}
		_ = kw.Stop()
		sleepCtx(ctx, 200*time.Millisecond)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// resync re-lists the live workers (a watcher can miss changes while
// disconnected). It also re-registers the worker if its own key is gone.
func (w *Worker) resync(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, w.opts.Worker.OpTimeout)
	defer cancel()
	lister, err := w.h.Workers.ListKeys(lctx)
	if err != nil {
		if !errors.Is(err, jetstream.ErrNoKeysFound) {
			w.log.Debug("list workers", zap.Error(err))
			return
		}
	}
	live := map[string]bool{}
	if lister != nil {
		for k := range lister.Keys() {
			live[k] = true
		}
		if lctx.Err() != nil {
			return
		}
	}
	w.mu.Lock()
	w.live = live
	self := live[w.id]
	w.selfLive = self
	w.mu.Unlock()
	if !self {
		if err := w.register(ctx); err != nil {
			w.log.Warn("re-register", zap.Error(err))
		}
	}
}

// reconcileLoop starts and stops partition consumers whenever the live set
// changes, and re-lists the live set every third of the worker TTL.
func (w *Worker) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(w.opts.Topology.WorkerTTL / 3)
	defer t.Stop()
	for {
		w.reconcile()
		select {
		case <-ctx.Done():
			return
		case <-w.changed:
		case <-t.C:
			w.resync(ctx)
		}
	}
}

func (w *Worker) reconcile() {
	w.mu.Lock()
	live := make([]string, 0, len(w.live)+1)
	for id := range w.live {
		live = append(live, id)
	}
	if !w.live[w.id] {
		// Until our own key shows up in the watch, count ourselves in: we
		// registered before watching.
		live = append(live, w.id)
	}
	var gain []int
	var lose []*partRunner
	for p := 0; p < w.opts.Topology.Partitions; p++ {
		mine := Owner(live, p) == w.id
		r, have := w.owned[p]
		switch {
		case mine && !have:
			gain = append(gain, p)
		case !mine && have:
			lose = append(lose, r)
			delete(w.owned, p)
		}
	}
	for _, p := range gain {
		w.cache.dropPartition(p)
		r := newPartRunner(w.partDeps(), p)
		w.owned[p] = r
		go r.loop()
	}
	n := len(w.owned)
	// The gauges first: /readyz answers ready once reconciled is set, and
	// what it reports must be on /metrics by then.
	w.m.LiveWorkers.Set(float64(len(live)))
	w.m.OwnedPartitions.Set(float64(n))
	w.reconciled = true
	w.mu.Unlock()
	if len(gain) > 0 || len(lose) > 0 {
		w.log.Info("partitions reassigned", zap.Ints("gained", gain), zap.Int("released", len(lose)),
			zap.Int("owned", n), zap.Int("live_workers", len(live)))
	}
	w.m.Handoffs.WithLabelValues("acquired").Add(float64(len(gain)))
	w.m.Handoffs.WithLabelValues("released").Add(float64(len(lose)))
	if len(lose) > 0 {
		var wg sync.WaitGroup
		for _, r := range lose {
			wg.Add(1)
			go func() { defer wg.Done(); r.stop(true) }()
		}
		wg.Wait()
	}
}

// stopAll stops every partition consumer; with unpin, each partition is
// unpinned after its input in flight is done.
func (w *Worker) stopAll(unpin bool) {
	w.mu.Lock()
	rs := make([]*partRunner, 0, len(w.owned))
	for p, r := range w.owned {
		rs = append(rs, r)
		delete(w.owned, p)
	}
	w.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Add(1)
		go func() { defer wg.Done(); r.stop(unpin) }()
	}
	wg.Wait()
	w.m.OwnedPartitions.Set(0)
}

// statsLoop keeps the gauges true without waiting for deliveries: every
// StatsInterval it reads each owned partition's consumer (inputs not yet
// delivered plus those delivered and not yet acknowledged: a stuck
// partition shows its backlog), and while this worker owns partition 0 it
// follows rtc_sessions to count the live sessions and members (once: the
// owner of partition 0; elsewhere 0).
func (w *Worker) statsLoop(ctx context.Context) {
	if w.opts.Worker.StatsInterval <= 0 {
		return
	}
	t := time.NewTicker(w.opts.Worker.StatsInterval)
	defer t.Stop()
	var stopLive context.CancelFunc
	defer func() {
		if stopLive != nil {
			stopLive()
		}
	}()
	for {
		w.mu.Lock()
		_, leader := w.owned[0]
		owned := make([]int, 0, len(w.owned))
		for p := range w.owned {
			owned = append(owned, p)
		}
		w.mu.Unlock()
		switch {
		case leader && stopLive == nil:
			stopLive = w.startCountLive(ctx)
		case !leader && stopLive != nil:
			stopLive()
			stopLive = nil
			w.m.LiveSessions.Set(0)
			w.m.LiveMembers.Set(0)
		}
		for _, p := range owned {
			ictx, cancel := context.WithTimeout(ctx, w.opts.Worker.OpTimeout)
			c, err := w.h.Raw.Consumer(ictx, topology.ConsumerName(p))
			if err == nil {
				ci := c.CachedInfo()
				w.m.ConsumerLag.WithLabelValues(strconv.Itoa(p)).Set(float64(ci.NumPending) + float64(ci.NumAckPending))
			}
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// startCountLive runs countLive until the returned function is called.
func (w *Worker) startCountLive(ctx context.Context) context.CancelFunc {
	lctx, cancel := context.WithCancel(ctx)
	go w.countLive(lctx)
	return cancel
}

// countLive follows rtc_sessions (every session's latest value, then each
// change) and keeps the live session and member gauges: one read of the
// bucket at start, then incremental, whatever the number of sessions.
func (w *Worker) countLive(ctx context.Context) {
	for ctx.Err() == nil {
		kw, err := w.h.Sessions.WatchAll(ctx)
		if err != nil {
			w.log.Debug("watch live sessions", zap.Error(err))
			sleepCtx(ctx, time.Second)
			continue
		}
		participants := map[string]int{}
		members := 0
		for e := range kw.Updates() {
			if e == nil {
				continue // the current values are in
			}
			sk, member, ok := events.SplitSessionsKey(e.Key())
			if !ok || member != "" {
				continue // a member's key: counted in its session's participants
			}
			members -= participants[sk]
			delete(participants, sk)
			if e.Operation() == jetstream.KeyValuePut {
				if n, err := eventcodec.LiveSessionParticipants(e.Value()); err == nil {
					participants[sk] = n
					members += n
				}
			}
			w.m.LiveSessions.Set(float64(len(participants)))
			w.m.LiveMembers.Set(float64(members))
		}
		go func() { _ = kw.Stop() }()
		sleepCtx(ctx, time.Second)
	}
}

// kvStreamName is the stream behind a KV bucket.
func kvStreamName(bucket string) string { return "KV_" + bucket }
