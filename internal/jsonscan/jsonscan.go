// Package jsonscan is a validating one-pass JSON scanner that accepts
// exactly what encoding/json accepts (the same grammar, the same nesting
// limit, any byte of 0x20 and above inside strings) without building maps
// or using reflection: the parsers of inputs read on every event (a call
// membership's content, a line of a Matrix event file) find their fields'
// values with it and decode only those, with encoding/json where a value is
// not plain.
package jsonscan

// MaxDepth is encoding/json's limit on open objects and arrays.
const MaxDepth = 10000

// Scanner reads B from offset I.
type Scanner struct {
	B []byte
	I int
	// Spaced is set once white space between tokens was skipped: bytes
	// scanned since then differ from their compacted form.
	Spaced bool
}

// Space skips white space.
func (s *Scanner) Space() {
	if s.I < len(s.B) && s.B[s.I] <= ' ' { // compact input: one comparison
		s.space()
	}
}

func (s *Scanner) space() {
	for s.I < len(s.B) {
		switch s.B[s.I] {
		case ' ', '\t', '\n', '\r':
			s.I++
			s.Spaced = true
		default:
			return
		}
	}
}

// EOF reports that the input is consumed.
func (s *Scanner) EOF() bool { return s.I >= len(s.B) }

// Peek returns the next byte, or 0 at the end.
func (s *Scanner) Peek() byte {
	if s.I < len(s.B) {
		return s.B[s.I]
	}
	return 0
}

// NoSpace reports that no insignificant white space follows (white space
// would make compacted bytes differ from the raw ones).
func (s *Scanner) NoSpace() bool {
	switch s.Peek() {
	case ' ', '\t', '\n', '\r':
		return false
	}
	return true
}

// Str scans a string and returns its bytes between the quotes. simple is
// false when it holds an escape or a non-ASCII byte (its value then differs
// from its bytes, or may).
func (s *Scanner) Str() (val []byte, simple, ok bool) {
	b, i := s.B, s.I
	if i >= len(b) || b[i] != '"' {
		return nil, false, false
	}
	i++
	start := i
	simple = true
	for i < len(b) {
		if !strStop[b[i]] { // most bytes: one table look-up
			i++
			continue
		}
		c := b[i]
		switch {
		case c == '"':
			s.I = i + 1
			return b[start:i], simple, true
		case c < 0x20:
			return nil, false, false
		case c == '\\':
			simple = false
			i++
			if i >= len(b) {
				return nil, false, false
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if i+4 >= len(b) {
					return nil, false, false
				}
				for _, h := range b[i+1 : i+5] {
					if !isHex(h) {
						return nil, false, false
					}
				}
				i += 5
			default:
				return nil, false, false
			}
		default: // non-ASCII
			simple = false
			i++
		}
	}
	return nil, false, false
}

// strStop marks the bytes of a string Str looks at: the quote, the
// backslash, control characters and non-ASCII bytes.
var strStop = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	for c := 0x80; c < 0x100; c++ {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// Number scans a JSON number and returns its bytes.
func (s *Scanner) Number() ([]byte, bool) {
	start := s.I
	if s.Peek() == '-' {
		s.I++
	}
	switch c := s.Peek(); {
	case c == '0':
		s.I++
	case '1' <= c && c <= '9':
		for isDigit(s.Peek()) {
			s.I++
		}
	default:
		return nil, false
	}
	if s.Peek() == '.' {
		s.I++
		if !isDigit(s.Peek()) {
			return nil, false
		}
		for isDigit(s.Peek()) {
			s.I++
		}
	}
	if c := s.Peek(); c == 'e' || c == 'E' {
		s.I++
		if c := s.Peek(); c == '+' || c == '-' {
			s.I++
		}
		if !isDigit(s.Peek()) {
			return nil, false
		}
		for isDigit(s.Peek()) {
			s.I++
		}
	}
	return s.B[start:s.I], true
}

// Literal scans lit.
func (s *Scanner) Literal(lit string) bool {
	if len(s.B)-s.I < len(lit) || string(s.B[s.I:s.I+len(lit)]) != lit {
		return false
	}
	s.I += len(lit)
	return true
}

// Value scans (and validates) any value, not the white space after it; it
// is at depth (1 for a top-level value) in the nesting encoding/json limits
// to MaxDepth.
func (s *Scanner) Value(depth int) bool {
	switch s.Peek() {
	case '"':
		_, _, ok := s.Str()
		return ok
	case '{':
		return s.Object(depth, func([]byte, bool, []byte) bool { return s.Value(depth + 1) })
	case '[':
		return s.Array(depth, func() bool { return s.Value(depth + 1) })
	case 't':
		return s.Literal("true")
	case 'f':
		return s.Literal("false")
	case 'n':
		return s.Literal("null")
	}
	_, ok := s.Number()
	return ok
}

// Array scans an array (at depth) element by element, not the white space
// after it: elem is called with the scanner at each element, scans it and
// reports whether it is valid (or is to stop the scan). Array reports
// whether the array was scanned whole and valid.
func (s *Scanner) Array(depth int, elem func() bool) bool {
	if s.Peek() != '[' || depth > MaxDepth {
		return false
	}
	s.I++
	s.Space()
	if s.Peek() == ']' {
		s.I++
		return true
	}
	for {
		if !elem() {
			return false
		}
		s.Space()
		switch s.Peek() {
		case ',':
			s.I++
			s.Space()
		case ']':
			s.I++
			return true
		default:
			return false
		}
	}
}

// Object scans an object (at depth) member by member, not the white space
// after it. For each member it calls member with the key's bytes between
// the quotes, whether they are its value (simple, see Str) and the key's
// JSON string (to decode when not simple), with the scanner at the member's
// value; member scans the value and reports whether it is valid (or is to
// stop the scan). Object reports whether the object was scanned whole and
// valid.
func (s *Scanner) Object(depth int, member func(key []byte, simple bool, quoted []byte) bool) bool {
	if s.Peek() != '{' || depth > MaxDepth {
		return false
	}
	s.I++
	s.Space()
	if s.Peek() == '}' {
		s.I++
		return true
	}
	for {
		start := s.I
		key, simple, ok := s.Str()
		if !ok {
			return false
		}
		quoted := s.B[start:s.I]
		if s.Peek() != ':' {
			s.Space()
			if s.Peek() != ':' {
				return false
			}
		}
		s.I++
		s.Space()
		if !member(key, simple, quoted) {
			return false
		}
		s.Space()
		switch s.Peek() {
		case ',':
			s.I++
			s.Space()
		case '}':
			s.I++
			return true
		default:
			return false
		}
	}
}

// PlainInt reads a number's bytes that are a plain decimal integer of at
// most 15 digits (exact in a float64, as encoding/json reads it); anything
// else (sign, fraction, exponent, more digits) is not plain.
func PlainInt(b []byte) (int64, bool) {
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
