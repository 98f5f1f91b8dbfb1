package events_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// TestNoGoroutineLeak ends Subscribe and WatchSessions in each way they
// can end (the handler's error, the context) and checks that no goroutine
// of theirs outlives them. The server and connection of the test are
// started before the snapshot of running goroutines, and the server's
// goroutines of the consumers it keeps until their inactivity threshold are
// not the client's: only the subscriptions' own goroutines count.
func TestNoGoroutineLeak(t *testing.T) {
	js := embedded(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.StreamEvents, Subjects: []string{events.SessionPrefix + ".>"}}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: events.BucketSessions})
	if err != nil {
		t.Fatal(err)
	}
	ev := events.SessionEvent{ID: eventcodec.EventID("!a:x", 1), Seq: 1, Kind: events.KindSessionStarted, RoomID: "!a:x", Application: "m.call"}
	b, err := eventcodec.EncodeSessionEvent(&ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, ev.Subject(), b); err != nil {
		t.Fatal(err)
	}
	ls := events.LiveSession{SessionID: "s", RoomID: "!a:x", Application: "m.call"}
	lb, err := eventcodec.EncodeLiveSession(&ls)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, ls.Key(), lb); err != nil {
		t.Fatal(err)
	}
	ignore := []goleak.Option{goleak.IgnoreCurrent()}
	for _, f := range []string{"processInboundNextMsgReqs", "processInboundAcks", "loopAndGatherMsgs"} {
		ignore = append(ignore, goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*consumer)."+f))
	}
	errStop := errors.New("handler stops")

	cases := []struct {
		name string
		run  func(ctx context.Context, cancel func()) error
		want error
	}{
		{"subscribe handler error", func(ctx context.Context, _ func()) error {
			return events.Subscribe(ctx, js, events.SubscribeOptions{FromStart: true}, func(events.Delivery) error { return errStop })
		}, errStop},
		{"subscribe context", func(ctx context.Context, cancel func()) error {
			return events.Subscribe(ctx, js, events.SubscribeOptions{FromStart: true}, func(events.Delivery) error { cancel(); return nil })
		}, context.Canceled},
		{"watch handler error", func(ctx context.Context, _ func()) error {
			return events.WatchSessions(ctx, js, func(string, *events.LiveSession) error { return errStop }, nil)
		}, errStop},
		{"watch context", func(ctx context.Context, cancel func()) error {
			return events.WatchSessions(ctx, js, func(string, *events.LiveSession) error { return nil }, cancel)
		}, context.Canceled},
		{"list", func(ctx context.Context, _ func()) error {
			got, err := events.ListLiveSessions(ctx, js)
			if err == nil && len(got) != 1 {
				t.Errorf("listed %d sessions, want 1", len(got))
			}
			return err
		}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cctx, ccancel := context.WithCancel(ctx)
			defer ccancel()
			if err := c.run(cctx, ccancel); !errors.Is(err, c.want) {
				t.Fatalf("ended with %v, want %v", err, c.want)
			}
			goleak.VerifyNone(t, ignore...)
		})
	}
}
