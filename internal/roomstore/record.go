package roomstore

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/klauspost/compress/s2"
	"github.com/vmihailenco/msgpack/v5"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// FormatVersion is the version of the rtc_rooms layout. Version 2 is the
// header-and-parts layout of this package; version 1 (one record per room,
// whole state and outbox) is still read, so that an upgrade keeps every
// room, and is rewritten as version 2 on the room's next commit.
const FormatVersion = 2

// ErrFormat is wrapped by every error about a value that is not a record
// this package can read.
var ErrFormat = errors.New("room record")

// Header is the value of a room's own key: the commit point.
type Header struct {
	V int `json:"v"`
	// LastIn is the RTC_RAW stream sequence of the last input applied. An
	// input of the room with a sequence <= LastIn was applied already.
	LastIn uint64 `json:"last_in"`
	// TimerAt is the deadline the room's durable timer is armed for (0: none).
	TimerAt int64 `json:"timer_at,omitempty"`
	// Split says the room's parts are in keys of their own; otherwise Parts
	// holds every one of them (an "inline" room: one value).
	Split bool   `json:"split,omitempty"`
	Parts []Part `json:"parts,omitempty"`
	// Inline is the whole state of a version-1 record (never written).
	Inline *rtc.RoomState `json:"-"`
	// The state fields that are not parts.
	RoomID   id.RoomID    `json:"room_id,omitempty"`
	Clock    int64        `json:"clock,omitempty"`
	Seq      uint64       `json:"seq,omitempty"`
	Redacted []id.EventID `json:"redacted,omitempty"`
	// RedoData is the encoded redo record of the commit that wrote this
	// header, or, when RedoChunks > 0, it is in that many chunks under
	// T.redo.<i>. (Kept encoded: it is encoded once per commit, to size it.)
	RedoData   []byte `json:"redo,omitempty"`
	RedoChunks int    `json:"redo_chunks,omitempty"`
}

// Redo is what a commit changes besides the header. Applying it again is
// harmless: parts are written with the same values, session events carry
// their deterministic Nats-Msg-Id.
type Redo struct {
	// Batch is the header's LastIn: a chunk of another batch is stale.
	Batch uint64 `json:"batch"`
	Parts []Part `json:"parts,omitempty"`
	// Events are the session events of the commit, encoded once: stored
	// here and published as they are.
	Events [][]byte `json:"events,omitempty"`
	// Outbox holds the same events decoded; not stored. A loaded record
	// has it only after DecodeOutbox: most loads never carry out the redo.
	Outbox []events.SessionEvent `json:"-"`
}

// DecodeOutbox fills Outbox from Events, if it is not filled yet.
func (r *Redo) DecodeOutbox() error {
	if len(r.Outbox) == len(r.Events) {
		return nil
	}
	r.Outbox = make([]events.SessionEvent, len(r.Events))
	for i, b := range r.Events {
		ev, err := events.DecodeSessionEvent(b)
		if err != nil {
			return fmt.Errorf("%w: redo record: %w", ErrFormat, err)
		}
		r.Outbox[i] = ev
	}
	return nil
}

// newRedo is the redo record of a commit with these session events, each
// encoded once for both the record and its publication.
func newRedo(batch uint64, outbox []events.SessionEvent) (*Redo, error) {
	r := &Redo{Batch: batch, Outbox: outbox, Events: make([][]byte, len(outbox))}
	for i := range outbox {
		b, err := eventcodec.EncodeSessionEvent(&outbox[i])
		if err != nil {
			return nil, err
		}
		r.Events[i] = b
	}
	return r, nil
}

// Part is one part of a room: its key and encoded value (nil: deleted).
type Part struct {
	Key   string `json:"k"`
	Value []byte `json:"v,omitempty"`
}

// EncodeMsgpack writes a part as a two-element array, without reflection:
// an inline room's header holds every part and is encoded per commit.
func (p *Part) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeArrayLen(2); err != nil {
		return err
	}
	if err := enc.EncodeString(p.Key); err != nil {
		return err
	}
	return enc.EncodeBytes(p.Value)
}

// DecodeMsgpack reads what EncodeMsgpack wrote.
func (p *Part) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n != 2 {
		return fmt.Errorf("%w: part: array of %d, want 2", ErrFormat, n)
	}
	if p.Key, err = dec.DecodeString(); err != nil {
		return err
	}
	p.Value, err = dec.DecodeBytes()
	return err
}

// redoChunk is one piece of an encoded Redo.
type redoChunk struct {
	V     int    `json:"v"`
	Batch uint64 `json:"batch"`
	Index int    `json:"i"`
	Count int    `json:"n"`
	Data  []byte `json:"d"`
}

