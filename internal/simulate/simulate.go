// Package simulate runs the room reducer offline over a JSON-lines file of
// Matrix events: `rtcctl simulate`. It is how an operator asks "what would
// the service say about this room dump?", and the reference the aggregator's
// integration tests compare the live pipeline against.
package simulate

import (
	"bufio"
	"container/heap"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/rtcctl/safetext"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// Engine applies inputs for any number of rooms and fires the rooms' timers
// the way the aggregator's durable timers do: when the global clock (the
// latest received_at seen) reaches a room's soonest deadline, the room gets a
// timer input at exactly that deadline.
type Engine struct {
	cfg   rtc.Config
	rooms map[id.RoomID]*room
	now   int64
	// due holds each room's next deadline, pushed whenever a room changes
	// (entries of a deadline that has changed since are skipped), so that
	// finding the due timers does not scan every room for every input.
	due deadlines
	// Emit receives every session event in order.
	Emit func(events.SessionEvent)
	// Note receives why an input (or part of it) did not count.
	Note func(ev id.EventID, reason string)
}

// NewEngine returns an engine with no rooms.
func NewEngine(cfg rtc.Config) *Engine {
	return &Engine{cfg: cfg, rooms: map[id.RoomID]*room{},
		Emit: func(events.SessionEvent) {}, Note: func(id.EventID, string) {}}
}

// room is a room's state and the deadline last pushed for it.
type room struct {
	st     *rtc.RoomState
	pushed int64
}

// Apply fires the timers due by the input's received_at, then applies it.
func (e *Engine) Apply(in *rawevent.RawEvent) {
	e.Advance(in.ReceivedAt)
	r := e.rooms[in.RoomID]
	if r == nil {
		r = &room{st: rtc.NewRoomState(in.RoomID)}
		e.rooms[in.RoomID] = r
	}
	e.apply(in.RoomID, r, in)
}

func (e *Engine) apply(id id.RoomID, r *room, in *rawevent.RawEvent) {
	res := rtc.Apply(e.cfg, r.st, in)
	for _, rej := range res.Rejections {
		e.Note(rej.EventID, rej.Reason)
	}
	for _, ev := range res.Events {
		e.Emit(ev)
	}
	if d := r.st.NextDeadline(); d != 0 && d != r.pushed {
		heap.Push(&e.due, dueRoom{at: d, room: id})
		r.pushed = d
	}
}

// Advance moves the global clock to t and fires every timer due by then, in
// deadline order (ties by room id).
func (e *Engine) Advance(t int64) {
	e.now = max(e.now, t)
	for len(e.due) > 0 && e.due[0].at <= e.now {
		next := heap.Pop(&e.due).(dueRoom)
		r := e.rooms[next.room]
		if r.pushed == next.at {
			r.pushed = 0 // popped: should the room's deadline come back to it, it is pushed again
		}
		if r.st.NextDeadline() != next.at {
			continue // the room has changed since: its current deadline has its own entry
		}
		e.apply(next.room, r, &rawevent.RawEvent{V: rawevent.RawVersion, Kind: rawevent.InputTimer,
			Source: rawevent.SourceTimer, RoomID: next.room, Deadline: next.at, ReceivedAt: next.at})
	}
}

// dueRoom is a room's next deadline.
type dueRoom struct {
	at   int64
	room id.RoomID
}

// deadlines is a min-heap of rooms' deadlines, ties by room id
// (container/heap).
type deadlines []dueRoom

func (h deadlines) Len() int { return len(h) }
func (h deadlines) Less(i, j int) bool {
	return h[i].at < h[j].at || (h[i].at == h[j].at && h[i].room < h[j].room)
}
func (h deadlines) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *deadlines) Push(x any)   { *h = append(*h, x.(dueRoom)) }
func (h *deadlines) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
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
		out = append(out, e.rooms[r].st.LiveSessions()...)
	}
	return out
}

// Room returns the state of a room (nil if it saw no input).
func (e *Engine) Room(id id.RoomID) *rtc.RoomState {
	if r := e.rooms[id]; r != nil {
		return r.st
	}
	return nil
}

// ErrMalformedLines is returned by ReadLines when some lines were skipped.
var ErrMalformedLines = errors.New("malformed lines skipped")

// ErrLineTooLong is what Read reports for a line longer than its maximum.
var ErrLineTooLong = errors.New("line too long")

// DefaultMaxLineBytes is the longest line read by default (1 MiB): far more
// than an event the ingest accepts (rawevent.MaxEventBytes), which such a line
// is reported as; a longer one is skipped without being held in memory.
const DefaultMaxLineBytes = 1 << 20

// Counts says what Read did with the lines of a file.
type Counts struct {
	Lines     int // lines read, blank ones included
	Events    int // forwarded events passed on
	Malformed int // lines that are not a Matrix event (bad JSON, too large an event, ...)
	TooLong   int // lines longer than the maximum
}

// Skipped is the number of lines skipped as bad.
func (c Counts) Skipped() int { return c.Malformed + c.TooLong }

