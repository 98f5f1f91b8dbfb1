package wire_test

import (
	"bytes"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// reflective is the reflective encoding of v with events.Marshal's settings.
func reflective(t *testing.T, v any) []byte {
	t.Helper()
	b, err := events.MarshalReflective(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestScalarsMatchTheReflectiveEncoder(t *testing.T) {
	ints := []int64{0, 1, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64,
		-1, -32, -33, -128, -129, -32768, -32769, math.MinInt32, math.MinInt32 - 1, math.MinInt64}
	for _, n := range ints {
		if got, want := wire.AppendInt(nil, n), reflective(t, n); !bytes.Equal(got, want) {
			t.Errorf("int %d: % x, want % x", n, got, want)
		}
		if n >= 0 {
			if got, want := wire.AppendUint(nil, uint64(n)), reflective(t, uint64(n)); !bytes.Equal(got, want) {
				t.Errorf("uint %d: % x, want % x", n, got, want)
			}
		}
	}
	if got, want := wire.AppendUint(nil, math.MaxUint64), reflective(t, uint64(math.MaxUint64)); !bytes.Equal(got, want) {
		t.Errorf("max uint64: % x, want % x", got, want)
	}
	for _, l := range []int{0, 1, 31, 32, 255, 256, 65535, 65536} {
		s := strings.Repeat("x", l)
		if got, want := wire.AppendString(nil, s), reflective(t, s); !bytes.Equal(got, want) {
			t.Errorf("string of %d: header % x, want % x", l, got[:min(5, len(got))], want[:min(5, len(want))])
		}
		b := []byte(s)
		if got, want := wire.AppendBytes(nil, b), reflective(t, b); !bytes.Equal(got, want) {
			t.Errorf("bytes of %d: header % x, want % x", l, got[:min(5, len(got))], want[:min(5, len(want))])
		}
		arr := make([]int, l)
		if got, want := wire.AppendArrayLen(nil, l), reflective(t, arr); !bytes.HasPrefix(want, got) {
			t.Errorf("array of %d: header % x, want a prefix of % x", l, got, want[:min(5, len(want))])
		}
	}
	if got, want := wire.AppendBytes(nil, nil), reflective(t, []byte(nil)); !bytes.Equal(got, want) {
		t.Errorf("nil bytes: % x, want % x", got, want)
	}
	for _, v := range []bool{true, false} {
		if got, want := wire.AppendBool(nil, v), reflective(t, v); !bytes.Equal(got, want) {
			t.Errorf("bool %v: % x, want % x", v, got, want)
		}
	}
	for _, l := range []int{0, 15, 16, 65535, 65536} {
		if got := wire.AppendMapLen(nil, l); len(got) == 0 {
			t.Errorf("map of %d: no header", l)
		}
	}
}

// sample is a struct with every kind of field Map writes.
type sample struct {
	S string `json:"s"`
	I int64  `json:"i"`
	U uint64 `json:"u"`
	B bool   `json:"b"`
	Y []byte `json:"y,omitempty"`
	N int    `json:"n"`
}

func (s *sample) appendMsgpack(b []byte) []byte {
	w := wire.Begin(b)
	w.Str("s", s.S)
	w.Int("i", s.I)
	w.Uint("u", s.U)
	w.Bool("b", s.B)
	w.Bytes("y", s.Y)
	w.Int("n", int64(s.N))
	return w.End()
}

func TestMapMatchesTheReflectiveEncoder(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for i := range 2000 {
		s := sample{}
		if rng.IntN(2) == 0 {
			s.S = strings.Repeat("a", rng.IntN(300))
		}
		if rng.IntN(2) == 0 {
			s.I = rng.Int64() >> rng.IntN(64)
			if rng.IntN(2) == 0 {
				s.I = -s.I
			}
		}
		if rng.IntN(2) == 0 {
			s.U = rng.Uint64() >> rng.IntN(64)
		}
		s.B = rng.IntN(2) == 0
		switch rng.IntN(3) {
		case 0:
			s.Y = []byte{}
		case 1:
			s.Y = bytes.Repeat([]byte{1}, rng.IntN(300))
		}
		s.N = rng.IntN(1000) - 500
		got, want := s.appendMsgpack([]byte("prefix")), append([]byte("prefix"), reflective(t, &s)...)
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d %+v:\n got % x\nwant % x", i, s, got, want)
		}
	}
}

// wide has more fields than a fixmap holds, and a list of strings.
type wide struct {
	A, B, C, D, E, F, G, H, I, J, K, L, M, N, O, P, Q int64
	L1                                                []string `json:"l1,omitempty"`
}

func (s *wide) appendMsgpack(b []byte) []byte {
	w := wire.Begin(b)
	for i, v := range []int64{s.A, s.B, s.C, s.D, s.E, s.F, s.G, s.H, s.I, s.J, s.K, s.L, s.M, s.N, s.O, s.P, s.Q} {
		w.Int(string(rune('A'+i)), v)
	}
	w.Strs("l1", s.L1)
	return w.End()
}

// A map of 16 entries or more gets the longer header, and its entries move
// behind it; lists of strings are written as the reflective encoder writes
// them.
func TestWideMapMatchesTheReflectiveEncoder(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 3))
	for i := range 2000 {
		var s wide
		vs := []*int64{&s.A, &s.B, &s.C, &s.D, &s.E, &s.F, &s.G, &s.H, &s.I, &s.J, &s.K, &s.L, &s.M, &s.N, &s.O, &s.P, &s.Q}
		filled := rng.IntN(len(vs) + 1)
		for _, v := range vs[:filled] {
			*v = 1 + rng.Int64N(1<<40)
		}
		switch rng.IntN(3) {
		case 0:
			s.L1 = []string{}
		case 1:
			for range rng.IntN(20) {
				s.L1 = append(s.L1, strings.Repeat("x", rng.IntN(40)))
			}
		}
		got, want := s.appendMsgpack([]byte("prefix")), append([]byte("prefix"), reflective(t, &s)...)
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d (%d fields, %d strings):\n got % x\nwant % x", i, filled, len(s.L1), got, want)
		}
	}
}
