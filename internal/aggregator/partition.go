package aggregator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// errPoison marks failures that retrying cannot fix (a reducer panic, a
// record that cannot be encoded or stored): after WorkerConfig.MaxDeliver
// attempts such an input goes to RTC_DLQ. Every other failure is taken to be
// transient (NATS unavailable, timeouts) and retried without limit.
var errPoison = errors.New("poison input")

// Headers of a message in RTC_DLQ; the body is the original input.
const (
	HeaderDLQReason   = "Rtc-Dlq-Reason"   // decode or apply
	HeaderDLQError    = "Rtc-Dlq-Error"    // the error text (one line)
	HeaderDLQPart     = "Rtc-Partition"    // the partition number
	HeaderDLQSeq      = "Rtc-Stream-Seq"   // the input's RTC_RAW sequence
	HeaderDLQSubject  = "Rtc-Orig-Subject" // the input's RTC_RAW subject
	HeaderDLQAttempts = "Rtc-Attempts"     // deliveries before giving up
)

// Result labels of Metrics.Inputs.
const (
	resultApplied   = "applied"
	resultStale     = "stale"
	resultDuplicate = "duplicate"
	resultDLQ       = "dlq"
)

// partRunner consumes one partition: one input at a time, in stream order.
type partRunner struct {
	w    *Worker
	p    int
	name string
	log  *zap.Logger

	mu      sync.Mutex
	it      jetstream.MessagesContext
	stopped bool
	stopCh  chan struct{}
	done    chan struct{}
}

func newPartRunner(w *Worker, p int) *partRunner {
	return &partRunner{w: w, p: p, name: topology.ConsumerName(p), log: w.log.With(zap.Int("partition", p)),
		stopCh: make(chan struct{}), done: make(chan struct{})}
}

func (r *partRunner) isStopped() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped
}

func (r *partRunner) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.stopCh:
	case <-r.w.procCtx.Done():
	case <-t.C:
	}
}

// loop pulls the partition's consumer in its pinned priority group until
// stopped. Errors recreate the iterator after a pause; reconnects are
// handled inside the iterator.
func (r *partRunner) loop() {
	defer close(r.done)
	var cons jetstream.Consumer
	for !r.isStopped() && r.w.procCtx.Err() == nil {
		if cons == nil {
			ctx, cancel := context.WithTimeout(r.w.procCtx, r.w.opts.Worker.OpTimeout)
			c, err := r.w.h.Raw.Consumer(ctx, r.name)
			cancel()
			if err != nil {
				r.log.Warn("look up partition consumer", zap.Error(err))
				r.pause(time.Second)
				continue
			}
			cons = c
		}
		it, err := cons.Messages(jetstream.PullPriorityGroup(topology.ConsumerGroup), jetstream.PullMaxMessages(1))
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
			msg, err := it.Next()
			if err != nil {
				if r.isStopped() || r.w.procCtx.Err() != nil {
					return
				}
				r.log.Warn("partition iterator ended; restarting it", zap.Error(err))
				it.Stop()
				if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
					cons = nil
				}
				r.pause(500 * time.Millisecond)
				break
			}
			r.handle(msg)
		}
	}
}

// stop ends the consumption: buffered inputs are still processed (Drain),
// the input in flight finishes, and with unpin the partition is unpinned so
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
		ctx, cancel := context.WithTimeout(r.w.procCtx, r.w.opts.Worker.OpTimeout)
		defer cancel()
		if err := r.w.h.Raw.UnpinConsumer(ctx, r.name, topology.ConsumerGroup); err != nil {
			r.log.Debug("unpin partition", zap.Error(err))
		}
	}
	r.w.m.ConsumerLag.DeleteLabelValues(strconv.Itoa(r.p))
}

func (r *partRunner) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.w.procCtx, r.w.opts.Worker.OpTimeout)
}