// ReadLines is Read with DefaultMaxLineBytes, returning ErrMalformedLines
// (with their number) when some lines were skipped.
func ReadLines(r io.Reader, f func(line int, ev *rawevent.RawEvent), bad func(line int, err error)) error {
	c, err := Read(r, DefaultMaxLineBytes, f, bad)
	if err != nil {
		return err
	}
	if c.Skipped() > 0 {
		return fmt.Errorf("%w: %d", ErrMalformedLines, c.Skipped())
	}
	return nil
}

// Read parses a JSON-lines file of Matrix client events and passes each
// forwarded event to f. Blank lines are skipped; a malformed line, and a
// line longer than maxLine bytes (without its line end; ErrLineTooLong), is
// reported to bad with its line number and skipped, and reading goes on
// with the next line. Event types the service does not forward are skipped
// silently, as the ingest does. The error is a read error of r only.
//
// The lines are read and decoded on a goroutine of their own, ahead of f
// (a batch at a time); f and bad are called on the caller's goroutine, in
// the order of the lines.
func Read(r io.Reader, maxLine int, f func(line int, ev *rawevent.RawEvent), bad func(line int, err error)) (Counts, error) {
	batches := make(chan *lineBatch, 4)
	free := make(chan *lineBatch, 6)
	go readBatches(r, maxLine, batches, free)
	for b := range batches {
		for i := range b.items {
			it := &b.items[i]
			if it.err != nil {
				bad(it.line, it.err)
			} else {
				f(it.line, &it.ev)
			}
		}
		if b.done {
			return b.counts, b.readErr
		}
		b.items = b.items[:0]
		select {
		case free <- b:
		default:
		}
	}
	return Counts{}, errors.New("simulate: the reader stopped without a result") // not reached
}

// lineItem is a forwarded event of a line, or why the line was skipped.
type lineItem struct {
	line int
	ev   rawevent.RawEvent
	err  error
}

// lineBatch is what readBatches passes on at a time; the last one is done
// and carries the counts and the read error.
type lineBatch struct {
	items   []lineItem
	done    bool
	counts  Counts
	readErr error
}

// lineBatchSize is the lines decoded ahead in one batch.
const lineBatchSize = 256

// readBatches reads and decodes the lines of r into batches (reusing those
// coming back on free) until the end of r or a read error.
func readBatches(r io.Reader, maxLine int, out chan<- *lineBatch, free <-chan *lineBatch) {
	defer close(out)
	var c Counts
	dec := newDecoder()
	br := bufio.NewReaderSize(r, 64*1024)
	var buf []byte
	b := &lineBatch{items: make([]lineItem, 0, lineBatchSize)}
	finish := func(err error) {
		b.done, b.counts, b.readErr = true, c, err
		out <- b
	}
	for {
		line, size, err := readLine(br, maxLine, buf[:0])
		buf = line
		if size == 0 && err != nil {
			if errors.Is(err, io.EOF) {
				finish(nil)
				return
			}
			finish(fmt.Errorf("line %d: %w", c.Lines+1, err))
			return
		}
		c.Lines++
		switch {
		case size > maxLine:
			c.TooLong++
			b.items = append(b.items, lineItem{line: c.Lines, err: fmt.Errorf("%w: %d bytes, more than %d", ErrLineTooLong, size, maxLine)})
		case len(trimSpace(line)) == 0:
		default:
			ev, perr := dec.decode(line)
			switch {
			case perr != nil:
				c.Malformed++
				b.items = append(b.items, lineItem{line: c.Lines, err: perr})
			case rawevent.IsForwarded(ev.Type):
				c.Events++
				b.items = append(b.items, lineItem{line: c.Lines, ev: ev})
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				finish(nil)
				return
			}
			finish(fmt.Errorf("line %d: %w", c.Lines+1, err))
			return
		}
		if len(b.items) == lineBatchSize {
			out <- b
			select {
			case b = <-free:
			default:
				b = &lineBatch{items: make([]lineItem, 0, lineBatchSize)}
			}
		}
	}
}

