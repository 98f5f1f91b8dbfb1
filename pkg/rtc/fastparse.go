package rtc

import (
	"bytes"
	"strconv"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// The fast path of ParseStateMember. Almost every input a busy room sees is
// a valid per-device membership (a join or a refresh), compacted by the
// ingest. Decoding it with encoding/json into maps costs ~90 allocations;
// this one-pass scanner reads it without maps and, for a refresh, reuses
// the strings and bytes of the register's previous claim when they are
// equal. It accepts only content it can read exactly as encoding/json
// would and that is valid: for anything else (an escape or a non-ASCII byte
// in a string it keeps, a null or duplicate known field, whitespace, a
// legacy array, a leave, any validation failure) it says so and the caller
// takes the general path, which produces the same result or the error. The
// differential fuzz target FuzzFastStateMember holds the two paths equal.

// jscan is a validating JSON scanner over one content.
type jscan struct {
	b []byte
	i int
}

// maxFastDepth bounds nesting on the fast path (encoding/json allows more;
// deeper content takes the general path).
const maxFastDepth = 64

func (s *jscan) eof() bool { return s.i >= len(s.b) }

// peek returns the next byte, or 0 at the end.
func (s *jscan) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// noSpace reports that no insignificant whitespace follows (whitespace would
// make the compacted bytes differ from the raw ones).
func (s *jscan) noSpace() bool {
	switch s.peek() {
	case ' ', '\t', '\n', '\r':
		return false
	}
	return true
}

// str scans a string. simple is false when it holds an escape or a
// non-ASCII byte (its value then differs from its bytes, or may).
func (s *jscan) str() (val []byte, simple, ok bool) {
	if s.peek() != '"' {
		return nil, false, false
	}
	s.i++
	start := s.i
	simple = true
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			val = s.b[start:s.i]
			s.i++
			return val, simple, true
		case c < 0x20:
			return nil, false, false
		case c == '\\':
			simple = false
			s.i++
			if s.eof() {
				return nil, false, false
			}
			switch s.b[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				if s.i+4 >= len(s.b) {
					return nil, false, false
				}
				for _, h := range s.b[s.i+1 : s.i+5] {
					if !isHex(h) {
						return nil, false, false
					}
				}
				s.i += 5
			default:
				return nil, false, false
			}
		case c >= 0x80:
			simple = false
			s.i++
		default:
			s.i++
		}
	}
	return nil, false, false
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// number scans a JSON number and returns its bytes.
func (s *jscan) number() ([]byte, bool) {
	start := s.i
	if s.peek() == '-' {
		s.i++
	}
	switch c := s.peek(); {
	case c == '0':
		s.i++
	case '1' <= c && c <= '9':
		for isDigit(s.peek()) {
			s.i++
		}
	default:
		return nil, false
	}
	if s.peek() == '.' {
		s.i++
		if !isDigit(s.peek()) {
			return nil, false
		}
		for isDigit(s.peek()) {
			s.i++
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if !isDigit(s.peek()) {
			return nil, false
		}
		for isDigit(s.peek()) {
			s.i++
		}
	}
	return s.b[start:s.i], true
}

func (s *jscan) literal(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// value scans (and validates) any value without whitespace.
func (s *jscan) value(depth int) bool {
	if depth > maxFastDepth {
		return false
	}
	switch c := s.peek(); {
	case c == '"':
		_, _, ok := s.str()
		return ok
	case c == '{':
		s.i++
		if s.peek() == '}' {
			s.i++
			return true
		}
		for {
			if _, _, ok := s.str(); !ok || s.peek() != ':' {
				return false
			}
			s.i++
			if !s.value(depth + 1) {
				return false
			}
			switch s.peek() {
			case ',':
				s.i++
			case '}':
				s.i++
				return true
			default:
				return false
			}
		}
	case c == '[':
		s.i++
		if s.peek() == ']' {
			s.i++
			return true
		}
		for {
			if !s.value(depth + 1) {
				return false
			}
			switch s.peek() {
			case ',':
				s.i++
			case ']':
				s.i++
				return true
			default:
				return false
			}
		}
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	default:
		_, ok := s.number()
		return ok
	}
}

// typedObject scans a focus/transport object as typedObject accepts it: an
// object with exactly one "type" key whose value is a plain string of at
// most MaxStringBytes.
func (s *jscan) typedObject(depth int) bool {
	if s.peek() != '{' {
		return false
	}
	s.i++
	var typed bool
	for s.peek() != '}' {
		k, simple, ok := s.str()
		if !ok || !simple || s.peek() != ':' {
			return false
		}
		s.i++
		if string(k) == "type" {
			v, simple, ok := s.str()
			if typed || !ok || !simple || len(v) > MaxStringBytes {
				return false
			}
			typed = true
		} else if !s.value(depth + 1) {
			return false
		}
		if s.peek() == ',' {
			s.i++
			if s.peek() == '}' {
				return false
			}
		} else if s.peek() != '}' {
			return false
		}
	}
	s.i++
	return typed
}

// typedArray scans an array of at most MaxFoci typed objects.
func (s *jscan) typedArray(depth int) bool {
	if s.peek() != '[' {
		return false
	}
	s.i++
	for n := 0; s.peek() != ']'; n++ {
		if n == MaxFoci || !s.typedObject(depth+1) {
			return false
		}
		if s.peek() == ',' {
			s.i++
			if s.peek() == ']' {
				return false
			}
		} else if s.peek() != ']' {
			return false
		}
	}
	s.i++
	return true
}

// plainInt reads a number that is a plain decimal integer of at most 15
// digits (exact in a float64, as encoding/json reads it); anything else
// (sign, fraction, exponent, more digits) is not fast.
func plainInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 15 || (b[0] == '0' && len(b) > 1) {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}

// Known fields of the session form, as bits.
const (
	fApplication = 1 << iota
	fCallID
	fDeviceID
	fFocusActive
	fFociPreferred
	fScope
	fCreatedTS
	fExpires
	fCallIntent
)

// reuse returns the candidate equal to b, or a new string of b.
func reuse(b []byte, candidates ...string) string {
	for _, c := range candidates {
		if string(b) == c {
			return c
		}
	}
	return string(b)
}

func reuseBytes(b []byte, prev []byte) []byte {
	if prev != nil && bytes.Equal(b, prev) {
		return prev
	}
	return bytes.Clone(b)
}

// fastStateMember parses a valid per-device session-form (or seed-format)
// membership; ok is false when the content needs the general path. prev is
// the register the event replaces (nil if none): its claim's strings and
// bytes are reused when equal.
func fastStateMember(cfg Config, ev *events.RawEvent, prev *Register) (p Parsed, ok bool) {
	if len(ev.Content) > MaxContentBytes || ev.StateKey == nil || checkTimes(ev) != nil {
		return Parsed{}, false
	}
	s := jscan{b: ev.Content}
	if s.peek() != '{' {
		return Parsed{}, false
	}
	s.i++
	var seen int
	var app, callID, device, focus, foci, intent []byte
	var created, expires int64
	mark := func(bit int) bool {
		if seen&bit != 0 {
			return false // a duplicate: encoding/json keeps the last
		}
		seen |= bit
		return true
	}
	for s.peek() != '}' {
		k, simple, ok := s.str()
		if !ok || !simple || s.peek() != ':' {
			return Parsed{}, false
		}
		s.i++
		var vok bool
		switch string(k) {
		case "application", "call_id", "device_id", "scope", callIntentField:
			v, simple, ok := s.str()
			vok = ok && simple && len(v) <= MaxStringBytes
			switch string(k) {
			case "application":
				vok = vok && mark(fApplication) && len(v) > 0
				app = v
			case "call_id":
				vok = vok && mark(fCallID)
				callID = v
			case "device_id":
				vok = vok && mark(fDeviceID) && len(v) > 0
				device = v
			case callIntentField:
				vok = vok && mark(fCallIntent)
				intent = v
			default:
				vok = vok && mark(fScope)
			}
		case "focus_active":
			start := s.i
			vok = mark(fFocusActive) && s.typedObject(1)
			focus = s.b[start:s.i]
		case "foci_preferred":
			start := s.i
			vok = mark(fFociPreferred) && s.typedArray(1)
			foci = s.b[start:s.i]
		case "created_ts", "expires":
			n, ok := s.number()
			v, plain := plainInt(n)
			vok = ok && plain
			if string(k) == "created_ts" {
				vok = vok && mark(fCreatedTS) && v <= MaxTimestamp
				created = v
			} else {
				vok = vok && mark(fExpires) && v >= 1 && v <= MaxExpiresValue
				expires = v
			}
		case "memberships":
			return Parsed{}, false
		default:
			vok = s.value(1)
		}
		if !vok || !s.noSpace() {
			return Parsed{}, false
		}
		if s.peek() == ',' {
			s.i++
			if s.peek() == '}' {
				return Parsed{}, false
			}
		} else if s.peek() != '}' {
			return Parsed{}, false
		}
	}
	s.i++
	const required = fApplication | fCallID | fDeviceID | fFocusActive
	if s.i != len(s.b) || seen&required != required {
		return Parsed{}, false
	}
	format := events.FormatSession
	if ev.Type == events.TypeRTCMember.Type {
		format = events.FormatSeed
		if seen&fFociPreferred == 0 {
			return Parsed{}, false
		}
	} else if ev.Type != events.TypeCallMember.Type {
		return Parsed{}, false
	}
	if key := ParseStateKeyUser(*ev.StateKey); key != "" && key != ev.Sender {
		return Parsed{}, false
	}
	eff := EffectiveTime(cfg, ev)
	if seen&fCreatedTS == 0 || created > eff {
		created = eff
	}

	var pc Claim
	if prev != nil && len(prev.Claims) == 1 {
		pc = prev.Claims[0]
	}
	c := Claim{
		App:    reuse(app, AppCall, pc.App),
		CallID: reuse(callID, "", pc.CallID),
		User:   ev.Sender, Format: format, EventID: ev.EventID, TS: ev.OriginServerTS, CreatedTS: created,
		Deadline:    expiryOf(cfg, ev, created, expires, seen&fExpires != 0),
		FocusActive: reuseBytes(focus, pc.FocusActive),
	}
	c.CallID = NormalizeCallID(c.App, c.CallID)
	c.MemberKey = reuse(device, pc.MemberKey)
	c.Device = id.DeviceID(c.MemberKey)
	if foci != nil {
		c.FociPref = reuseBytes(foci, pc.FociPref)
	}
	if intent != nil {
		c.CallIntent = reuse(intent, "audio", "video", pc.CallIntent)
	}
	var buf [128]byte
	mid := append(buf[:0], ev.Sender...)
	mid = append(mid, '/')
	mid = append(mid, device...)
	mid = append(mid, '/')
	mid = strconv.AppendInt(mid, created, 10)
	c.MembershipID = reuse(mid, pc.MembershipID)
	return Parsed{Kind: RegisterJoin, Claims: []Claim{c}}, true
}
