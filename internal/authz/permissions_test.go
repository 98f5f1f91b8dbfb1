package authz_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/authz"
	"github.com/rtcsessions/rtc-sessions/internal/authz/authztest"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

func testTopology() topology.Config {
	c := topology.DefaultConfig()
	c.Partitions = 2
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestShippedPermissions runs the embedded server with the shipped
// configuration and shows, for each user, that what it needs works and that
// what it must not do is refused by the server with a permission error.
// It does not depend on the aggregator or the ingest (see ./pipeline for the
// whole pipeline under the same permissions).
func TestShippedPermissions(t *testing.T) {
	srv := authztest.Start(t)
	ctx := ctxT(t)
	agg := srv.Connect(t, authz.UserAggregator)
	ing := srv.Connect(t, authz.UserIngest)
	sub := srv.Connect(t, authz.UserSubscriber)

	// What each may do. The aggregator creates the whole topology.
	h, err := topology.Ensure(ctx, agg.JS, testTopology(), topology.ModeCreate)
	if err != nil {
		t.Fatalf("aggregator: ensure topology: %v (violations %q)", err, agg.Violations())
	}
	if _, err := topology.Ensure(ctx, agg.JS, testTopology(), topology.ModeVerify); err != nil {
		t.Fatalf("aggregator: verify topology: %v", err)
	}
	room := "!r:example.org"
	for _, kv := range []jetstream.KeyValue{h.Rooms, h.Sessions, h.Workers} {
		key := events.Token(room) + ".sub." + "key" // sub-keys under a room key are allowed
		rev, err := kv.Put(ctx, key, []byte("v1"))
		if err != nil {
			t.Fatalf("aggregator: put %s: %v", kv.Bucket(), err)
		}
		if rev, err = kv.Update(ctx, key, []byte("v2"), rev); err != nil {
			t.Fatalf("aggregator: update %s: %v", kv.Bucket(), err)
		}
		if e, err := kv.Get(ctx, key); err != nil || string(e.Value()) != "v2" {
			t.Fatalf("aggregator: get %s: %v", kv.Bucket(), err)
		}
		if _, err := kv.GetRevision(ctx, key, rev); err != nil {
			t.Fatalf("aggregator: get revision %s: %v", kv.Bucket(), err)
		}
		w, err := kv.WatchAll(ctx)
		if err != nil {
			t.Fatalf("aggregator: watch %s: %v", kv.Bucket(), err)
		}
		if e := <-w.Updates(); e == nil || e.Key() != key {
			t.Fatalf("aggregator: watch %s: want the key first, got %v", kv.Bucket(), e)
		}
		if err := w.Stop(); err != nil {
			t.Fatalf("aggregator: stop watch %s: %v", kv.Bucket(), err)
		}
		if err := kv.Delete(ctx, key); err != nil {
			t.Fatalf("aggregator: delete key in %s: %v", kv.Bucket(), err)
		}
	}
	if _, err := agg.JS.Publish(ctx, events.SessionPrefix+".a.r.c.session_started", []byte("e")); err != nil {
		t.Fatalf("aggregator: publish a session event: %v", err)
	}
	if _, err := agg.JS.Publish(ctx, events.DLQPrefix+".0", []byte("d")); err != nil {
		t.Fatalf("aggregator: publish to the DLQ: %v", err)
	}
	timer := nats.NewMsg(events.TimerPrefix + "." + events.Token(room))
	timer.Header.Set(jetstream.ScheduleHeader, "@at "+time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	timer.Header.Set(jetstream.ScheduleTargetHeader, events.RawPrefix+"."+events.Token(room))
	timer.Header.Set(jetstream.MsgTTLHeader, "never")
	if _, err := agg.JS.PublishMsg(ctx, timer); err != nil {
		t.Fatalf("aggregator: schedule a timer: %v", err)
	}

	// The ingest: EnsureRaw (both modes) and publishing raw inputs.
	if _, err := topology.EnsureRaw(ctx, ing.JS, testTopology(), topology.ModeCreate); err != nil {
		t.Fatalf("ingest: EnsureRaw: %v", err)
	}
	if _, err := topology.EnsureRaw(ctx, ing.JS, testTopology(), topology.ModeVerify); err != nil {
		t.Fatalf("ingest: EnsureRaw verify: %v", err)
	}
	if _, err := ing.JS.Publish(ctx, events.RawPrefix+"."+events.Token(room), []byte("raw"), jetstream.WithMsgID("m1"),
		jetstream.WithExpectStream(events.StreamRaw)); err != nil {
		t.Fatalf("ingest: publish a raw input: %v", err)
	}
	f, err := ing.JS.PublishAsync(events.RawPrefix+"."+events.Token(room), []byte("raw2"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.Ok():
	case err := <-f.Err():
		t.Fatalf("ingest: async publish: %v", err)
	case <-ctx.Done():
		t.Fatal("ingest: no async PubAck")
	}

	// The aggregator consumes the partition: pull, ack, unpin.
	got := 0
	for part := 0; part < testTopology().Partitions; part++ {
		cons, err := h.Raw.Consumer(ctx, topology.ConsumerName(part))
		if err != nil {
			t.Fatalf("aggregator: consumer info: %v", err)
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second), jetstream.FetchPriorityGroup(topology.ConsumerGroup))
		if err != nil {
			t.Fatalf("aggregator: fetch: %v", err)
		}
		for m := range batch.Messages() {
			got++
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatalf("aggregator: ack: %v", err)
			}
		}
		if err := h.Raw.UnpinConsumer(ctx, topology.ConsumerName(part), topology.ConsumerGroup); err != nil &&
			!strings.Contains(err.Error(), "no pinned") && !strings.Contains(err.Error(), "not pinned") {
			t.Fatalf("aggregator: unpin: %v", err)
		}
	}
	if got == 0 {
		t.Fatal("aggregator: fetched no input")
	}

	// The subscriber reads session events, the live re-publish, sessions
	// and room records.
	live, err := sub.NC.SubscribeSync(events.LivePrefix + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := agg.JS.Publish(ctx, events.SessionPrefix+".a.r.c.member_joined", []byte("e2")); err != nil {
		t.Fatal(err)
	}
	if m, err := live.NextMsg(10 * time.Second); err != nil || string(m.Data) != "e2" {
		t.Fatalf("subscriber: rtc.live.>: %v", err)
	}
	oc, err := sub.JS.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SessionPrefix + ".>"}, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		t.Fatalf("subscriber: ordered consumer on RTC_EVENTS: %v", err)
	}
	if m, err := oc.Next(jetstream.FetchMaxWait(10 * time.Second)); err != nil || string(m.Data()) != "e" {
		t.Fatalf("subscriber: read RTC_EVENTS: %v", err)
	}
	if _, err := h.Sessions.Put(ctx, "s1", []byte("live")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Rooms.Put(ctx, "r1", []byte("rec")); err != nil {
		t.Fatal(err)
	}
	skv, err := sub.JS.KeyValue(ctx, events.BucketSessions)
	if err != nil {
		t.Fatalf("subscriber: bind rtc_sessions: %v", err)
	}
	if e, err := skv.Get(ctx, "s1"); err != nil || string(e.Value()) != "live" {
		t.Fatalf("subscriber: get a session: %v", err)
	}
	w, err := skv.WatchAll(ctx)
	if err != nil {
		t.Fatalf("subscriber: watch rtc_sessions: %v", err)
	}
	seen := false
	for e := range w.Updates() {
		if e == nil { // the initial values are all delivered
			break
		}
		seen = seen || (e.Key() == "s1" && e.Operation() == jetstream.KeyValuePut)
	}
	if !seen {
		t.Fatal("subscriber: the watch did not deliver s1")
	}
	_ = w.Stop() // deleting its ephemeral consumer is not granted; the server reaps it
	rkv, err := sub.JS.KeyValue(ctx, events.BucketRooms)
	if err != nil {
		t.Fatalf("subscriber: bind rtc_rooms: %v", err)
	}
	if e, err := rkv.Get(ctx, "r1"); err != nil || string(e.Value()) != "rec" {
		t.Fatalf("subscriber: get a room record: %v", err)
	}
	for _, c := range []*authztest.Client{agg, ing, sub} {
		for _, v := range c.Violations() {
			// An ordered consumer or KV watch deletes its ephemeral consumer
			// when it stops or resets, which the subscriber may not do (it
			// could delete others' durable consumers); the client ignores
			// the refusal and the server reaps the consumer when inactive.
			if c == sub && (strings.Contains(v, "$JS.API.CONSUMER.DELETE.KV_rtc_sessions.") ||
				strings.Contains(v, "$JS.API.CONSUMER.DELETE.RTC_EVENTS.")) {
				continue
			}
			t.Fatalf("permission violation on an allowed path: %s", v)
		}
	}

	// What each must not do.
	refusals := []struct {
		user, what string
		subject    string // the subject the server must name
		do         func(ctx context.Context, c *authztest.Client) error
	}{
		{authz.UserIngest, "read session events (core subscription)", events.SessionPrefix + ".>", subscribe(events.SessionPrefix + ".>")},
		{authz.UserIngest, "read the live re-publish", events.LivePrefix + ".>", subscribe(events.LivePrefix + ".>")},
		{authz.UserIngest, "look up RTC_EVENTS", "$JS.API.STREAM.INFO.RTC_EVENTS", func(ctx context.Context, c *authztest.Client) error {
			_, err := c.JS.Stream(ctx, events.StreamEvents)
			return err
		}},
		{authz.UserIngest, "consume RTC_EVENTS", "$JS.API.CONSUMER.CREATE.RTC_EVENTS", orderedConsumer(events.StreamEvents)},
		{authz.UserIngest, "read rtc_sessions", "$JS.API.STREAM.INFO.KV_rtc_sessions", bindKV(events.BucketSessions)},
		{authz.UserIngest, "delete RTC_RAW", "$JS.API.STREAM.DELETE.RTC_RAW", deleteStream(events.StreamRaw)},
		{authz.UserIngest, "purge RTC_RAW", "$JS.API.STREAM.PURGE.RTC_RAW", purgeStream(events.StreamRaw)},
		{authz.UserIngest, "update RTC_RAW's settings", "$JS.API.STREAM.UPDATE.RTC_RAW", func(ctx context.Context, c *authztest.Client) error {
			_, err := c.JS.UpdateStream(ctx, topology.RawStream(testTopology()))
			return err
		}},
		{authz.UserIngest, "write rtc_rooms", "$KV.rtc_rooms.", jsPublish("$KV.rtc_rooms." + events.Token(room))},
		{authz.UserIngest, "forge a session event", events.SessionPrefix + ".", jsPublish(events.SessionPrefix + ".a.r.c.session_ended")},
		{authz.UserIngest, "schedule a timer", events.TimerPrefix + ".", jsPublish(events.TimerPrefix + ".x")},
		{authz.UserIngest, "consume RTC_RAW", "$JS.API.CONSUMER.CREATE.RTC_RAW", orderedConsumer(events.StreamRaw)},
		{authz.UserIngest, "snoop on the aggregator's inbox", "_INBOX_aggregator.>", subscribe("_INBOX_aggregator.>")},

		{authz.UserSubscriber, "publish a raw input", events.RawPrefix + ".", jsPublish(events.RawPrefix + ".x")},
		{authz.UserSubscriber, "publish a session event", events.SessionPrefix + ".", jsPublish(events.SessionPrefix + ".a.r.c.session_ended")},
		{authz.UserSubscriber, "write rtc_sessions", "$KV.rtc_sessions.", jsPublish("$KV.rtc_sessions.s1")},
		{authz.UserSubscriber, "delete RTC_EVENTS", "$JS.API.STREAM.DELETE.RTC_EVENTS", deleteStream(events.StreamEvents)},
		{authz.UserSubscriber, "delete RTC_RAW", "$JS.API.STREAM.DELETE.RTC_RAW", deleteStream(events.StreamRaw)},
		{authz.UserSubscriber, "delete the rtc_sessions bucket", "$JS.API.STREAM.DELETE.KV_rtc_sessions", deleteStream("KV_" + events.BucketSessions)},
		{authz.UserSubscriber, "purge RTC_EVENTS", "$JS.API.STREAM.PURGE.RTC_EVENTS", purgeStream(events.StreamEvents)},
		{authz.UserSubscriber, "delete a consumer of RTC_RAW", "$JS.API.CONSUMER.DELETE.RTC_RAW", func(ctx context.Context, c *authztest.Client) error {
			return c.JS.DeleteConsumer(ctx, events.StreamRaw, topology.ConsumerName(0))
		}},
		{authz.UserSubscriber, "read raw inputs", "$JS.API.CONSUMER.CREATE.RTC_RAW", orderedConsumer(events.StreamRaw)},
		{authz.UserSubscriber, "snoop on the ingest's inbox", "_INBOX_ingest.>", subscribe("_INBOX_ingest.>")},
		{authz.UserSubscriber, "snoop on the aggregator's inbox", "_INBOX_aggregator.>", subscribe("_INBOX_aggregator.>")},

		{authz.UserAggregator, "delete RTC_RAW", "$JS.API.STREAM.DELETE.RTC_RAW", deleteStream(events.StreamRaw)},
		{authz.UserAggregator, "delete RTC_EVENTS", "$JS.API.STREAM.DELETE.RTC_EVENTS", deleteStream(events.StreamEvents)},
		{authz.UserAggregator, "delete the rtc_rooms bucket", "$JS.API.STREAM.DELETE.KV_rtc_rooms", deleteStream("KV_" + events.BucketRooms)},
		{authz.UserAggregator, "purge RTC_EVENTS", "$JS.API.STREAM.PURGE.RTC_EVENTS", purgeStream(events.StreamEvents)},
		{authz.UserAggregator, "delete a partition consumer", "$JS.API.CONSUMER.DELETE.RTC_RAW", func(ctx context.Context, c *authztest.Client) error {
			return c.JS.DeleteConsumer(ctx, events.StreamRaw, topology.ConsumerName(0))
		}},
		{authz.UserAggregator, "publish a raw input", events.RawPrefix + ".", jsPublish(events.RawPrefix + ".x")},
		{authz.UserAggregator, "snoop on the ingest's inbox", "_INBOX_ingest.>", subscribe("_INBOX_ingest.>")},
	}
	for _, r := range refusals {
		t.Run(r.user+"/"+r.what, func(t *testing.T) {
			// A fresh connection per case, so a violation is this case's.
			c := srv.Connect(t, r.user)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- r.do(ctx, c) }()
			// A refused request gets no answer: the violation, reported at
			// once, is the signal; then the call is abandoned.
			v, reported := c.WaitViolation(r.subject, 5*time.Second)
			cancel()
			err := <-done
			if !reported {
				t.Fatalf("%s may %s: no permission violation for %s (call returned %v; violations %q)",
					r.user, r.what, r.subject, err, c.Violations())
			}
			if !errors.Is(err, nats.ErrPermissionViolation) && err == nil && !isSubscription(r.subject) {
				t.Errorf("the call returned no error despite %s", v)
			}
			t.Logf("refused: %s (call: %v)", v, err)
		})
	}
	// The refusals changed nothing.
	for _, s := range []string{events.StreamRaw, events.StreamEvents, "KV_" + events.BucketRooms, "KV_" + events.BucketSessions} {
		st, err := agg.JS.Stream(ctx, s)
		if err != nil {
			t.Fatalf("stream %s after the refusals: %v", s, err)
		}
		if s == events.StreamRaw && st.CachedInfo().State.Msgs == 0 {
			t.Fatalf("RTC_RAW lost its messages")
		}
	}
}

