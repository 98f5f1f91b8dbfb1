package pipelinetest

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// Verifier reads what the pipeline stored and compares it with the
// offline simulation of the same inputs.
type Verifier struct {
	T      testing.TB
	JS     jetstream.JetStream
	RTCCtl string // the rtcctl binary
	T0     time.Time
	WL     *Workload

	// What Run read, in stream order: the server's timestamps of every
	// RTC_RAW input and RTC_EVENTS event (for the stalls after faults).
	rawStored, eventsStored []time.Time
}

// storedMsg is one message of a stream.
type storedMsg struct {
	seq     uint64
	subject string
	data    []byte
	hdr     nats.Header
	stored  time.Time // the server's timestamp
}

// input is one decoded RTC_RAW input.
type input struct {
	seq    uint64
	stored time.Time
	in     rawevent.RawEvent
}

// Run checks everything and reports whether the pipeline drained and
// matched; untilMS is the simulation's final clock, and deadline bounds
// the wait for the aggregators to finish.
func (v *Verifier) Run(untilMS int64, deadline time.Time) {
	t := v.T
	inputs := v.readRaw()
	v.checkRaw(inputs)
	want, wantLive := v.simulate(inputs, untilMS)
	total := 0
	for _, evs := range want {
		total += len(evs)
	}
	drained := v.waitDrained(total, deadline)
	got := v.readEvents()
	disordered := v.checkRoomOrder(got)
	bad := v.compare(got, want)
	if len(bad) > 0 {
		for i, room := range bad {
			if i == 3 {
				t.Logf("(inputs of %d more differing rooms not shown)", len(bad)-3)
				break
			}
			v.logRoomInputs(room, inputs)
		}
	}
	v.checkDLQ()
	if drained && len(bad) == 0 {
		v.checkLive(wantLive)
	}
	if !t.Failed() {
		t.Logf("RTC_EVENTS equals rtcctl simulate of RTC_RAW: %d events in %d rooms, each room's in seq order, "+
			"%d live sessions at the end", total, len(want), len(wantLive))
	} else if disordered > 0 {
		t.Logf("%d rooms have events out of seq order in RTC_EVENTS (see above)", disordered)
	}
}

// FirstStoredAfter is how long after at the first input (stream
// rawevent.StreamRaw) or session event (events.StreamEvents) that Run read
// was stored; false when none was.
func (v *Verifier) FirstStoredAfter(stream string, at time.Time) (time.Duration, bool) {
	ts := v.rawStored
	if stream == events.StreamEvents {
		ts = v.eventsStored
	}
	for _, x := range ts { // stream order is storage order
		if x.After(at) {
			return x.Sub(at), true
		}
	}
	return 0, false
}

// LongestGap is the longest time without a new message in stream (as
// FirstStoredAfter) within [at, at+within], counting from at.
func (v *Verifier) LongestGap(stream string, at time.Time, within time.Duration) time.Duration {
	ts := v.rawStored
	if stream == events.StreamEvents {
		ts = v.eventsStored
	}
	end := at.Add(within)
	prev, gap := at, time.Duration(0)
	for _, x := range ts {
		if !x.After(prev) {
			continue
		}
		if x.After(end) {
			x = end
		}
		gap = max(gap, x.Sub(prev))
		if x.Equal(end) {
			return gap
		}
		prev = x
	}
	return max(gap, end.Sub(prev))
}

// readStream returns the messages of a stream under prefix, in order.
func (v *Verifier) readStream(name, prefix string) []storedMsg {
	v.T.Helper()
	// On a cluster a read can fail for a moment (a leader being elected,
	// a node catching up after a restart): read again from the start.
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err := v.readStreamOnce(name, prefix)
		if err == nil {
			return out
		}
		if time.Now().After(deadline) {
			v.T.Fatalf("stream %s: %v", name, err)
		}
		v.T.Logf("stream %s: %v; reading again", name, err)
		time.Sleep(time.Second)
	}
}

