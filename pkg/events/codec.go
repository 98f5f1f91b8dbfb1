package events

import (
	"errors"
	"fmt"

	"github.com/rtcsessions/rtc-sessions/internal/wire"
)

// ErrUnsupportedVersion is returned when a message has a schema version this
// build does not understand.
var ErrUnsupportedVersion = errors.New("unsupported schema version")

// DecodeSessionEvent decodes a message of RTC_EVENTS: of SchemaVersion, or
// of an older version down to OldestSchemaVersion (stored before it, also
// in the redo records of rooms). Version 1 has no call intent and no changed
// list, which decode empty; versions 1 and 2 leave empty fields out and hold
// a member's nested JSON as bytes: they decode to the same values.
func DecodeSessionEvent(data []byte) (SessionEvent, error) {
	var e SessionEvent
	if err := wire.Unmarshal(data, &e); err != nil {
		return SessionEvent{}, fmt.Errorf("decode session event: %w", err)
	}
	if e.V < OldestSchemaVersion || e.V > SchemaVersion {
		return SessionEvent{}, fmt.Errorf("decode session event: %w %d", ErrUnsupportedVersion, e.V)
	}
	return e, nil
}

// DecodeLiveSession decodes the value of a session's own key in the
// rtc_sessions bucket. Older values are still read (liveSessionVersionKnown):
// version 1 (written before members had keys of their own) carries its
// members inline, version 2 has no call intent.
func DecodeLiveSession(data []byte) (LiveSession, error) {
	var s LiveSession
	if err := wire.Unmarshal(data, &s); err != nil {
		return LiveSession{}, fmt.Errorf("decode live session: %w", err)
	}
	if !liveSessionVersionKnown(s.V) {
		return LiveSession{}, fmt.Errorf("decode live session: %w %d", ErrUnsupportedVersion, s.V)
	}
	return s, nil
}
