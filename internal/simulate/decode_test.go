package simulate

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// decodeSeeds are lines of the examples, of a generated trace and of the
// shapes decode must leave to rawevent.ParseClientEvent.
func decodeSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	var seeds [][]byte
	files, _ := filepath.Glob(examples + "*.jsonl")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			tb.Fatal(err)
		}
		seeds = append(seeds, bytes.Split(bytes.TrimSpace(b), []byte("\n"))...)
	}
	var trace bytes.Buffer
	if err := WriteTrace(&trace, 2_500, 3); err != nil {
		tb.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(trace.Bytes()), []byte("\n"))
	seeds = append(seeds, lines[0], lines[2400], lines[2401], lines[2499])
	const m = `{"type":"org.matrix.msc3401.call.member","state_key":"_@a:x_D_m.call","sender":"@a:x","event_id":"$e","room_id":"!r:x","origin_server_ts":5,"content":{"a":1}`
	for _, tail := range []string{`}`, ` } `, `,"received_at":7}`, `,"received_at":0}`, `,"received_at":-1}`, `,"received_at":null}`,
		`,"received_at":1e3}`, `,"unsigned":{}}`, `,"unsigned":{"age":5,"x":[1,{}]}}`, `,"unsigned":{"redacted_because":{"event_id":"$r","origin_server_ts":9}}}`,
		`,"unsigned":{"Redacted_Because":{"event_id":"$r"}}}`, `,"unsigned":null}`, `,"Type":"x"}`, `,"type":"y"}`, `,"redacts":"$x"}`,
		`,"sticky":{"duration_ms":1000}}`, `,"msc4354_sticky":{"duration_ms":5}}`, `,"other":1}`, `}x`, `,}`} {
		seeds = append(seeds, []byte(m+tail))
	}
	for _, l := range []string{
		`{"type":"m.room.redaction","sender":"@a:x","event_id":"$e","room_id":"!r:x","origin_server_ts":5,"content":{"redacts":"$x"}}`,
		`{"type":"m.room.member","state_key":"@a:x","sender":"@a:x","event_id":"$e","room_id":"!r:x","origin_server_ts":5,"content":{ "membership":"join"}}`,
		`{"type":"m.room.member","state_key":"@a:x","sender":"@a:x","event_id":"$e","room_id":"!r:x","origin_server_ts":0,"content":{}}`,
		`{"type":"m.room.member","state_key":"@a:x","sender":"a:x","event_id":"$e","room_id":"!r:x","origin_server_ts":5,"content":{}}`,
		`{"type":"m.room.member","state_key":"@a:x","sender":"@a:x","event_id":"e","room_id":"r:x","origin_server_ts":5,"content":[]}`,
		`{"type":"m.room.m\u0065mber","state_key":null,"sender":"@a:x","event_id":"$e","room_id":"!r:x","origin_server_ts":5,"content":{}}`,
		`{"type":"","sender":"@a:x","event_id":"$e","room_id":"!r:x","origin_server_ts":5,"content":{}}`,
		`{"type":"t","sender":"@a:x","event_id":"$e","room_id":"!r:x","origin_server_ts":5}`,
		`{"type":"t","sender":"@a:x","event_id":"$e","room_id":"!r:x","origin_server_ts":5,"content":{"a":"\u00e9\xff"}}`,
	} {
		seeds = append(seeds, []byte(l))
	}
	return seeds
}

// checkDecode: what decode's one-pass path accepts, rawevent.ParseClientEvent
// accepts and decodes to the same event.
func checkDecode(t *testing.T, d *decoder, line []byte) (fast bool) {
	t.Helper()
	got, ok := d.fast(line)
	if !ok {
		return false
	}
	want, err := rawevent.ParseClientEvent(line, "", 0)
	if err != nil {
		t.Fatalf("%q: decoded, but ParseClientEvent says %v", line, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n decoded %+v\nParseClientEvent %+v", line, got, want)
	}
	return true
}

// TestDecodeAsParseClientEvent: every seed decodes as ParseClientEvent
// decodes it, and the lines of the generated trace and of the examples'
// membership events take the one-pass path.
func TestDecodeAsParseClientEvent(t *testing.T) {
	d := newDecoder()
	fast := 0
	for _, line := range decodeSeeds(t) {
		if checkDecode(t, d, line) {
			fast++
		}
		got, gotErr := d.decode(line)
		want, wantErr := rawevent.ParseClientEvent(line, "", 0)
		if !reflect.DeepEqual(got, want) || (gotErr == nil) != (wantErr == nil) || (gotErr != nil && gotErr.Error() != wantErr.Error()) {
			t.Fatalf("%q: decode %+v %v, ParseClientEvent %+v %v", line, got, gotErr, want, wantErr)
		}
	}
	var trace bytes.Buffer
	if err := WriteTrace(&trace, 3_000, 1); err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(bytes.TrimSpace(trace.Bytes()), []byte("\n")) {
		if !checkDecode(t, d, line) {
			t.Fatalf("a trace line took the general path: %s", line)
		}
	}
	if fast < 10 {
		t.Fatalf("only %d seeds took the one-pass path", fast)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range decodeSeeds(f) {
		f.Add(s)
	}
	d := newDecoder()
	f.Fuzz(func(t *testing.T, line []byte) {
		checkDecode(t, d, line)
	})
}
