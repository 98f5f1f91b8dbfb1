package simulate

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rtcsessions/rtc-sessions/internal/rtcctl/safetext"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

const examples = "../../pkg/rtc/testdata/examples/"

// simulate runs the CLI and returns the session events, the live sessions,
// stderr and the exit status.
func simulate(t *testing.T, input string, args ...string) ([]events.SessionEvent, []events.LiveSession, string, int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(path, []byte(input), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := Run(context.Background(), append(args, path), &out, &errb)
	var evs []events.SessionEvent
	var live []events.LiveSession
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var probe map[string]json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &probe); err != nil {
			t.Fatalf("output line is not JSON: %s", sc.Text())
		}
		if _, ok := probe["kind"]; ok {
			var e events.SessionEvent
			_ = json.Unmarshal(sc.Bytes(), &e)
			evs = append(evs, e)
		} else {
			var s events.LiveSession
			_ = json.Unmarshal(sc.Bytes(), &s)
			live = append(live, s)
		}
	}
	return evs, live, errb.String(), code
}

func read(t *testing.T, names ...string) string {
	var b strings.Builder
	for _, n := range names {
		data, err := os.ReadFile(examples + n + ".jsonl")
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	return b.String()
}

func kinds(evs []events.SessionEvent) []string {
	var out []string
	for _, e := range evs {
		k := string(e.Kind)
		if e.Reason != "" {
			k += "/" + string(e.Reason)
		}
		out = append(out, k)
	}
	return out
}

// withReceived sets received_at on every line, as if the dump was read at t.
func withReceived(lines, at string) string {
	return strings.ReplaceAll(lines, `"origin_server_ts"`, `"received_at":`+at+`,"origin_server_ts"`)
}

// TestExamples reproduces the expected outcomes of the example events E1-E10 (testdata).
func TestExamples(t *testing.T) {
	const now = "1767231000000"
	tests := []struct {
		name     string
		input    string
		args     []string
		kinds    []string
		sessions int
		stderr   string
	}{
		{"E1 one member", read(t, "E1"), []string{"--sessions"}, []string{"session_started", "member_joined"}, 1, ""},
		{"E1+E2 same member, later expiry", read(t, "E1", "E2"), []string{"--sessions"}, []string{"session_started", "member_joined", "member_updated"}, 1, ""},
		{"E1+E2+E3 session ends", read(t, "E1", "E2", "E3"), []string{"--sessions"},
			[]string{"session_started", "member_joined", "member_updated", "member_left/leave", "session_ended/leave"}, 0, ""},
		{"E4 stale legacy at NOW", withReceived(read(t, "E4"), now), []string{"--sessions"}, nil, 0, ""},
		{"E5 at NOW", withReceived(read(t, "E5"), now), []string{"--sessions"}, nil, 0, ""},
		{"E5 at 1767210000000", read(t, "E5"), []string{"--sessions", "--until", "1767210000000"}, []string{"session_started", "member_joined"}, 1, ""},
		{"E5 expires by timer", read(t, "E5"), []string{"--sessions", "--until", now},
			[]string{"session_started", "member_joined", "member_left/expired", "session_ended/expired"}, 0, ""},
		{"E6 hostile write", read(t, "E6"), []string{"--sessions"}, nil, 0, "state key names @alice:example.org"},
		{"E7 malformed content", read(t, "E7"), []string{"--sessions"}, nil, 0, "device_id must be a string"},
		{"E8 sticky join", strings.SplitAfter(read(t, "E8"), "\n")[0], []string{"--sessions"}, []string{"session_started", "member_joined"}, 1, ""},
		{"E8 sticky join and leave", read(t, "E8"), []string{"--sessions"},
			[]string{"session_started", "member_joined", "member_left/leave", "session_ended/leave"}, 0, ""},
		{"E9 slot and member", read(t, "E9"), []string{"--sessions"}, []string{"session_started", "member_joined"}, 1, ""},
		{"E10 redacted", read(t, "E5", "E10"), []string{"--sessions"},
			[]string{"session_started", "member_joined", "member_left/redacted", "session_ended/redacted"}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, live, stderr, code := simulate(t, tt.input, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if got := kinds(evs); !slices.Equal(got, tt.kinds) {
				t.Fatalf("events %v, want %v", got, tt.kinds)
			}
			if len(live) != tt.sessions {
				t.Fatalf("%d live sessions, want %d", len(live), tt.sessions)
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Fatalf("stderr %q lacks %q", stderr, tt.stderr)
			}
		})
	}
}

func TestE1E2E3Figures(t *testing.T) {
	evs, _, _, _ := simulate(t, read(t, "E1", "E2", "E3"))
	end := evs[len(evs)-1]
	if end.Summary.StartedAt != 1767225601234 || end.Summary.EndedAt != 1767231000000 || end.Summary.DurationMS != 5398766 {
		t.Fatalf("summary %+v", end.Summary)
	}
	if evs[2].Member.ExpiresAt != 1767254401234 || evs[1].Member.ExpiresAt != 1767240001234 {
		t.Fatalf("expiries %d %d", evs[1].Member.ExpiresAt, evs[2].Member.ExpiresAt)
	}
}

func TestMalformedLinesReportedAndSkipped(t *testing.T) {
	input := read(t, "E1") + "{not json\n\n" + `{"type":"m.rtc.member"}` + "\n" + read(t, "E3")
	evs, _, stderr, code := simulate(t, input)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(stderr, "line 2:") || !strings.Contains(stderr, "line 4:") || strings.Contains(stderr, "line 3:") {
		t.Fatalf("stderr %q", stderr)
	}
	// The good lines around the bad ones still count.
	if got := kinds(evs); !slices.Equal(got, []string{"session_started", "member_joined", "member_left/leave", "session_ended/leave"}) {
		t.Fatalf("events %v", got)
	}
}

// TestTimersFireAcrossRooms: a room's timer fires when the clock, moved by
// another room's events, passes its deadline, before that later event.
func TestTimersFireAcrossRooms(t *testing.T) {
	a := `{"type":"org.matrix.msc3401.call.member","state_key":"_@a:x_D_m.call","sender":"@a:x","event_id":"$a1","room_id":"!a:x","origin_server_ts":1000,"content":{"application":"m.call","call_id":"","device_id":"D","focus_active":{"type":"livekit"},"expires":5000}}`
	b := `{"type":"org.matrix.msc3401.call.member","state_key":"_@b:x_D_m.call","sender":"@b:x","event_id":"$b1","room_id":"!b:x","origin_server_ts":9000,"content":{"application":"m.call","call_id":"","device_id":"D","focus_active":{"type":"livekit"}}}`
	evs, _, _, _ := simulate(t, a+"\n"+b+"\n")
	var order []string
	for _, e := range evs {
		order = append(order, string(e.RoomID)+" "+string(e.Kind))
	}
	want := []string{"!a:x session_started", "!a:x member_joined", "!a:x member_left", "!a:x session_ended", "!b:x session_started", "!b:x member_joined"}
	if !slices.Equal(order, want) {
		t.Fatalf("order %v", order)
	}
}

func TestUsageErrors(t *testing.T) {
	var out, errb bytes.Buffer
	for _, args := range [][]string{{}, {"--until", "soon", "x"}, {"/does/not/exist.jsonl"}} {
		errb.Reset()
		if code := Run(context.Background(), args, &out, &errb); code != 2 || errb.Len() == 0 {
			t.Fatalf("%v: exit %d, stderr %q", args, code, errb.String())
		}
	}
}

// TestLongLinesSkipped: a line longer than bufio.Scanner's buffer, or than
// --max-line-bytes, is reported with its line number, counted and skipped,
// and the lines after it are simulated.
func TestLongLinesSkipped(t *testing.T) {
	long := func(n int) string { // a JSON object of n bytes
		return `{"type":"m.room.message","content":{"body":"` + strings.Repeat("x", n-47) + `"}}`
	}
	join := []string{"session_started", "member_joined"}
	tests := []struct {
		name    string
		input   string
		args    []string
		kinds   []string
		stderr  []string
		skipped string
	}{
		{"100 KiB line in the middle: too large an event", read(t, "E1") + long(100<<10) + "\n" + read(t, "E3"), nil,
			[]string{"session_started", "member_joined", "member_left/leave", "session_ended/leave"},
			[]string{"line 2: skipped: ", "limit"}, "1 of 3 lines skipped (1 malformed, 0 longer than 1048576 bytes)"},
		{"2 MiB line over the default maximum", long(2<<20) + "\n" + read(t, "E1"), nil, join,
			[]string{"line 1: skipped: line too long: 2097152 bytes, more than 1048576"}, "1 of 2 lines skipped (0 malformed, 1 longer than 1048576 bytes)"},
		{"--max-line-bytes", read(t, "E1") + long(5000) + "\r\n" + read(t, "E3"), []string{"--max-line-bytes", "1000"},
			[]string{"session_started", "member_joined", "member_left/leave", "session_ended/leave"},
			[]string{"line 2: skipped: line too long: 5000 bytes, more than 1000"}, "1 of 3 lines skipped (0 malformed, 1 longer than 1000 bytes)"},
		{"last line too long, without a line end", read(t, "E1") + long(3000), []string{"--max-line-bytes", "1000"}, join,
			[]string{"line 2: skipped: line too long: 3000 bytes"}, "1 of 2 lines skipped"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, _, stderr, code := simulate(t, tt.input, tt.args...)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr %.500q", code, stderr)
			}
			if got := kinds(evs); !slices.Equal(got, tt.kinds) {
				t.Fatalf("events %v, want %v; stderr %.500q", got, tt.kinds, stderr)
			}
			for _, w := range append(tt.stderr, tt.skipped) {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%.1000s", w, stderr)
				}
			}
			if len(stderr) > 2000 {
				t.Errorf("stderr holds the long line (%d bytes)", len(stderr))
			}
		})
	}
}

