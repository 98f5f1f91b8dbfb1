package wire

import (
	"bytes"
	"slices"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// The msgpack codec of every value the services store or publish: the
// reflective encoder with fixed settings, and the hand-written encoders of
// the hot types (Begin, BeginAll) where a value has one.

// msgpackAppender is a value with a hand-written encoder: Marshal uses it
// instead of reflection.
type msgpackAppender interface {
	AppendMsgpack(b []byte) []byte
}

// msgpackSizer is an appender that knows about how many bytes it writes:
// Marshal allocates that much at once instead of growing the buffer.
type msgpackSizer interface {
	MsgpackSize() int
}

// Marshal encodes v as msgpack, using the json struct tags for field names so
// that the msgpack and JSON forms of a message have the same keys. Encoding
// is deterministic: equal values give equal bytes. The public messages
// of pkg/events (SessionEvent, LiveSession, LiveMember and what they hold)
// are written with every field, an empty one with its zero value, and a
// member's nested JSON as msgpack maps and arrays (their AppendMsgpack, in
// pkg/events/wire.go); any other struct is written with its empty fields
// left out.
func Marshal(v any) ([]byte, error) {
	if a, ok := v.(msgpackAppender); ok { // hand-written, same bytes
		size := 256
		if s, ok := v.(msgpackSizer); ok {
			size = s.MsgpackSize()
		}
		return a.AppendMsgpack(make([]byte, 0, size)), nil
	}
	return MarshalReflective(v)
}

// MarshalReflective is Marshal without the hand-written encoders of the
// hot types at the top: the reflective encoding they must equal
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
