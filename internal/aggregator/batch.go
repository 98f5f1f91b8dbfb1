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

	"github.com/rtcsessions/rtc-sessions/internal/jsutil"
	"github.com/rtcsessions/rtc-sessions/internal/roomstore"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// Headers of a message in RTC_DLQ; the body is the original input.
const (
	HeaderDLQReason   = "Rtc-Dlq-Reason"   // decode, apply, store, room_state, or an inputCheck reason
	HeaderDLQError    = "Rtc-Dlq-Error"    // the error text (one line)
	HeaderDLQPart     = "Rtc-Partition"    // the partition number
	HeaderDLQSeq      = "Rtc-Stream-Seq"   // the input's RTC_RAW sequence
	HeaderDLQSubject  = "Rtc-Orig-Subject" // the input's RTC_RAW subject
	HeaderDLQAttempts = "Rtc-Attempts"     // attempts before giving up
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
	raw       events.RawEvent
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

	commit  *roomstore.Commit // the commit in flight
	applied []*input          // the inputs it commits
	arm     bool              // the room's timer moved: publish its schedule
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

// runBatch processes a batch of delivered inputs: in stream order per room,
// one commit per room, every effect published asynchronously and awaited,
// then every input acknowledged. Transient failures are retried in place
// (the inputs stay unacknowledged and in order); when the runner stops or
// the worker dies first, the batch is abandoned unacknowledged and the next
// owner takes it up (catchUp, and the redo of committed rooms).
func (r *partRunner) runBatch(msgs []jetstream.Msg) {
	start := time.Now()
	ins := make([]*input, 0, len(msgs))
	// A gap in consumer sequence: someone else received inputs between
	// this runner's deliveries (or between the acquisition and its first).
	gap := false
	needCatchUp := r.catchUpTo >= r.nextSeq
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			r.log.Error("input without JetStream metadata", zap.Error(err))
			_ = m.Term()
			continue
		}
		if h := m.Headers(); h != nil {
			r.setPin(h.Get("Nats-Pin-Id"))
		}
		expect := r.lastCSeq + 1
		if r.lastCSeq == 0 {
			expect = r.acquiredCSeq + 1
		}
		if md.Sequence.Consumer != expect {
			gap, needCatchUp = true, true
		}
		r.lastCSeq = md.Sequence.Consumer
		ins = append(ins, &input{msg: m, seq: md.Sequence.Stream, delivered: md.NumDelivered,
			subject: m.Subject(), data: m.Data()})
	}
	if needCatchUp {
		for {
			extra, err := r.catchUp(ins, gap)
			if err == nil {
				ins = append(ins, extra...)
				r.catchUpTo = 0
				break
			}
			r.log.Warn("read the inputs before the batch; will retry", zap.Error(err))
			if !r.pause(r.d.cfg.RetryBackoff) {
				return
			}
		}
	}
	delivered := make([]*input, 0, len(ins))
	for _, in := range ins {
		if in.msg != nil {
			delivered = append(delivered, in)
		}
	}
	ins = sortInputs(ins)
	var maxSeq uint64
	var works []*roomWork
	byRoom := map[string]*roomWork{}
	for _, in := range ins {
		maxSeq = max(maxSeq, in.seq)
		raw, err := events.DecodeRaw(in.data)
		if err != nil {
			if r.deadLetter(in, "decode", err) != nil {
				return // unacknowledged: retried (the DLQ could not be written)
			}
			continue
		}
		in.raw = raw
		// The room is the subject's, and a timer counts only from the
		// timer path (inputcheck.go).
		if reason, err := inputCheck(r.p, in.subject, &in.raw); err != nil {
			if r.deadLetter(in, reason, err) != nil {
				return
			}
			continue
		}
		key := events.RoomKey(raw.RoomID)
		w := byRoom[key]
		if w == nil {
			w = &roomWork{key: key, roomID: raw.RoomID}
			byRoom[key] = w
			works = append(works, w)
		}
		w.inputs = append(w.inputs, in)
	}

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
			break
		}
		if r.d.live.Err() != nil || r.isStopped() {
			return // abandoned: the next owner takes it up
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
		r.log.Warn("batch failed; will retry", zap.Int("inputs", len(ins)), zap.Int("attempt", attempt),
			zap.Duration("delay", delay), zap.Error(failed))
		for _, in := range ins {
			if in.msg != nil && in.result == "" {
				_ = in.msg.InProgress()
			}
		}
		if !r.pause(delay) {
			return
		}
	}

	// Every effect is stored. The consumer acknowledges all (AckAll): one
	// ack of the batch's last delivered input settles every input up to it,
	// those a previous owner left and this runner read from the stream
	// included (catchUp). A repeated delivery of a dead-lettered input is
	// terminated like the input.
	var last jetstream.Msg
	var lastSeq uint64
	for _, in := range delivered {
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
	for _, in := range ins {
		r.d.m.Inputs.WithLabelValues(in.kind(), in.result).Inc()
		if in.raw.Kind == events.InputTimer && in.result == resultApplied {
			r.d.m.TimerLateness.Observe(time.Since(time.UnixMilli(in.raw.Deadline)).Seconds())
		}
	}
	// Every input of the partition up to maxSeq is now processed completely
	// (those before the batch were, see catchUp): a room committed at or
	// below it needs no redo when it is loaded again.
	r.nextSeq = max(r.nextSeq, maxSeq+1)
	r.ackFloor = max(r.ackFloor, maxSeq)
	r.d.m.BatchInputs.Observe(float64(len(ins)))
	r.d.m.ProcessSeconds.Observe(time.Since(start).Seconds())
}

