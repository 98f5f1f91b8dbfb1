package aggregator

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rtcsessions/rtc-sessions/internal/jsutil"
)

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
	sent := time.Now()
	ctx, cancel := r.opCtx()
	res, _ := jsutil.PublishAll(ctx, r.d.js, msgs)
	cancel()
	for i, w := range ready {
		err := res[i].Err
		switch {
		case err == nil:
			w.rm.Committed(w.commit, res[i].Ack.Sequence)
			w.committedAt = sent
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
