package aggregator

import (
	"errors"
	"fmt"

	"github.com/rtcsessions/rtc-sessions/internal/roomstore"
)

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
	parallel(len(todo), roomsInFlight, func(i int) {
		if _, err := r.loadRoom(todo[i]); err == nil && todo[i].stage == stageReload {
			todo[i].stage = stageDone
		}
	})
}

// loadRoom returns the room of w from the cache, or loads it (stage 3),
// replaying its last commit when that may not have been carried out.
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
	if err := r.replayLastCommit(rm); err != nil {
		return nil, err
	}
	r.d.cache.put(w.key, r.p, rm)
	w.rm = rm
	return rm, nil
}

// replayLastCommit is the stage between load and apply: a room whose last
// commit may not have been carried out (its LastIn is above the partition's
// ack floor: those inputs were not all acknowledged, so the worker that
// committed them may have died before its effects) carries out that
// commit's redo record first, through the same effects stage as a commit of
// this batch (carryOut). Every write of it is idempotent or conditional, so
// repeating effects that were done is harmless.
func (r *partRunner) replayLastCommit(rm *roomstore.Room) error {
	if rm.Redo != nil && rm.LastIn > r.ackFloor {
		if err := r.carryOut(rm, rm.Redo, true); err != nil {
			return fmt.Errorf("redo the last commit of room %s: %w", rm.Key, err)
		}
		r.d.m.Redos.Inc()
	}
	rm.Redo = nil
	return nil
}
