package aggregator

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/jsutil"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/roomstore"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// partDeps are what a partition runner works with: its connection, the
// stream and bucket it reads and writes, the shared room cache, its
// settings. The Worker builds one and hands it to every runner.
type partDeps struct {
	js      jetstream.JetStream
	raw     jetstream.Stream   // RTC_RAW: the partition consumers, catch-up reads
	rooms   jetstream.KeyValue // rtc_rooms
	cache   *roomCache
	cfg     WorkerConfig
	reducer rtc.Config
	store   roomstore.Options
	m       *Metrics
	log     *zap.Logger
	// The streams the effects' conditional writes look up (effects.go):
	// RTC_EVENTS, rtc_sessions' KV stream, and RTC_TIMERS.
	eventsStream, sessions, timers jetstream.Stream
	// batcher publishes a room's events as one fast batch (eventbatch.go);
	// nil: RTC_EVENTS does not allow it.
	batcher *jsutil.FastBatcher
	// rejectLog is the worker's sampled logger for rejected memberships.
	rejectLog *zap.Logger
	hooks     hooks
	// live ends when the worker is killed or its grace period is over: then
	// nothing more is written and nothing is acknowledged.
	live context.Context
	// pinHeld reports whether a live worker advertises a pin id; a pin
	// assigned more than pinGrace ago that nobody alive advertises belongs
	// to a dead worker (see watchPin).
	pinHeld  func(id string) bool
	pinGrace time.Duration
	// sessionMarkerTTL: ended sessions and departed members are purged
	// from rtc_sessions with a marker that expires after it (0: kept).
	sessionMarkerTTL time.Duration
	// batchSlots: a runner holds one while it processes a batch (nil: no
	// bound). Shared by the worker's runners.
	batchSlots chan struct{}
}

// partRunner consumes one partition: it pulls batches of inputs and
// processes each batch (batch.go), in stream order per room.
type partRunner struct {
	d    partDeps
	p    int
	name string
	log  *zap.Logger
	// rejectLog is log, sampled: a flood of malformed events must not flood
	// the logs (every rejection is counted exactly in the metrics).
	rejectLog *zap.Logger

	// Ordering across owners. ackFloor: every input of the partition at or
	// below it was processed completely, effects included (the consumer's
	// ack floor when the partition was acquired, then the end of each batch
	// this runner finished).
	// nextSeq: every input of the partition below it was processed by this
	// runner or is at or below ackFloor. lastCSeq is the consumer sequence
	// of the last delivery: a delivery that does not follow it means that
	// someone else received inputs in between (see catchUp).
	ackFloor, nextSeq, lastCSeq uint64
	// catchUpTo: the next catch-up reads at least this far (the stream
	// sequence the consumer had delivered when the partition was acquired).
	catchUpTo uint64
	// acquiredCSeq is the consumer sequence of the consumer's last delivery
	// when the partition was acquired: a first delivery right after it
	// means nobody received anything in between, so the catch-up need not
	// read past catchUpTo.
	acquiredCSeq uint64

	// slotHeld: this runner holds one of d.batchSlots.
	slotHeld bool

	mu      sync.Mutex
	it      jetstream.MessagesContext
	pinID   string // the pin this runner holds (Nats-Pin-Id of its deliveries)
	stopped bool
	stopCh  chan struct{}
	done    chan struct{}
}

func newPartRunner(d partDeps, p int) *partRunner {
	log := d.log.With(zap.Int("partition", p))
	rejectLog := d.rejectLog
	if rejectLog == nil {
		rejectLog = sampled(d.log, d.m.LogSampledOut)
	}
	return &partRunner{d: d, p: p, name: topology.ConsumerName(p), log: log,
		rejectLog: rejectLog.With(zap.Int("partition", p)),
		stopCh:    make(chan struct{}), done: make(chan struct{})}
}

// pin is the pin id this runner holds, "" before its first delivery.
func (r *partRunner) pin() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pinID
}

func (r *partRunner) setPin(id string) {
	if id == "" {
		return
	}
	r.mu.Lock()
	r.pinID = id
	r.mu.Unlock()
}

// sampled is log with at most 5 entries per message per second (then every
// one is dropped until the next second): a flood of rejected memberships
// must not flood the logs. One per worker: a sampler holds a table of
// counters.
func sampled(log *zap.Logger, dropped prometheus.Counter) *zap.Logger {
	hook := func(_ zapcore.Entry, d zapcore.SamplingDecision) {
		if d&zapcore.LogDropped != 0 && dropped != nil {
			dropped.Inc()
		}
	}
	return log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Second, 5, 0, zapcore.SamplerHook(hook))
	}))
}

func (r *partRunner) isStopped() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped
}

// pause waits d, or less if the runner stops or the worker dies. It
// reports whether the runner should go on.
// A runner that holds a batch slot gives it up while it pauses (a
// partition retrying a failure must not hold the others up) and takes one
// again before it goes on.
func (r *partRunner) pause(d time.Duration) bool {
	held := r.slotHeld
	r.releaseSlot()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.stopCh:
		return false
	case <-r.d.live.Done():
		return false
	case <-t.C:
	}
	return !held || r.acquireSlot()
}

