// Package wire appends msgpack by hand for the values the aggregator encodes
// on every input (session events, live sessions, room records). It writes
// byte for byte what a reflective msgpack encoder writes for the same
// struct (json tag names as map keys in field order, integers in their
// shortest form), so that a hand-written encoder can replace the reflective
// one without changing a stored byte: the tests of each type compare the two
// on random values. Two forms of a struct:
//
//   - Begin: every empty field left out, as Marshal's reflective
//     encoder writes (the aggregator's own records);
//   - BeginAll: every field present, empty ones with their zero value, as
//     the same encoder writes without omitempty (the public messages of
//     pkg/events, whose readers in other languages must not have to guess
//     a missing field's value).
//
// JSON appends a JSON text as the msgpack value it stands for (maps with
// their keys in the order of the text, integers in their shortest form,
// other numbers as float64), so that a message carries nested JSON as msgpack
// maps and arrays rather than as bytes holding text.
//
// Why by hand: the reflective encoder decides field by field whether a value
// is empty through reflect.Value.Interface, which allocates, and encodes into
// a buffer that is then copied. On the aggregator's hot path that was about a
// quarter of its CPU and most of its garbage.
package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"sync"
)

// msgpack type codes (the subset written here).
const (
	fixMapLow   = 0x80
	fixArrayLow = 0x90
	fixStrLow   = 0xa0
	nilCode     = 0xc0
	falseCode   = 0xc2
	trueCode    = 0xc3
	bin8        = 0xc4
	bin16       = 0xc5
	bin32       = 0xc6
	float64Code = 0xcb
	uint8Code   = 0xcc
	uint16Code  = 0xcd
	uint32Code  = 0xce
	uint64Code  = 0xcf
	int8Code    = 0xd0
	int16Code   = 0xd1
	int32Code   = 0xd2
	int64Code   = 0xd3
	str8        = 0xd9
	str16       = 0xda
	str32       = 0xdb
	array16     = 0xdc
	array32     = 0xdd
	map16       = 0xde
	map32       = 0xdf
)

// AppendString appends s as a msgpack string.
func AppendString(b []byte, s string) []byte {
	l := len(s)
	switch {
	case l < 32:
		b = append(b, fixStrLow|byte(l))
	case l < 256:
		b = append(b, str8, byte(l))
	case l <= math.MaxUint16:
		b = append(b, str16, byte(l>>8), byte(l))
	default:
		b = append(b, str32)
		b = binary.BigEndian.AppendUint32(b, uint32(l))
	}
	return append(b, s...)
}

// AppendBytes appends v as msgpack bin (nil as nil).
func AppendBytes(b []byte, v []byte) []byte {
	if v == nil {
		return append(b, nilCode)
	}
	l := len(v)
	switch {
	case l < 256:
		b = append(b, bin8, byte(l))
	case l <= math.MaxUint16:
		b = append(b, bin16, byte(l>>8), byte(l))
	default:
		b = append(b, bin32)
		b = binary.BigEndian.AppendUint32(b, uint32(l))
	}
	return append(b, v...)
}

// AppendUint appends n in its shortest form.
func AppendUint(b []byte, n uint64) []byte {
	switch {
	case n <= math.MaxInt8:
		return append(b, byte(n))
	case n <= math.MaxUint8:
		return append(b, uint8Code, byte(n))
	case n <= math.MaxUint16:
		return append(b, uint16Code, byte(n>>8), byte(n))
	case n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, uint32Code), uint32(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, uint64Code), n)
	}
}

// AppendInt appends n in its shortest form.
func AppendInt(b []byte, n int64) []byte {
	switch {
	case n >= 0:
		return AppendUint(b, uint64(n))
	case n >= -32:
		return append(b, byte(n))
	case n >= math.MinInt8:
		return append(b, int8Code, byte(n))
	case n >= math.MinInt16:
		return append(b, int16Code, byte(uint16(n)>>8), byte(n))
	case n >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, int32Code), uint32(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, int64Code), uint64(n))
	}
}

// AppendBool appends v.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, trueCode)
	}
	return append(b, falseCode)
}

// AppendArrayLen appends the header of an array of n elements.
func AppendArrayLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, fixArrayLow|byte(n))
	case n <= math.MaxUint16:
		return append(b, array16, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, array32), uint32(n))
	}
}

// AppendMapLen appends the header of a map of n entries.
func AppendMapLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, fixMapLow|byte(n))
	case n <= math.MaxUint16:
		return append(b, map16, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, map32), uint32(n))
	}
}

// Map appends a struct as the reflective encoder does: a map whose entries
// are the non-empty fields, in field order. Its header is written when it
// ends: one byte is reserved at Begin (a fixmap, up to 15 entries), and a
// map of more entries is moved to make room for its longer header.
type Map struct {
	B   []byte
	at  int
	n   int
	all bool // every entry is written, also an empty one
}

// Begin starts a map at the end of b that leaves empty fields out.
func Begin(b []byte) Map { return Map{B: append(b, fixMapLow), at: len(b)} }

// BeginAll starts a map at the end of b that writes every field, an empty
// one with its zero value (nil for nil bytes, lists and JSON).
func BeginAll(b []byte) Map { return Map{B: append(b, fixMapLow), at: len(b), all: true} }

// End writes the map's header and returns the buffer.
func (m *Map) End() []byte {
	if m.n < 16 {
		m.B[m.at] = fixMapLow | byte(m.n)
		return m.B
	}
	// A longer header than the byte reserved: shift the entries.
	m.B = putHeader(m.B, m.at, AppendMapLen(nil, m.n))
	return m.B
}

// Key appends a key whose value the caller appends next.
func (m *Map) Key(k string) {
	m.B = AppendString(m.B, k)
	m.n++
}

