package ingest

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestStreamTransaction(t *testing.T) {
	lim := TxnLimits{MaxEvents: 3, MaxDepth: 4, MaxArrayLen: 3}
	tests := []struct {
		name      string
		body      string
		wantErr   error // nil: accepted
		events    int   // elements passed on
		shapeErrs int   // of which broke the limits
	}{
		{"empty transaction", `{"events":[]}`, nil, 0, 0},
		{"no events member", `{"ephemeral":[{"type":"m.typing"}]}`, nil, 0, 0},
		{"events null", `{"events":null}`, nil, 0, 0},
		{"surrounding white space", " \n{\"events\" : [ {} , 1 ] }\n ", nil, 2, 0},
		{"exactly max events", `{"events":[{},{},{}]}`, nil, 3, 0},
		{"one event too many", `{"events":[{},{},{},{}]}`, ErrTooManyEvents, 3, 0},
		{"element too deep", `{"events":[{"a":{"b":{"c":{"d":{}}}}},{"a":{"b":{"c":{"d":1}}}}]}`, nil, 2, 1},
		{"array in an element too long", `{"events":[{"a":[1,2,3,4]},{"a":[1,2,3]}]}`, nil, 2, 1},
		{"brackets inside strings do not count", `{"events":[{"a":"[[[[[[,,,,,{{{{","b":"\"[[[[[\\"}]}`, nil, 1, 0},
		{"other member too deep", `{"ephemeral":[[[[[1]]]]],"events":[]}`, ErrTooComplex, 0, 0},
		{"other member array too long", `{"to_device":[1,2,3,4]}`, ErrTooComplex, 0, 0},
		{"events not an array", `{"events":{}}`, ErrBadJSON, 0, 0},
		{"events a string", `{"events":"[]"}`, ErrBadJSON, 0, 0},
		{"events twice", `{"events":[{}],"events":[{}]}`, ErrBadJSON, 1, 0},
		{"not an object", `[{"events":[]}]`, ErrBadJSON, 0, 0},
		{"a string", `"x"`, ErrBadJSON, 0, 0},
		{"empty", ``, ErrNotJSON, 0, 0},
		{"truncated", `{"events":[{"type":"m.rtc.member"`, ErrNotJSON, 0, 0},
		{"missing comma", `{"events":[{} {}]}`, ErrNotJSON, 1, 0},
		{"trailing data", `{"events":[]}{}`, ErrNotJSON, 0, 0},
		{"trailing garbage", `{"events":[]} x`, ErrNotJSON, 0, 0},
		{"bad literal", `{"events":[tru]}`, ErrNotJSON, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, shapeErrs := 0, 0
			// One byte at a time: the decoder must not depend on how the
			// network splits the body.
			err := StreamTransaction(iotest.OneByteReader(strings.NewReader(tt.body)), lim, func(raw json.RawMessage, shapeErr error) error {
				events++
				if !json.Valid(raw) {
					t.Errorf("element %q is not valid JSON", raw)
				}
				if shapeErr != nil {
					shapeErrs++
					if !errors.Is(shapeErr, ErrTooComplex) {
						t.Errorf("shape error %v", shapeErr)
					}
				}
				return nil
			})
			if (tt.wantErr == nil) != (err == nil) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if events != tt.events || shapeErrs != tt.shapeErrs {
				t.Errorf("%d elements (%d over the limits), want %d (%d)", events, shapeErrs, tt.events, tt.shapeErrs)
			}
		})
	}
}

// TestStreamTransactionReaderError: an error of the reader (the body budget,
// a size limit, a broken connection) is returned as it is, not as bad JSON.
func TestStreamTransactionReaderError(t *testing.T) {
	r := io.MultiReader(strings.NewReader(`{"events":[{},`), iotest.ErrReader(errOverBudget))
	err := StreamTransaction(r, TxnLimits{}, func(json.RawMessage, error) error { return nil })
	if !errors.Is(err, errOverBudget) || errors.Is(err, ErrNotJSON) {
		t.Fatalf("error %v, want errOverBudget", err)
	}
}

