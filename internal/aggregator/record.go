package aggregator

import (
	"bytes"
	"fmt"

	"github.com/klauspost/compress/s2"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// RoomRecord is the value of a room's key in the rtc_rooms bucket: the
// reducer state plus what the exactly-once protocol needs. It is written
// only with a revision check (Create / Update(rev)).
type RoomRecord struct {
	V int `json:"v"`
	// LastIn is the RTC_RAW stream sequence of the last input applied. An
	// input with a sequence <= LastIn was applied already: it is acked (and,
	// when equal, the outbox is re-published first, de-duplicated by id).
	LastIn uint64 `json:"last_in"`
	// Outbox holds the session events of the last input, published after the
	// record is stored and re-published by a worker that takes over the room.
	Outbox []events.SessionEvent `json:"outbox,omitempty"`
	// TimerAt is the deadline the room's durable timer is armed for (0: none).
	TimerAt int64          `json:"timer_at,omitempty"`
	State   *rtc.RoomState `json:"state"`
}

// compressedPrefix marks an s2-compressed record. A msgpack record starts
// with a map header, never with 0x00, so the two cannot be confused and
// uncompressed records written by older versions still decode.
var compressedPrefix = []byte("\x00s2")

// EncodeRoomRecord encodes a record for the rtc_rooms bucket: msgpack,
// compressed with s2. A room's state grows with its members (about 1 KB
// each, mostly the foci lists) and a KV value must fit the server's
// max_payload (1 MB by default); compressed, a 1,000-member room takes
// about 140 KB instead of 990 KB.
func EncodeRoomRecord(r *RoomRecord) ([]byte, error) {
	r.V = events.SchemaVersion
	b, err := events.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode room record: %w", err)
	}
	out := make([]byte, len(compressedPrefix)+s2.MaxEncodedLen(len(b)))
	copy(out, compressedPrefix)
	enc := s2.Encode(out[len(compressedPrefix):], b) // written in place: out is large enough
	return out[:len(compressedPrefix)+len(enc)], nil
}

// DecodeRoomRecord decodes a value of the rtc_rooms bucket.
func DecodeRoomRecord(data []byte) (*RoomRecord, error) {
	if bytes.HasPrefix(data, compressedPrefix) {
		raw, err := s2.Decode(nil, data[len(compressedPrefix):])
		if err != nil {
			return nil, fmt.Errorf("decode room record: decompress: %w", err)
		}
		data = raw
	}
	var r RoomRecord
	if err := events.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode room record: %w", err)
	}
	if r.V != events.SchemaVersion {
		return nil, fmt.Errorf("decode room record: %w %d", events.ErrUnsupportedVersion, r.V)
	}
	if r.State == nil {
		return nil, fmt.Errorf("decode room record: no state")
	}
	return &r, nil
}