// TestReadLineEnds: lines end with \n or \r\n, the last one may have
// none; a line of exactly the maximum is read whole.
func TestReadLineEnds(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		max   int
		lines []string // read lines; "!N" for a line of N bytes skipped as too long
	}{
		{"LF", "a\nbc\n", 10, []string{"a", "bc"}},
		{"CRLF", "a\r\nbc\r\n", 10, []string{"a", "bc"}},
		{"no final line end", "a\nbc", 10, []string{"a", "bc"}},
		{"empty lines", "\n\r\n\na", 10, []string{"", "", "", "a"}},
		{"exactly the maximum, with CRLF", "abcd\r\nabcde\r\n", 4, []string{"abcd", "!5"}},
		{"one over", "abcde\nab\n", 4, []string{"!5", "ab"}},
		{"longer than the reader's buffer", strings.Repeat("y", 200<<10) + "\nz", 300 << 10, []string{strings.Repeat("y", 200<<10), "z"}},
		{"far longer than the maximum", strings.Repeat("y", 300<<10) + "\nz", 1 << 10, []string{"!307200", "z"}},
		{"far longer than the maximum, CRLF", strings.Repeat("y", 300<<10) + "\r\nz", 1 << 10, []string{"!307200", "z"}},
		{"CRLF split between reads", strings.Repeat("y", 15) + "\r\nz", 100, []string{strings.Repeat("y", 15), "z"}},
		{"empty input", "", 4, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tt.in), 16)
			var got []string
			for {
				line, size, err := readLine(br, tt.max, nil)
				if size == 0 && err != nil {
					break
				}
				if size > tt.max {
					got = append(got, "!"+strconv.Itoa(size))
				} else {
					if size != len(line) {
						t.Fatalf("size %d, line %d bytes", size, len(line))
					}
					got = append(got, string(line))
				}
				if err != nil {
					break
				}
			}
			if !slices.Equal(got, tt.lines) {
				t.Fatalf("lines %.200q, want %.200q", got, tt.lines)
			}
		})
	}
}

