package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// ErrFiltered is returned by Prepare for an event whose type the ingest does
// not forward (rawevent.IsForwarded). It is not a failure: callers count it.
var ErrFiltered = errors.New("event type not forwarded")

// ErrRejected is wrapped by every error of Prepare that rejects a malformed
// event; RejectReason tells the metric label.
var ErrRejected = errors.New("event rejected")

// RejectError is a rejected event with its metric reason.
type RejectError struct {
	Reason string // one of the Reject* constants
	Err    error
}

func (e *RejectError) Error() string { return e.Reason + ": " + e.Err.Error() }

// Unwrap lets errors.Is find both ErrRejected and the cause.
func (e *RejectError) Unwrap() []error { return []error{ErrRejected, e.Err} }

// RejectReason extracts the reason label of a Prepare error ("" if the error
// is not a rejection).
func RejectReason(err error) string {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}

// ClockOf is whose clock stamps received_at for a source: only the replay of
// an operator's own file may carry received_at in its lines; every live
// source (appservice, sync) stamps the ingest's clock and ignores any
// received_at a homeserver put into an event.
func ClockOf(src rawevent.Source) rawevent.Clock {
	if src == rawevent.SourceReplay {
		return rawevent.FileClock
	}
	return rawevent.IngestClock
}

// Prepare turns one Matrix client event (JSON) into the RawEvent to publish:
// it drops (ErrFiltered) types the aggregator does not need and rejects
// (ErrRejected) what is not a valid client event. The content keeps its
// original JSON bytes (compacted). receivedAt is the ingest's clock (ms);
// whether the event may override it is decided by src (ClockOf), not by the
// caller, so that a live source cannot get it wrong.
func Prepare(data []byte, room id.RoomID, receivedAt int64, homeserver string, src rawevent.Source) (rawevent.RawEvent, error) {
	if len(data) > rawevent.MaxEventBytes {
		return rawevent.RawEvent{}, &RejectError{Reason: RejectTooLarge,
			Err: fmt.Errorf("%d bytes, limit %d", len(data), rawevent.MaxEventBytes)}
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return rawevent.RawEvent{}, &RejectError{Reason: RejectNotObject, Err: errors.New("event is not a JSON object")}
	}
	var peek struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(trimmed, &peek); err != nil {
		return rawevent.RawEvent{}, &RejectError{Reason: RejectMalformed, Err: err}
	}
	if peek.Type != "" && !rawevent.IsForwarded(peek.Type) {
		return rawevent.RawEvent{}, fmt.Errorf("%w: %q", ErrFiltered, clip(peek.Type))
	}
	ev, err := rawevent.ParseEvent(trimmed, rawevent.ParseOptions{RoomID: room, ReceivedAt: receivedAt, Clock: ClockOf(src)})
	if err != nil {
		reason := RejectMalformed
		if errors.Is(err, rawevent.ErrOutOfRange) {
			reason = RejectOutOfRange
		}
		return rawevent.RawEvent{}, &RejectError{Reason: reason, Err: err}
	}
	ev.Homeserver = homeserver
	ev.Source = src
	return ev, nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func roomID(s string) id.RoomID { return id.RoomID(s) }