// prefetch loads the rooms of a batch that are not in the cache, several at
// a time: a batch after a hand-off, or over more rooms than the cache
// holds, would otherwise wait for one KV read per room in turn. Failures
// are left for loadRoom to report.
func (r *partRunner) prefetch(works []*roomWork) {
	var todo []*roomWork
	for _, w := range works {
		if (w.stage == stageApply && w.rm == nil && w.commit == nil) || w.stage == stageReload {
			if _, ok := r.d.cache.get(w.key); !ok {
				todo = append(todo, w)
			}
		}
	}
	if len(todo) < 2 {
		return
	}
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, w := range todo {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := r.loadRoom(w); err == nil && w.stage == stageReload {
				w.stage = stageDone
			}
		}()
	}
	wg.Wait()
}

// loadRoom returns the room of w from the cache, or loads it. A room whose
// last commit may not have been carried out (its LastIn is above the
// partition's ack floor: those inputs were not all acknowledged) gets its
// redo record carried out first.
func (r *partRunner) loadRoom(w *roomWork) (*roomstore.Room, error) {
	if rm, ok := r.d.cache.get(w.key); ok {
		r.d.m.CacheLookups.WithLabelValues("hit").Inc()
		w.rm = rm
		return rm, nil
	}
	r.d.m.CacheLookups.WithLabelValues("miss").Inc()
	ctx, cancel := r.opCtx()
	rm, err := roomstore.Load(ctx, r.d.rooms, w.roomID)
	cancel()
	if err != nil {
		if errors.Is(err, roomstore.ErrFormat) {
			w.loadFails++
			if w.loadFails >= r.d.cfg.MaxDeliver {
				// A record this build cannot read: its inputs go to the DLQ
				// (re-drivable once fixed) rather than block the partition.
				for _, in := range w.inputs {
					if in.result == "" {
						if derr := r.deadLetter(in, "room_state", err); derr != nil {
							return nil, derr
						}
					}
				}
				w.stage, w.commit = stageDone, nil
				return nil, nil
			}
		}
		return nil, err
	}
	if rm.Redo != nil && rm.LastIn > r.ackFloor {
		if err := r.carryOut(rm, rm.Redo, true); err != nil {
			return nil, fmt.Errorf("redo the last commit of room %s: %w", w.key, err)
		}
		r.d.m.Redos.Inc()
	}
	rm.Redo = nil
	r.d.cache.put(w.key, r.p, rm)
	w.rm = rm
	return rm, nil
}

