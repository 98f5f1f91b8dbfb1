package wire_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/rtcsessions/rtc-sessions/internal/wire"
)

// reflective is the reflective encoding of v with wire.Marshal's settings.
func reflective(t *testing.T, v any) []byte {
	t.Helper()
	b, err := wire.MarshalReflective(v)
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

// reflectiveAll is the reflective encoding of v with wire.Marshal's
// settings but no field left out: what BeginAll must write.
func reflectiveAll(t *testing.T, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetCustomStructTag("json")
	enc.SetSortMapKeys(true)
	enc.UseCompactInts(true)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sampleAll is sample without omitempty, and with nested JSON (as the
// generic value it decodes to) and a list of strings.
type sampleAll struct {
	S string   `json:"s"`
	I int64    `json:"i"`
	U uint64   `json:"u"`
	B bool     `json:"b"`
	Y []byte   `json:"y"`
	L []string `json:"l"`
	J any      `json:"j"`
}

func TestMapAllMatchesTheReflectiveEncoder(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 19))
	for i := range 2000 {
		var s sampleAll
		if rng.IntN(2) == 0 {
			s.S = strings.Repeat("a", rng.IntN(300))
		}
		if rng.IntN(2) == 0 {
			s.I = -(rng.Int64() >> rng.IntN(64))
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
		switch rng.IntN(3) {
		case 0:
			s.L = []string{}
		case 1:
			s.L = []string{"x", strings.Repeat("y", rng.IntN(40))}
		}
		var text []byte
		if rng.IntN(4) > 0 {
			text = randomJSON(rng, 3)
			s.J = genericJSON(t, text)
		}
		w := wire.BeginAll([]byte("prefix"))
		w.Str("s", s.S)
		w.Int("i", s.I)
		w.Uint("u", s.U)
		w.Bool("b", s.B)
		w.Bytes("y", s.Y)
		w.Strs("l", s.L)
		w.JSON("j", text)
		got, want := w.End(), append([]byte("prefix"), reflectiveAll(t, &s)...)
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d %+v (json %s):\n got % x\nwant % x", i, s, text, got, want)
		}
	}
}

// A nested JSON text that is not JSON is nil, not a broken message.
func TestJSONNotJSON(t *testing.T) {
	for _, text := range []string{"{", "[1,", "1 2", "nul"} {
		w := wire.BeginAll(nil)
		w.JSON("j", []byte(text))
		if got, want := w.End(), []byte{0x81, 0xa1, 'j', 0xc0}; !bytes.Equal(got, want) {
			t.Errorf("%q: % x, want % x", text, got, want)
		}
	}
}

// genericJSON decodes text as the reflective reference sees nested JSON:
// objects as orderedMap (their keys in the order of the text), integers that
// fit 64 bits as int64 or uint64, other numbers as float64.
func genericJSON(t *testing.T, text []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	v, err := OrderedJSON(dec)
	if err != nil {
		t.Fatalf("%s: %v", text, err)
	}
	return v
}

// OrderedMap is a JSON object for the reference encoder: a msgpack map with
// the entries in this order, each value encoded reflectively.
type OrderedMap []OrderedEntry

// OrderedEntry is one entry of an OrderedMap.
type OrderedEntry struct {
	K string
	V any
}

// EncodeMsgpack implements msgpack.CustomEncoder.
func (m OrderedMap) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeMapLen(len(m)); err != nil {
		return err
	}
	for _, e := range m {
		if err := enc.EncodeString(e.K); err != nil {
			return err
		}
		if err := enc.Encode(e.V); err != nil {
			return err
		}
	}
	return nil
}

// OrderedJSON reads one JSON value of dec (UseNumber) as the reference sees
// it (see genericJSON).
func OrderedJSON(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Number:
		if n, err := strconv.ParseInt(string(t), 10, 64); err == nil {
			return n, nil
		}
		if n, err := strconv.ParseUint(string(t), 10, 64); err == nil {
			return n, nil
		}
		return strconv.ParseFloat(string(t), 64)
	case json.Delim:
		if t == '{' {
			m := OrderedMap{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := OrderedJSON(dec)
				if err != nil {
					return nil, err
				}
				m = append(m, OrderedEntry{k.(string), v})
			}
			_, err := dec.Token()
			return m, err
		}
		a := []any{}
		for dec.More() {
			v, err := OrderedJSON(dec)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err := dec.Token()
		return a, err
	}
	return tok, nil
}

// randomJSON is a random JSON value of up to depth levels, written with
// spaces and keys in no particular order.
func randomJSON(rng *rand.Rand, depth int) []byte {
	var b bytes.Buffer
	var gen func(d int)
	gen = func(d int) {
		k := rng.IntN(9)
		if d == 0 && k >= 7 {
			k = rng.IntN(7)
		}
		switch k {
		case 0:
			b.WriteString("null")
		case 1:
			b.WriteString([]string{"true", "false"}[rng.IntN(2)])
		case 2:
			fmt.Fprintf(&b, "%d", rng.Int64()>>rng.IntN(64)-rng.Int64N(1<<20))
		case 3:
			fmt.Fprintf(&b, "%d", rng.Uint64())
		case 4:
			fmt.Fprintf(&b, "%g", rng.NormFloat64()*1e6)
		case 5:
			b.WriteString([]string{"1e3", "-0.5", "123456789012345678901234567890", "0"}[rng.IntN(4)])
		case 6:
			s, _ := json.Marshal(strings.Repeat("é\"", rng.IntN(40)))
			b.Write(s)
		case 7:
			b.WriteString("[ ")
			for i := range rng.IntN(18) {
				if i > 0 {
					b.WriteString(", ")
				}
				gen(d - 1)
			}
			b.WriteString("]")
		case 8:
			b.WriteString("{")
			for i := range rng.IntN(18) {
				if i > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, "%q: ", []string{"type", "livekit_service_url", "focus_selection", "b", "a", "zz", ""}[rng.IntN(7)]+strconv.Itoa(i))
				gen(d - 1)
			}
			b.WriteString("}")
		}
	}
	gen(depth)
	return b.Bytes()
}
