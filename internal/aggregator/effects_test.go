package aggregator

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
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
		b, err := eventcodec.EncodeSessionEvent(&ev)
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

// eventModes are the two ways the events stage publishes a room's events:
// one per round trip (waves), or several as one fast batch.
var eventModes = []struct {
	name    string
	batched bool
}{{"waves", false}, {"batches", true}}

// runnerFor is a runner publishing events the way mode says.
func (e *env) runnerFor(t *testing.T, batched bool) *partRunner {
	t.Helper()
	r := e.runner(t)
	if batched {
		fb, err := jsutil.NewFastBatcher(e.nc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = fb.Close() })
		r.d.batcher = fb
	}
	return r
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
	for _, mode := range eventModes {
		t.Run(mode.name, func(t *testing.T) { testEventsAfterALostAck(t, mode.batched) })
	}
}

func testEventsAfterALostAck(t *testing.T, batched bool) {
	e := newEnv(t)
	r := e.runnerFor(t, batched)
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
	conflicts := testutil.ToFloat64(r.d.m.EffectConflicts.WithLabelValues("event_order"))
	if !batched && conflicts != 1 {
		t.Fatalf("event_order conflicts %v, want 1", conflicts)
	}
	if batched {
		// In a batch the server drops the repeated event 3 as a duplicate
		// of its Nats-Msg-Id before it checks the condition, and goes on
		// with 4 and 5: both commits are stored as whole batches.
		stored := testutil.ToFloat64(r.d.m.EventBatches.WithLabelValues("stored"))
		if stored != 2 || conflicts != 0 {
			t.Fatalf("%v batches stored, %v event_order conflicts; want 2 and 0", stored, conflicts)
		}
	}
}

// TestRoomEventsAsBatches: rooms with several events each go as one fast
// batch per room, all at once with the rooms of one event (waves); every
// room's events are stored once, in seq order, and the room's position is
// known after its batch, so its next commit needs no look-up.
func TestRoomEventsAsBatches(t *testing.T) {
	e := newEnv(t)
	r := e.runnerFor(t, true)
	var jobs []*effectJob
	for i := range 12 {
		jobs = append(jobs, eventJob(t, id.RoomID(fmt.Sprintf("!b%d:example.org", i)), 0, 1+i%4))
	}
	r.publishEvents(jobs)
	for i, j := range jobs {
		if j.err != nil {
			t.Fatal(j.err)
		}
		if !j.rm.EventsSeqKnown || j.rm.EventsSeq == 0 {
			t.Fatalf("room %d: position unknown after its events were stored", i)
		}
	}
	// Next commits of every room: conditional on the positions learnt.
	var next []*effectJob
	for i, j := range jobs {
		n := eventJob(t, j.rm.State.RoomID, 1+i%4, 3)
		n.rm = j.rm
		next = append(next, n)
	}
	r.publishEvents(next)
	for i, j := range next {
		if j.err != nil {
			t.Fatal(j.err)
		}
		want := ""
		for s := 1; s <= 1+i%4+3; s++ {
			want += fmt.Sprint(s, " ")
		}
		if got := fmt.Sprint(e.roomSeqs(t, j.rm.State.RoomID)); got != "["+want[:len(want)-1]+"]" {
			t.Fatalf("room %d events in stream order: %s, want [%s]", i, got, want[:len(want)-1])
		}
	}
	if n := testutil.ToFloat64(r.d.m.EffectConflicts.WithLabelValues("event_order")); n != 0 {
		t.Fatalf("event_order conflicts %v, want 0", n)
	}
	// 9 rooms with 2-4 events, then all 12 with 3.
	if n := testutil.ToFloat64(r.d.m.EventBatches.WithLabelValues("stored")); n != 9+12 {
		t.Fatalf("%v batches stored, want 21", n)
	}
}