// applyRoom applies the room's unsettled inputs in order and prepares their
// commit. Inputs at or below the room's LastIn were applied already.
func (r *partRunner) applyRoom(w *roomWork) error {
	rm := w.rm
	if rm == nil {
		var err error
		if rm, err = r.loadRoom(w); err != nil || rm == nil {
			return err
		}
	}
	armed := rm.TimerAt
	peakBefore := make(map[string]int, len(rm.State.Sessions))
	for k, s := range rm.State.Sessions {
		peakBefore[k] = s.Peak
	}
	var outbox []events.SessionEvent
	var applied []*input
	var last uint64
	for _, in := range w.inputs {
		if in.result != "" {
			continue
		}
		if in.seq <= rm.LastIn {
			in.result = resultDuplicate
			continue
		}
		if w.single && len(applied) == 1 {
			break
		}
		res, err := r.applyBounded(rm.State, armed, in) // a timer moves the clock at most to the room's own deadline
		if err != nil {
			// The state may be half-changed: drop it, and reload and
			// re-apply the earlier inputs on the next round.
			r.d.cache.drop(w.key)
			w.rm = nil
			in.attempts++
			if in.attempts >= r.d.cfg.MaxDeliver {
				if derr := r.deadLetter(in, "apply", err); derr != nil {
					return derr
				}
			} else {
				r.d.m.Retries.WithLabelValues("poison").Inc()
			}
			return errRetryNow
		}
		if in.raw.Kind == events.InputTimer && in.raw.Deadline == armed {
			armed = 0 // that one-shot schedule fired and is gone
		}
		in.res = res
		outbox = append(outbox, res.Events...)
		applied = append(applied, in)
		last = in.seq
	}
	if len(applied) == 0 {
		w.stage = stageDone
		return nil
	}
	// The room's timer is (re)armed only when its soonest deadline comes
	// earlier than the armed one, or none is armed. A deadline that moved
	// later (a refresh of the soonest member, its leave) or went away
	// leaves the armed schedule in place: it fires early as a no-op input,
	// which then arms the deadline of that moment. Refreshes move deadlines
	// later all the time: re-arming on each cost a message schedule for
	// about every other input.
	if timerLost(armed, rm.State.Clock) {
		armed = 0 // its schedule is gone: arm the next deadline (inputcheck.go)
	}
	next, timerAt := rm.State.NextDeadline(), armed
	arm := next != 0 && (armed == 0 || next < armed)
	if arm {
		timerAt = next
	}
	c, err := rm.Prepare(last, timerAt, outbox, r.d.store)
	if err != nil {
		r.d.cache.drop(w.key)
		w.rm = nil
		return r.storeFailed(w, applied, err)
	}
	w.commit, w.applied, w.arm, w.peakBefore = c, applied, arm, peakBefore
	return nil
}

// storeFailed handles a commit that failed in a way retrying may not fix
// (it could not be encoded or stored, not for a transient reason). After
// MaxDeliver attempts the room's inputs are committed one at a time, and an
// input whose own commit still fails goes to the DLQ: the rest of the room
// and the partition flow on.
func (r *partRunner) storeFailed(w *roomWork, applied []*input, cause error) error {
	w.commit = nil
	w.storeFails++
	r.d.m.Retries.WithLabelValues("poison").Inc()
	if w.storeFails < r.d.cfg.MaxDeliver {
		return fmt.Errorf("commit room %s: %w", w.key, cause)
	}
	w.storeFails = 0
	if !w.single && len(applied) > 1 {
		w.single = true
		return errRetryNow
	}
	applied[0].attempts = r.d.cfg.MaxDeliver
	if err := r.deadLetter(applied[0], "store", cause); err != nil {
		return err
	}
	return errRetryNow
}

