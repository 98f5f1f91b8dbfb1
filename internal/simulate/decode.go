package simulate

import (
	"bytes"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/jsonscan"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// decoder reads the lines of an event file. The lines of a dump are
// nearly all of one shape: a compact client event with a handful of plain
// fields (no escapes, no redaction, no sticky block). decode reads such a
// line in one pass without encoding/json's reflection and interns the
// strings that repeat (types, rooms, senders, state keys); any other line,
// and any line it could not read exactly as rawevent.ParseClientEvent does,
// goes to rawevent.ParseClientEvent, which also gives every error. The
// differential fuzz target FuzzDecode holds the two equal.
type decoder struct {
	strs  map[string]string
	proto rawevent.RawEvent // V and Kind as ParseClientEvent sets them
}

// maxInterned bounds the interned strings (a file of a million rooms
// should not keep them all).
const maxInterned = 1 << 16

func newDecoder() *decoder {
	d := &decoder{strs: map[string]string{}}
	proto, err := rawevent.ParseClientEvent([]byte(`{"type":"t","room_id":"!r:x","event_id":"$e","sender":"@u:x","origin_server_ts":1,"content":{}}`), "", 0)
	if err == nil {
		d.proto = proto
	}
	return d
}

func (d *decoder) decode(line []byte) (rawevent.RawEvent, error) {
	if ev, ok := d.fast(line); ok {
		return ev, nil
	}
	return rawevent.ParseClientEvent(line, "", 0)
}

func (d *decoder) intern(b []byte) string {
	if s, ok := d.strs[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(d.strs) < maxInterned {
		d.strs[s] = s
	}
	return s
}

// Top-level fields of the lines decoded here.
const (
	lfType = 1 << iota
	lfStateKey
	lfSender
	lfEventID
	lfRoomID
	lfOriginTS
	lfReceivedAt
	lfContent
	lfUnsigned
)

// fast decodes a line of the common shape; ok is false for any other line.
func (d *decoder) fast(line []byte) (ev rawevent.RawEvent, ok bool) {
	if d.proto.Kind != rawevent.InputEvent || len(line) > rawevent.MaxEventBytes {
		return ev, false
	}
	s := jsonscan.Scanner{B: line}
	s.Space()
	var seen int
	var typ, stateKey, sender, eventID, roomID, content []byte
	var ots, recv int64
	ok = s.Object(1, func(k []byte, simple bool, _ []byte) bool {
		if !simple {
			return false
		}
		var bit int
		switch string(k) {
		case "type", "state_key", "sender", "event_id", "room_id":
			v, simple, ok := s.Str()
			if !ok || !simple {
				return false
			}
			switch string(k) {
			case "type":
				bit, typ = lfType, v
			case "state_key":
				bit, stateKey = lfStateKey, v
			case "sender":
				bit, sender = lfSender, v
			case "event_id":
				bit, eventID = lfEventID, v
			default:
				bit, roomID = lfRoomID, v
			}
		case "origin_server_ts", "received_at":
			n, ok := s.Number()
			v, plain := jsonscan.PlainInt(n)
			if !ok || !plain {
				return false
			}
			if string(k) == "received_at" {
				bit, recv = lfReceivedAt, v
			} else {
				bit, ots = lfOriginTS, v
			}
		case "content":
			start := s.I
			spaced := s.Spaced
			if s.Peek() != '{' || !s.Value(2) || s.Spaced != spaced {
				return false // not an object, or not compact
			}
			bit, content = lfContent, line[start:s.I]
		case "unsigned":
			if !unsignedPlain(&s) {
				return false
			}
			bit = lfUnsigned
		default:
			return false
		}
		if seen&bit != 0 {
			return false // a duplicate
		}
		seen |= bit
		return true
	})
	s.Space()
	const required = lfType | lfSender | lfEventID | lfRoomID | lfOriginTS | lfContent
	if !ok || !s.EOF() || seen&required != required {
		return ev, false
	}
	// Only what ParseClientEvent accepts as it is; anything else is its to
	// reject or complete (a redaction's redacts in its content).
	switch {
	case len(typ) == 0 || len(typ) > rawevent.MaxIDBytes || string(typ) == rawevent.TypeRedaction.Type,
		len(roomID) == 0 || roomID[0] != '!' || len(roomID) > rawevent.MaxIDBytes,
		len(eventID) == 0 || eventID[0] != '$' || len(eventID) > rawevent.MaxIDBytes,
		!plainUserID(sender),
		seen&lfStateKey != 0 && len(stateKey) > rawevent.MaxStateKeyBytes,
		ots < 1:
		return ev, false
	}
	ev = d.proto
	ev.Type = d.intern(typ)
	ev.RoomID = id.RoomID(d.intern(roomID))
	ev.EventID = id.EventID(eventID)
	ev.Sender = id.UserID(d.intern(sender))
	if seen&lfStateKey != 0 {
		sk := d.intern(stateKey)
		ev.StateKey = &sk
	}
	ev.OriginServerTS = ots
	ev.Content = append([]byte(nil), content...)
	ev.ReceivedAt = recv
	if ev.ReceivedAt <= 0 {
		ev.ReceivedAt = ots
	}
	return ev, true
}

// plainUserID: the shape @localpart:server within the spec's length.
func plainUserID(b []byte) bool {
	if len(b) < 4 || len(b) > rawevent.MaxIDBytes || b[0] != '@' {
		return false
	}
	i := bytes.IndexByte(b, ':')
	return i > 1 && i < len(b)-1
}

// unsignedPlain scans an unsigned object that holds no redaction (whose
// fields ParseClientEvent reads, matching names case-insensitively).
func unsignedPlain(s *jsonscan.Scanner) bool {
	return s.Object(2, func(k []byte, simple bool, _ []byte) bool {
		return simple && !strings.EqualFold(string(k), "redacted_because") && s.Value(3)
	})
}
