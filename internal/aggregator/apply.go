package aggregator

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

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
		if in.raw.Kind == rawevent.InputTimer && in.raw.Deadline == armed {
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
