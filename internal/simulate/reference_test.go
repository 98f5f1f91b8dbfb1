package simulate

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/rtcctl/safetext"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// reference is simulate written the plain way, as it was before it was
// made fast: every line through rawevent.ParseClientEvent, every room's next
// deadline looked at for every input, every output line through
// encoding/json. The fast path must print exactly what it prints.
func reference(t *testing.T, input []byte, until int64, sessions bool) (stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	enc := safetext.NewJSONEncoder(&out)
	rooms := map[id.RoomID]*rtc.RoomState{}
	cfg := rtc.DefaultConfig()
	var now int64
	line, lines, malformed := 0, 0, 0
	apply := func(st *rtc.RoomState, in *rawevent.RawEvent) {
		res := rtc.Apply(cfg, st, in)
		for _, r := range res.Rejections {
			safetext.Fprintf(&errb, "line %d: note: %s not counted: %s\n", line, r.EventID, r.Reason)
		}
		for _, ev := range res.Events {
			if err := enc.Encode(ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	advance := func(to int64) {
		now = max(now, to)
		for {
			var room id.RoomID
			var next int64
			for r, st := range rooms {
				d := st.NextDeadline()
				if d == 0 || d > now {
					continue
				}
				if next == 0 || d < next || (d == next && r < room) {
					room, next = r, d
				}
			}
			if next == 0 {
				return
			}
			apply(rooms[room], &rawevent.RawEvent{V: rawevent.RawVersion, Kind: rawevent.InputTimer,
				Source: rawevent.SourceTimer, RoomID: room, Deadline: next, ReceivedAt: next})
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(input))
	sc.Buffer(nil, DefaultMaxLineBytes)
	for sc.Scan() {
		lines++
		if len(bytes.TrimLeft(sc.Bytes(), " \t\r")) == 0 {
			continue
		}
		ev, err := rawevent.ParseClientEvent(sc.Bytes(), "", 0)
		if err != nil {
			malformed++
			safetext.Fprintf(&errb, "line %d: skipped: %s\n", lines, err)
			continue
		}
		if !rawevent.IsForwarded(ev.Type) {
			continue
		}
		line = lines
		advance(ev.ReceivedAt)
		st := rooms[ev.RoomID]
		if st == nil {
			st = rtc.NewRoomState(ev.RoomID)
			rooms[ev.RoomID] = st
		}
		apply(st, &ev)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if malformed > 0 {
		fmt.Fprintf(&errb, "simulate: %d of %d lines skipped (%d malformed, 0 longer than %d bytes)\n",
			malformed, lines, malformed, DefaultMaxLineBytes)
	}
	if until > 0 {
		line = 0
		advance(until)
	}
	if sessions {
		ids := make([]id.RoomID, 0, len(rooms))
		for r := range rooms {
			ids = append(ids, r)
		}
		slices.Sort(ids)
		for _, r := range ids {
			for _, s := range rooms[r].LiveSessions() {
				if err := enc.Encode(s); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return out.String(), errb.String()
}

// TestOutputEqualsReference: on a generated trace (rooms of devices
// joining, refreshing, leaving and expiring, with timers across rooms),
// simulate prints byte for byte what the plain reference prints, with and
// without --until and --sessions, and the examples too.
func TestOutputEqualsReference(t *testing.T) {
	n := 20_000
	if testing.Short() {
		n = 3_000
	}
	var trace bytes.Buffer
	if err := WriteTrace(&trace, n, 7); err != nil {
		t.Fatal(err)
	}
	examples, err := filepath.Glob(examples + "*.jsonl")
	if err != nil || len(examples) == 0 {
		t.Fatalf("examples: %v %v", examples, err)
	}
	inputs := map[string][]byte{"trace": trace.Bytes()}
	for _, name := range examples {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		inputs[filepath.Base(name)] = b
	}
	end := TraceStart + int64(n)*200 + 2*3_600_000
	for name, input := range inputs {
		for _, tc := range []struct {
			until    int64
			sessions bool
		}{{0, false}, {0, true}, {end, true}} {
			t.Run(fmt.Sprintf("%s/until=%d/sessions=%v", name, tc.until, tc.sessions), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "in.jsonl")
				if err := os.WriteFile(path, input, 0o600); err != nil {
					t.Fatal(err)
				}
				args := []string{path}
				if tc.until > 0 {
					args = append([]string{"--until", fmt.Sprint(tc.until)}, args...)
				}
				if tc.sessions {
					args = append([]string{"--sessions"}, args...)
				}
				var out, errb bytes.Buffer
				if code := Run(context.Background(), args, &out, &errb); code > 1 {
					t.Fatalf("exit status %d: %s", code, errb.String())
				}
				want, wantErr := reference(t, input, tc.until, tc.sessions)
				if name == "trace" && len(want) == 0 {
					t.Fatal("the reference printed nothing")
				}
				if errb.String() != wantErr {
					t.Fatalf("stderr differs from the reference:\n got %q\nwant %q", errb.String(), wantErr)
				}
				if got := out.String(); got != want {
					i := 0
					for i < len(got) && i < len(want) && got[i] == want[i] {
						i++
					}
					t.Fatalf("output differs from the reference at byte %d of %d/%d:\n got %.200q\nwant %.200q",
						i, len(got), len(want), got[i:], want[i:])
				}
			})
		}
	}
}