// TestServerRefusesAnEventOutOfOrder: an event published for a position the
// room has left (a retry of an older event after a newer one was stored, or
// a worker that lost the room) is refused by the server, not stored after
// the newer one.
func TestServerRefusesAnEventOutOfOrder(t *testing.T) {
	for _, mode := range eventModes {
		t.Run(mode.name, func(t *testing.T) { testServerRefusesAnEventOutOfOrder(t, mode.batched) })
	}
}

func testServerRefusesAnEventOutOfOrder(t *testing.T, batched bool) {
	e := newEnv(t)
	r := e.runnerFor(t, batched)
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

// TestBatchRefusedAfterAnotherWriter: a room's events were written past the
// position this worker knows by someone else (another owner's event, with
// its own event id): the server refuses the room's batch at its first
// event, stores none of it, and the waves go on from what is stored.
func TestBatchRefusedAfterAnotherWriter(t *testing.T) {
	e := newEnv(t)
	r := e.runnerFor(t, true)
	room := id.RoomID("!other:example.org")
	first := eventJob(t, room, 0, 2)
	r.publishEvents([]*effectJob{first})
	if first.err != nil {
		t.Fatal(first.err)
	}
	other := eventJob(t, room, 2, 1).events[0]
	other.Header.Set(jetstream.MsgIDHeader, "another owner's id")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.PublishMsg(ctx, other); err != nil {
		t.Fatal(err)
	}
	next := eventJob(t, room, 2, 3)
	next.rm = first.rm
	r.publishEvents([]*effectJob{next})
	if next.err != nil {
		t.Fatal(next.err)
	}
	if got := fmt.Sprint(e.roomSeqs(t, room)); got != "[1 2 3 4 5]" {
		t.Fatalf("room events in stream order: %s, want [1 2 3 4 5]", got)
	}
	stopped := testutil.ToFloat64(r.d.m.EventBatches.WithLabelValues("stopped"))
	conflicts := testutil.ToFloat64(r.d.m.EffectConflicts.WithLabelValues("event_order"))
	if stopped != 1 || conflicts != 1 {
		t.Fatalf("%v batches stopped, %v event_order conflicts; want 1 and 1", stopped, conflicts)
	}
}

// TestAbsentKeyCheck: a live-session key of a room stored first by this
// worker's commit is taken as absent without a look-up while the commit is
// recent (a newer owner's writes would still be visible, as values or as
// markers); an older commit, or a previous owner's carried out on load,
// checks the room's header, and a header that moved on fences the job.
func TestAbsentKeyCheck(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name        string
		committedAt time.Time
		markerTTL   time.Duration
		fenced      bool
	}{
		{"recent commit", now, time.Hour, false},
		{"markers kept", time.Time{}, 0, false},
		{"commit older than half the marker TTL", now.Add(-31 * time.Minute), time.Hour, true},
		{"a previous owner's commit", time.Time{}, time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			r := e.runner(t)
			room := id.RoomID("!absent:example.org")
			rm := roomstore.New(room)
			rm.Rev = 1
			// The room's header has moved on: another owner committed.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for range 2 {
				if _, err := e.h.Rooms.Put(ctx, rm.Key, []byte("newer")); err != nil {
					t.Fatal(err)
				}
			}
			subj := jsutil.KVSubject(events.BucketSessions, "m_call."+rm.Key+".c")
			j := &effectJob{rm: rm, redo: &roomstore.Redo{}, writes: []*nats.Msg{jsutil.KVPut(events.BucketSessions, "m_call."+rm.Key+".c", []byte("x"))},
				committedAt: tc.committedAt, markerTTL: tc.markerTTL}
			r.resolveRevs([]*effectJob{j})
			if got := errors.Is(j.err, errFenced); got != tc.fenced {
				t.Fatalf("fenced %v (err %v), want %v", got, j.err, tc.fenced)
			}
			if rev, ok := rm.KeyRevs[subj]; !tc.fenced && (!ok || rev != 0) {
				t.Fatalf("key revision %d (known %v), want 0 (absent)", rev, ok)
			}
		})
	}
}