func (v *Verifier) readStreamOnce(name, prefix string) ([]storedMsg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := v.JS.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("info: %w", err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	oc, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{prefix + ">"}})
	if err != nil {
		return nil, fmt.Errorf("ordered consumer: %w", err)
	}
	var out []storedMsg
	for {
		// Not FetchNoWait: a consumer just created on a cluster may have
		// nothing to deliver yet, which is not the end of the stream.
		batch, err := oc.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("metadata: %w", err)
			}
			out = append(out, storedMsg{seq: md.Sequence.Stream, subject: m.Subject(), data: m.Data(), hdr: m.Headers(),
				stored: md.Timestamp})
			if md.NumPending == 0 {
				return out, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		if n == 0 {
			return out, nil
		}
	}
}

// readRaw decodes RTC_RAW's partitioned inputs (events and fired timers).
func (v *Verifier) readRaw() []input {
	var out []input
	for _, m := range v.readStream(rawevent.StreamRaw, rawevent.PartPrefix+".") {
		in, err := rawevent.DecodeRaw(m.data)
		if err != nil {
			v.T.Errorf("RTC_RAW seq %d (%s) does not decode: %v", m.seq, m.subject, err)
			continue
		}
		out = append(out, input{seq: m.seq, stored: m.stored, in: in})
		v.rawStored = append(v.rawStored, m.stored)
	}
	return out
}

