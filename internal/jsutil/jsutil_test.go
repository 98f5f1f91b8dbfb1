package jsutil

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/testutil"
)

// TestPublishAllWaitsForRoom: a set far larger than the connection's window
// of unacknowledged async publishes is stored whole: PublishAll waits for
// room instead of failing with "stalled".
func TestPublishAllWaitsForRoom(t *testing.T) {
	_, js := connect(t, jetstream.WithPublishAsyncMaxPending(16))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "b"}); err != nil {
		t.Fatal(err)
	}
	var msgs []*nats.Msg
	for i := range 2000 {
		msgs = append(msgs, KVPut("b", "k"+string(rune('a'+i%26)), []byte{byte(i)}))
	}
	msgs = append(msgs, KVDel("b", "ka"))
	res, err := PublishAll(ctx, js, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(msgs) || res[len(res)-1].Ack == nil {
		t.Fatalf("results %d", len(res))
	}
	kv, _ := js.KeyValue(ctx, "b")
	if _, err := kv.Get(ctx, "ka"); err == nil {
		t.Error("the delete, last of the set, was not applied after the puts")
	}
	// A revision check that fails is reported as such.
	res, err = PublishAll(ctx, js, []*nats.Msg{ExpectRevision(KVPut("b", "kb", []byte("x")), 1)})
	if err == nil || !IsRevisionMismatch(res[0].Err) {
		t.Errorf("stale revision: %v", err)
	}
}

// TestPublishAllFlow: a set larger than the flow's window is stored whole
// with never more than the window in flight, every acquired message is
// released once, an Acquire error stops the rest, and a message nobody
// stores comes back as an error and is released too.
func TestPublishAllFlow(t *testing.T) {
	_, js := connect(t, jetstream.WithPublishAsyncTimeout(2*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	type counts struct {
		mu                      sync.Mutex
		inFlight, max, released int
		releasedTwice           bool
		seen                    map[int]bool
	}
	window := func(c *counts, limit int, failAt int) Flow {
		slots := make(chan struct{}, limit)
		c.seen = map[int]bool{}
		return Flow{
			Acquire: func(ctx context.Context, i int) error {
				if i == failAt {
					return errors.New("no room")
				}
				select {
				case slots <- struct{}{}:
				case <-ctx.Done():
					return ctx.Err()
				}
				c.mu.Lock()
				c.inFlight++
				c.max = max(c.max, c.inFlight)
				c.mu.Unlock()
				return nil
			},
			Release: func(i int, _ Result) {
				c.mu.Lock()
				c.inFlight--
				c.released++
				c.releasedTwice = c.releasedTwice || c.seen[i]
				c.seen[i] = true
				c.mu.Unlock()
				<-slots
			},
		}
	}
	msgs := func(subject string, n int) []*nats.Msg {
		out := make([]*nats.Msg, n)
		for i := range out {
			out[i] = &nats.Msg{Subject: subject, Data: []byte{byte(i)}}
		}
		return out
	}
	waitReleased := func(c *counts, n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			c.mu.Lock()
			got, twice := c.released, c.releasedTwice
			c.mu.Unlock()
			if twice {
				t.Fatal("a message was released twice")
			}
			if got == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d released", got, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	var all counts
	res, err := PublishAllFlow(ctx, js, msgs("s.a", 500), window(&all, 8, -1))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Ack == nil || r.Ack.Sequence != uint64(i+1) {
			t.Fatalf("message %d: %+v, want stored in order", i, r)
		}
	}
	waitReleased(&all, 500)
	if all.max > 8 || all.max < 2 {
		t.Errorf("at most %d in flight, want up to the window of 8", all.max)
	}

	var stopped counts
	res, err = PublishAllFlow(ctx, js, msgs("s.b", 10), window(&stopped, 4, 6))
	if err == nil || res[5].Ack == nil || res[6].Err == nil || res[9].Err == nil {
		t.Fatalf("acquire failing at 6: err %v, results %+v", err, res)
	}
	waitReleased(&stopped, 6)

	var lost counts
	res, err = PublishAllFlow(ctx, js, msgs("nostream.x", 3), window(&lost, 2, -1))
	if err == nil || res[0].Err == nil || res[2].Err == nil {
		t.Fatalf("no stream: err %v, results %+v", err, res)
	}
	waitReleased(&lost, 3)
}

// connect is a connection and its JetStream context to a fresh embedded
// server, both closed with the test.
func connect(t *testing.T, opts ...jetstream.JetStreamOpt) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	ns := testutil.NATS(t, "", -1)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}