// The values of split parts. Each carries the identity its key hashes.
type (
	registerPart struct {
		Key string        `json:"key"`
		Reg *rtc.Register `json:"reg"`
	}
	roomMemberPart struct {
		User id.UserID      `json:"user"`
		M    rtc.RoomMember `json:"m"`
	}
	slotPart struct {
		Slot string   `json:"slot"`
		S    rtc.Slot `json:"s"`
	}
	sessionPart struct {
		Key       string `json:"key"`
		App       string `json:"app"`
		CallID    string `json:"call_id"`
		ID        string `json:"id"`
		StartedAt int64  `json:"started_at"`
		Peak      int    `json:"peak"`
		Joins     int    `json:"joins"`
	}
	seenUserPart struct {
		Session string    `json:"session"`
		User    id.UserID `json:"user"`
	}
	// lastEndedPart is the end of the last session of a session key.
	// (A worker of an older build refuses a room that has one: it does
	// not know the kind. Upgrades stop every older worker first.)
	lastEndedPart struct {
		Key string `json:"key"`
		At  int64  `json:"at"`
	}
)

// compressedPrefix marks an s2-compressed value. msgpack never starts with
// 0x00 here (every record is a map), so the two cannot be confused.
var compressedPrefix = []byte("\x00s2")

func compress(b []byte) []byte {
	out := make([]byte, len(compressedPrefix)+s2.MaxEncodedLen(len(b)))
	copy(out, compressedPrefix)
	enc := s2.Encode(out[len(compressedPrefix):], b)
	return out[:len(compressedPrefix)+len(enc)]
}

func decompress(data []byte) ([]byte, error) {
	if !bytes.HasPrefix(data, compressedPrefix) {
		return data, nil
	}
	raw, err := s2.Decode(nil, data[len(compressedPrefix):])
	if err != nil {
		return nil, fmt.Errorf("%w: decompress: %w", ErrFormat, err)
	}
	return raw, nil
}

// EncodeHeader encodes a header, s2-compressed.
func EncodeHeader(h *Header) ([]byte, error) {
	h.V = FormatVersion
	// Encoded into a pooled buffer: only its compressed form is kept (an
	// inline room's header holds all its parts, and allocating it per
	// commit was a large part of the aggregator's garbage).
	var out []byte
	withScratch(func(b []byte) []byte {
		b = h.AppendMsgpack(b)
		out = compress(b)
		return b
	})
	return out, nil
}

// legacyRecord is the version-1 value: the whole state and the outbox.
type legacyRecord struct {
	V       int                   `json:"v"`
	LastIn  uint64                `json:"last_in"`
	Outbox  []events.SessionEvent `json:"outbox,omitempty"`
	TimerAt int64                 `json:"timer_at,omitempty"`
	State   *rtc.RoomState        `json:"state"`
}

// DecodeHeader decodes the value of a room's own key. A version-1 record
// comes back as an inline header whose redo record is its outbox.
func DecodeHeader(data []byte) (*Header, error) {
	raw, err := decompress(data)
	if err != nil {
		return nil, err
	}
	var probe struct {
		V int `json:"v"`
	}
	if err := wire.Unmarshal(raw, &probe); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFormat, err)
	}
	switch probe.V {
	case FormatVersion:
		var h Header
		if err := wire.Unmarshal(raw, &h); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrFormat, err)
		}
		return &h, nil
	case 1:
		var r legacyRecord
		if err := wire.Unmarshal(raw, &r); err != nil {
			return nil, fmt.Errorf("%w: version 1: %w", ErrFormat, err)
		}
		if r.State == nil {
			return nil, fmt.Errorf("%w: version 1 record without state", ErrFormat)
		}
		rd, err := newRedo(r.LastIn, r.Outbox)
		if err != nil {
			return nil, fmt.Errorf("%w: version 1: %w", ErrFormat, err)
		}
		redo, err := wire.Marshal(rd)
		if err != nil {
			return nil, fmt.Errorf("%w: version 1: %w", ErrFormat, err)
		}
		return &Header{V: 1, LastIn: r.LastIn, TimerAt: r.TimerAt, Inline: r.State, RedoData: redo}, nil
	}
	return nil, fmt.Errorf("%w: %w %d", ErrFormat, events.ErrUnsupportedVersion, probe.V)
}

// decodeRedo decodes an encoded redo record (nil: none).
func decodeRedo(data []byte) (*Redo, error) {
	if len(data) == 0 {
		return nil, nil
	}
	var r Redo
	if err := wire.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%w: redo record: %w", ErrFormat, err)
	}
	return &r, nil
}

func encodePart(v any) ([]byte, error) {
	b, err := wire.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode room part: %w", err)
	}
	return b, nil
}