// acquireSlot waits for a batch slot; false if the runner stops or the
// worker dies first.
func (r *partRunner) acquireSlot() bool {
	if r.d.batchSlots == nil || r.slotHeld {
		return true
	}
	select {
	case r.d.batchSlots <- struct{}{}:
		r.slotHeld = true
		return true
	case <-r.stopCh:
		return false
	case <-r.d.live.Done():
		return false
	}
}

func (r *partRunner) releaseSlot() {
	if r.slotHeld {
		<-r.d.batchSlots
		r.slotHeld = false
	}
}

func (r *partRunner) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.d.live, r.d.cfg.OpTimeout)
}

// loop pulls the partition's consumer in its pinned priority group until
// stopped. Errors recreate the iterator after a pause; reconnects are
// handled inside the iterator.
func (r *partRunner) loop() {
	defer close(r.done)
	// The pin watchers end with the runner (stopCh, or the worker's end):
	// done closes only once they have.
	var watchers sync.WaitGroup
	defer watchers.Wait()
	var cons jetstream.Consumer
	for !r.isStopped() && r.d.live.Err() == nil {
		if cons == nil {
			ctx, cancel := r.opCtx()
			c, err := r.d.raw.Consumer(ctx, r.name)
			cancel()
			if err != nil {
				r.log.Warn("look up partition consumer", zap.Error(err))
				r.pause(time.Second)
				continue
			}
			cons = c
			r.setAckFloor(c.CachedInfo())
			watchers.Go(func() { r.watchPin(c) })
		}
		it, err := cons.Messages(jetstream.PullPriorityGroup(topology.ConsumerGroup),
			jetstream.PullMaxMessages(r.d.cfg.BatchSize))
		if err != nil {
			r.log.Warn("consume partition", zap.Error(err))
			cons = nil
			r.pause(time.Second)
			continue
		}
		r.mu.Lock()
		if r.stopped {
			r.mu.Unlock()
			it.Stop()
			return
		}
		r.it = it
		r.mu.Unlock()
		for {
			batch, err := r.collect(it)
			if len(batch) > 0 {
				// Waiting for a slot, more inputs arrive: take them too.
				if r.acquireSlot() && err == nil {
					batch, err = r.topUp(it, batch)
				}
				r.runBatch(batch)
				r.releaseSlot()
			}
			if err != nil {
				if r.isStopped() || r.d.live.Err() != nil {
					return
				}
				r.log.Warn("partition iterator ended; restarting it", zap.Error(err))
				it.Stop()
				// Look the consumer up again: it may have been recreated, and
				// its ack floor tells what the previous owner finished.
				cons = nil
				r.pause(500 * time.Millisecond)
				break
			}
		}
	}
}

// setAckFloor records the consumer's ack floor. Every input at or below it
// was processed completely, by this runner or a previous owner.
func (r *partRunner) setAckFloor(ci *jetstream.ConsumerInfo) {
	if ci == nil {
		return
	}
	r.ackFloor = max(r.ackFloor, ci.AckFloor.Stream)
	r.nextSeq = max(r.nextSeq, r.ackFloor+1)
	// Everything delivered so far (to a previous owner too) must be read
	// before anything newer is acknowledged: the first batch catches up to
	// here even if its own inputs are older (a redelivery), because later
	// deliveries may follow on without a gap in the consumer sequence.
	r.catchUpTo = max(r.catchUpTo, ci.Delivered.Stream)
	r.acquiredCSeq = ci.Delivered.Consumer
}

// collect waits for the next input, then takes what else arrives within
// the linger, up to BatchSize inputs. It returns what it has with the
// iterator's error.
func (r *partRunner) collect(it jetstream.MessagesContext) ([]jetstream.Msg, error) {
	first, err := it.Next()
	if err != nil {
		return nil, err
	}
	return r.fill(it, []jetstream.Msg{first}, time.Now().Add(r.d.cfg.BatchLinger))
}

// topUp adds what the iterator has buffered to batch, up to BatchSize,
// without waiting.
func (r *partRunner) topUp(it jetstream.MessagesContext, batch []jetstream.Msg) ([]jetstream.Msg, error) {
	return r.fill(it, batch, time.Now())
}

// fill adds to batch, up to BatchSize, what arrives until deadline and,
// past it, what is already buffered.
func (r *partRunner) fill(it jetstream.MessagesContext, batch []jetstream.Msg, deadline time.Time) ([]jetstream.Msg, error) {
	for len(batch) < r.d.cfg.BatchSize {
		wait := time.Until(deadline)
		if wait <= 0 {
			wait = time.Microsecond // take what is buffered, do not wait
		}
		m, err := it.Next(jetstream.NextMaxWait(wait))
		if errors.Is(err, nats.ErrTimeout) {
			break
		}
		if err != nil {
			return batch, err
		}
		batch = append(batch, m)
	}
	return batch, nil
}

