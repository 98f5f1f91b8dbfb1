package aggregator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/jsutil"
	"github.com/rtcsessions/rtc-sessions/internal/roomstore"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// eventJob is an effect job of n session events of room (seq from+1 ...),
// with no writes: what publishEvents carries out.
func eventJob(t *testing.T, room id.RoomID, from, n int) *effectJob {
	t.Helper()
	rm := roomstore.New(room)
	rm.Rev = 1
	j := &effectJob{rm: rm, redo: &roomstore.Redo{}}
	for i := from + 1; i <= from+n; i++ {
		ev := events.SessionEvent{V: events.SchemaVersion, ID: fmt.Sprintf("%s/%d", room, i), Seq: uint64(i),
			Kind: events.KindMemberUpdated, RoomID: room, Application: "m.call", At: int64(i)}
		b, err := events.EncodeSessionEvent(&ev)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(ev.Subject())
		m.Data = b
		m.Header.Set(jetstream.MsgIDHeader, ev.ID)
		j.events = append(j.events, m)
		j.seqs = append(j.seqs, ev.Seq)
	}
	return j
}

func (e *env) runner(t *testing.T) *partRunner {
	t.Helper()
	live, kill := context.WithCancel(context.Background())
	t.Cleanup(kill)
	return newPartRunner(e.withStreams(partDeps{js: e.js, raw: e.h.Raw, rooms: e.h.Rooms, cache: newRoomCache(10),
		cfg: testWorkerConfig(), reducer: rtc.DefaultConfig(), m: NewMetrics(nil), log: zap.NewNop(), live: live}), 0)
}

// roomSeqs are the per-room seqs of room's events in RTC_EVENTS, in stream
// order.
func (e *env) roomSeqs(t *testing.T, room id.RoomID) []uint64 {
	t.Helper()
	var out []uint64
	for _, b := range e.sessionEvents()[room] {
		ev, err := events.DecodeSessionEvent(b)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev.Seq)
	}
	return out
}

// TestEventsAfterALostAck: the first event of a commit was stored but its
// ack was lost, and the worker believes the room's last event is an older
// one. The server refuses the retry (the room's last event moved), the
// worker reads where the room stands, skips what is stored and stores the
// rest after it: every event once, in seq order.
func TestEventsAfterALostAck(t *testing.T) {
	e := newEnv(t)
	r := e.runner(t)
	room := id.RoomID("!lostack:example.org")

	first := eventJob(t, room, 0, 2)
	r.publishEvents([]*effectJob{first})
	if first.err != nil {
		t.Fatal(first.err)
	}
	believed := first.rm.EventsSeq

	next := eventJob(t, room, 2, 3)
	// Event 3 reaches the stream; its ack is lost.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.PublishMsg(ctx, next.events[0]); err != nil {
		t.Fatal(err)
	}
	next.rm.EventsSeq, next.rm.EventsSeqKnown = believed, true
	r.publishEvents([]*effectJob{next})
	if next.err != nil {
		t.Fatal(next.err)
	}
	if got := fmt.Sprint(e.roomSeqs(t, room)); got != "[1 2 3 4 5]" {
		t.Fatalf("room events in stream order: %s, want [1 2 3 4 5]", got)
	}
	if n := testutil.ToFloat64(r.d.m.EffectConflicts.WithLabelValues("event_order")); n != 1 {
		t.Fatalf("event_order conflicts %v, want 1", n)
	}
}

// TestServerRefusesAnEventOutOfOrder: an event published for a position the
// room has left (a retry of an older event after a newer one was stored, or
// a worker that lost the room) is refused by the server, not stored after
// the newer one.
func TestServerRefusesAnEventOutOfOrder(t *testing.T) {
	e := newEnv(t)
	r := e.runner(t)
	room := id.RoomID("!order:example.org")
	j := eventJob(t, room, 0, 3)
	// Events 1 and 3 go out; 2 "failed" and is retried after 3, with the
	// expectation the worker had for it.
	r.publishEvents([]*effectJob{{rm: j.rm, redo: j.redo, events: j.events[:1], seqs: j.seqs[:1]}})
	afterFirst := j.rm.EventsSeq
	r.publishEvents([]*effectJob{{rm: j.rm, redo: j.redo, events: j.events[2:], seqs: j.seqs[2:]}})
	retry := j.events[1]
	retry.Header.Set(jetstream.ExpectedLastSubjSeqHeader, fmt.Sprint(afterFirst))
	retry.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, events.SessionFilter(events.SessionPrefix, "", room, ""))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := e.js.PublishMsg(ctx, retry)
	if !jsutil.IsRevisionMismatch(err) {
		t.Fatalf("the late retry of event 2: %v, want a wrong-last-sequence refusal", err)
	}
	if got := fmt.Sprint(e.roomSeqs(t, room)); got != "[1 3]" {
		t.Fatalf("room events in stream order: %s, want [1 3]", got)
	}
}
