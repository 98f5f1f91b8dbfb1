package rawevent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"maunium.net/go/mautrix/id"
)

// Limits on a Matrix event accepted from any source. The spec caps a PDU at
// 65,536 bytes and a state key at 255 bytes; anything larger did not come
// from a conforming homeserver.
const (
	MaxEventBytes    = 65536
	MaxStateKeyBytes = 255
	MaxIDBytes       = 255
)

// ErrMalformedEvent is wrapped by every error of ParseEvent.
var ErrMalformedEvent = errors.New("malformed event")

// ErrOutOfRange is wrapped (with ErrMalformedEvent) when a number of the
// envelope is outside the range Matrix allows: canonical JSON integers lie in
// [-(2^53)+1, 2^53-1], and a timestamp or duration must be positive within it.
// Such a value did not come from a conforming homeserver and would overflow
// the aggregator's arithmetic (origin_server_ts + expires).
var ErrOutOfRange = errors.New("number out of range")

// MaxSafeInteger is the largest integer canonical JSON allows (2^53-1).
const MaxSafeInteger = 1<<53 - 1

// ErrNoClock is returned by ParseEvent with IngestClock and no ReceivedAt:
// a live source must stamp its own clock.
var ErrNoClock = errors.New("ingest clock not set")

// Clock says whose clock sets an event's received_at. Only an operator's own
// file may choose it; a homeserver (appservice transaction, /sync response)
// never can, because received_at moves a room's logical clock (DESIGN §3:
// no sender's clock may move it).
type Clock uint8

const (
	// IngestClock is for every live source: received_at is
	// ParseOptions.ReceivedAt (the ingest's clock, must be positive), and a
	// received_at anywhere in the event JSON (top level, unsigned, ...) is
	// ignored. It is the zero value, so that forgetting the option is safe.
	IngestClock Clock = iota
	// FileClock is for an operator's JSON-lines file (replay, rtcctl
	// simulate): a top-level received_at of the line wins; without it,
	// ParseOptions.ReceivedAt, or origin_server_ts when that is 0 too (a
	// reproducible replay).
	FileClock
)

// ParseOptions say how ParseEvent stamps and completes an event.
type ParseOptions struct {
	RoomID     id.RoomID // used when the event has no room_id (as in /sync timelines)
	ReceivedAt int64     // ms; see Clock
	Clock      Clock
}

// clientEvent is a Matrix client-server event as it appears in /sync, in an
// appservice transaction or in a JSON-lines file, plus the optional
// received_at of the JSON-lines format (read only with FileClock).
type clientEvent struct {
	Type           string          `json:"type"`
	StateKey       *string         `json:"state_key"`
	Sender         string          `json:"sender"`
	EventID        string          `json:"event_id"`
	RoomID         string          `json:"room_id"`
	OriginServerTS *int64          `json:"origin_server_ts"`
	Content        json.RawMessage `json:"content"`
	Redacts        string          `json:"redacts"`
	Sticky         *stickyBlock    `json:"sticky"`
	StickyUnstable *stickyBlock    `json:"msc4354_sticky"`
	ReceivedAt     json.RawMessage `json:"received_at"` // read with FileClock only: never a reason to reject a live event
	Unsigned       struct {
		RedactedBecause *struct {
			EventID        string `json:"event_id"`
			OriginServerTS int64  `json:"origin_server_ts"`
		} `json:"redacted_because"`
	} `json:"unsigned"`
}

type stickyBlock struct {
	DurationMS *int64 `json:"duration_ms"`
}

// ParseClientEvent parses one line of an operator's JSON-lines file: it is
// ParseEvent with FileClock (the line may carry received_at). Live sources
// use ParseEvent with IngestClock.
func ParseClientEvent(data []byte, roomID id.RoomID, receivedAt int64) (RawEvent, error) {
	return ParseEvent(data, ParseOptions{RoomID: roomID, ReceivedAt: receivedAt, Clock: FileClock})
}