// TestStreamTransactionStopsEarly: a body of millions of elements is read
// only up to the event bound.
func TestStreamTransactionStopsEarly(t *testing.T) {
	const limit = 1000
	body := hugeArrayReader(2_000_000)
	defer body.Close() // stops the generator
	read := &countingReader{r: body}
	err := StreamTransaction(read, TxnLimits{MaxEvents: limit}, func(json.RawMessage, error) error { return nil })
	if !errors.Is(err, ErrTooManyEvents) {
		t.Fatalf("error %v", err)
	}
	if read.n > 64<<10 {
		t.Errorf("read %d bytes of a %d-byte body to refuse it", read.n, 3*2_000_000)
	}
}

func hugeArrayReader(n int) *io.PipeReader {
	pr, pw := io.Pipe()
	go func() { _, err := (hugeArrayBody{n: n}).writeTo(pw); pw.CloseWithError(err) }()
	return pr
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestBudgetReader(t *testing.T) {
	b := newBodyBudget(100, nil)
	// Without a Content-Length: reserved in chunks as it is read.
	br := &budgetReader{r: strings.NewReader(strings.Repeat("x", 70)), b: b, chunk: 30, max: 80}
	got, err := io.ReadAll(br)
	if err != nil || len(got) != 70 {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if b.inUse() != 80 { // 30+30+20: up to max, never more
		t.Errorf("reserved %d, want 80", b.inUse())
	}
	// A second body finds the budget short and is refused, not blocked.
	other := &budgetReader{r: strings.NewReader(strings.Repeat("y", 50)), b: b, chunk: 30, max: 80}
	if _, err := io.ReadAll(other); !errors.Is(err, errOverBudget) {
		t.Errorf("second body: %v, want errOverBudget", err)
	}
	other.Close()
	br.Close()
	if b.inUse() != 0 {
		t.Errorf("%d still reserved after Close", b.inUse())
	}
	// With a Content-Length the reservation is made up front and reading
	// to EOF reserves nothing more, even with the budget full.
	if !b.tryReserve("", 10) {
		t.Fatal("reserve")
	}
	fixed := &budgetReader{r: strings.NewReader("0123456789"), b: b, reserved: 10, max: 10, chunk: 30}
	if !b.tryReserve("", 90) {
		t.Fatal("fill")
	}
	if got, err := io.ReadAll(fixed); err != nil || string(got) != "0123456789" {
		t.Errorf("fixed body: %q %v", got, err)
	}
}

// TestBudgetShare: with a share, one homeserver that holds bodies (stalled
// or just large) cannot take the whole budget: the others still get in.
func TestBudgetShare(t *testing.T) {
	b := newBodyBudget(100, nil)
	b.share = 50
	if !b.tryReserve("greedy", 50) {
		t.Fatal("reserve within the share")
	}
	if b.tryReserve("greedy", 1) {
		t.Error("a homeserver reserved beyond its share")
	}
	if !b.tryReserve("other", 50) {
		t.Error("another homeserver was starved")
	}
	b.release("greedy", 50)
	if !b.tryReserve("greedy", 10) || b.inUse() != 60 {
		t.Errorf("after release: in use %d", b.inUse())
	}
}

func TestCheckShape(t *testing.T) {
	tests := []struct {
		in   string
		ok   bool
		desc string
	}{
		{`1`, true, "scalar"},
		{`[[[]]]`, true, "depth 3"},
		{`[[[[]]]]`, false, "depth 4"},
		{`{"a":{"b":{"c":{}}}}`, false, "objects count"},
		{`[1,2,3,4,5]`, true, "5 elements"},
		{`[1,2,3,4,5,6]`, false, "6 elements"},
		{`[[1,2],[3,4],[5,6],[7,8],[9,0]]`, true, "commas of nested arrays belong to them"},
		{`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6}`, true, "object members are not array elements"},
		{`["[[[[[[","\"[[[[["]`, true, "brackets in strings"},
		{`["\\",[[[]]]]`, false, "escaped backslash ends the string"},
	}
	for _, tt := range tests {
		if err := checkShape([]byte(tt.in), 3, 5); (err == nil) != tt.ok {
			t.Errorf("%s: %s: error %v", tt.desc, tt.in, err)
		}
	}
}
