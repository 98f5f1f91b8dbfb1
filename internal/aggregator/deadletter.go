package aggregator

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/ctlapi"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
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

// deadLetter stores an input in RTC_DLQ with the reason in headers and
// terminates it, so that the partition flows on. An error means the DLQ
// could not be written: the input stays unsettled and is retried.
func (r *partRunner) deadLetter(in *input, reason string, cause error) error {
	m := nats.NewMsg(rawevent.DLQPrefix + "." + strconv.Itoa(r.p))
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
	m.Header.Set(ctlapi.HeaderDLQReason, reason)
	m.Header.Set(ctlapi.HeaderDLQError, errText)
	m.Header.Set(ctlapi.HeaderDLQPart, strconv.Itoa(r.p))
	m.Header.Set(ctlapi.HeaderDLQSeq, strconv.FormatUint(in.seq, 10))
	m.Header.Set(ctlapi.HeaderDLQSubject, in.subject)
	m.Header.Set(ctlapi.HeaderDLQAttempts, strconv.FormatUint(max(in.delivered, uint64(in.attempts)), 10))
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
