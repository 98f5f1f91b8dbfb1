package aggregator

import (
	"errors"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/jsutil"
)

// A backlog commit has many events per room (a room's inputs of a whole
// batch), and publishing them one round trip at a time (waves) is what
// bounds the throughput. When RTC_EVENTS allows batch publishing
// (nats-server 2.14+), a room with several events to publish sends them as
// one fast batch instead, all such rooms at once: the server stores a
// batch's messages in the order given and stops at the first one that is
// lost or fails its checks, so a room's events are still stored in seq
// order whatever fails. The first event of each batch keeps the condition
// on the room's last stored event, and the batch's acknowledgement gives the
// stream sequence of the room's last event, as the waves do.

// publishEventsBatched publishes the jobs' events: the rooms with several
// events to go as one fast batch each, the others in waves at the same
// time. Whatever a batch could not publish (it stopped or failed) is left
// to the waves of the caller, which look up where the room stands.
func (r *partRunner) publishEventsBatched(jobs []*effectJob) {
	var deep, shallow []*effectJob
	for _, j := range jobs {
		switch n := len(j.events) - j.nextEv; {
		case j.err != nil || n == 0:
		case n == 1:
			shallow = append(shallow, j)
		default:
			deep = append(deep, j)
		}
	}
	if len(deep) == 0 {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { r.eventWaves(shallow) })
	parallel(len(deep), roomsInFlight, func(i int) { r.publishRoomBatch(deep[i]) })
	wg.Wait()
}

// publishRoomBatch publishes the rest of one room's events as a fast batch.
func (r *partRunner) publishRoomBatch(j *effectJob) {
	if !j.rm.EventsSeqKnown {
		if r.lastEvent(j); j.err != nil || j.nextEv >= len(j.events) {
			return
		}
	}
	msgs := make([]*nats.Msg, 0, len(j.events)-j.nextEv)
	msgs = append(msgs, j.nextEventMsg())
	for _, m := range j.events[j.nextEv+1:] {
		m.Header.Del(jetstream.ExpectedLastSubjSeqHeader)
		m.Header.Del(jetstream.ExpectedLastSubjSeqSubjHeader)
		msgs = append(msgs, m)
	}
	ctx, cancel := r.opCtx()
	res, err := r.d.batcher.Publish(ctx, msgs)
	cancel()
	j.nextEv += res.Count
	if err == nil {
		j.rm.EventsSeq = res.Seq
		r.d.m.EventBatches.WithLabelValues("stored").Inc()
		return
	}
	// Where the room stands is unknown now: the waves look it up.
	j.rm.EventsSeqKnown = false
	result := "failed"
	if errors.Is(err, jsutil.ErrBatchStopped) {
		result = "stopped"
	}
	if jsutil.IsRevisionMismatch(err) {
		// Stored already (a retry after a lost ack, the previous owner's
		// redo), or another owner's: the waves look at what is stored.
		r.d.m.EffectConflicts.WithLabelValues("event_order").Inc()
		j.retries++
	}
	r.d.m.EventBatches.WithLabelValues(result).Inc()
	r.log.Info("a room's batch of session events was not stored whole; the rest goes one event at a time",
		zap.String("room", j.rm.Key), zap.Int("events", len(msgs)), zap.Int("stored", res.Count), zap.Error(err))
}
