package rawevent

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
)

const clockEvent = `{"type":"org.matrix.msc3401.call.member","state_key":"_@a:x_D","sender":"@a:x","event_id":"$e","room_id":"!r:x","origin_server_ts":1700000000000,"content":{"application":"m.call"}}`

// year2100 is a received_at a hostile homeserver might send (ms).
const year2100 = 4102444800000

func withField(field string) string {
	return strings.Replace(clockEvent, `"content"`, field+`,"content"`, 1)
}

// TestParseEventClock: only FileClock lets the JSON choose received_at; with
// IngestClock neither a top-level nor an unsigned received_at changes it.
func TestParseEventClock(t *testing.T) {
	const now = 1700000005000
	tests := []struct {
		name  string
		in    string
		opts  ParseOptions
		want  int64
		isErr error
	}{
		{"ingest clock, no received_at", clockEvent, ParseOptions{ReceivedAt: now}, now, nil},
		{"ingest clock ignores a top-level received_at", withField(`"received_at":` + strconv.Itoa(year2100)), ParseOptions{ReceivedAt: now}, now, nil},
		{"ingest clock ignores unsigned.received_at", withField(`"unsigned":{"received_at":` + strconv.Itoa(year2100) + `,"age":5}`), ParseOptions{ReceivedAt: now}, now, nil},
		{"ingest clock ignores an out-of-range received_at", withField(`"received_at":-5`), ParseOptions{ReceivedAt: now}, now, nil},
		{"ingest clock ignores a received_at that is not a number", withField(`"received_at":"2100-01-01"`), ParseOptions{ReceivedAt: now}, now, nil},
		{"ingest clock ignores a received_at of 1e30", withField(`"received_at":1e30`), ParseOptions{ReceivedAt: now}, now, nil},
		{"file clock rejects a received_at that is not a number", withField(`"received_at":"2100-01-01"`), ParseOptions{Clock: FileClock}, 0, ErrMalformedEvent},
		{"file clock null received_at is unset", withField(`"received_at":null`), ParseOptions{Clock: FileClock}, 1700000000000, nil},
		{"ingest clock is the zero value", withField(`"received_at":` + strconv.Itoa(year2100)), ParseOptions{ReceivedAt: now, Clock: IngestClock}, now, nil},
		{"ingest clock without a clock", clockEvent, ParseOptions{}, 0, ErrNoClock},
		{"file clock takes the line's received_at", withField(`"received_at":1700000009000`), ParseOptions{ReceivedAt: now, Clock: FileClock}, 1700000009000, nil},
		{"file clock default", clockEvent, ParseOptions{ReceivedAt: now, Clock: FileClock}, now, nil},
		{"file clock falls back to origin_server_ts", clockEvent, ParseOptions{Clock: FileClock}, 1700000000000, nil},
		{"file clock received_at 0 is unset", withField(`"received_at":0`), ParseOptions{Clock: FileClock}, 1700000000000, nil},
		{"file clock negative received_at", withField(`"received_at":-1`), ParseOptions{Clock: FileClock}, 0, ErrOutOfRange},
		{"file clock received_at beyond 2^53", withField(`"received_at":9007199254740992`), ParseOptions{Clock: FileClock}, 0, ErrOutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := ParseEvent([]byte(tt.in), tt.opts)
			if tt.isErr != nil {
				if !errors.Is(err, tt.isErr) {
					t.Fatalf("error %v, want %v", err, tt.isErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.ReceivedAt != tt.want {
				t.Fatalf("received_at %d, want %d", ev.ReceivedAt, tt.want)
			}
		})
	}
}

// TestParseClientEventIsFileClock: the compatibility entry point is for
// operator files (rtcctl simulate), which may carry received_at.
func TestParseClientEventIsFileClock(t *testing.T) {
	ev, err := ParseClientEvent([]byte(withField(`"received_at":42`)), "", 7)
	if err != nil || ev.ReceivedAt != 42 {
		t.Fatalf("received_at %d, err %v", ev.ReceivedAt, err)
	}
}

func TestParseEventNumberRanges(t *testing.T) {
	ts := func(v string) string {
		return strings.Replace(clockEvent, `"origin_server_ts":1700000000000`, `"origin_server_ts":`+v, 1)
	}
	tests := []struct {
		name    string
		in      string
		wantErr error // nil: accepted
	}{
		{"largest safe origin_server_ts", ts("9007199254740991"), nil},
		{"origin_server_ts 2^53", ts("9007199254740992"), ErrOutOfRange},
		{"origin_server_ts 2^63-100", ts("9223372036854775707"), ErrOutOfRange},
		{"origin_server_ts 0", ts("0"), ErrOutOfRange},
		{"origin_server_ts negative", ts("-1"), ErrOutOfRange},
		{"origin_server_ts 1e30 (not an int64)", ts("1e30"), ErrMalformedEvent},
		{"origin_server_ts missing", strings.Replace(clockEvent, `"origin_server_ts":1700000000000,`, "", 1), ErrMalformedEvent},
		{"sticky duration 0", withField(`"sticky":{"duration_ms":0}`), nil},
		{"sticky duration negative", withField(`"sticky":{"duration_ms":-1}`), ErrOutOfRange},
		{"unstable sticky duration huge", withField(`"msc4354_sticky":{"duration_ms":9223372036854775807}`), ErrOutOfRange},
		{"redacted_because in the far range", withField(`"unsigned":{"redacted_because":{"event_id":"$r","origin_server_ts":9223372036854775807}}`), ErrOutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseEvent([]byte(tt.in), ParseOptions{ReceivedAt: 1})
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("rejected: %v", err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			case tt.wantErr != nil && !errors.Is(err, ErrMalformedEvent):
				t.Fatalf("error %v does not wrap ErrMalformedEvent", err)
			}
		})
	}
}

// FuzzParseEvent: under IngestClock nothing in the JSON changes received_at;
// every accepted number is within the canonical JSON range.
func FuzzParseEvent(f *testing.F) {
	f.Add([]byte(withField(`"received_at":4102444800000`)), false)
	f.Add([]byte(withField(`"unsigned":{"received_at":4102444800000}`)), false)
	f.Add([]byte(withField(`"received_at":99`)), true)
	f.Add([]byte(withField(`"sticky":{"duration_ms":5}`)), true)
	f.Fuzz(func(t *testing.T, data []byte, fileClock bool) {
		const now = 1700000005000
		opts := ParseOptions{ReceivedAt: now}
		if fileClock {
			opts.Clock = FileClock
		}
		ev, err := ParseEvent(data, opts)
		if err != nil {
			if !errors.Is(err, ErrMalformedEvent) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if !fileClock && ev.ReceivedAt != now {
			t.Fatalf("the event chose received_at %d under IngestClock", ev.ReceivedAt)
		}
		if ev.ReceivedAt <= 0 || ev.ReceivedAt > MaxSafeInteger || ev.OriginServerTS <= 0 || ev.OriginServerTS > MaxSafeInteger {
			t.Fatalf("out-of-range clock accepted: %+v", ev)
		}
		if d := ev.StickyDurationMS; d != nil && (*d < 0 || *d > MaxSafeInteger) {
			t.Fatalf("out-of-range sticky duration accepted: %d", *d)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, ev.Content); err != nil || !bytes.Equal(compact.Bytes(), ev.Content) {
			t.Fatalf("content not compact: %q (%v)", ev.Content, err)
		}
		if _, err := EncodeRaw(&ev); err != nil {
			t.Fatal(err)
		}
	})
}

func TestContentCompacted(t *testing.T) {
	for _, tt := range []struct{ content, want string }{
		{`{"a":"x y","b":[1, 2]}`, `{"a":"x y","b":[1,2]}`},
		{`{ "a" : "\\" , "b":"\\" }`, `{"a":"\\","b":"\\"}`},
		{`{"a":"q\" x"}`, `{"a":"q\" x"}`},
		{"{\n\t\"a\":1\r\n}", `{"a":1}`},
		{`{"a":"\u00e9 "}`, `{"a":"\u00e9 "}`},
	} {
		ev, err := ParseEvent([]byte(strings.Replace(clockEvent, `{"application":"m.call"}`, tt.content, 1)), ParseOptions{ReceivedAt: 1})
		if err != nil {
			t.Fatalf("%s: %v", tt.content, err)
		}
		if string(ev.Content) != tt.want {
			t.Errorf("content %s, want %s", ev.Content, tt.want)
		}
	}
}
