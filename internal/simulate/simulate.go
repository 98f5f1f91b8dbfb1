// Package simulate runs the room reducer offline over a JSON-lines file of
// Matrix events: `rtcctl simulate`. It is how an operator asks "what would
// the service say about this room dump?", and the reference the aggregator's
// integration tests compare the live pipeline against.
package simulate

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// Engine applies inputs for any number of rooms and fires the rooms' timers
// the way the aggregator's durable timers do: when the global clock (the
// latest received_at seen) reaches a room's soonest deadline, the room gets a
// timer input at exactly that deadline.
type Engine struct {
	cfg   rtc.Config
	rooms map[id.RoomID]*rtc.RoomState
	now   int64
	// Emit receives every session event in order.
	Emit func(events.SessionEvent)
	// Note receives why an input (or part of it) did not count.
	Note func(ev id.EventID, reason string)
}

// NewEngine returns an engine with no rooms.
func NewEngine(cfg rtc.Config) *Engine {
	return &Engine{cfg: cfg, rooms: map[id.RoomID]*rtc.RoomState{},
		Emit: func(events.SessionEvent) {}, Note: func(id.EventID, string) {}}
}

// Apply fires the timers due by the input's received_at, then applies it.
func (e *Engine) Apply(in *events.RawEvent) {
	e.Advance(in.ReceivedAt)
	st := e.rooms[in.RoomID]
	if st == nil {
		st = rtc.NewRoomState(in.RoomID)
		e.rooms[in.RoomID] = st
	}
	e.apply(st, in)
}

func (e *Engine) apply(st *rtc.RoomState, in *events.RawEvent) {
	res := rtc.Apply(e.cfg, st, in)
	for _, r := range res.Rejections {
		e.Note(r.EventID, r.Reason)
	}
	for _, ev := range res.Events {
		e.Emit(ev)
	}
}

// Advance moves the global clock to t and fires every timer due by then, in
// deadline order (ties by room id).
func (e *Engine) Advance(t int64) {
	e.now = max(e.now, t)
	for {
		var room id.RoomID
		var next int64
		for r, st := range e.rooms {
			d := st.NextDeadline()
			if d == 0 || d > e.now {
				continue
			}
			if next == 0 || d < next || (d == next && r < room) {
				room, next = r, d
			}
		}
		if next == 0 {
			return
		}
		e.apply(e.rooms[room], &events.RawEvent{V: events.SchemaVersion, Kind: events.InputTimer,
			Source: events.SourceTimer, RoomID: room, Deadline: next, ReceivedAt: next})
	}
}

// LiveSessions lists every room's live sessions, by room id.
func (e *Engine) LiveSessions() []events.LiveSession {
	rooms := make([]id.RoomID, 0, len(e.rooms))
	for r := range e.rooms {
		rooms = append(rooms, r)
	}
	slices.Sort(rooms)
	var out []events.LiveSession
	for _, r := range rooms {
		out = append(out, e.rooms[r].LiveSessions()...)
	}
	return out
}

// Room returns the state of a room (nil if it saw no input).
func (e *Engine) Room(room id.RoomID) *rtc.RoomState { return e.rooms[room] }

// ErrMalformedLines is returned by ReadLines when some lines were skipped.
var ErrMalformedLines = errors.New("malformed lines skipped")

// ReadLines parses a JSON-lines file of Matrix client events and passes each
// forwarded event to f. Blank lines are skipped; malformed lines are reported
// to bad with their line number and skipped. Event types the service does
// not forward are skipped silently, as the ingest does.
func ReadLines(r io.Reader, f func(line int, ev *events.RawEvent), bad func(line int, err error)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), events.MaxEventBytes+4096)
	n, malformed := 0, 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		if len(trimSpace(line)) == 0 {
			continue
		}
		ev, err := events.ParseClientEvent(line, "", 0)
		if err != nil {
			malformed++
			bad(n, err)
			continue
		}
		if !events.IsForwarded(ev.Type) {
			continue
		}
		f(n, &ev)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("line %d: %w", n+1, err)
	}
	if malformed > 0 {
		return fmt.Errorf("%w: %d", ErrMalformedLines, malformed)
	}
	return nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}

const usage = `usage: rtcctl simulate [--until MS] [--sessions] FILE.jsonl

Runs the session reducer offline over a JSON-lines file of Matrix events
(one client-server event per line, with an optional top-level received_at in
ms; without it origin_server_ts is used) and prints one JSON object per
session event. FILE may be - for standard input.

  --until MS    advance the clock to MS (Unix ms) at the end, firing due timers
  --sessions    finally print one JSON object per live session, with its members

Exit status: 0 ok, 1 some lines were malformed (reported on stderr and
skipped), 2 usage or I/O error.
`

// Run is `rtcctl simulate`. It returns the process exit status.
func Run(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	until := fs.String("until", "", "advance the clock to this time (Unix ms), firing due timers")
	sessions := fs.Bool("sessions", false, "print the live sessions at the end")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	var untilMS int64
	if *until != "" {
		v, err := strconv.ParseInt(*until, 10, 64)
		if err != nil || v <= 0 {
			fmt.Fprintf(stderr, "simulate: --until %q: want a positive Unix time in ms\n", *until)
			return 2
		}
		untilMS = v
	}
	in := io.Reader(os.Stdin)
	if name := fs.Arg(0); name != "-" {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(stderr, "simulate: %v\n", err)
			return 2
		}
		defer f.Close()
		in = f
	}
	enc := json.NewEncoder(stdout)
	eng := NewEngine(rtc.DefaultConfig())
	var line int
	var encErr error
	eng.Emit = func(ev events.SessionEvent) {
		if err := enc.Encode(ev); err != nil && encErr == nil {
			encErr = err
		}
	}
	eng.Note = func(ev id.EventID, reason string) {
		fmt.Fprintf(stderr, "line %d: note: %s not counted: %s\n", line, ev, reason)
	}
	err := ReadLines(in, func(n int, ev *events.RawEvent) {
		line = n
		eng.Apply(ev)
	}, func(n int, err error) {
		fmt.Fprintf(stderr, "line %d: %v\n", n, err)
	})
	status := 0
	if errors.Is(err, ErrMalformedLines) {
		status = 1
	} else if err != nil {
		fmt.Fprintf(stderr, "simulate: %v\n", err)
		return 2
	}
	if untilMS > 0 {
		line = 0
		eng.Advance(untilMS)
	}
	if *sessions {
		for _, s := range eng.LiveSessions() {
			if err := enc.Encode(s); err != nil && encErr == nil {
				encErr = err
			}
		}
	}
	if encErr != nil {
		fmt.Fprintf(stderr, "simulate: write: %v\n", encErr)
		return 2
	}
	return status
}