// handle processes one input and settles it: DoubleAck when its effects are
// stored, Nak with a delay when it should be retried, RTC_DLQ and Term when
// it cannot be processed.
func (r *partRunner) handle(msg jetstream.Msg) {
	start := time.Now()
	md, err := msg.Metadata()
	if err != nil {
		r.log.Error("input without JetStream metadata", zap.Error(err))
		_ = msg.Term()
		return
	}
	r.w.m.ConsumerLag.WithLabelValues(strconv.Itoa(r.p)).Set(float64(md.NumPending))
	seq := md.Sequence.Stream
	in, err := events.DecodeRaw(msg.Data())
	if err != nil {
		r.deadLetter(msg, md, "unknown", "decode", err)
		return
	}
	result, err := r.process(&in, seq)
	if err == nil {
		ctx, cancel := r.opCtx()
		if err := msg.DoubleAck(ctx); err != nil {
			// Redelivered later, and then a no-op (seq <= LastIn).
			r.log.Debug("ack", zap.Uint64("seq", seq), zap.Error(err))
		}
		cancel()
		r.w.m.Inputs.WithLabelValues(string(in.Kind), result).Inc()
		r.w.m.ProcessSeconds.Observe(time.Since(start).Seconds())
		if in.Kind == events.InputTimer && result != resultDuplicate {
			r.w.m.TimerLateness.Observe(time.Since(time.UnixMilli(in.Deadline)).Seconds())
		}
		return
	}
	if r.w.procCtx.Err() != nil { // killed or out of grace: leave it to redelivery
		return
	}
	poison := errors.Is(err, errPoison)
	if poison && int(md.NumDelivered) >= r.w.opts.Worker.MaxDeliver {
		r.deadLetter(msg, md, string(in.Kind), "apply", err)
		return
	}
	class := "transient"
	if poison {
		class = "poison"
	}
	r.w.m.Retries.WithLabelValues(class).Inc()
	n := min(md.NumDelivered, 4)
	delay := r.w.opts.Worker.RetryBackoff << (n - 1)
	r.log.Warn("input failed; will retry", zap.Uint64("seq", seq), zap.String("room", string(in.RoomID)),
		zap.Uint64("attempt", md.NumDelivered), zap.String("class", class), zap.Duration("delay", delay), zap.Error(err))
	_ = msg.NakWithDelay(delay)
}

// process applies one input exactly once in effect. The returned result
// labels the input for the metrics.
func (r *partRunner) process(in *events.RawEvent, seq uint64) (string, error) {
	key := events.RoomKey(in.RoomID)
	for attempt := 0; ; attempt++ {
		rec, rev, err := r.load(key, in.RoomID)
		if err != nil {
			return "", err
		}
		if seq <= rec.LastIn {
			// Applied already. When it was the last input, its outbox may not
			// have been published (the previous owner crashed between the
			// store and the acks): publish it again, de-duplicated by id.
			if seq == rec.LastIn {
				if err := r.flush(rec, true); err != nil {
					return "", err
				}
			}
			return resultDuplicate, nil
		}
		res, arm, err := r.apply(rec, in, seq)
		if err != nil {
			r.w.cache.drop(key)
			return "", err
		}
		data, err := EncodeRoomRecord(rec)
		if err != nil {
			r.w.cache.drop(key)
			return "", fmt.Errorf("%w: %w", errPoison, err)
		}
		newRev, err := r.store(key, data, rev)
		if isRevisionConflict(err) {
			// Another worker wrote the room (a hand-off): reload and decide again.
			r.w.cache.drop(key)
			r.w.m.CASConflicts.Inc()
			if attempt < 5 {
				continue
			}
			return "", fmt.Errorf("store room %s: %w", key, err)
		}
		if err != nil {
			r.w.cache.drop(key)
			if errors.Is(err, nats.ErrMaxPayload) {
				err = fmt.Errorf("%w: %w", errPoison, err)
			}
			return "", fmt.Errorf("store room %s: %w", key, err)
		}
		r.w.cache.put(key, r.p, rec, newRev)
		if f := r.w.opts.hooks.afterStore; f != nil {
			f(r.w, r.p, seq)
		}
		if err := r.flush(rec, arm); err != nil {
			return "", err
		}
		r.w.m.Rejections.Add(float64(len(res.Rejections)))
		for _, ev := range res.Events {
			r.w.m.Transitions.WithLabelValues(string(ev.Kind)).Inc()
		}
		if res.Stale {
			return resultStale, nil
		}
		return resultApplied, nil
	}
}