// TestHostileTextOnStderr: event ids, reasons and parse errors quoted on
// stderr are escaped: a hostile event id cannot print a line of its own
// or send escape sequences to the terminal. The JSON on stdout is exact.
func TestHostileTextOnStderr(t *testing.T) {
	evil := "$x\n2023-01-01 line 9: note: forged\x1b]52;c;ZXZpbA==\x07\u202e\u200b"
	evilJSON, err := json.Marshal(evil)
	if err != nil {
		t.Fatal(err)
	}
	e6 := strings.Replace(read(t, "E6"), `"$M1mallory000000000000000000000000000000006"`, string(evilJSON), 1)
	e6 = strings.Replace(e6, `"!call:example.org"`, `"!call\u009b2J:example.org\u202e"`, 1)
	// A malformed line quoting hostile text in its error.
	bad := `{"type":"m.call.member\u001b[2J","state_key":7}`
	_, _, stderr, code := simulate(t, e6+bad+"\n")
	if code != 1 {
		t.Fatalf("exit %d: %q", code, stderr)
	}
	if i := safetext.FirstUnsafe(stderr); i >= 0 {
		t.Fatalf("stderr has an unsafe character at %d: %q", i, stderr)
	}
	if !strings.Contains(stderr, `line 1: note: $x\n2023-01-01 line 9: note: forged\x1b]52;c;ZXZpbA==\a\u202e\u200b not counted`) {
		t.Fatalf("stderr does not show the event id escaped:\n%s", stderr)
	}
	if n := strings.Count(stderr, "\n"); n != 3 { // the note, the bad line, the count
		t.Fatalf("%d lines on stderr, want 3:\n%s", n, stderr)
	}

	// stdout: exact JSON, no raw C1.
	join := `{"type":"org.matrix.msc3401.call.member","state_key":"_@a:x_D_m.call","sender":"@a:x","event_id":"$a","room_id":"!a\u009b2J\u202e:x","origin_server_ts":1000,"content":{"application":"m.call","call_id":"","device_id":"D","focus_active":{"type":"livekit"}}}`
	path := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(path, []byte(join+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{path}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if bytes.Contains(out.Bytes(), []byte("\u009b")) || !bytes.Contains(out.Bytes(), []byte(`\u009b2J`+"\u202e")) {
		t.Fatalf("stdout: %q", out.String())
	}
	var ev events.SessionEvent
	if err := json.Unmarshal(bytes.SplitN(out.Bytes(), []byte("\n"), 2)[0], &ev); err != nil || ev.RoomID != "!a\u009b2J\u202e:x" {
		t.Fatalf("stdout does not decode to the room id: %q %v", ev.RoomID, err)
	}
}
