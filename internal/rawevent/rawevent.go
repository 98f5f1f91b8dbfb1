package rawevent

import (
	"encoding/json"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// RawVersion is the version of the inputs on RTC_RAW (RawEvent). It did not
// change with the session events' version 2: an ingest and an aggregator
// of either side of that change read each other's inputs.
const RawVersion = 1

// InputKind says what a message on RTC_RAW is.
type InputKind string

const (
	InputEvent InputKind = "event" // a Matrix event forwarded by the ingest
	InputTimer InputKind = "timer" // a room's durable expiry timer firing
)

// Source says how the ingest obtained an event.
type Source string

const (
	SourceAppservice Source = "appservice" // pushed by the homeserver (application service API)
	SourceSync       Source = "sync"       // timeline of a bot's /sync
	SourceSyncState  Source = "sync_state" // room state of a bot's (initial) /sync: reconciles
	SourceReplay     Source = "replay"     // a JSON-lines file
	SourceTimer      Source = "timer"      // the aggregator's own timer
	// SourceReconcile is the current room state the ingest re-read from a
	// homeserver (GET /rooms/{roomId}/state) to repair what its push or sync
	// missed: an ordinary event input (last-writer-wins per state key; a
	// copy carrying unsigned.redacted_because counts as redacted), see
	// docs/aggregator.md "Reconciliation".
	SourceReconcile Source = "reconcile"
)

// RawEvent is one input on RTC_RAW: a Matrix event as the ingest received it,
// or a timer firing for a room. Content holds the event content as the
// original JSON bytes: the aggregator parses it, so a parser fix applies on
// replay too.
type RawEvent struct {
	V          int       `json:"v"`
	Kind       InputKind `json:"kind"`
	Homeserver string    `json:"homeserver,omitempty"` // the homeserver name the ingest knows the source by
	Source     Source    `json:"source,omitempty"`
	// ReceivedAt is the ingest's clock when it received the event (ms). It is
	// the only wall-clock time the aggregator ever sees: it drives the room's
	// logical clock.
	ReceivedAt int64 `json:"received_at"`

	RoomID         id.RoomID       `json:"room_id"`
	EventID        id.EventID      `json:"event_id,omitempty"`
	Type           string          `json:"type,omitempty"`
	StateKey       *string         `json:"state_key,omitempty"` // nil for non-state events
	Sender         id.UserID       `json:"sender,omitempty"`
	OriginServerTS int64           `json:"origin_server_ts,omitempty"`
	Content        json.RawMessage `json:"content,omitempty"`
	Redacts        id.EventID      `json:"redacts,omitempty"`
	// StickyDurationMS is the MSC4354 sticky duration (sticky / msc4354_sticky
	// block); nil for events that are not sticky.
	StickyDurationMS *int64 `json:"sticky_duration_ms,omitempty"`

	// RedactedBy is set when the event arrived already redacted (its
	// unsigned.redacted_because): the aggregator treats it as redacted.
	RedactedBy id.EventID `json:"redacted_by,omitempty"`
	RedactedAt int64      `json:"redacted_at,omitempty"` // the redaction's origin_server_ts

	// Deadline is the room deadline (ms) a timer input was armed for.
	Deadline int64 `json:"deadline,omitempty"`
}

// MsgID is the Nats-Msg-Id of the input on RTC_RAW: the event id, so the
// same event from several homeservers is stored once, except that the
// redacted copy of an event is a different input from the original.
func (r *RawEvent) MsgID() string {
	if r.RedactedBy != "" {
		return string(r.EventID) + "#redacted"
	}
	return string(r.EventID)
}

// IsState reports whether the event is a state event.
func (r *RawEvent) IsState() bool { return r.StateKey != nil }

// EncodeRaw encodes an input for RTC_RAW, stamping its version (RawVersion).
func EncodeRaw(e *RawEvent) ([]byte, error) {
	e.V = RawVersion
	b, err := wire.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode raw event %s: %w", e.EventID, err)
	}
	return b, nil
}

// DecodeRaw decodes an input from RTC_RAW.
func DecodeRaw(data []byte) (RawEvent, error) {
	var e RawEvent
	if err := wire.Unmarshal(data, &e); err != nil {
		return RawEvent{}, fmt.Errorf("decode raw event: %w", err)
	}
	if e.V != RawVersion {
		return RawEvent{}, fmt.Errorf("decode raw event: %w %d", events.ErrUnsupportedVersion, e.V)
	}
	switch e.Kind {
	case InputEvent, InputTimer:
	default:
		return RawEvent{}, fmt.Errorf("decode raw event: unknown input kind %q", e.Kind)
	}
	if e.RoomID == "" {
		return RawEvent{}, errors.New("decode raw event: no room_id")
	}
	return e, nil
}