// checkRaw: every forwarded event of the workload is stored exactly once,
// as sent; nothing else is (m.room.message is dropped at the door).
func (v *Verifier) checkRaw(inputs []input) {
	t := v.T
	t0 := v.T0.UnixMilli()
	gen := map[id.EventID]*GenEvent{}
	for _, e := range v.WL.Events {
		gen[id.EventID(e.ID)] = e
	}
	seen := map[id.EventID]uint64{}
	timers, inversions, early := 0, 0, 0
	var lastReceived int64
	var lateness []time.Duration
	for _, x := range inputs {
		in := x.in
		if in.Kind == rawevent.InputTimer {
			// A timer that fires before its deadline would expire members
			// while inputs stamped before the deadline are still to come.
			timers++
			late := x.stored.Sub(time.UnixMilli(in.Deadline))
			lateness = append(lateness, late)
			if late < 0 {
				early++
				if early <= 5 {
					t.Errorf("RTC_RAW seq %d: the timer of %s for T0%+.3fs fired %s early", x.seq, in.RoomID,
						float64(in.Deadline-t0)/1000, -late)
				}
			}
			continue
		}
		if in.ReceivedAt < lastReceived {
			inversions++
		}
		lastReceived = max(lastReceived, in.ReceivedAt)
		if prev, dup := seen[in.EventID]; dup {
			t.Errorf("RTC_RAW holds %s twice (seq %d and %d)", in.EventID, prev, x.seq)
			continue
		}
		seen[in.EventID] = x.seq
		e := gen[in.EventID]
		if e == nil {
			t.Errorf("RTC_RAW seq %d holds %s (%s), which the workload never sent", x.seq, in.EventID, in.Type)
			continue
		}
		if !e.Forwarded {
			t.Errorf("RTC_RAW seq %d holds %s of type %s, which the ingest must drop", x.seq, in.EventID, in.Type)
			continue
		}
		var sent struct {
			Type           string          `json:"type"`
			StateKey       *string         `json:"state_key"`
			Sender         id.UserID       `json:"sender"`
			RoomID         id.RoomID       `json:"room_id"`
			OriginServerTS int64           `json:"origin_server_ts"`
			Content        json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(e.JSON(t0), &sent); err != nil {
			t.Fatal(err)
		}
		if in.Type != sent.Type || in.Sender != sent.Sender || in.RoomID != sent.RoomID ||
			in.OriginServerTS != sent.OriginServerTS || !jsonEqual(in.Content, sent.Content) ||
			(in.StateKey == nil) != (sent.StateKey == nil) || (in.StateKey != nil && *in.StateKey != *sent.StateKey) {
			t.Errorf("RTC_RAW seq %d: %s stored as %+v, sent as %s", x.seq, in.EventID, in, e.JSON(t0))
		}
		if in.ReceivedAt < sent.OriginServerTS {
			t.Errorf("RTC_RAW seq %d: %s received_at %d before it was sent (origin_server_ts %d)", x.seq, in.EventID,
				in.ReceivedAt, sent.OriginServerTS)
		}
	}
	missing := 0
	for _, e := range v.WL.Events {
		if _, ok := seen[id.EventID(e.ID)]; e.Forwarded && !ok {
			missing++
			if missing <= 10 {
				t.Errorf("%s (%s in %s at T0+%s) is not in RTC_RAW", e.ID, e.Type, e.Room, e.At)
			}
		}
	}
	if missing > 10 {
		t.Errorf("... %d events missing from RTC_RAW in all", missing)
	}
	if early > 5 {
		t.Errorf("... %d of %d timers fired before their deadline", early, timers)
	}
	slices.Sort(lateness)
	q := func(f float64) time.Duration {
		if len(lateness) == 0 {
			return 0
		}
		return lateness[int(f*float64(len(lateness)-1))].Round(time.Millisecond)
	}
	t.Logf("RTC_RAW: %d events (each generated event once), %d fired timers (late by p50 %s, max %s); "+
		"%d received_at inversions in stream order", len(seen), timers, q(0.5), q(1), inversions)
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return bytes.Equal(ja, jb)
}

// simLine is an RTC_RAW input as a line of `rtcctl simulate`'s input: a
// client event plus received_at.
type simLine struct {
	Type           string          `json:"type"`
	StateKey       *string         `json:"state_key,omitempty"`
	Sender         id.UserID       `json:"sender"`
	EventID        id.EventID      `json:"event_id"`
	RoomID         id.RoomID       `json:"room_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	Content        json.RawMessage `json:"content"`
	Redacts        id.EventID      `json:"redacts,omitempty"`
	ReceivedAt     int64           `json:"received_at"`
}

// simulate runs `rtcctl simulate --until untilMS --sessions` over the event
// inputs of RTC_RAW in stream order (not the timer inputs: the simulation
// fires its own timers) and returns the session events by room and the
// live sessions at the end.
func (v *Verifier) simulate(inputs []input, untilMS int64) (map[id.RoomID][]events.SessionEvent, []events.LiveSession) {
	t := v.T
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, x := range inputs {
		in := x.in
		if in.Kind == rawevent.InputTimer {
			continue
		}
		if in.RedactedBy != "" || in.StickyDurationMS != nil {
			t.Fatalf("RTC_RAW seq %d: the workload sends no redacted or sticky events", x.seq)
		}
		if err := enc.Encode(simLine{Type: in.Type, StateKey: in.StateKey, Sender: in.Sender, EventID: in.EventID,
			RoomID: in.RoomID, OriginServerTS: in.OriginServerTS, Content: in.Content, Redacts: in.Redacts,
			ReceivedAt: in.ReceivedAt}); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "rtc_raw.jsonl")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(v.RTCCtl, "simulate", "--until", fmt.Sprint(untilMS), "--sessions", path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("rtcctl simulate: %v\n%s", err, stderr.String())
	}
	want := map[id.RoomID][]events.SessionEvent{}
	var live []events.LiveSession
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		var probe map[string]json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &probe); err != nil {
			t.Fatalf("rtcctl simulate printed a line that is not JSON: %s", sc.Text())
		}
		if _, ok := probe["kind"]; ok {
			var e events.SessionEvent
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("rtcctl simulate event %s: %v", sc.Text(), err)
			}
			want[e.RoomID] = append(want[e.RoomID], e)
		} else {
			var s events.LiveSession
			if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
				t.Fatalf("rtcctl simulate session %s: %v", sc.Text(), err)
			}
			live = append(live, s)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("rtcctl simulate output: %v", err)
	}
	return want, live
}

// waitDrained waits until no consumer of RTC_RAW has an input pending or
// unacknowledged and RTC_EVENTS holds want messages, stable for a second.
func (v *Verifier) waitDrained(want int, deadline time.Time) bool {
	start := time.Now()
	var last string
	stableSince := time.Now()
	for {
		state, idle, n, err := v.progress()
		if err != nil {
			state = "error: " + err.Error()
		}
		if state != last {
			last, stableSince = state, time.Now()
		}
		if err == nil && idle && n == want && time.Since(stableSince) >= time.Second {
			v.T.Logf("pipeline drained %s after the last expiry: %s", time.Since(start).Round(time.Millisecond), state)
			return true
		}
		// Idle with nothing changing for long after every deadline passed:
		// the missing (or extra) events will not come.
		if err == nil && idle && time.Since(stableSince) >= 15*time.Second {
			v.T.Errorf("pipeline idle for %s but %d events stored, want %d: %s",
				time.Since(stableSince).Round(time.Millisecond), n, want, state)
			return false
		}
		if time.Now().After(deadline) {
			v.T.Errorf("pipeline not drained after %s: %s; want %d events", time.Since(start).Round(time.Millisecond),
				state, want)
			return false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (v *Verifier) progress() (state string, idle bool, stored int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := v.JS.Stream(ctx, rawevent.StreamRaw)
	if err != nil {
		return "", false, 0, err
	}
	var busy []string
	consumers := 0
	lister := raw.ListConsumers(ctx)
	for ci := range lister.Info() {
		if ci.Config.Durable == "" {
			continue // not a partition's: an ordered consumer of readStream, say
		}
		consumers++
		if ci.NumPending > 0 || ci.NumAckPending > 0 {
			busy = append(busy, fmt.Sprintf("%s: %d pending, %d unacked", ci.Name, ci.NumPending, ci.NumAckPending))
		}
	}
	if err := lister.Err(); err != nil {
		return "", false, 0, fmt.Errorf("list RTC_RAW consumers: %w", err)
	}
	evs, err := v.JS.Stream(ctx, events.StreamEvents)
	if err != nil {
		return "", false, 0, err
	}
	info, err := evs.Info(ctx)
	if err != nil {
		return "", false, 0, err
	}
	slices.Sort(busy)
	state = fmt.Sprintf("%d consumers, busy: %v; RTC_EVENTS holds %d", consumers, busy, info.State.Msgs)
	return state, consumers > 0 && len(busy) == 0, int(info.State.Msgs), nil
}

// gotEvent is a stored session event.
type gotEvent struct {
	seq   uint64 // stream sequence
	msgID string
	ev    events.SessionEvent
}

// readEvents decodes RTC_EVENTS by room in stream order and checks the
// message ids: the event id, never stored twice.
func (v *Verifier) readEvents() map[id.RoomID][]gotEvent {
	out := map[id.RoomID][]gotEvent{}
	ids := map[string]uint64{}
	for _, m := range v.readStream(events.StreamEvents, events.SessionPrefix+".") {
		v.eventsStored = append(v.eventsStored, m.stored)
		ev, err := events.DecodeSessionEvent(m.data)
		if err != nil {
			v.T.Errorf("RTC_EVENTS seq %d (%s) does not decode: %v", m.seq, m.subject, err)
			continue
		}
		mid := m.hdr.Get(jetstream.MsgIDHeader)
		if mid != ev.ID {
			v.T.Errorf("RTC_EVENTS seq %d: Nats-Msg-Id %q, event id %q", m.seq, mid, ev.ID)
		}
		if prev, dup := ids[ev.ID]; dup {
			v.T.Errorf("RTC_EVENTS holds event %s twice (seq %d and %d)", ev.ID, prev, m.seq)
		}
		ids[ev.ID] = m.seq
		if m.subject != ev.Subject() {
			v.T.Errorf("RTC_EVENTS seq %d: subject %s, want %s", m.seq, m.subject, ev.Subject())
		}
		out[ev.RoomID] = append(out[ev.RoomID], gotEvent{seq: m.seq, msgID: mid, ev: ev})
	}
	return out
}

func eventJSON(e *events.SessionEvent) string {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(b)
}

// checkRoomOrder checks that each room's events are stored in seq order:
// in stream order, seq increases by exactly one from one of the room's
// events to the next, which is what a subscriber tracking seq relies on.
// It reports every break (room, stream sequences, seqs) and returns how
// many rooms have one.
func (v *Verifier) checkRoomOrder(got map[id.RoomID][]gotEvent) int {
	rooms := slices.Sorted(maps.Keys(got))
	bad, shown := 0, 0
	for _, r := range rooms {
		g := got[r]
		var breaks []string
		for i := 1; i < len(g); i++ {
			if g[i].ev.Seq != g[i-1].ev.Seq+1 {
				breaks = append(breaks, fmt.Sprintf("stream seq %d has seq %d (%s), then stream seq %d has seq %d (%s)",
					g[i-1].seq, g[i-1].ev.Seq, g[i-1].ev.Kind, g[i].seq, g[i].ev.Seq, g[i].ev.Kind))
			}
		}
		if len(g) > 0 && g[0].ev.Seq != 1 {
			breaks = append([]string{fmt.Sprintf("first event (stream seq %d) has seq %d", g[0].seq, g[0].ev.Seq)}, breaks...)
		}
		if len(breaks) == 0 {
			continue
		}
		bad++
		if shown < 20 {
			shown++
			v.T.Errorf("room %s: events out of per-room seq order in RTC_EVENTS (%d breaks):\n    %s", r, len(breaks),
				strings.Join(breaks, "\n    "))
		}
	}
	if bad > shown {
		v.T.Errorf("... %d rooms with events out of seq order in all", bad)
	}
	return bad
}

// compare checks, room by room, that the stored events are the simulated
// ones, event for event, and that seq counts 1, 2, 3, ... It compares the
// events in seq order, so that an event stored out of order (which
// checkRoomOrder reports) is not also a difference here. It reports the
// first difference of each room and returns the rooms that differ.
func (v *Verifier) compare(got map[id.RoomID][]gotEvent, want map[id.RoomID][]events.SessionEvent) []id.RoomID {
	t := v.T
	bySeq := map[id.RoomID][]gotEvent{}
	for r, g := range got {
		bySeq[r] = slices.SortedStableFunc(slices.Values(g), func(a, b gotEvent) int { return cmp.Compare(a.ev.Seq, b.ev.Seq) })
	}
	got = bySeq
	var rooms []id.RoomID
	for r := range got {
		rooms = append(rooms, r)
	}
	for r := range want {
		if _, ok := got[r]; !ok {
			rooms = append(rooms, r)
		}
	}
	slices.Sort(rooms)
	var bad []id.RoomID
	for _, r := range rooms {
		g, w := got[r], want[r]
		problem := ""
		for i, x := range g {
			if x.ev.Seq != uint64(i+1) {
				problem = fmt.Sprintf("stored event %d (stream seq %d) has seq %d: a gap or a repeat", i+1, x.seq, x.ev.Seq)
				break
			}
		}
		if problem == "" {
			for i := 0; i < max(len(g), len(w)); i++ {
				switch {
				case i >= len(g):
					problem = fmt.Sprintf("%d events stored, %d simulated; first missing:\n    want %s", len(g), len(w),
						eventJSON(&w[i]))
				case i >= len(w):
					problem = fmt.Sprintf("%d events stored, %d simulated; first extra (stream seq %d):\n    got  %s",
						len(g), len(w), g[i].seq, eventJSON(&g[i].ev))
				default:
					if gj, wj := eventJSON(&g[i].ev), eventJSON(&w[i]); gj != wj {
						problem = fmt.Sprintf("event %d of %d stored / %d simulated differs (stream seq %d):\n    want %s\n    got  %s",
							i+1, len(g), len(w), g[i].seq, wj, gj)
					}
				}
				if problem != "" {
					break
				}
			}
		}
		if problem != "" {
			bad = append(bad, r)
			t.Errorf("room %s: %s", r, problem)
		}
	}
	return bad
}

// logRoomInputs prints a room's inputs as RTC_RAW holds them, timers
// included, with times relative to T0: what explains a difference.
func (v *Verifier) logRoomInputs(room id.RoomID, inputs []input) {
	t0 := v.T0.UnixMilli()
	rel := func(ms int64) string { return fmt.Sprintf("T0%+.3fs", float64(ms-t0)/1000) }
	var b strings.Builder
	for _, x := range inputs {
		in := x.in
		if in.RoomID != room {
			continue
		}
		if in.Kind == rawevent.InputTimer {
			fmt.Fprintf(&b, "\n  seq %6d timer deadline %s", x.seq, rel(in.Deadline))
			continue
		}
		sk := ""
		if in.StateKey != nil {
			sk = *in.StateKey
		}
		fmt.Fprintf(&b, "\n  seq %6d received %s origin %s %s %s %q %s %s", x.seq, rel(in.ReceivedAt),
			rel(in.OriginServerTS), in.EventID, in.Type, sk, in.Sender, in.Content)
	}
	var dls []string
	for _, d := range v.WL.Deadlines[string(room)] {
		dls = append(dls, "T0+"+d.String())
	}
	v.T.Logf("inputs of room %s in RTC_RAW (deadlines of the workload: %s):%s", room, strings.Join(dls, " "), b.String())
}

// checkDLQ: nothing may have been dead-lettered.
func (v *Verifier) checkDLQ() {
	msgs := v.readStream(rawevent.StreamDLQ, "")
	for i, m := range msgs {
		if i == 10 {
			break
		}
		v.T.Errorf("RTC_DLQ seq %d %s: headers %v, %d bytes", m.seq, m.subject, m.hdr, len(m.data))
	}
	if len(msgs) > 0 {
		v.T.Errorf("RTC_DLQ holds %d messages, want none", len(msgs))
	}
}

// checkLive compares the rtc_sessions bucket (as events.WatchSessions
// assembles it) with the simulation's live sessions at the end.
func (v *Verifier) checkLive(want []events.LiveSession) {
	t := v.T
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := map[string]*events.LiveSession{}
	listed := false
	err := events.WatchSessions(ctx, v.JS, func(key string, s *events.LiveSession) error {
		if s == nil {
			delete(got, key)
		} else {
			got[key] = s
		}
		return nil
	}, func() { listed = true; cancel() })
	if !listed {
		t.Errorf("rtc_sessions: not listed: %v", err)
		return
	}
	summary := func(s *events.LiveSession) string {
		var ms []string
		for _, m := range s.Members {
			ms = append(ms, fmt.Sprintf("%s/%s/%s@%d-%d", m.UserID, m.DeviceID, m.MembershipID, m.JoinedAt, m.ExpiresAt))
		}
		slices.Sort(ms)
		return fmt.Sprintf("session %s started %d, %d participants, %d users: %v", s.SessionID, s.StartedAt,
			s.Participants, s.Users, ms)
	}
	wantByKey := map[string]*events.LiveSession{}
	for i := range want {
		wantByKey[want[i].Key()] = &want[i]
	}
	for k, w := range wantByKey {
		g := got[k]
		switch {
		case g == nil:
			t.Errorf("rtc_sessions: %s missing; simulated %s", k, summary(w))
		case summary(g) != summary(w):
			t.Errorf("rtc_sessions %s:\n    want %s\n    got  %s", k, summary(w), summary(g))
		}
	}
	for k, g := range got {
		if wantByKey[k] == nil {
			t.Errorf("rtc_sessions: %s should have ended: %s", k, summary(g))
		}
	}
}
