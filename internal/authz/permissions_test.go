package authz_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/authz"
	"github.com/rtcsessions/rtc-sessions/internal/authz/authztest"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
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
	op := srv.Connect(t, authz.UserOperator)
	// Every claim of docs/nats.md (authz.Claims) must be shown below.
	shown := map[string]bool{}
	defer checkClaimsShown(t, shown)

	// What each may do. The aggregator creates the whole topology.
	h, err := topology.Ensure(ctx, agg.JS, testTopology(), topology.ModeCreate)
	if err != nil {
		t.Fatalf("aggregator: ensure topology: %v (violations %q)", err, agg.Violations())
	}
	if _, err := topology.Ensure(ctx, agg.JS, testTopology(), topology.ModeVerify); err != nil {
		t.Fatalf("aggregator: verify topology: %v", err)
	}
	shown["aggregator.topology"] = true
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
	shown["aggregator.kv"] = true
	if _, err := agg.JS.Publish(ctx, events.SessionPrefix+".a.r.c.session_started", []byte("e")); err != nil {
		t.Fatalf("aggregator: publish a session event: %v", err)
	}
	dead, err := agg.JS.Publish(ctx, rawevent.DLQPrefix+".0", []byte("dead input"))
	if err != nil {
		t.Fatalf("aggregator: publish to the DLQ: %v", err)
	}
	timer := nats.NewMsg(rawevent.TimerPrefix + "." + events.Token(room))
	timer.Header.Set(jetstream.ScheduleHeader, "@at "+time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	timer.Header.Set(jetstream.ScheduleTargetHeader, rawevent.FiredPrefix+"."+events.Token(room))
	timer.Header.Set(jetstream.MsgTTLHeader, "never")
	if _, err := agg.JS.PublishMsg(ctx, timer); err != nil {
		t.Fatalf("aggregator: schedule a timer: %v", err)
	}
	shown["aggregator.publish"], shown["aggregator.timers"] = true, true

	// The ingest: EnsureRaw (both modes) and publishing raw inputs.
	if _, err := topology.EnsureRaw(ctx, ing.JS, testTopology(), topology.ModeCreate); err != nil {
		t.Fatalf("ingest: EnsureRaw: %v", err)
	}
	if _, err := topology.EnsureRaw(ctx, ing.JS, testTopology(), topology.ModeVerify); err != nil {
		t.Fatalf("ingest: EnsureRaw verify: %v", err)
	}
	shown["ingest.ensure-raw"] = true
	if _, err := ing.JS.Publish(ctx, rawevent.RawPrefix+"."+events.Token(room), []byte("raw"), jetstream.WithMsgID("m1"),
		jetstream.WithExpectStream(rawevent.StreamRaw)); err != nil {
		t.Fatalf("ingest: publish a raw input: %v", err)
	}
	f, err := ing.JS.PublishAsync(rawevent.RawPrefix+"."+events.Token(room), []byte("raw2"))
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
	shown["ingest.raw"] = true

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
	shown["aggregator.consume"] = true

	// The subscriber reads session events, the live re-publish, sessions
	// and room records; so does the operator (everything the subscriber
	// may, through its own inbox prefix).
	readers := []struct {
		name string
		c    *authztest.Client
	}{{authz.UserSubscriber, sub}, {authz.UserOperator, op}}
	lives := make([]*nats.Subscription, len(readers))
	for i, r := range readers {
		c := r.c
		if lives[i], err = c.NC.SubscribeSync(events.LivePrefix + ".>"); err != nil {
			t.Fatal(err)
		}
		if err := c.NC.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := agg.JS.Publish(ctx, events.SessionPrefix+".a.r.c.member_joined", []byte("e2")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Sessions.Put(ctx, "s1", []byte("live")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Rooms.Put(ctx, "r1", []byte("rec")); err != nil {
		t.Fatal(err)
	}
	for i, r := range readers {
		readAsSubscriber(ctx, t, r.name, r.c, lives[i])
	}
	shown["subscriber.read"], shown["subscriber.kv"], shown["operator.read"] = true, true, true

	// The operator runs what `rtcctl workers` and `rtcctl dlq` do.
	operatorWorkers(ctx, t, op, h)
	operatorRedrive(ctx, t, op, agg, dead.Sequence)
	// The ingest's reconciliation: the rooms of rtc_sessions, and
	// `rtcctl reconcile` (the operator's request, the ingest's answer).
	ingestReconcile(ctx, t, ing, op)
	shown["operator.workers"], shown["operator.dlq"] = true, true
	shown["ingest.reconcile"], shown["operator.reconcile"] = true, true

	for _, c := range []*authztest.Client{agg, ing, sub, op} {
		for _, v := range c.Violations() {
			// An ordered consumer or KV watch deletes its ephemeral consumer
			// when it stops or resets, which the subscriber and the operator
			// may not do (they could delete others' durable consumers); the
			// client ignores the refusal and the server reaps the consumer
			// when inactive.
			if (c == sub || c == op) && (strings.Contains(v, "$JS.API.CONSUMER.DELETE.KV_rtc_sessions.") ||
				strings.Contains(v, "$JS.API.CONSUMER.DELETE.RTC_EVENTS.")) {
				continue
			}
			t.Fatalf("permission violation on an allowed path: %s", v)
		}
	}

	// What each must not do.
	refusals := []struct {
		claim      string // the id of the authz.Claims entry the case shows
		user, what string
		subject    string // the subject the server must name
		do         func(ctx context.Context, c *authztest.Client) error
	}{
		{"ingest.no-read", authz.UserIngest, "read session events (core subscription)", events.SessionPrefix + ".>", subscribe(events.SessionPrefix + ".>")},
		{"ingest.no-read", authz.UserIngest, "read the live re-publish", events.LivePrefix + ".>", subscribe(events.LivePrefix + ".>")},
		{"ingest.no-read", authz.UserIngest, "look up RTC_EVENTS", "$JS.API.STREAM.INFO.RTC_EVENTS", func(ctx context.Context, c *authztest.Client) error {
			_, err := c.JS.Stream(ctx, events.StreamEvents)
			return err
		}},
		{"ingest.no-read", authz.UserIngest, "consume RTC_EVENTS", "$JS.API.CONSUMER.CREATE.RTC_EVENTS", orderedConsumer(events.StreamEvents)},
		{"ingest.no-write", authz.UserIngest, "write rtc_sessions", "$KV.rtc_sessions.", jsPublish("$KV.rtc_sessions.s1")},
		{"ingest.no-read", authz.UserIngest, "read rtc_rooms", "$JS.API.STREAM.INFO.KV_rtc_rooms", bindKV(rawevent.BucketRooms)},
		{"ingest.no-snoop", authz.UserIngest, "ask itself to reconcile", authz.ReconcileSubject, request(authz.ReconcileSubject)},
		{"subscriber.no-snoop", authz.UserSubscriber, "ask the ingest to reconcile", authz.ReconcileSubject, request(authz.ReconcileSubject)},
		{"subscriber.no-snoop", authz.UserSubscriber, "serve reconcile requests", authz.ReconcileSubject, serve(authz.ReconcileSubject)},
		{"operator.no-snoop", authz.UserOperator, "serve reconcile requests", authz.ReconcileSubject, serve(authz.ReconcileSubject)},
		{"ingest.no-destroy", authz.UserIngest, "delete RTC_RAW", "$JS.API.STREAM.DELETE.RTC_RAW", deleteStream(rawevent.StreamRaw)},
		{"ingest.no-destroy", authz.UserIngest, "purge RTC_RAW", "$JS.API.STREAM.PURGE.RTC_RAW", purgeStream(rawevent.StreamRaw)},
		{"ingest.no-destroy", authz.UserIngest, "update RTC_RAW's settings", "$JS.API.STREAM.UPDATE.RTC_RAW", func(ctx context.Context, c *authztest.Client) error {
			_, err := c.JS.UpdateStream(ctx, topology.RawStream(testTopology()))
			return err
		}},
		{"ingest.no-write", authz.UserIngest, "write rtc_rooms", "$KV.rtc_rooms.", jsPublish("$KV.rtc_rooms." + events.Token(room))},
		{"ingest.no-write", authz.UserIngest, "forge a session event", events.SessionPrefix + ".", jsPublish(events.SessionPrefix + ".a.r.c.session_ended")},
		{"ingest.no-timers", authz.UserIngest, "schedule a timer", rawevent.TimerPrefix + ".", jsPublish(rawevent.TimerPrefix + ".x")},
		{"ingest.no-timers", authz.UserIngest, "forge a fired timer", rawevent.FiredPrefix + ".", jsPublish(rawevent.FiredPrefix + ".x")},
		{"ingest.no-read", authz.UserIngest, "consume RTC_RAW", "$JS.API.CONSUMER.CREATE.RTC_RAW", orderedConsumer(rawevent.StreamRaw)},
		{"ingest.no-snoop", authz.UserIngest, "snoop on the aggregator's inbox", "_INBOX_aggregator.>", subscribe("_INBOX_aggregator.>")},

		{"subscriber.no-publish", authz.UserSubscriber, "publish a raw input", rawevent.RawPrefix + ".", jsPublish(rawevent.RawPrefix + ".x")},
		{"subscriber.no-publish", authz.UserSubscriber, "publish a session event", events.SessionPrefix + ".", jsPublish(events.SessionPrefix + ".a.r.c.session_ended")},
		{"subscriber.no-publish", authz.UserSubscriber, "schedule a timer", rawevent.TimerPrefix + ".", jsPublish(rawevent.TimerPrefix + ".x")},
		{"subscriber.no-publish", authz.UserSubscriber, "write rtc_sessions", "$KV.rtc_sessions.", jsPublish("$KV.rtc_sessions.s1")},
		{"subscriber.no-destroy", authz.UserSubscriber, "delete RTC_EVENTS", "$JS.API.STREAM.DELETE.RTC_EVENTS", deleteStream(events.StreamEvents)},
		{"subscriber.no-destroy", authz.UserSubscriber, "delete RTC_RAW", "$JS.API.STREAM.DELETE.RTC_RAW", deleteStream(rawevent.StreamRaw)},
		{"subscriber.no-destroy", authz.UserSubscriber, "delete the rtc_sessions bucket", "$JS.API.STREAM.DELETE.KV_rtc_sessions", deleteStream("KV_" + events.BucketSessions)},
		{"subscriber.no-destroy", authz.UserSubscriber, "purge RTC_EVENTS", "$JS.API.STREAM.PURGE.RTC_EVENTS", purgeStream(events.StreamEvents)},
		{"subscriber.no-destroy", authz.UserSubscriber, "delete a consumer of RTC_RAW", "$JS.API.CONSUMER.DELETE.RTC_RAW", func(ctx context.Context, c *authztest.Client) error {
			return c.JS.DeleteConsumer(ctx, rawevent.StreamRaw, topology.ConsumerName(0))
		}},
		{"subscriber.no-read", authz.UserSubscriber, "read raw inputs", "$JS.API.CONSUMER.CREATE.RTC_RAW", orderedConsumer(rawevent.StreamRaw)},
		{"subscriber.no-snoop", authz.UserSubscriber, "snoop on the ingest's inbox", "_INBOX_ingest.>", subscribe("_INBOX_ingest.>")},
		{"subscriber.no-snoop", authz.UserSubscriber, "snoop on the aggregator's inbox", "_INBOX_aggregator.>", subscribe("_INBOX_aggregator.>")},
		{"subscriber.no-snoop", authz.UserSubscriber, "snoop on the operator's inbox", "_INBOX_operator.>", subscribe("_INBOX_operator.>")},
		{"subscriber.no-read", authz.UserSubscriber, "read RTC_DLQ", "$JS.API.STREAM.INFO.RTC_DLQ", func(ctx context.Context, c *authztest.Client) error {
			_, err := c.JS.Stream(ctx, rawevent.StreamDLQ)
			return err
		}},
		{"subscriber.no-destroy", authz.UserSubscriber, "delete a message from RTC_DLQ", "$JS.API.STREAM.MSG.DELETE.RTC_DLQ", deleteMsg(rawevent.StreamDLQ)},
		{"subscriber.no-read", authz.UserSubscriber, "watch rtc_workers", "$JS.API.STREAM.INFO.KV_rtc_workers", bindKV(rawevent.BucketWorkers)},
		// What the grants for other clients (docs/events.md) do not open:
		// deleting consumers, changing or creating streams, the unnamed
		// consumer create on the streams it may not read.
		{"subscriber.no-destroy", authz.UserSubscriber, "delete a consumer of RTC_EVENTS", "$JS.API.CONSUMER.DELETE.RTC_EVENTS", func(ctx context.Context, c *authztest.Client) error {
			return c.JS.DeleteConsumer(ctx, events.StreamEvents, "someone-elses")
		}},
		{"subscriber.no-destroy", authz.UserSubscriber, "delete a consumer of rtc_sessions", "$JS.API.CONSUMER.DELETE.KV_rtc_sessions", func(ctx context.Context, c *authztest.Client) error {
			return c.JS.DeleteConsumer(ctx, "KV_"+events.BucketSessions, "someone-elses")
		}},
		{"subscriber.no-publish", authz.UserSubscriber, "change RTC_EVENTS' configuration", "$JS.API.STREAM.UPDATE.RTC_EVENTS", request("$JS.API.STREAM.UPDATE.RTC_EVENTS")},
		{"subscriber.no-publish", authz.UserSubscriber, "create a stream", "$JS.API.STREAM.CREATE.MINE", request("$JS.API.STREAM.CREATE.MINE")},
		{"subscriber.no-read", authz.UserSubscriber, "read raw inputs through an unnamed consumer", "$JS.API.CONSUMER.CREATE.RTC_RAW", request("$JS.API.CONSUMER.CREATE.RTC_RAW")},
		{"subscriber.no-read", authz.UserSubscriber, "list the streams' configurations", "$JS.API.STREAM.LIST", request("$JS.API.STREAM.LIST")},

		// The operator: rtcctl's reads and re-drives, nothing that
		// destroys, rewrites or forges.
		{"operator.no-destroy", authz.UserOperator, "delete RTC_DLQ", "$JS.API.STREAM.DELETE.RTC_DLQ", deleteStream(rawevent.StreamDLQ)},
		{"operator.no-destroy", authz.UserOperator, "delete RTC_RAW", "$JS.API.STREAM.DELETE.RTC_RAW", deleteStream(rawevent.StreamRaw)},
		{"operator.no-destroy", authz.UserOperator, "delete the rtc_sessions bucket", "$JS.API.STREAM.DELETE.KV_rtc_sessions", deleteStream("KV_" + events.BucketSessions)},
		{"operator.no-destroy", authz.UserOperator, "purge RTC_DLQ", "$JS.API.STREAM.PURGE.RTC_DLQ", purgeStream(rawevent.StreamDLQ)},
		{"operator.no-destroy", authz.UserOperator, "purge RTC_RAW", "$JS.API.STREAM.PURGE.RTC_RAW", purgeStream(rawevent.StreamRaw)},
		{"operator.no-destroy", authz.UserOperator, "purge the rtc_rooms bucket", "$JS.API.STREAM.PURGE.KV_rtc_rooms", purgeStream("KV_" + rawevent.BucketRooms)},
		{"operator.no-destroy", authz.UserOperator, "delete a message from RTC_RAW", "$JS.API.STREAM.MSG.DELETE.RTC_RAW", deleteMsg(rawevent.StreamRaw)},
		{"operator.no-destroy", authz.UserOperator, "delete a message from RTC_EVENTS", "$JS.API.STREAM.MSG.DELETE.RTC_EVENTS", deleteMsg(events.StreamEvents)},
		{"operator.no-destroy", authz.UserOperator, "erase an entry of rtc_sessions", "$JS.API.STREAM.MSG.DELETE.KV_rtc_sessions", deleteMsg("KV_" + events.BucketSessions)},
		{"operator.no-destroy", authz.UserOperator, "delete a partition consumer", "$JS.API.CONSUMER.DELETE.RTC_RAW", func(ctx context.Context, c *authztest.Client) error {
			return c.JS.DeleteConsumer(ctx, rawevent.StreamRaw, topology.ConsumerName(0))
		}},
		{"operator.no-consume", authz.UserOperator, "pull from a partition consumer", "$JS.API.CONSUMER.MSG.NEXT.RTC_RAW", func(ctx context.Context, c *authztest.Client) error {
			_, err := c.NC.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT.RTC_RAW."+topology.ConsumerName(0), []byte(`{"batch":1,"no_wait":true}`))
			return err
		}},
		{"operator.no-consume", authz.UserOperator, "read raw inputs", "$JS.API.CONSUMER.CREATE.RTC_RAW", orderedConsumer(rawevent.StreamRaw)},
		{"operator.no-consume", authz.UserOperator, "update RTC_RAW's settings", "$JS.API.STREAM.UPDATE.RTC_RAW", func(ctx context.Context, c *authztest.Client) error {
			_, err := c.JS.UpdateStream(ctx, topology.RawStream(testTopology()))
			return err
		}},
		{"operator.no-write", authz.UserOperator, "write rtc_rooms", "$KV.rtc_rooms.", jsPublish("$KV.rtc_rooms." + events.Token(room))},
		{"operator.no-write", authz.UserOperator, "write rtc_sessions", "$KV.rtc_sessions.", jsPublish("$KV.rtc_sessions.s1")},
		{"operator.no-write", authz.UserOperator, "write rtc_workers", "$KV.rtc_workers.", jsPublish("$KV.rtc_workers.agg-forged")},
		{"operator.no-write", authz.UserOperator, "publish a session event", events.SessionPrefix + ".", jsPublish(events.SessionPrefix + ".a.r.c.session_ended")},
		{"operator.no-write", authz.UserOperator, "publish a dead letter", rawevent.DLQPrefix + ".", jsPublish(rawevent.DLQPrefix + ".0")},
		{"operator.no-timers", authz.UserOperator, "schedule a timer", rawevent.TimerPrefix + ".", jsPublish(rawevent.TimerPrefix + ".x")},
		{"operator.no-timers", authz.UserOperator, "forge a fired timer", rawevent.FiredPrefix + ".", jsPublish(rawevent.FiredPrefix + ".x")},
		{"operator.no-destroy", authz.UserOperator, "delete a message from RTC_TIMERS", "$JS.API.STREAM.MSG.DELETE.RTC_TIMERS", deleteMsg(rawevent.StreamTimers)},
		{"operator.no-destroy", authz.UserOperator, "purge RTC_TIMERS", "$JS.API.STREAM.PURGE.RTC_TIMERS", purgeStream(rawevent.StreamTimers)},
		{"operator.no-snoop", authz.UserOperator, "snoop on the aggregator's inbox", "_INBOX_aggregator.>", subscribe("_INBOX_aggregator.>")},
		{"operator.no-snoop", authz.UserOperator, "snoop on the ingest's inbox", "_INBOX_ingest.>", subscribe("_INBOX_ingest.>")},
		{"operator.no-snoop", authz.UserOperator, "snoop on the subscriber's inbox", "_INBOX.>", subscribe("_INBOX.>")},

		{"aggregator.no-destroy", authz.UserAggregator, "delete RTC_RAW", "$JS.API.STREAM.DELETE.RTC_RAW", deleteStream(rawevent.StreamRaw)},
		{"aggregator.no-destroy", authz.UserAggregator, "delete RTC_EVENTS", "$JS.API.STREAM.DELETE.RTC_EVENTS", deleteStream(events.StreamEvents)},
		{"aggregator.no-destroy", authz.UserAggregator, "delete the rtc_rooms bucket", "$JS.API.STREAM.DELETE.KV_rtc_rooms", deleteStream("KV_" + rawevent.BucketRooms)},
		{"aggregator.no-destroy", authz.UserAggregator, "purge RTC_EVENTS", "$JS.API.STREAM.PURGE.RTC_EVENTS", purgeStream(events.StreamEvents)},
		{"aggregator.no-destroy", authz.UserAggregator, "delete a partition consumer", "$JS.API.CONSUMER.DELETE.RTC_RAW", func(ctx context.Context, c *authztest.Client) error {
			return c.JS.DeleteConsumer(ctx, rawevent.StreamRaw, topology.ConsumerName(0))
		}},
		{"aggregator.no-raw", authz.UserAggregator, "publish a raw input", rawevent.RawPrefix + ".", jsPublish(rawevent.RawPrefix + ".x")},
		{"aggregator.no-raw", authz.UserAggregator, "forge a fired timer", rawevent.FiredPrefix + ".", jsPublish(rawevent.FiredPrefix + ".x")},
		{"aggregator.no-destroy", authz.UserAggregator, "purge RTC_TIMERS", "$JS.API.STREAM.PURGE.RTC_TIMERS", purgeStream(rawevent.StreamTimers)},
		{"aggregator.no-snoop", authz.UserAggregator, "snoop on the ingest's inbox", "_INBOX_ingest.>", subscribe("_INBOX_ingest.>")},
		{"aggregator.no-destroy", authz.UserAggregator, "delete a message from RTC_DLQ", "$JS.API.STREAM.MSG.DELETE.RTC_DLQ", deleteMsg(rawevent.StreamDLQ)},
		{"ingest.no-destroy", authz.UserIngest, "delete a message from RTC_RAW", "$JS.API.STREAM.MSG.DELETE.RTC_RAW", deleteMsg(rawevent.StreamRaw)},
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
			shown[r.claim] = true
		})
	}
	headerRefusals(ctx, t, srv, agg, shown)
	ingestNoRelay(ctx, t, srv, agg, shown)
	apiGrants(ctx, t, srv, agg, shown)
	// The refusals changed nothing.
	for _, s := range []string{rawevent.StreamRaw, events.StreamEvents, rawevent.StreamDLQ, "KV_" + rawevent.BucketRooms, "KV_" + events.BucketSessions} {
		st, err := agg.JS.Stream(ctx, s)
		if err != nil {
			t.Fatalf("stream %s after the refusals: %v", s, err)
		}
		if s == rawevent.StreamRaw && st.CachedInfo().State.Msgs == 0 {
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

// request sends a core NATS request: a refused one is never answered, so
// the call ends with the context (cancelled once the violation is seen).
func request(subject string) func(context.Context, *authztest.Client) error {
	return func(ctx context.Context, c *authztest.Client) error {
		_, err := c.NC.RequestWithContext(ctx, subject, []byte("forged"))
		return err
	}
}

// serve subscribes to a plain subject and returns the asynchronous
// permission error the server sends for a refused subscription.
func serve(subject string) func(context.Context, *authztest.Client) error {
	return func(ctx context.Context, c *authztest.Client) error {
		sub, err := c.NC.QueueSubscribeSync(subject, "rtc-ingest")
		if err != nil {
			return err
		}
		defer func() { _ = sub.Unsubscribe() }()
		for {
			if err := c.NC.LastError(); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}

// ingestReconcile runs what the ingest's reconciliation does on NATS: list
// the subjects of rtc_sessions' stream (s1 was put by the aggregator), and
// answer an operator's `rtcctl reconcile` request in the queue group.
func ingestReconcile(ctx context.Context, t *testing.T, ing, op *authztest.Client) {
	t.Helper()
	s, err := ing.JS.Stream(ctx, "KV_"+events.BucketSessions)
	if err != nil {
		t.Fatalf("ingest: look up rtc_sessions' stream: %v", err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("$KV."+events.BucketSessions+".>"))
	if err != nil {
		t.Fatalf("ingest: list rtc_sessions' subjects: %v", err)
	}
	if _, ok := info.State.Subjects["$KV."+events.BucketSessions+".s1"]; !ok {
		t.Fatalf("ingest: rtc_sessions subjects %v, want s1", info.State.Subjects)
	}
	sub, err := ing.NC.QueueSubscribe(authz.ReconcileSubject, "rtc-ingest", func(m *nats.Msg) { _ = m.Respond([]byte("reconciled")) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := ing.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	reply, err := op.NC.RequestWithContext(ctx, authz.ReconcileSubject, []byte(`{"room_id":"!r:example.org"}`))
	if err != nil || string(reply.Data) != "reconciled" {
		t.Fatalf("operator: reconcile request: %v %v (violations %q %q)", reply, err, op.Violations(), ing.Violations())
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

// readAsSubscriber reads what the subscriber may read: the live re-publish
// (live, subscribed before the aggregator published "e2"), RTC_EVENTS (its
// first event is "e") through an ordered consumer, the session s1 and the
// room record r1 by key, and rtc_sessions through a watch.
func readAsSubscriber(ctx context.Context, t *testing.T, user string, c *authztest.Client, live *nats.Subscription) {
	t.Helper()
	if m, err := live.NextMsg(10 * time.Second); err != nil || string(m.Data) != "e2" {
		t.Fatalf("%s: rtc.live.>: %v", user, err)
	}
	oc, err := c.JS.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SessionPrefix + ".>"}, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		t.Fatalf("%s: ordered consumer on RTC_EVENTS: %v", user, err)
	}
	if m, err := oc.Next(jetstream.FetchMaxWait(10 * time.Second)); err != nil || string(m.Data()) != "e" {
		t.Fatalf("%s: read RTC_EVENTS: %v", user, err)
	}
	skv, err := c.JS.KeyValue(ctx, events.BucketSessions)
	if err != nil {
		t.Fatalf("%s: bind rtc_sessions: %v", user, err)
	}
	if e, err := skv.Get(ctx, "s1"); err != nil || string(e.Value()) != "live" {
		t.Fatalf("%s: get a session: %v", user, err)
	}
	w, err := skv.WatchAll(ctx)
	if err != nil {
		t.Fatalf("%s: watch rtc_sessions: %v", user, err)
	}
	seen := false
	for e := range w.Updates() {
		if e == nil { // the initial values are all delivered
			break
		}
		seen = seen || (e.Key() == "s1" && e.Operation() == jetstream.KeyValuePut)
	}
	if !seen {
		t.Fatalf("%s: the watch did not deliver s1", user)
	}
	if user == authz.UserSubscriber {
		// Deleting its ephemeral consumer is not granted: the refusal is
		// harmless (the server reaps the consumer) but the client waits
		// 5 s for the answer, so the operator's watch is left to end with
		// its connection, as rtcctl does.
		_ = w.Stop()
	}
	asOtherClients(ctx, t, user, c)
	rkv, err := c.JS.KeyValue(ctx, rawevent.BucketRooms)
	if err != nil {
		t.Fatalf("%s: bind rtc_rooms: %v", user, err)
	}
	if e, err := rkv.Get(ctx, "r1"); err != nil || string(e.Value()) != "rec" {
		t.Fatalf("%s: get a room record: %v", user, err)
	}
}

// asOtherClients asks what NATS clients other than nats.go ask for before
// or while they read RTC_EVENTS and watch rtc_sessions (nats.js, nats.py, the
// nats CLI): the account info, the stream names, an ephemeral consumer
// through the consumer-create subject without a name, the info of a KV
// watch's consumer. test/nodeconsumer runs nats.js itself.
func asOtherClients(ctx context.Context, t *testing.T, user string, c *authztest.Client) {
	t.Helper()
	ask := func(subject, body string) map[string]any {
		t.Helper()
		m, err := c.NC.RequestWithContext(ctx, subject, []byte(body))
		if err != nil {
			t.Fatalf("%s: %s: %v", user, subject, err)
		}
		var resp map[string]any
		if err := json.Unmarshal(m.Data, &resp); err != nil || resp["error"] != nil {
			t.Fatalf("%s: %s: %s (%v)", user, subject, m.Data, err)
		}
		return resp
	}
	ask("$JS.API.INFO", "")
	if names := ask("$JS.API.STREAM.NAMES", `{"subject":"rtc.session.>"}`); fmt.Sprint(names["streams"]) != "["+events.StreamEvents+"]" {
		t.Fatalf("%s: streams of rtc.session.>: %v", user, names["streams"])
	}
	created := ask("$JS.API.CONSUMER.CREATE."+events.StreamEvents, `{"stream_name":"RTC_EVENTS","config":{"deliver_policy":"all","ack_policy":"none","mem_storage":true,"inactive_threshold":5000000000,"num_replicas":1}}`)
	name, _ := created["name"].(string)
	if name == "" {
		t.Fatalf("%s: unnamed consumer create: %v", user, created)
	}
	kvc := ask("$JS.API.CONSUMER.CREATE.KV_"+events.BucketSessions, `{"stream_name":"KV_rtc_sessions","config":{"deliver_policy":"last_per_subject","filter_subject":"$KV.rtc_sessions.>","ack_policy":"none","mem_storage":true,"inactive_threshold":5000000000,"num_replicas":1}}`)
	kvName, _ := kvc["name"].(string)
	if info := ask("$JS.API.CONSUMER.INFO.KV_"+events.BucketSessions+"."+kvName, ""); info["name"] != kvName {
		t.Fatalf("%s: consumer info on KV_rtc_sessions: %v", user, info)
	}
}

// operatorWorkers does as the operator what `rtcctl workers` does
// (internal/rtcctl Workers): the partition count from RTC_RAW, the state of
// every agg-pNN consumer, and the heartbeats of rtc_workers with a watch.
func operatorWorkers(ctx context.Context, t *testing.T, op *authztest.Client, h *topology.Handles) {
	t.Helper()
	if _, err := h.Workers.Put(ctx, "agg-test-1", []byte(`{"started":"2026-12-01T10:00:00Z"}`)); err != nil {
		t.Fatal(err)
	}
	n, err := topology.ExistingPartitions(ctx, op.JS)
	if err != nil || n != testTopology().Partitions {
		t.Fatalf("operator: partitions of RTC_RAW: %d, %v", n, err)
	}
	for p := 0; p < n; p++ {
		cons, err := op.JS.Consumer(ctx, rawevent.StreamRaw, topology.ConsumerName(p))
		if err != nil {
			t.Fatalf("operator: look up %s: %v", topology.ConsumerName(p), err)
		}
		info, err := cons.Info(ctx)
		if err != nil || info.Name != topology.ConsumerName(p) {
			t.Fatalf("operator: consumer info %s: %v", topology.ConsumerName(p), err)
		}
	}
	kv, err := op.JS.KeyValue(ctx, rawevent.BucketWorkers)
	if err != nil {
		t.Fatalf("operator: bind rtc_workers: %v", err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		t.Fatalf("operator: watch rtc_workers: %v", err)
	}
	// Not stopped, as rtcctl does not: the consumer delete is refused and
	// would wait for its answer; the connection's end ends the watch.
	var keys []string
	for e := range w.Updates() {
		if e == nil {
			break
		}
		keys = append(keys, e.Key())
	}
	if len(keys) != 1 || keys[0] != "agg-test-1" {
		t.Fatalf("operator: rtc_workers watch: got keys %q, want [agg-test-1]", keys)
	}
}

// operatorRedrive does as the operator what `rtcctl dlq ls`, `dlq show` and
// `dlq redrive` do (internal/rtcctl readRange, GetDLQEntry, Redrive) with
// the dead letter at seq, then checks as the aggregator that the input is
// in RTC_RAW and the entry gone from RTC_DLQ.
func operatorRedrive(ctx context.Context, t *testing.T, op, agg *authztest.Client, seq uint64) {
	t.Helper()
	dlq, err := op.JS.Stream(ctx, rawevent.StreamDLQ)
	if err != nil {
		t.Fatalf("operator: look up RTC_DLQ: %v", err)
	}
	cons, err := op.JS.CreateConsumer(ctx, rawevent.StreamDLQ, jetstream.ConsumerConfig{FilterSubject: rawevent.DLQPrefix + ".>",
		AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: 30 * time.Second,
		MemoryStorage: true, Replicas: 1})
	if err != nil {
		t.Fatalf("operator: consumer on RTC_DLQ (dlq ls): %v", err)
	}
	batch, err := cons.Fetch(10, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatalf("operator: read RTC_DLQ: %v", err)
	}
	listed := false
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		listed = listed || (md.Sequence.Stream == seq && string(m.Data()) == "dead input")
	}
	if !listed {
		t.Fatalf("operator: dlq ls did not list RTC_DLQ #%d (%v)", seq, batch.Error())
	}
	entry, err := dlq.GetMsg(ctx, seq)
	if err != nil || string(entry.Data) != "dead input" {
		t.Fatalf("operator: dlq show %d: %v", seq, err)
	}
	re := nats.NewMsg(rawevent.RawPrefix + "." + events.Token("!redriven:example.org"))
	re.Data = entry.Data
	re.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("rtcctl-redrive-%d", seq))
	ack, err := op.JS.PublishMsg(ctx, re, jetstream.WithExpectStream(rawevent.StreamRaw))
	if err != nil {
		t.Fatalf("operator: re-drive to RTC_RAW: %v", err)
	}
	if err := dlq.DeleteMsg(ctx, seq); err != nil {
		t.Fatalf("operator: delete RTC_DLQ #%d after the re-drive: %v", seq, err)
	}
	raw, err := agg.JS.Stream(ctx, rawevent.StreamRaw)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := raw.GetMsg(ctx, ack.Sequence); err != nil || string(m.Data) != "dead input" {
		t.Fatalf("RTC_RAW #%d after the re-drive: %v", ack.Sequence, err)
	}
	aggDLQ, err := agg.JS.Stream(ctx, rawevent.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aggDLQ.GetMsg(ctx, seq); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("RTC_DLQ #%d after the re-drive: want it deleted, got %v", seq, err)
	}
}

// deleteMsg asks to delete the first message of a stream, without looking
// the stream up first (the user may not be allowed to).
func deleteMsg(stream string) func(context.Context, *authztest.Client) error {
	return func(ctx context.Context, c *authztest.Client) error {
		_, err := c.NC.RequestWithContext(ctx, "$JS.API.STREAM.MSG.DELETE."+stream, []byte(`{"seq":1}`))
		return err
	}
}

// checkClaimsShown fails the test for every claim of authz.Claims that no
// check showed, so docs/nats.md says nothing the tests do not check.
func checkClaimsShown(t *testing.T, shown map[string]bool) {
	t.Helper()
	known := map[string]bool{}
	for _, c := range authz.Claims() {
		known[c.ID] = true
		if !shown[c.ID] && !t.Failed() {
			t.Errorf("claim %s (%s %s: %s) was not shown by any check", c.ID, c.User, map[bool]string{true: "may", false: "may not"}[c.May], c.What)
		}
	}
	for id := range shown {
		if !known[id] {
			t.Errorf("a check names claim %q, which authz.Claims does not have", id)
		}
	}
}

// headerRefusals: what a user allowed to publish into a stream could do
// with headers alone (roll the stream up, make it schedule or expire
// messages) is refused by the stream's settings, not by permissions: the
// publish fails and the stream keeps what it held.
func headerRefusals(ctx context.Context, t *testing.T, srv *authztest.Server, agg *authztest.Client, shown map[string]bool) {
	t.Helper()
	raw := rawevent.RawPrefix + "." + events.Token("!headers:example.org")
	session := events.SessionPrefix + ".a.r.c.member_joined"
	for _, tc := range []struct {
		claim, user   string
		stream, subj  string
		header, value string
		target        string
	}{
		{"ingest.no-headers", authz.UserIngest, rawevent.StreamRaw, raw, "Nats-Rollup", "all", ""},
		{"ingest.no-headers", authz.UserIngest, rawevent.StreamRaw, raw, jetstream.ScheduleHeader, "@every 1s", raw},
		{"ingest.no-headers", authz.UserIngest, rawevent.StreamRaw, raw, jetstream.MsgTTLHeader, "1s", ""},
		{"operator.no-headers", authz.UserOperator, rawevent.StreamRaw, raw, "Nats-Rollup", "all", ""},
		{"operator.no-headers", authz.UserOperator, rawevent.StreamRaw, raw, jetstream.ScheduleHeader, "@every 1s", raw},
		{"operator.no-headers", authz.UserOperator, rawevent.StreamRaw, raw, jetstream.MsgTTLHeader, "1s", ""},
		{"aggregator.no-headers", authz.UserAggregator, events.StreamEvents, session, "Nats-Rollup", "all", ""},
	} {
		t.Run(tc.user+"/"+tc.header+" "+tc.value, func(t *testing.T) {
			st, err := agg.JS.Stream(ctx, tc.stream)
			if err != nil {
				t.Fatal(err)
			}
			before := st.CachedInfo().State.Msgs
			if before == 0 {
				t.Fatalf("%s is empty: nothing to lose", tc.stream)
			}
			c := srv.Connect(t, tc.user)
			m := nats.NewMsg(tc.subj)
			m.Data = []byte("hostile")
			m.Header.Set(tc.header, tc.value)
			if tc.target != "" {
				m.Header.Set(jetstream.ScheduleTargetHeader, tc.target)
			}
			if _, err := c.JS.PublishMsg(ctx, m); err == nil {
				t.Fatalf("%s stored a message with %s: %s", tc.stream, tc.header, tc.value)
			}
			info, err := st.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.State.Msgs != before {
				t.Fatalf("%s held %d messages, now %d", tc.stream, before, info.State.Msgs)
			}
			shown[tc.claim] = true
		})
	}
}

// TestIngestCreatesRawFirst: on a fresh server the ingest may create RTC_RAW
// before the aggregator starts (topology.EnsureRaw): the stream sources
// RTC_TIMERS, which does not exist yet and which the ingest may not create.
// Once the aggregator has created the rest, a timer it schedules reaches
// the room's partition, all under the shipped permissions.
func TestIngestCreatesRawFirst(t *testing.T) {
	srv := authztest.Start(t)
	ctx := ctxT(t)
	ing := srv.Connect(t, authz.UserIngest)
	agg := srv.Connect(t, authz.UserAggregator)
	if _, err := topology.EnsureRaw(ctx, ing.JS, testTopology(), topology.ModeCreate); err != nil {
		t.Fatalf("ingest: create RTC_RAW first: %v (violations %q)", err, ing.Violations())
	}
	h, err := topology.Ensure(ctx, agg.JS, testTopology(), topology.ModeCreate)
	if err != nil {
		t.Fatalf("aggregator: ensure after the ingest: %v (violations %q)", err, agg.Violations())
	}
	tok := events.Token("!first:example.org")
	timer := nats.NewMsg(rawevent.TimerPrefix + "." + tok)
	timer.Data = []byte("fired")
	timer.Header.Set(jetstream.ScheduleHeader, "@at "+time.Now().UTC().Format(time.RFC3339))
	timer.Header.Set(jetstream.ScheduleTargetHeader, rawevent.FiredPrefix+"."+tok)
	timer.Header.Set(jetstream.MsgTTLHeader, "never")
	if _, err := agg.JS.PublishMsg(ctx, timer); err != nil {
		t.Fatalf("aggregator: schedule a timer: %v", err)
	}
	subj := rawevent.PartitionSubject(rawevent.Partition(tok, testTopology().Partitions), tok) + "." + rawevent.TimerPathToken
	for {
		m, err := h.Raw.GetLastMsgForSubject(ctx, subj)
		if err == nil {
			if string(m.Data) != "fired" {
				t.Fatalf("%s: %q", subj, m.Data)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the timer did not reach %s: %v", subj, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range []*authztest.Client{ing, agg} {
		if v := c.Violations(); len(v) > 0 {
			t.Errorf("permission violations: %q", v)
		}
	}
}

// ingestNoRelay: an operator's reconcile request whose reply subject is a
// stream's subject (here RTC_EVENTS') does not make the ingest publish
// there: the server refuses the ingest's answer, and RTC_EVENTS holds what
// it held. With allow_responses the answer went through, past the deny list.
func ingestNoRelay(ctx context.Context, t *testing.T, srv *authztest.Server, agg *authztest.Client, shown map[string]bool) {
	t.Helper()
	t.Run("ingest/answer a reconcile request into RTC_EVENTS", func(t *testing.T) {
		ing, op := srv.Connect(t, authz.UserIngest), srv.Connect(t, authz.UserOperator)
		st, err := agg.JS.Stream(ctx, events.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		before := st.CachedInfo().State.Msgs
		sub, err := ing.NC.QueueSubscribe(authz.ReconcileSubject, "rtc-ingest", func(m *nats.Msg) { _ = m.Respond([]byte(`{"room_id":"!r:example.org"}`)) })
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = sub.Unsubscribe() }()
		if err := ing.NC.Flush(); err != nil {
			t.Fatal(err)
		}
		target := events.SessionPrefix + ".a.r.c.session_ended"
		if err := op.NC.PublishRequest(authz.ReconcileSubject, target, []byte(`{"room_id":"!r:example.org"}`)); err != nil {
			t.Fatal(err)
		}
		if v, ok := ing.WaitViolation(target, 5*time.Second); !ok {
			t.Fatalf("the ingest's answer to %s was not refused (violations %q)", target, ing.Violations())
		} else {
			t.Logf("refused: %s", v)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != before {
			t.Fatalf("RTC_EVENTS held %d messages, now %d", before, info.State.Msgs)
		}
		shown["ingest.no-relay"] = true
	})
}
