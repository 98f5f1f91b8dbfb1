// Package wire appends msgpack by hand for the values the aggregator encodes
// on every input (session events, live sessions, room records). It writes
// byte for byte what events.Marshal's reflective encoder writes for the same
// struct (json tag names as map keys in field order, every empty field left
// out, integers in their shortest form), so that a hand-written encoder can
// replace the reflective one without changing a stored byte: the tests of
// each type compare the two on random values.
//
// Why by hand: the reflective encoder decides field by field whether a value
// is empty through reflect.Value.Interface, which allocates, and encodes into
// a buffer that is then copied. On the aggregator's hot path that was about a
// quarter of its CPU and most of its garbage.
package wire

import (
	"encoding/binary"
	"math"
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
	B  []byte
	at int
	n  int
}

// Begin starts a map at the end of b.
func Begin(b []byte) Map { return Map{B: append(b, fixMapLow), at: len(b)} }

// End writes the map's header and returns the buffer.
func (m *Map) End() []byte {
	if m.n < 16 {
		m.B[m.at] = fixMapLow | byte(m.n)
		return m.B
	}
	// A longer header than the byte reserved: shift the entries.
	hdr := AppendMapLen(nil, m.n)
	extra := len(hdr) - 1
	m.B = append(m.B, hdr[:extra]...)
	copy(m.B[m.at+len(hdr):], m.B[m.at+1:len(m.B)-extra])
	copy(m.B[m.at:], hdr)
	return m.B
}

// Key appends a key whose value the caller appends next.
func (m *Map) Key(k string) {
	m.B = AppendString(m.B, k)
	m.n++
}

// Str appends the entry unless v is empty.
func (m *Map) Str(k, v string) {
	if v != "" {
		m.Key(k)
		m.B = AppendString(m.B, v)
	}
}

// Int appends the entry unless v is 0.
func (m *Map) Int(k string, v int64) {
	if v != 0 {
		m.Key(k)
		m.B = AppendInt(m.B, v)
	}
}

// Uint appends the entry unless v is 0.
func (m *Map) Uint(k string, v uint64) {
	if v != 0 {
		m.Key(k)
		m.B = AppendUint(m.B, v)
	}
}

// Bool appends the entry unless v is false.
func (m *Map) Bool(k string, v bool) {
	if v {
		m.Key(k)
		m.B = AppendBool(m.B, v)
	}
}

// Strs appends the entry, an array of strings, unless v is empty.
func (m *Map) Strs(k string, v []string) {
	if len(v) > 0 {
		m.Key(k)
		m.B = AppendArrayLen(m.B, len(v))
		for _, s := range v {
			m.B = AppendString(m.B, s)
		}
	}
}

// Bytes appends the entry unless v is empty.
func (m *Map) Bytes(k string, v []byte) {
	if len(v) > 0 {
		m.Key(k)
		m.B = AppendBytes(m.B, v)
	}
}
