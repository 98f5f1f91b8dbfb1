package events

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// ErrUnsupportedVersion is returned when a message has a schema version this
// build does not understand.
var ErrUnsupportedVersion = errors.New("unsupported schema version")

// Marshal encodes v as msgpack, using the json struct tags for field names so
// that the msgpack and JSON forms of a message have the same keys. Encoding
// is deterministic: equal values give equal bytes. The public messages
// (SessionEvent, LiveSession, LiveMember and what they hold) are written
// with every field, an empty one with its zero value, and a member's
// nested JSON as msgpack maps and arrays (wire.go); any other struct is
// written with its empty fields left out.
func Marshal(v any) ([]byte, error) {
	if a, ok := v.(msgpackAppender); ok { // hand-written, same bytes (wire.go)
		size := 256
		if s, ok := v.(msgpackSizer); ok {
			size = s.MsgpackSize()
		}
		return a.AppendMsgpack(make([]byte, 0, size)), nil
	}
	return MarshalReflective(v)
}

// MarshalReflective is Marshal without the hand-written encoders of the
// hot types (wire.go) at the top: the reflective encoding they must equal
// byte for byte, which their tests compare them with.
func MarshalReflective(v any) ([]byte, error) {
	p := encoders.Get().(*pooledEncoder)
	defer func() {
		if p.buf.Cap() <= 1<<20 { // do not keep what a rare large value grew
			encoders.Put(p)
		}
	}()
	p.buf.Reset()
	p.enc.ResetWriter(&p.buf) // keeps the settings, unlike Reset
	if err := p.enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.Clone(p.buf.Bytes()), nil
}

// encoders reuses encoders and their buffers: the aggregator encodes several
// values per input, and a fresh encoder per call was a visible part of its
// allocations.
var encoders = sync.Pool{New: func() any {
	p := &pooledEncoder{}
	p.enc = msgpack.NewEncoder(&p.buf)
	p.enc.SetCustomStructTag("json")
	p.enc.SetOmitEmpty(true)
	p.enc.SetSortMapKeys(true)
	p.enc.UseCompactInts(true)
	return p
}}

type pooledEncoder struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

// Unmarshal decodes msgpack produced by Marshal.
func Unmarshal(data []byte, v any) error {
	dec := msgpack.NewDecoder(bytes.NewReader(data))
	dec.SetCustomStructTag("json")
	return dec.Decode(v)
}

// EncodeRaw encodes an input for RTC_RAW, stamping its version (RawVersion).
func EncodeRaw(e *RawEvent) ([]byte, error) {
	e.V = RawVersion
	b, err := Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode raw event %s: %w", e.EventID, err)
	}
	return b, nil
}

// DecodeRaw decodes an input from RTC_RAW.
func DecodeRaw(data []byte) (RawEvent, error) {
	var e RawEvent
	if err := Unmarshal(data, &e); err != nil {
		return RawEvent{}, fmt.Errorf("decode raw event: %w", err)
	}
	if e.V != RawVersion {
		return RawEvent{}, fmt.Errorf("decode raw event: %w %d", ErrUnsupportedVersion, e.V)
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

// EncodeSessionEvent encodes a session event for RTC_EVENTS.
func EncodeSessionEvent(e *SessionEvent) ([]byte, error) {
	e.V = SchemaVersion
	b, err := Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode session event %s: %w", e.ID, err)
	}
	return b, nil
}

// DecodeSessionEvent decodes a message of RTC_EVENTS: of SchemaVersion, or
// of an older version down to OldestSchemaVersion (stored before it, also
// in the redo records of rooms). Version 1 has no call intent and no changed
// list, which decode empty; versions 1 and 2 leave empty fields out and hold
// a member's nested JSON as bytes: they decode to the same values.
func DecodeSessionEvent(data []byte) (SessionEvent, error) {
	var e SessionEvent
	if err := Unmarshal(data, &e); err != nil {
		return SessionEvent{}, fmt.Errorf("decode session event: %w", err)
	}
	if e.V < OldestSchemaVersion || e.V > SchemaVersion {
		return SessionEvent{}, fmt.Errorf("decode session event: %w %d", ErrUnsupportedVersion, e.V)
	}
	return e, nil
}

// EncodeLiveSession encodes the value of a session's own key in the
// rtc_sessions bucket (see LiveSessionVersion: its members are in keys of
// their own, so s.Members is normally empty here).
func EncodeLiveSession(s *LiveSession) ([]byte, error) {
	s.V = LiveSessionVersion
	b, err := Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode live session %s: %w", s.SessionID, err)
	}
	return b, nil
}

// DecodeLiveSession decodes the value of a session's own key in the
// rtc_sessions bucket. Older values are still read (liveSessionVersionKnown):
// version 1 (written before members had keys of their own) carries its
// members inline, version 2 has no call intent.
func DecodeLiveSession(data []byte) (LiveSession, error) {
	var s LiveSession
	if err := Unmarshal(data, &s); err != nil {
		return LiveSession{}, fmt.Errorf("decode live session: %w", err)
	}
	if !liveSessionVersionKnown(s.V) {
		return LiveSession{}, fmt.Errorf("decode live session: %w %d", ErrUnsupportedVersion, s.V)
	}
	return s, nil
}

// SortedMap is a map that Marshal encodes with its keys in increasing order.
// msgpack sorts only a few built-in map types; state that holds other maps
// would otherwise encode differently on every call, so equal states would
// not give equal bytes (nor equal compressed sizes).
type SortedMap[K ~string, V any] map[K]V

// EncodeMsgpack implements msgpack.CustomEncoder.
func (m SortedMap[K, V]) EncodeMsgpack(enc *msgpack.Encoder) error {
	if m == nil {
		return enc.EncodeNil()
	}
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if err := enc.EncodeMapLen(len(keys)); err != nil {
		return err
	}
	for _, k := range keys {
		if err := enc.EncodeString(string(k)); err != nil {
			return err
		}
		if err := enc.Encode(m[k]); err != nil {
			return err
		}
	}
	return nil
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (m *SortedMap[K, V]) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeMapLen()
	if err != nil {
		return err
	}
	if n < 0 {
		*m = nil
		return nil
	}
	out := make(SortedMap[K, V], n)
	for i := 0; i < n; i++ {
		k, err := dec.DecodeString()
		if err != nil {
			return err
		}
		var v V
		if err := dec.Decode(&v); err != nil {
			return err
		}
		out[K(k)] = v
	}
	*m = out
	return nil
}
