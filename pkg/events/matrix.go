package events

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

// ErrMalformedEvent is wrapped by every error of ParseClientEvent.
var ErrMalformedEvent = errors.New("malformed event")

// clientEvent is a Matrix client-server event as it appears in /sync, in an
// appservice transaction or in a JSON-lines file, plus the optional
// received_at of the JSON-lines format.
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
	ReceivedAt     *int64          `json:"received_at"`
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

// ParseClientEvent turns one Matrix client-server event (JSON) into an input
// for RTC_RAW. roomID is used when the event has no room_id (as in /sync
// timelines); receivedAt is used when the JSON has no top-level received_at,
// and origin_server_ts when receivedAt is 0 as well. It checks the envelope
// only; the content is validated by the aggregator, which must see even
// malformed content (a broken event still replaces the state it overwrites).
func ParseClientEvent(data []byte, roomID id.RoomID, receivedAt int64) (RawEvent, error) {
	if len(data) > MaxEventBytes {
		return RawEvent{}, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformedEvent, len(data), MaxEventBytes)
	}
	var ce clientEvent
	if err := json.Unmarshal(data, &ce); err != nil {
		return RawEvent{}, fmt.Errorf("%w: %v", ErrMalformedEvent, err)
	}
	if ce.RoomID == "" {
		ce.RoomID = string(roomID)
	}
	var problems []string
	check := func(ok bool, format string, args ...any) {
		if !ok {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	check(ce.Type != "", "no type")
	check(len(ce.Type) <= MaxIDBytes, "type longer than %d bytes", MaxIDBytes)
	check(strings.HasPrefix(ce.RoomID, "!") && len(ce.RoomID) <= MaxIDBytes, "room_id %q is not a room id", clip(ce.RoomID))
	check(strings.HasPrefix(ce.EventID, "$") && len(ce.EventID) <= MaxIDBytes, "event_id %q is not an event id", clip(ce.EventID))
	check(validUserID(ce.Sender), "sender %q is not a user id", clip(ce.Sender))
	check(ce.OriginServerTS != nil && *ce.OriginServerTS > 0, "origin_server_ts missing or not positive")
	check(ce.StateKey == nil || len(*ce.StateKey) <= MaxStateKeyBytes, "state_key longer than %d bytes", MaxStateKeyBytes)
	content := bytes.TrimSpace(ce.Content)
	check(len(content) > 0 && content[0] == '{', "content is not a JSON object")
	if len(problems) > 0 {
		return RawEvent{}, fmt.Errorf("%w: %s", ErrMalformedEvent, strings.Join(problems, "; "))
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, content); err != nil {
		return RawEvent{}, fmt.Errorf("%w: content: %v", ErrMalformedEvent, err)
	}
	ev := RawEvent{
		V:              SchemaVersion,
		Kind:           InputEvent,
		RoomID:         id.RoomID(ce.RoomID),
		EventID:        id.EventID(ce.EventID),
		Type:           ce.Type,
		StateKey:       ce.StateKey,
		Sender:         id.UserID(ce.Sender),
		OriginServerTS: *ce.OriginServerTS,
		Content:        compact.Bytes(),
		Redacts:        id.EventID(ce.Redacts),
		ReceivedAt:     receivedAt,
	}
	if ce.ReceivedAt != nil && *ce.ReceivedAt > 0 {
		ev.ReceivedAt = *ce.ReceivedAt
	}
	if ev.ReceivedAt <= 0 {
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
