package aggregator

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/roomstore"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// Result labels of Metrics.Inputs.
const (
	resultApplied   = "applied"
	resultStale     = "stale"
	resultDuplicate = "duplicate"
	resultDLQ       = "dlq"
)

// input is one input of a batch.
type input struct {
	msg       jetstream.Msg // nil: read by catchUp, not delivered here (nothing to acknowledge)
	seq       uint64        // RTC_RAW stream sequence
	delivered uint64        // deliveries so far
	subject   string
	data      []byte
	raw       rawevent.RawEvent
	dupOf     *input // this delivery repeats an input of the same batch
	attempts  int    // applies that panicked, in this batch
	res       rtc.Result
	result    string // set once settled: applied, stale, duplicate or dlq
}

func (in *input) kind() string {
	if in.raw.Kind == "" {
		return "unknown"
	}
	return string(in.raw.Kind)
}

// roomWork is what a batch does to one room.
type roomWork struct {
	key    string
	roomID id.RoomID
	inputs []*input // in stream order
	rm     *roomstore.Room
	stage  stage

	commit *roomstore.Commit // the commit in flight
	// committedAt: when the commit was sent to rtc_rooms (it was stored
	// after that); see effectJob.absentIsSafe.
	committedAt time.Time
	applied     []*input // the inputs it commits
	arm         bool     // the room's timer moved: publish its schedule
	// peakBefore is each live session's peak before the commit's inputs:
	// a session whose members move into keys of their own in this commit
	// gets every member written (sessionWrites).
	peakBefore map[string]int

	// single commits one input at a time, to find the input whose commit
	// cannot be stored; storeFails counts failed attempts of the commit in
	// flight, casFails its revision conflicts.
	single     bool
	storeFails int
	casFails   int
	loadFails  int
}

type stage int

const (
	stageApply   stage = iota // inputs left to apply and commit
	stageEffects              // committed: its effects are to be carried out
	stageReload               // the effects failed: reload the room, whose redo record carries them out
	stageDone
)

// errRetryNow: a room must be processed again at once (its state was
// dropped after a reducer panic); no backoff, the attempts are bounded.
var errRetryNow = errors.New("retry at once")

// runBatch processes a batch of delivered inputs, in stages, each in a file
// of its own (docs/aggregator.md, "How it works"):
//
//  1. receive (receive.go): the deliveries become inputs, with what a
//     previous owner left unacknowledged read from the stream (catch-up),
//     in stream order;
//  2. group (receive.go): decode each input, check it is what its subject
//     says, group by room; what cannot be decoded or is not what its
//     subject says goes to the dead-letter stage;
//  3. load (load.go): rooms not in the cache are loaded, and a room whose
//     last commit may not have been carried out replays it first (the
//     previous owner's redo record, effects.go);
//  4. apply (apply.go): the reducer, per room, over its inputs in order;
//  5. commit (commit.go): one revision-checked header per room, with the
//     redo record of its effects;
//  6. effects (effects.go): the live sessions, the timer and the session
//     events, each conditional on still owning the room and on the room's
//     event order;
//  7. ack (batch.go): one ack settles the batch;
//
// and dead-letter (deadletter.go) wherever an input cannot go on. Stages
// 3-6 run as rounds over the batch's rooms: a transient failure (NATS
// unreachable, a timeout) retries the unfinished rooms in place, with
// back-off, the inputs staying unacknowledged and in order; when the runner
// stops or the worker dies first, the batch is abandoned unacknowledged and
// the next owner takes it up.
func (r *partRunner) runBatch(msgs []jetstream.Msg) {
	start := time.Now()
	b, ok := r.receive(msgs)
	if !ok {
		return
	}
	works, ok := r.group(b)
	if !ok {
		return
	}
	if !r.processRooms(b, works) {
		return
	}
	r.ack(b)
	r.d.m.BatchInputs.Observe(float64(len(b.ins)))
	r.d.m.ProcessSeconds.Observe(time.Since(start).Seconds())
}