// stop ends the consumption: buffered inputs are still processed (Drain),
// the batch in flight finishes, and with unpin the partition is unpinned so
// that the next owner receives it at once instead of after PinnedTTL.
func (r *partRunner) stop(unpin bool) {
	r.mu.Lock()
	if !r.stopped {
		r.stopped = true
		close(r.stopCh)
	}
	it := r.it
	r.mu.Unlock()
	if it != nil {
		it.Drain()
	}
	<-r.done
	if it != nil {
		it.Stop()
	}
	if unpin {
		r.unpinOwn()
	}
	r.d.m.ConsumerLag.DeleteLabelValues(strconv.Itoa(r.p))
}

// pinnedTo returns the partition's pinned client and since when.
func (r *partRunner) pinnedTo(ctx context.Context, cons jetstream.Consumer) (string, time.Time, error) {
	ci, err := cons.Info(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	for _, g := range ci.PriorityGroups {
		if g.Group == topology.ConsumerGroup {
			return g.PinnedClientID, g.PinnedTS, nil
		}
	}
	return "", time.Time{}, nil
}

// unpinOwn hands the partition on at once when this runner stops: it
// releases the pin only if it is this runner's, never one that another
// worker holds by now.
func (r *partRunner) unpinOwn() {
	own := r.pin()
	if own == "" {
		return
	}
	ctx, cancel := r.opCtx()
	defer cancel()
	cons, err := r.d.raw.Consumer(ctx, r.name)
	if err != nil {
		r.log.Debug("unpin partition: look up consumer", zap.Error(err))
		return
	}
	pinned, _, err := r.pinnedTo(ctx, cons)
	if err != nil || pinned != own {
		r.log.Debug("not unpinning: the pin is not ours", zap.String("pinned", pinned), zap.Error(err))
		return
	}
	if err := r.d.raw.UnpinConsumer(ctx, r.name, topology.ConsumerGroup); err != nil {
		r.log.Debug("unpin partition", zap.Error(err))
	}
}

// watchPin runs while this runner waits for its first delivery. A pin held
// by a worker that died lasts pinned_ttl after its last pull; the runner
// releases it at once when no live worker advertises it and it was not
// assigned in the last pinGrace (a live worker advertises a new pin with
// its next heartbeat). So a partition moves after a SIGKILL as soon as the
// dead worker's heartbeat expires.
func (r *partRunner) watchPin(cons jetstream.Consumer) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-r.stopCh:
			return
		case <-r.d.live.Done():
			return
		case <-t.C:
		}
		own := r.pin()
		ctx, cancel := r.opCtx()
		pinned, since, err := r.pinnedTo(ctx, cons)
		cancel()
		switch {
		case err != nil:
			continue
		case pinned == "" || pinned == own:
			return // nobody holds it (the next delivery is ours) or we do
		case r.d.pinHeld != nil && r.d.pinHeld(pinned), time.Since(since) < r.d.pinGrace:
			continue // a live worker holds it, or may: wait
		}
		ctx, cancel = r.opCtx()
		err = r.d.raw.UnpinConsumer(ctx, r.name, topology.ConsumerGroup)
		cancel()
		if err != nil {
			r.log.Debug("release a dead worker's pin", zap.Error(err))
			continue
		}
		r.d.m.DeadPinsReleased.Inc()
		r.log.Info("released the pin of a worker that is gone", zap.String("pin", pinned))
	}
}

// TimerMsg is the message schedule of a room's durable timer: published on
// rtc.timer.<roomTok> in RTC_TIMERS (one schedule per room: a new one
// replaces the old), it fires a timer input with the exact deadline onto
// rtc.fired.<roomTok> at the deadline rounded up to the whole second (@at
// has 1 s resolution and must never fire early); RTC_RAW sources it from
// there into the room's partition, on the timer path (topology.RawStream).
// Nats-TTL: never keeps it alive past RTC_TIMERS' MaxAge.
func TimerMsg(room id.RoomID, deadline int64) (*nats.Msg, error) {
	body, err := rawevent.EncodeRaw(&rawevent.RawEvent{Kind: rawevent.InputTimer, Source: rawevent.SourceTimer,
		RoomID: room, Deadline: deadline, ReceivedAt: deadline})
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(rawevent.TimerSubject(room))
	m.Data = body
	m.Header.Set(jetstream.ScheduleHeader, "@at "+ScheduleTime(deadline).Format(time.RFC3339))
	m.Header.Set(jetstream.ScheduleTargetHeader, rawevent.FiredPrefix+"."+events.Token(string(room)))
	m.Header.Set(jetstream.MsgTTLHeader, "never")
	return m, nil
}

// ScheduleTime is a deadline (ms) rounded up to the whole second, in UTC.
func ScheduleTime(deadline int64) time.Time {
	at := time.UnixMilli(deadline).UTC()
	if t := at.Truncate(time.Second); t.Before(at) {
		return t.Add(time.Second)
	}
	return at
}