// isSubscription: a refused subscription is reported asynchronously only.
func isSubscription(subject string) bool { return strings.HasSuffix(subject, ".>") }

func subscribe(subject string) func(context.Context, *authztest.Client) error {
	return func(_ context.Context, c *authztest.Client) error {
		sub, err := c.NC.SubscribeSync(subject)
		if err != nil {
			return err
		}
		defer func() { _ = sub.Unsubscribe() }()
		return c.NC.Flush()
	}
}

func jsPublish(subject string) func(context.Context, *authztest.Client) error {
	return func(ctx context.Context, c *authztest.Client) error {
		_, err := c.JS.Publish(ctx, subject, []byte("forged"))
		return err
	}
}

func deleteStream(name string) func(context.Context, *authztest.Client) error {
	return func(ctx context.Context, c *authztest.Client) error { return c.JS.DeleteStream(ctx, name) }
}

func purgeStream(name string) func(context.Context, *authztest.Client) error {
	return func(ctx context.Context, c *authztest.Client) error {
		// Bind without a lookup: the user may not even look the stream up.
		req := fmt.Sprintf("$JS.API.STREAM.PURGE.%s", name)
		_, err := c.NC.RequestWithContext(ctx, req, nil)
		return err
	}
}

func orderedConsumer(stream string) func(context.Context, *authztest.Client) error {
	return func(ctx context.Context, c *authztest.Client) error {
		_, err := c.JS.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
		if err != nil {
			return err
		}
		return nil
	}
}

func bindKV(bucket string) func(context.Context, *authztest.Client) error {
	return func(ctx context.Context, c *authztest.Client) error {
		_, err := c.JS.KeyValue(ctx, bucket)
		return err
	}
}