func isRevisionConflict(err error) bool {
	return err != nil && (errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch))
}

// load returns the room's record and its KV revision (0: new room).
func (r *partRunner) load(key string, room id.RoomID) (*RoomRecord, uint64, error) {
	if rec, rev, ok := r.w.cache.get(key); ok {
		r.w.m.CacheLookups.WithLabelValues("hit").Inc()
		return rec, rev, nil
	}
	r.w.m.CacheLookups.WithLabelValues("miss").Inc()
	ctx, cancel := r.opCtx()
	defer cancel()
	e, err := r.w.h.Rooms.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return &RoomRecord{State: rtc.NewRoomState(room)}, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("load room %s: %w", key, err)
	}
	rec, err := DecodeRoomRecord(e.Value())
	if err != nil {
		return nil, 0, fmt.Errorf("%w: room %s: %w", errPoison, key, err)
	}
	r.w.cache.put(key, r.p, rec, e.Revision())
	return rec, e.Revision(), nil
}

func (r *partRunner) store(key string, data []byte, rev uint64) (uint64, error) {
	ctx, cancel := r.opCtx()
	defer cancel()
	if rev == 0 {
		return r.w.h.Rooms.Create(ctx, key, data)
	}
	return r.w.h.Rooms.Update(ctx, key, data, rev)
}

// apply runs the reducer on the record in place and fills in the protocol
// fields. arm says whether the room's timer must be (re)armed: the soonest
// deadline changed.
func (r *partRunner) apply(rec *RoomRecord, in *events.RawEvent, seq uint64) (res rtc.Result, arm bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: reducer panic: %v", errPoison, p)
		}
	}()
	if f := r.w.opts.hooks.beforeApply; f != nil {
		f(in, seq)
	}
	res = rtc.Apply(r.w.opts.Reducer, rec.State, in)
	armed := rec.TimerAt
	if in.Kind == events.InputTimer && in.Deadline == armed {
		armed = 0 // that one-shot schedule fired and is gone
	}
	next := rec.State.NextDeadline()
	rec.LastIn = seq
	rec.Outbox = res.Events
	rec.TimerAt = next
	// A deadline that went away (next == 0) leaves the armed schedule in
	// place: when it fires it is a no-op input. That costs one input per
	// session that ends before its deadline, and saves a purge request.
	return res, next != 0 && next != armed, nil
}

// flush publishes the record's outbox: the session events (Nats-Msg-Id =
// event id), the live sessions they touch (rtc_sessions put or delete) and,
// with arm, the room's timer. Everything is published asynchronously and
// every ack is awaited.
func (r *partRunner) flush(rec *RoomRecord, arm bool) error {
	start := time.Now()
	ctx, cancel := r.opCtx()
	defer cancel()
	var futs []jetstream.PubAckFuture
	publish := func(m *nats.Msg) error {
		f, err := r.w.js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("publish %s: %w", m.Subject, err)
		}
		futs = append(futs, f)
		return nil
	}
	type sessKey struct{ app, call string }
	var touched []sessKey
	seen := map[sessKey]bool{}
	for i := range rec.Outbox {
		ev := rec.Outbox[i]
		data, err := events.EncodeSessionEvent(&ev)
		if err != nil {
			return fmt.Errorf("%w: %w", errPoison, err)
		}
		m := nats.NewMsg(ev.Subject())
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, ev.ID)
		if err := publish(m); err != nil {
			return err
		}
		if k := (sessKey{ev.Application, ev.CallID}); !seen[k] {
			seen[k] = true
			touched = append(touched, k)
		}
	}
	for _, k := range touched {
		m := nats.NewMsg("$KV." + events.BucketSessions + "." + events.SessionKey(k.app, rec.State.RoomID, k.call))
		if ls, ok := rec.State.LiveSession(k.app, k.call); ok {
			data, err := events.EncodeLiveSession(&ls)
			if err != nil {
				return fmt.Errorf("%w: %w", errPoison, err)
			}
			m.Data = data
		} else {
			m.Header.Set("KV-Operation", "DEL") // what kv.Delete sends
		}
		if err := publish(m); err != nil {
			return err
		}
	}
	if arm && rec.TimerAt != 0 {
		m, err := TimerMsg(rec.State.RoomID, rec.TimerAt)
		if err != nil {
			return fmt.Errorf("%w: %w", errPoison, err)
		}
		if err := publish(m); err != nil {
			return err
		}
		r.w.m.TimersArmed.Inc()
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish %s: %w", f.Msg().Subject, err)
		case <-ctx.Done():
			return fmt.Errorf("publish outbox: %w", ctx.Err())
		}
	}
	if len(futs) > 0 {
		r.w.m.PublishSeconds.Observe(time.Since(start).Seconds())
	}
	return nil
}

