package jsonscan

import (
	"encoding/json"
	"strings"
	"testing"
)

// valid reports whether the scanner accepts b as one JSON value with white
// space around it, as json.Valid does.
func valid(b []byte) bool {
	s := Scanner{B: b}
	s.Space()
	if !s.Value(1) {
		return false
	}
	s.Space()
	return s.EOF()
}

var cases = []string{
	`{}`, `[]`, `""`, `0`, `-0`, `1.5e+3`, `true`, `false`, `null`, ` {"a" : [1 , 2 ] } `,
	`{"a":"\u00e9\n\"x"}`, "\"\xff\xfe\"", `{"a":1,}`, `[1,]`, `01`, `1.`, `.5`, `-`, `1e`, `"\x"`, `"\u12"`,
	"\"a\tb\"", `{"a"}`, `{"a":}`, `{1:2}`, `nul`, `[1 2]`, `{"a":1}x`, ``, ` `,
	strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth),
	strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1),
	strings.Repeat(`{"a":`, MaxDepth) + "1" + strings.Repeat("}", MaxDepth),
	strings.Repeat(`{"a":`, MaxDepth+1) + "1" + strings.Repeat("}", MaxDepth+1),
}

// TestValidAsEncodingJSON: the scanner accepts exactly what json.Valid
// accepts, the nesting limit included.
func TestValidAsEncodingJSON(t *testing.T) {
	for _, c := range cases {
		if got, want := valid([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("%.60q: scanner %v, encoding/json %v", c, got, want)
		}
	}
}

func FuzzValid(f *testing.F) {
	for _, c := range cases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := valid(b), json.Valid(b); got != want {
			t.Fatalf("%q: scanner %v, encoding/json %v", b, got, want)
		}
	})
}

// TestPlainInt: plain decimal integers of up to 15 digits only.
func TestPlainInt(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "7": 7, "123456789012345": 123456789012345} {
		if v, ok := PlainInt([]byte(in)); !ok || v != want {
			t.Errorf("%s: %d %v", in, v, ok)
		}
	}
	for _, in := range []string{"", "-1", "01", "1.0", "1e3", "1234567890123456", "1a"} {
		if v, ok := PlainInt([]byte(in)); ok {
			t.Errorf("%s: accepted as %d", in, v)
		}
	}
}
