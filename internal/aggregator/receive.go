package aggregator

import (
	"errors"
	"sort"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// receive is stage 1: the deliveries become inputs. When someone else may
// have received inputs of the partition since this runner's last delivery
// (the first batch after acquiring it, or a gap in consumer sequence), the
// catch-up reads them from the stream first. It reports false when the
// runner stopped meanwhile.
func (r *partRunner) receive(msgs []jetstream.Msg) (*batch, bool) {
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
				return nil, false
			}
		}
	}
	b := &batch{delivered: make([]*input, 0, len(ins))}
	for _, in := range ins {
		if in.msg != nil {
			b.delivered = append(b.delivered, in)
		}
		b.maxSeq = max(b.maxSeq, in.seq)
	}
	b.ins = sortInputs(ins)
	return b, true
}

// group is stage 2: decode every input, check that it is what its subject
// says (inputcheck.go), and group the inputs by room, in stream order. An
// input that fails either goes to RTC_DLQ; group reports false when one
// could not be dead-lettered (the batch is retried, unacknowledged).
func (r *partRunner) group(b *batch) ([]*roomWork, bool) {
	var works []*roomWork
	byRoom := map[string]*roomWork{}
	for _, in := range b.ins {
		raw, err := rawevent.DecodeRaw(in.data)
		if err != nil {
			if r.deadLetter(in, "decode", err) != nil {
				return nil, false
			}
			continue
		}
		in.raw = raw
		// The room is the subject's, and a timer counts only from the
		// timer path (inputcheck.go).
		if reason, err := inputCheck(r.p, in.subject, &in.raw); err != nil {
			if r.deadLetter(in, reason, err) != nil {
				return nil, false
			}
			continue
		}
		key := rawevent.RoomKey(raw.RoomID)
		w := byRoom[key]
		if w == nil {
			w = &roomWork{key: key, roomID: raw.RoomID}
			byRoom[key] = w
			works = append(works, w)
		}
		w.inputs = append(w.inputs, in)
	}
	return works, true
}

// catchUp returns the inputs of the partition that precede the batch and
// were never processed here: those delivered to a previous owner that
// died before acknowledging them. Without this, a redelivery could come
// after a later input of the same room, which would then be applied first.
// It is needed only when someone else may have received inputs since this
// runner's last delivery: the first batch after acquiring the partition,
// or a delivery whose consumer sequence does not follow the last one.
// With gap false (every delivery of the batch followed the previous one,
// or the consumer's last delivery at acquisition, in consumer sequence),
// nothing after catchUpTo can be missing: it reads only that far, instead
// of reading every input of the batch again.
func (r *partRunner) catchUp(batch []*input, gap bool) ([]*input, error) {
	var maxSeq uint64
	have := map[uint64]bool{}
	for _, in := range batch {
		maxSeq = max(maxSeq, in.seq)
		have[in.seq] = true
	}
	var out []*input
	filter := rawevent.PartitionFilter(r.p)
	upTo := r.catchUpTo
	if gap {
		upTo = max(maxSeq, r.catchUpTo)
	}
	for seq := r.nextSeq; seq <= upTo; {
		ctx, cancel := r.opCtx()
		m, err := r.d.raw.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, err
		}
		if m.Sequence > upTo {
			break
		}
		if !have[m.Sequence] {
			in := &input{seq: m.Sequence, subject: m.Subject, data: m.Data}
			out = append(out, in)
			r.d.m.CatchUp.Inc()
		}
		seq = m.Sequence + 1
	}
	return out, nil
}

// sortInputs orders inputs by stream sequence and drops repeated ones (a
// redelivery of an input that is in the batch already).
func sortInputs(ins []*input) []*input {
	sort.Slice(ins, func(i, j int) bool { return ins[i].seq < ins[j].seq })
	out := ins[:0]
	for i, in := range ins {
		if i > 0 && in.seq == ins[i-1].seq {
			in.dupOf = ins[i-1]
			continue
		}
		out = append(out, in)
	}
	return out
}