// Nil appends the entry with the value nil.
func (m *Map) Nil(k string) {
	m.Key(k)
	m.B = append(m.B, nilCode)
}

// Str appends the entry unless v is empty.
func (m *Map) Str(k, v string) {
	if v != "" || m.all {
		m.Key(k)
		m.B = AppendString(m.B, v)
	}
}

// Int appends the entry unless v is 0.
func (m *Map) Int(k string, v int64) {
	if v != 0 || m.all {
		m.Key(k)
		m.B = AppendInt(m.B, v)
	}
}

// Uint appends the entry unless v is 0.
func (m *Map) Uint(k string, v uint64) {
	if v != 0 || m.all {
		m.Key(k)
		m.B = AppendUint(m.B, v)
	}
}

// Bool appends the entry unless v is false.
func (m *Map) Bool(k string, v bool) {
	if v || m.all {
		m.Key(k)
		m.B = AppendBool(m.B, v)
	}
}

// Strs appends the entry, an array of strings, unless v is empty.
func (m *Map) Strs(k string, v []string) {
	if m.all && v == nil {
		m.Nil(k)
		return
	}
	if len(v) > 0 || m.all {
		m.Key(k)
		m.B = AppendArrayLen(m.B, len(v))
		for _, s := range v {
			m.B = AppendString(m.B, s)
		}
	}
}

// Bytes appends the entry unless v is empty.
func (m *Map) Bytes(k string, v []byte) {
	if len(v) > 0 || m.all {
		m.Key(k)
		m.B = AppendBytes(m.B, v)
	}
}

// JSON appends the entry, the JSON text v as msgpack (AppendJSON), unless v
// is empty; in a map that writes every field, an empty v is nil. A v that is
// not JSON is written as nil too: the encoders that call this hold JSON
// their parser compacted, and an encoder of a message cannot fail.
func (m *Map) JSON(k string, v []byte) {
	if len(v) == 0 {
		if m.all {
			m.Nil(k)
		}
		return
	}
	m.Key(k)
	if enc, ok := jsonMemo.get(v); ok {
		m.B = append(m.B, enc...)
		return
	}
	start := len(m.B)
	b, err := AppendJSON(m.B, v)
	if err != nil {
		b = append(m.B, nilCode)
	}
	m.B = b
	jsonMemo.put(v, b[start:])
}

// jsonMemo remembers the msgpack form of recent nested JSON values. The
// same few values (a deployment's SFU focus, its foci list) are in almost
// every membership, and every session event and live session encodes its
// member's: converting the text each time was a fifth of the aggregator's
// CPU under load. A pure function's cache: bounded, emptied when full.
var jsonMemo = &memo{m: map[string][]byte{}}

const memoMax = 4096

type memo struct {
	mu sync.RWMutex
	m  map[string][]byte
}

func (c *memo) get(v []byte) ([]byte, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	enc, ok := c.m[string(v)]
	return enc, ok
}

func (c *memo) put(v, enc []byte) {
	if len(v) > 4096 {
		return // rare and large: not worth keeping
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= memoMax {
		clear(c.m)
	}
	c.m[string(v)] = append([]byte(nil), enc...)
}

// AppendJSON appends the JSON text v as the msgpack value it stands for:
// objects as maps with their keys in the order of the text, arrays as
// arrays, integers that fit 64 bits in their shortest form, other numbers as
// float64, strings, booleans and null as themselves. The order is kept so
// that a reader that turns the value back into JSON text gets the text it
// was made from (for compact JSON that needs no escapes beyond quotes and
// backslashes, byte for byte): the aggregator compares the nested JSON of a
// membership with the stored one to tell what changed. On error b is
// returned unchanged.
func AppendJSON(b []byte, v []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	out, err := appendJSONValue(b, dec)
	if err != nil {
		return b, fmt.Errorf("nested JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return b, fmt.Errorf("nested JSON: more than one value")
	}
	return out, nil
}

func appendJSONValue(b []byte, dec *json.Decoder) ([]byte, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case nil:
		return append(b, nilCode), nil
	case bool:
		return AppendBool(b, t), nil
	case string:
		return AppendString(b, t), nil
	case json.Number:
		if n, err := strconv.ParseInt(string(t), 10, 64); err == nil {
			return AppendInt(b, n), nil
		}
		if n, err := strconv.ParseUint(string(t), 10, 64); err == nil {
			return AppendUint(b, n), nil
		}
		f, err := strconv.ParseFloat(string(t), 64)
		if err != nil {
			return nil, fmt.Errorf("number %s: %w", t, err)
		}
		return AppendFloat(b, f), nil
	case json.Delim:
		isMap := t == '{'
		at, n := len(b), 0
		b = append(b, 0) // the header, written when the length is known
		for dec.More() {
			if isMap {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				b = AppendString(b, k.(string))
			}
			if b, err = appendJSONValue(b, dec); err != nil {
				return nil, err
			}
			n++
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return nil, err
		}
		if isMap {
			return putHeader(b, at, AppendMapLen(nil, n)), nil
		}
		return putHeader(b, at, AppendArrayLen(nil, n)), nil
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}

// putHeader writes hdr at b[at], where one byte was reserved, moving what
// follows when hdr is longer.
func putHeader(b []byte, at int, hdr []byte) []byte {
	if len(hdr) == 1 {
		b[at] = hdr[0]
		return b
	}
	extra := len(hdr) - 1
	b = append(b, hdr[:extra]...)
	copy(b[at+len(hdr):], b[at+1:len(b)-extra])
	copy(b[at:], hdr)
	return b
}

// AppendFloat appends f as a msgpack float64.
func AppendFloat(b []byte, f float64) []byte {
	return binary.BigEndian.AppendUint64(append(b, float64Code), math.Float64bits(f))
}