// TimerMsg is the message schedule of a room's durable timer: published on
// rtc.timer.<roomTok> (one schedule per room: a new one replaces the old),
// it fires a timer input with the exact deadline into the room's partition
// at the deadline rounded up to the whole second (@at has 1 s resolution and
// must never fire early). Nats-TTL: never keeps it alive past RTC_RAW's
// MaxAge.
func TimerMsg(room id.RoomID, deadline int64) (*nats.Msg, error) {
	body, err := events.EncodeRaw(&events.RawEvent{Kind: events.InputTimer, Source: events.SourceTimer,
		RoomID: room, Deadline: deadline, ReceivedAt: deadline})
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(events.TimerSubject(room))
	m.Data = body
	m.Header.Set(jetstream.ScheduleHeader, "@at "+ScheduleTime(deadline).Format(time.RFC3339))
	m.Header.Set(jetstream.ScheduleTargetHeader, events.RawSubject(room))
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

// deadLetter stores the input in RTC_DLQ with the reason in headers, then
// terminates it so that the partition keeps flowing. If the DLQ publish
// fails the input is retried later.
func (r *partRunner) deadLetter(msg jetstream.Msg, md *jetstream.MsgMetadata, kind, reason string, cause error) {
	m := nats.NewMsg(events.DLQPrefix + "." + strconv.Itoa(r.p))
	m.Data = msg.Data()
	errText := strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return ' '
		}
		return c
	}, cause.Error())
	if len(errText) > 1024 {
		errText = errText[:1024]
	}
	m.Header.Set(HeaderDLQReason, reason)
	m.Header.Set(HeaderDLQError, errText)
	m.Header.Set(HeaderDLQPart, strconv.Itoa(r.p))
	m.Header.Set(HeaderDLQSeq, strconv.FormatUint(md.Sequence.Stream, 10))
	m.Header.Set(HeaderDLQSubject, msg.Subject())
	m.Header.Set(HeaderDLQAttempts, strconv.FormatUint(md.NumDelivered, 10))
	m.Header.Set(jetstream.MsgIDHeader, "dlq-"+strconv.FormatUint(md.Sequence.Stream, 10))
	ctx, cancel := r.opCtx()
	defer cancel()
	if _, err := r.w.js.PublishMsg(ctx, m); err != nil {
		r.log.Warn("dead-letter publish failed; will retry", zap.Uint64("seq", md.Sequence.Stream), zap.Error(err))
		_ = msg.NakWithDelay(r.w.opts.Worker.RetryBackoff)
		return
	}
	if err := msg.TermWithReason(reason); err != nil {
		r.log.Warn("term dead-lettered input", zap.Error(err))
	}
	r.w.m.DLQ.WithLabelValues(reason).Inc()
	r.w.m.Inputs.WithLabelValues(kind, resultDLQ).Inc()
	r.log.Error("input sent to RTC_DLQ", zap.Uint64("seq", md.Sequence.Stream), zap.String("reason", reason),
		zap.String("subject", msg.Subject()), zap.Error(cause))
}