// ParseEvent turns one Matrix client-server event (JSON) into an input for
// RTC_RAW, stamping received_at as opts.Clock says. It checks the envelope
// only; the content is validated by the aggregator, which must see even
// malformed content (a broken event still replaces the state it overwrites).
func ParseEvent(data []byte, opts ParseOptions) (RawEvent, error) {
	if opts.Clock == IngestClock && opts.ReceivedAt <= 0 {
		return RawEvent{}, ErrNoClock
	}
	if len(data) > MaxEventBytes {
		return RawEvent{}, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformedEvent, len(data), MaxEventBytes)
	}
	var ce clientEvent
	if err := json.Unmarshal(data, &ce); err != nil {
		return RawEvent{}, fmt.Errorf("%w: %w", ErrMalformedEvent, err)
	}
	// A homeserver does not choose when we received its event: with
	// IngestClock its received_at, whatever it holds, is not even parsed.
	var receivedAt *int64
	if opts.Clock == FileClock && len(ce.ReceivedAt) > 0 && string(ce.ReceivedAt) != "null" {
		receivedAt = new(int64)
		if err := json.Unmarshal(ce.ReceivedAt, receivedAt); err != nil {
			return RawEvent{}, fmt.Errorf("%w: received_at: %w", ErrMalformedEvent, err)
		}
	}
	if ce.RoomID == "" {
		ce.RoomID = string(opts.RoomID)
	}
	var problems []string
	outOfRange := false
	check := func(ok bool, format string, args ...any) {
		if !ok {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	checkRange := func(v *int64, name string, min int64) {
		if v != nil && (*v < min || *v > MaxSafeInteger) {
			outOfRange = true
			problems = append(problems, fmt.Sprintf("%s %d outside [%d, 2^53-1]", name, *v, min))
		}
	}
	check(ce.Type != "", "no type")
	check(len(ce.Type) <= MaxIDBytes, "type longer than %d bytes", MaxIDBytes)
	check(strings.HasPrefix(ce.RoomID, "!") && len(ce.RoomID) <= MaxIDBytes, "room_id %q is not a room id", clip(ce.RoomID))
	check(strings.HasPrefix(ce.EventID, "$") && len(ce.EventID) <= MaxIDBytes, "event_id %q is not an event id", clip(ce.EventID))
	check(validUserID(ce.Sender), "sender %q is not a user id", clip(ce.Sender))
	check(ce.OriginServerTS != nil, "origin_server_ts missing")
	checkRange(ce.OriginServerTS, "origin_server_ts", 1)
	checkRange(receivedAt, "received_at", 0) // 0: not set, as when absent
	for _, s := range []*stickyBlock{ce.Sticky, ce.StickyUnstable} {
		if s != nil {
			checkRange(s.DurationMS, "sticky duration_ms", 0)
		}
	}
	if rb := ce.Unsigned.RedactedBecause; rb != nil && rb.OriginServerTS != 0 {
		checkRange(&rb.OriginServerTS, "unsigned.redacted_because.origin_server_ts", 1)
	}
	check(ce.StateKey == nil || len(*ce.StateKey) <= MaxStateKeyBytes, "state_key longer than %d bytes", MaxStateKeyBytes)
	content := bytes.TrimSpace(ce.Content)
	check(len(content) > 0 && content[0] == '{', "content is not a JSON object")
	if len(problems) > 0 {
		if outOfRange {
			return RawEvent{}, fmt.Errorf("%w: %w: %s", ErrMalformedEvent, ErrOutOfRange, strings.Join(problems, "; "))
		}
		return RawEvent{}, fmt.Errorf("%w: %s", ErrMalformedEvent, strings.Join(problems, "; "))
	}
	// content is already our own copy (json.RawMessage) and valid JSON;
	// homeservers send it compact, so it is kept as it is unless it holds
	// white space to squeeze out (one copy less per event).
	if !isCompact(content) {
		var compact bytes.Buffer
		compact.Grow(len(content)) // exactly: the event keeps this buffer, and compacting never grows
		if err := json.Compact(&compact, content); err != nil {
			return RawEvent{}, fmt.Errorf("%w: content: %w", ErrMalformedEvent, err)
		}
		content = compact.Bytes()
	}
	ev := RawEvent{
		V:              RawVersion,
		Kind:           InputEvent,
		RoomID:         id.RoomID(ce.RoomID),
		EventID:        id.EventID(ce.EventID),
		Type:           ce.Type,
		StateKey:       ce.StateKey,
		Sender:         id.UserID(ce.Sender),
		OriginServerTS: *ce.OriginServerTS,
		Content:        content,
		Redacts:        id.EventID(ce.Redacts),
		ReceivedAt:     opts.ReceivedAt,
	}
	if receivedAt != nil && *receivedAt > 0 { // FileClock only
		ev.ReceivedAt = *receivedAt
	}
	if ev.ReceivedAt <= 0 { // FileClock only: IngestClock requires a positive clock
		ev.ReceivedAt = ev.OriginServerTS
	}
	if ev.Type == TypeRedaction.Type && ev.Redacts == "" {
		// Room version 11 moved redacts into the content.
		var c struct {
			Redacts string `json:"redacts"`
		}
		if json.Unmarshal(ev.Content, &c) == nil {
			ev.Redacts = id.EventID(c.Redacts)
		}
	}
	if rb := ce.Unsigned.RedactedBecause; rb != nil {
		ev.RedactedBy, ev.RedactedAt = id.EventID(rb.EventID), max(rb.OriginServerTS, ev.OriginServerTS)
		if ev.RedactedBy == "" {
			ev.RedactedBy = "$unknown"
		}
	}
	for _, s := range []*stickyBlock{ce.Sticky, ce.StickyUnstable} {
		if s != nil && s.DurationMS != nil {
			d := *s.DurationMS
			ev.StickyDurationMS = &d
			break
		}
	}
	return ev, nil
}

// isCompact reports whether valid JSON b has no white space outside its
// strings, i.e. json.Compact would return it unchanged.
func isCompact(b []byte) bool {
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case !inString && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return false
		}
	}
	return true
}

// validUserID checks the shape @localpart:server, with no length beyond the
// spec's 255 bytes.
func validUserID(s string) bool {
	if len(s) < 4 || len(s) > MaxIDBytes || s[0] != '@' {
		return false
	}
	i := strings.IndexByte(s, ':')
	return i > 1 && i < len(s)-1
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