// apply runs the reducer for one input, turning a panic into an error.
func (r *partRunner) apply(st *rtc.RoomState, in *input) (res rtc.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("reducer panic: %v", p)
		}
	}()
	if f := r.d.hooks.beforeApply; f != nil {
		f(&in.raw, in.seq)
	}
	res = rtc.Apply(r.d.reducer, st, &in.raw)
	for _, rj := range res.Rejections {
		r.d.m.Rejections.WithLabelValues(string(rj.Code)).Inc()
		r.rejectLog.Info("membership rejected", zap.String("room", string(in.raw.RoomID)),
			zap.String("event_id", string(rj.EventID)), zap.String("sender", string(in.raw.Sender)),
			zap.String("reason", string(rj.Code)), zap.String("detail", rj.Reason))
	}
	for i := range res.Events {
		r.d.m.Transitions.WithLabelValues(string(res.Events[i].Kind)).Inc()
	}
	return res, nil
}

// commitAll stores the prepared commits: the redo chunks of those that have
// some, then every header, revision-checked. A room that lost a revision
// check is reloaded and applied again.
func (r *partRunner) commitAll(works []*roomWork) error {
	var failed error
	var chunked, ready []*roomWork
	var msgs []*nats.Msg
	for _, w := range works {
		if w.stage != stageApply || w.commit == nil {
			continue
		}
		if len(w.commit.Chunks) > 0 {
			chunked = append(chunked, w)
			msgs = append(msgs, w.commit.Chunks...)
		} else {
			ready = append(ready, w)
		}
	}
	if len(msgs) > 0 {
		ctx, cancel := r.opCtx()
		res, _ := jsutil.PublishAll(ctx, r.d.js, msgs)
		cancel()
		i := 0
		for _, w := range chunked {
			ok := true
			for range w.commit.Chunks {
				if res[i].Err != nil {
					ok, failed = false, res[i].Err
				}
				i++
			}
			if ok {
				ready = append(ready, w)
			}
		}
	}
	if len(ready) == 0 {
		return failed
	}
	msgs = msgs[:0]
	for _, w := range ready {
		msgs = append(msgs, w.commit.Header)
	}
	ctx, cancel := r.opCtx()
	res, _ := jsutil.PublishAll(ctx, r.d.js, msgs)
	cancel()
	for i, w := range ready {
		err := res[i].Err
		switch {
		case err == nil:
			w.rm.Committed(w.commit, res[i].Ack.Sequence)
			for _, in := range w.applied {
				in.result = resultApplied
				if in.res.Stale {
					in.result = resultStale
				}
			}
			w.stage, w.storeFails, w.casFails = stageEffects, 0, 0
			if f := r.d.hooks.afterCommit; f != nil {
				f(r.p, w.roomID, w.rm.LastIn)
			}
		case jsutil.IsRevisionMismatch(err):
			// Another worker wrote the room (a hand-off), or a write of ours
			// that timed out was stored after all: reload and decide again.
			r.d.m.CASConflicts.Inc()
			r.d.cache.drop(w.key)
			w.rm, w.commit = nil, nil
			if w.casFails++; w.casFails > 5 {
				failed = fmt.Errorf("commit room %s: %w", w.key, err)
			}
		case isTransient(err):
			failed = fmt.Errorf("commit room %s: %w", w.key, err)
		default:
			r.d.cache.drop(w.key)
			w.rm = nil
			if serr := r.storeFailed(w, w.applied, err); serr != nil && !errors.Is(serr, errRetryNow) {
				failed = serr
			}
		}
	}
	return failed
}

