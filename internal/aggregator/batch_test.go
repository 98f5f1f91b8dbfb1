package aggregator

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/roomstore"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// TestBatchOnItsOwn drives one partition runner directly, without a
// Worker: the runner needs only its dependencies (partDeps). Every input
// of a partition is fetched as one batch and processed: the session events
// equal the offline reduction of those inputs, and every input is
// acknowledged.
func TestBatchOnItsOwn(t *testing.T) {
	e := newEnv(t)
	inputs := workload(40, 3, time.Now().UnixMilli())
	e.publish(inputs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	live, kill := context.WithCancel(context.Background())
	defer kill()
	d := e.withStreams(partDeps{js: e.js, raw: e.h.Raw, rooms: e.h.Rooms, cache: newRoomCache(100),
		cfg: DefaultConfig().Worker, reducer: rtc.DefaultConfig(), store: roomstore.Options{},
		m: NewMetrics(nil), log: zap.NewNop(), live: live})
	for p := 0; p < e.topo.Partitions; p++ {
		r := newPartRunner(d, p)
		cons, err := e.h.Raw.Consumer(ctx, topology.ConsumerName(p))
		if err != nil {
			t.Fatal(err)
		}
		r.setAckFloor(cons.CachedInfo())
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(300*time.Millisecond), jetstream.FetchPriorityGroup(topology.ConsumerGroup))
		if err != nil {
			t.Fatal(err)
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if len(msgs) > 0 {
			r.runBatch(msgs)
		}
	}
	assertMatches(t, e.sessionEvents(), offline(inputs))
	e.waitIdle(countEvents(offline(inputs)), 10*time.Second) // every input acknowledged
}

// TestIsTransient: what retrying later fixes is retried without limit; a
// refusal that will not change counts against the bounded attempts (and
// ends in RTC_DLQ), so it must never be mistaken for a transient one, nor
// the other way round.
func TestIsTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nats.ErrTimeout, true},
		{fmt.Errorf("commit room x: %w", jetstream.ErrTooManyStalledMsgs), true},
		{nats.ErrNoResponders, true},
		{nats.ErrConnectionClosed, true},
		{context.DeadlineExceeded, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10054, Description: "message size exceeds maximum allowed"}, false},
		{errors.New("encode room: unsupported type"), false},
	} {
		if got := isTransient(tc.err); got != tc.want {
			t.Errorf("isTransient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestCatchUpReadsWhatWasDelivered: a new owner's first batch may hold only
// an older redelivery while later inputs, delivered to the dead owner, are
// still unacknowledged. The catch-up reads up to what the consumer had
// delivered at acquisition, not only up to the batch: otherwise a later
// delivery that follows on without a gap in the consumer sequence would be
// acknowledged (all) past them, and a room the dead owner committed would
// never have its effects redone.
func TestCatchUpReadsWhatWasDelivered(t *testing.T) {
	e := newEnv(t)
	const part = 0
	var rooms []id.RoomID
	for i := 0; len(rooms) < 3; i++ {
		if r := id.RoomID(fmt.Sprintf("!catchup%d:%s", i, testHS)); rawevent.Partition(events.Token(string(r)), e.topo.Partitions) == part {
			rooms = append(rooms, r)
		}
	}
	now := time.Now().UnixMilli()
	var in []rawevent.RawEvent
	for i, r := range rooms {
		in = append(in, joinEv(r, "@u:"+testHS, "D", now+int64(i), 0, fmt.Sprintf("$c%d", i)))
	}
	e.publish(in)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seqs := e.readStream(rawevent.StreamRaw, rawevent.PartitionSubject(part, ""))
	if len(seqs) != 3 {
		t.Fatalf("%d inputs in partition %d", len(seqs), part)
	}
	live, kill := context.WithCancel(ctx)
	defer kill()
	r := newPartRunner(e.withStreams(partDeps{js: e.js, raw: e.h.Raw, rooms: e.h.Rooms, cache: newRoomCache(10),
		cfg: DefaultConfig().Worker, reducer: rtc.DefaultConfig(), m: NewMetrics(nil), log: zap.NewNop(), live: live}), part)
	// Acquired with nothing acknowledged and all three delivered (to the
	// dead owner); the first batch is the redelivery of the first input.
	r.setAckFloor(&jetstream.ConsumerInfo{AckFloor: jetstream.SequenceInfo{Stream: 0},
		Delivered: jetstream.SequenceInfo{Stream: seqs[2].seq}})
	caughtUp := func(r *partRunner, batch []uint64, gap bool) []uint64 {
		t.Helper()
		var ins []*input
		for _, seq := range batch {
			ins = append(ins, &input{seq: seq})
		}
		extra, err := r.catchUp(ins, gap)
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for _, x := range extra {
			got = append(got, x.seq)
		}
		return got
	}
	if got := caughtUp(r, []uint64{seqs[0].seq}, false); fmt.Sprint(got) != fmt.Sprint([]uint64{seqs[1].seq, seqs[2].seq}) {
		t.Fatalf("caught up %v, want the two later inputs %d and %d", got, seqs[1].seq, seqs[2].seq)
	}

	// Acquired with nothing delivered before. A first delivery that does
	// not follow the acquisition in consumer sequence (a gap: someone else
	// received the first two in between) reads what the batch skipped; one
	// that follows it reads nothing, not even the batch again.
	for _, tc := range []struct {
		gap  bool
		want []uint64
	}{{true, []uint64{seqs[0].seq, seqs[1].seq}}, {false, nil}} {
		r := newPartRunner(e.withStreams(partDeps{js: e.js, raw: e.h.Raw, rooms: e.h.Rooms, cache: newRoomCache(10),
			cfg: DefaultConfig().Worker, reducer: rtc.DefaultConfig(), m: NewMetrics(nil), log: zap.NewNop(), live: live}), part)
		r.setAckFloor(&jetstream.ConsumerInfo{})
		if got := caughtUp(r, []uint64{seqs[2].seq}, tc.gap); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Fatalf("gap %v: caught up %v, want %v", tc.gap, got, tc.want)
		}
	}
}

// withStreams gives a runner built by hand the streams its effects look up
// (the Worker fills them in partDeps).
func (e *env) withStreams(d partDeps) partDeps {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, kvStreamName(events.BucketSessions))
	if err != nil {
		e.t.Fatal(err)
	}
	d.eventsStream, d.sessions, d.timers = e.h.Events, s, e.h.Timers
	return d
}
