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

	"github.com/rtcsessions/rtc-sessions/internal/roomstore"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
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
	d := partDeps{js: e.js, raw: e.h.Raw, rooms: e.h.Rooms, cache: newRoomCache(100),
		cfg: DefaultConfig().Worker, reducer: rtc.DefaultConfig(), store: roomstore.Options{},
		m: NewMetrics(nil), log: zap.NewNop(), live: live}
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