// effectsAll carries out the effects of the rooms committed in this round
// (publishEffects). A room whose effects fail is reloaded on the next round:
// its redo record carries them out again.
func (r *partRunner) effectsAll(works []*roomWork) error {
	var failed error
	var jobs []*effectJob
	var owners []*roomWork
	for _, w := range works {
		if w.stage != stageEffects {
			continue
		}
		j, err := newEffectJob(w.rm, w.commit.Redo, w.arm, w.peakBefore, r.d.sessionMarkerTTL)
		if err != nil { // an encoding error: the redo on reload will fail the same way
			failed = err
			r.reloadLater(w)
			continue
		}
		jobs = append(jobs, j)
		owners = append(owners, w)
	}
	if len(jobs) == 0 {
		return failed
	}
	start := time.Now()
	r.publishEffects(jobs)
	r.d.m.PublishSeconds.Observe(time.Since(start).Seconds())
	for i, j := range jobs {
		w := owners[i]
		if j.err != nil {
			failed = j.err
			r.reloadLater(w)
			continue
		}
		if w.arm {
			r.d.m.TimersArmed.Inc()
		}
		w.commit, w.rm.Redo = nil, nil
		// Inputs of the room not yet applied (isolating a failure commits
		// one at a time) make it go round again.
		w.stage = stageDone
		for _, in := range w.inputs {
			if in.result == "" {
				w.stage = stageApply
			}
		}
	}
	return failed
}

func (r *partRunner) reloadLater(w *roomWork) {
	r.d.cache.drop(w.key)
	w.rm, w.commit, w.stage = nil, nil, stageReload
	for _, in := range w.inputs {
		if in.result == "" {
			w.stage = stageApply // reload, then apply the rest
		}
	}
}

// carryOut carries out a commit's effects and waits for them (the redo of a
// room taken over).
func (r *partRunner) carryOut(rm *roomstore.Room, redo *roomstore.Redo, arm bool) error {
	j, err := newEffectJob(rm, redo, arm, nil, r.d.sessionMarkerTTL)
	if err != nil {
		return err
	}
	r.publishEffects([]*effectJob{j})
	return j.err
}