// readLine reads one line into buf, without its "\n" or "\r\n", and
// returns it with its size. Past maxLine bytes it stops storing the line
// and only counts it: the returned size is then more than maxLine and the
// line incomplete. size is 0 with an error at the end of the input.
func readLine(br *bufio.Reader, maxLine int, buf []byte) ([]byte, int, error) {
	size := 0
	var prev byte // the last byte of the previous chunk
	for {
		chunk, err := br.ReadSlice('\n')
		size += len(chunk)
		if len(buf) <= maxLine+1 { // room for a "\r" to trim
			buf = append(buf, chunk[:min(len(chunk), maxLine+2-len(buf))]...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			prev = chunk[len(chunk)-1]
			continue
		}
		if n := len(chunk); n > 0 && chunk[n-1] == '\n' {
			size--
			buf = trimEnd(buf, '\n')
			if (n >= 2 && chunk[n-2] == '\r') || (n == 1 && prev == '\r') {
				size--
				buf = trimEnd(buf, '\r')
			}
		}
		if size == 0 && err == nil {
			return buf, 0, nil // an empty line: not the end
		}
		return buf, size, err
	}
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}

func trimEnd(b []byte, c byte) []byte {
	if len(b) > 0 && b[len(b)-1] == c {
		return b[:len(b)-1]
	}
	return b
}

const usage = `usage: rtcctl simulate [--until MS] [--sessions] [--max-line-bytes N] FILE.jsonl

Runs the session reducer offline over a JSON-lines file of Matrix events
(one client-server event per line, with an optional top-level received_at in
ms; without it origin_server_ts is used) and prints one JSON object per
session event. FILE may be - for standard input.

  --until MS            advance the clock to MS (Unix ms) at the end, firing due timers
  --sessions            finally print one JSON object per live session, with its members
  --max-line-bytes N    skip lines longer than N bytes (default 1048576)

Malformed lines and lines longer than --max-line-bytes are reported on
stderr with their line number and skipped; the rest of the file is read,
and a last line on stderr counts the skipped lines. Notes and errors on
stderr escape control, bidi and invisible characters (\n, \x1b, \u202e).

Exit status: 0 ok, 1 some lines were skipped, 2 usage or I/O error.
`

// Run is `rtcctl simulate`. It returns the process exit status.
func Run(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	until := fs.String("until", "", "advance the clock to this time (Unix ms), firing due timers")
	sessions := fs.Bool("sessions", false, "print the live sessions at the end")
	maxLine := fs.Int("max-line-bytes", DefaultMaxLineBytes, "skip lines longer than this")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *maxLine <= 0 {
		fmt.Fprintf(stderr, "simulate: --max-line-bytes %d: want a positive number of bytes\n", *maxLine)
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
			safetext.Fprintf(stderr, "simulate: %s\n", err)
			return 2
		}
		defer f.Close()
		in = f
	}
	// Exact JSON (the events' own strings), safe on a terminal; buffered,
	// since a file of events gives about one line out per line in.
	out := bufio.NewWriterSize(stdout, 64*1024)
	enc := safetext.NewJSONEncoder(out)
	eng := NewEngine(rtc.DefaultConfig())
	var line int
	var encErr error
	// The session events are encoded on a goroutine of their own, a batch
	// at a time, while the next inputs are applied (an event is not changed
	// once emitted).
	encoded := make(chan []events.SessionEvent, 4)
	encDone := make(chan struct{})
	go func() {
		defer close(encDone)
		var buf []byte
		for batch := range encoded {
			for i := range batch {
				var ok bool
				if buf, ok = appendEvent(buf[:0], &batch[i]); ok {
					_, err := out.Write(buf) // plain ASCII: safe on a terminal as it is
					if err != nil && encErr == nil {
						encErr = err
					}
				} else if err := enc.Encode(&batch[i]); err != nil && encErr == nil {
					encErr = err
				}
			}
		}
	}()
	var pending []events.SessionEvent
	flushEvents := func() {
		if len(pending) > 0 {
			encoded <- pending
			pending = nil
		}
	}
	eng.Emit = func(ev events.SessionEvent) {
		if pending == nil {
			pending = make([]events.SessionEvent, 0, lineBatchSize)
		}
		pending = append(pending, ev)
		if len(pending) == lineBatchSize {
			flushEvents()
		}
	}
	// endEvents hands over the last events and waits until all are
	// written into out.
	endEvents := func() {
		flushEvents()
		close(encoded)
		<-encDone
	}
	// Event ids, reasons and parse errors quote the file: escaped.
	eng.Note = func(ev id.EventID, reason string) {
		safetext.Fprintf(stderr, "line %d: note: %s not counted: %s\n", line, ev, reason)
	}
	counts, err := Read(in, *maxLine, func(n int, ev *rawevent.RawEvent) {
		line = n
		eng.Apply(ev)
	}, func(n int, err error) {
		safetext.Fprintf(stderr, "line %d: skipped: %s\n", n, err)
	})
	if err != nil {
		endEvents()
		_ = out.Flush() // what was simulated before the read error
		safetext.Fprintf(stderr, "simulate: %s\n", err)
		return 2
	}
	status := 0
	if counts.Skipped() > 0 {
		status = 1
		fmt.Fprintf(stderr, "simulate: %d of %d lines skipped (%d malformed, %d longer than %d bytes)\n",
			counts.Skipped(), counts.Lines, counts.Malformed, counts.TooLong, *maxLine)
	}
	if untilMS > 0 {
		line = 0
		eng.Advance(untilMS)
	}
	endEvents()
	if *sessions {
		for _, s := range eng.LiveSessions() {
			if err := enc.Encode(s); err != nil && encErr == nil {
				encErr = err
			}
		}
	}
	if err := out.Flush(); err != nil && encErr == nil {
		encErr = err
	}
	if encErr != nil {
		fmt.Fprintf(stderr, "simulate: write: %v\n", encErr)
		return 2
	}
	return status
}