// batch is one batch's inputs: all of them in stream order (ins), those
// delivered to this runner (delivered: the others were read by the
// catch-up), and the highest stream sequence among them.
type batch struct {
	ins, delivered []*input
	maxSeq         uint64
}

// processRooms runs the load, apply, commit and effects stages over the
// batch's rooms until every room is done, retrying in place. It reports
// false when the batch was abandoned (the runner stopped).
func (r *partRunner) processRooms(b *batch, works []*roomWork) bool {
	for attempt := 0; ; {
		var failed error
		again := false
		r.prefetch(works)
		for _, w := range works {
			switch w.stage {
			case stageReload:
				if _, err := r.loadRoom(w); err != nil {
					failed = err
					continue
				}
				w.stage = stageDone
			case stageApply:
				if w.commit != nil {
					continue
				}
				switch err := r.applyRoom(w); {
				case errors.Is(err, errRetryNow):
					again = true
				case err != nil:
					failed = err
				}
			}
		}
		if err := r.commitAll(works); err != nil {
			failed = err
		}
		if err := r.effectsAll(works); err != nil {
			failed = err
		}
		pending := false
		for _, w := range works {
			if w.stage != stageDone || w.commit != nil {
				pending = true
			}
		}
		if !pending {
			return true
		}
		if r.d.live.Err() != nil || r.isStopped() {
			return false // abandoned: the next owner takes it up
		}
		if failed == nil && again {
			continue
		}
		if failed == nil {
			failed = errors.New("no progress")
		}
		attempt++
		r.d.m.Retries.WithLabelValues("transient").Inc()
		delay := r.d.cfg.RetryBackoff << min(attempt-1, 3)
		r.log.Warn("batch failed; will retry", zap.Int("inputs", len(b.ins)), zap.Int("attempt", attempt),
			zap.Duration("delay", delay), zap.Error(failed))
		for _, in := range b.ins {
			if in.msg != nil && in.result == "" {
				_ = in.msg.InProgress()
			}
		}
		if !r.pause(delay) {
			return false
		}
	}
}

// ack is the last stage: every effect is stored. The consumer acknowledges
// all (AckAll): one ack of the batch's last delivered input settles every
// input up to it, those a previous owner left and this runner read from the
// stream included (catchUp). A repeated delivery of a dead-lettered input is
// terminated like the input.
func (r *partRunner) ack(b *batch) {
	var last jetstream.Msg
	var lastSeq uint64
	for _, in := range b.delivered {
		settled := in
		if in.dupOf != nil {
			settled = in.dupOf
		}
		if settled.result == resultDLQ {
			if in.dupOf != nil {
				_ = in.msg.Term()
			}
			continue
		}
		if in.seq >= lastSeq {
			last, lastSeq = in.msg, in.seq
		}
	}
	if last != nil {
		_ = last.Ack()
	}
	for _, in := range b.ins {
		r.d.m.Inputs.WithLabelValues(in.kind(), in.result).Inc()
		if in.raw.Kind == rawevent.InputTimer && in.result == resultApplied {
			r.d.m.TimerLateness.Observe(time.Since(time.UnixMilli(in.raw.Deadline)).Seconds())
		}
	}
	// Every input of the partition up to maxSeq is now processed completely
	// (those before the batch were, see catchUp): a room committed at or
	// below it needs no redo when it is loaded again.
	r.nextSeq = max(r.nextSeq, b.maxSeq+1)
	r.ackFloor = max(r.ackFloor, b.maxSeq)
}

// isTransient reports errors that retrying later fixes: NATS unreachable,
// timeouts, no JetStream responders (a leader election). Anything else
// about a commit counts against its bounded attempts.
func isTransient(err error) bool {
	if err == nil {
		return false
	}
	for _, t := range []error{nats.ErrTimeout, nats.ErrNoResponders, nats.ErrConnectionClosed,
		nats.ErrConnectionReconnecting, nats.ErrDisconnected, jetstream.ErrNoStreamResponse,
		jetstream.ErrAsyncPublishTimeout, jetstream.ErrTooManyStalledMsgs, nats.ErrSlowConsumer} {
		if errors.Is(err, t) {
			return true
		}
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503 || apiErr.Code == 408
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}