// sessionWrites are the rtc_sessions writes of an outbox. For each session
// it touches: a small one (at most events.InlineMembersMax devices at its
// peak) is one value with its members; a large one has a key per member
// (put for a join or update, delete for a leave) written before the
// session's own key. When a session becomes large in this commit (its peak
// before it, peakBefore, was small) or the previous peaks are not known
// (peakBefore nil: the redo of a room taken over), every member gets its
// key. An ended session's own key is purged, like a departed member's, with
// a marker that expires after markerTTL (0: a delete marker, kept).
func sessionWrites(st *rtc.RoomState, outbox []events.SessionEvent, peakBefore map[string]int, markerTTL time.Duration) ([]*nats.Msg, error) {
	type touched struct {
		app, call string
		members   map[string]*events.Member // member key -> member, nil: left
		order     []string
	}
	var sessions []*touched
	byKey := map[string]*touched{}
	for i := range outbox {
		ev := &outbox[i]
		sk := events.SessionKey(ev.Application, ev.RoomID, ev.CallID)
		t := byKey[sk]
		if t == nil {
			t = &touched{app: ev.Application, call: ev.CallID, members: map[string]*events.Member{}}
			byKey[sk] = t
			sessions = append(sessions, t)
		}
		if ev.Member == nil {
			continue
		}
		mk := events.SessionMemberKey(sk, ev.Member)
		if _, seen := t.members[mk]; !seen {
			t.order = append(t.order, mk)
		}
		if ev.Kind == events.KindMemberLeft {
			t.members[mk] = nil
		} else {
			t.members[mk] = ev.Member
		}
	}
	var msgs []*nats.Msg
	putMember := func(mk string, m *events.Member) error {
		b, err := events.EncodeLiveMember(m)
		if err != nil {
			return err
		}
		msgs = append(msgs, jsutil.KVPut(events.BucketSessions, mk, b))
		return nil
	}
	for _, t := range sessions {
		sk := events.SessionKey(t.app, st.RoomID, t.call)
		rk := rtc.SessionKey(t.app, t.call)
		s := st.Sessions[rk]
		// Keys of members that left a large session go, also when it ended
		// (its peak is gone with it: delete what the events name).
		// Without the previous peaks (a redo), the commit may have been the
		// one in which the session became large: write every member again.
		wasLarge := peakBefore != nil && peakBefore[rk] > events.InlineMembersMax
		mayHaveKeys := peakBefore == nil || wasLarge
		if s == nil || s.Peak > events.InlineMembersMax {
			for _, mk := range t.order {
				if m := t.members[mk]; m == nil {
					if mayHaveKeys {
						msgs = append(msgs, jsutil.KVPurgeTTL(events.BucketSessions, mk, markerTTL))
					}
				} else if s != nil && wasLarge {
					if err := putMember(mk, m); err != nil {
						return nil, err
					}
				}
			}
		}
		if s == nil {
			msgs = append(msgs, jsutil.KVPurgeTTL(events.BucketSessions, sk, markerTTL))
			continue
		}
		ls := events.LiveSession{SessionID: s.ID, RoomID: st.RoomID, Application: s.App, CallID: s.CallID,
			StartedAt: s.StartedAt, Participants: len(s.Members), Users: len(s.UserDevices), Seq: st.Seq,
			UpdatedAt: st.Clock}
		switch {
		case s.Peak <= events.InlineMembersMax:
			ls.Members = make([]events.Member, 0, len(s.Members))
			for _, m := range s.Members {
				ls.Members = append(ls.Members, m.Member)
			}
			events.SortMembers(ls.Members)
		case !wasLarge: // becomes large now: every member gets its key
			ls.MembersInKeys = true
			for _, m := range s.Members {
				if err := putMember(events.SessionMemberKey(sk, &m.Member), &m.Member); err != nil {
					return nil, err
				}
			}
		default:
			ls.MembersInKeys = true
		}
		b, err := events.EncodeLiveSession(&ls)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, jsutil.KVPut(events.BucketSessions, sk, b))
	}
	return msgs, nil
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

// deadLetter stores an input in RTC_DLQ with the reason in headers and
// terminates it, so that the partition flows on. An error means the DLQ
// could not be written: the input stays unsettled and is retried.
func (r *partRunner) deadLetter(in *input, reason string, cause error) error {
	m := nats.NewMsg(events.DLQPrefix + "." + strconv.Itoa(r.p))
	m.Data = in.data
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
	m.Header.Set(HeaderDLQSeq, strconv.FormatUint(in.seq, 10))
	m.Header.Set(HeaderDLQSubject, in.subject)
	m.Header.Set(HeaderDLQAttempts, strconv.FormatUint(max(in.delivered, uint64(in.attempts)), 10))
	m.Header.Set(jetstream.MsgIDHeader, "dlq-"+strconv.FormatUint(in.seq, 10))
	ctx, cancel := r.opCtx()
	defer cancel()
	if _, err := r.d.js.PublishMsg(ctx, m); err != nil {
		r.log.Warn("dead-letter publish failed; will retry", zap.Uint64("seq", in.seq), zap.Error(err))
		return fmt.Errorf("dead-letter input %d: %w", in.seq, err)
	}
	if in.msg != nil {
		if err := in.msg.TermWithReason(reason); err != nil {
			r.log.Warn("term dead-lettered input", zap.Error(err))
		}
	}
	in.result = resultDLQ
	r.d.m.DLQ.WithLabelValues(reason).Inc()
	r.log.Error("input sent to RTC_DLQ", zap.Uint64("seq", in.seq), zap.String("reason", reason),
		zap.String("subject", in.subject), zap.Error(cause))
	return nil
}
