package authz_test

import (
	"context"
	"errors"
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

// apiGrants shows the api user's claims on the server of
// TestShippedPermissions, whose aggregator created the topology and put
// the key s1 into rtc_sessions: the api reads RTC_EVENTS, RTC_HISTORY
// (a session_ended copied there by the server) and rtc_sessions, and may
// do nothing else.
func apiGrants(ctx context.Context, t *testing.T, srv *authztest.Server, agg *authztest.Client, shown map[string]bool) {
	t.Helper()
	api := srv.Connect(t, authz.UserAPI)
	ended := events.SessionPrefix + ".a.r.c." + string(events.KindSessionEnded)
	if _, err := agg.JS.Publish(ctx, ended, []byte("ended")); err != nil {
		t.Fatal(err)
	}
	for _, stream := range []string{events.StreamEvents, topology.StreamHistory} {
		oc, err := api.JS.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
		if err != nil {
			t.Fatalf("api: ordered consumer on %s: %v", stream, err)
		}
		got := false
		for !got {
			m, err := oc.Next(jetstream.FetchMaxWait(10 * time.Second))
			if err != nil {
				t.Fatalf("api: read %s: %v", stream, err)
			}
			got = string(m.Data()) == "ended"
			if stream == topology.StreamHistory && m.Subject() != topology.HistoryPrefix+".r.a.c" {
				t.Errorf("api: RTC_HISTORY subject %s", m.Subject())
			}
		}
	}
	// The subscriber and the operator read the history index too (rtcctl
	// history).
	for _, user := range []string{authz.UserSubscriber, authz.UserOperator} {
		c := srv.Connect(t, user)
		oc, err := c.JS.OrderedConsumer(ctx, topology.StreamHistory, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
		if err != nil {
			t.Fatalf("%s: ordered consumer on %s: %v", user, topology.StreamHistory, err)
		}
		if m, err := oc.Next(jetstream.FetchMaxWait(10 * time.Second)); err != nil || string(m.Data()) != "ended" {
			t.Fatalf("%s: read %s: %v", user, topology.StreamHistory, err)
		}
		for _, v := range c.Violations() {
			if !strings.Contains(v, "$JS.API.CONSUMER.DELETE.") {
				t.Fatalf("%s: permission violation on an allowed path: %s", user, v)
			}
		}
	}
	kv, err := api.JS.KeyValue(ctx, events.BucketSessions)
	if err != nil {
		t.Fatalf("api: bind rtc_sessions: %v", err)
	}
	if e, err := kv.Get(ctx, "s1"); err != nil || string(e.Value()) != "live" {
		t.Fatalf("api: get a session: %v", err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatalf("api: watch rtc_sessions: %v", err)
	}
	for e := range w.Updates() {
		if e == nil {
			break
		}
	}
	for _, v := range api.Violations() {
		if !strings.Contains(v, "$JS.API.CONSUMER.DELETE.") {
			t.Fatalf("api: permission violation on an allowed path: %s", v)
		}
	}
	shown["api.read"] = true

	refusals := []struct {
		claim, what, subject string
		do                   func(ctx context.Context, c *authztest.Client) error
	}{
		{"api.no-publish", "publish a raw input", rawevent.RawPrefix + ".", jsPublish(rawevent.RawPrefix + ".x")},
		{"api.no-publish", "publish a session event", events.SessionPrefix + ".", jsPublish(ended)},
		{"api.no-publish", "write rtc_sessions", "$KV.rtc_sessions.", jsPublish("$KV.rtc_sessions.s1")},
		{"api.no-publish", "schedule a timer", rawevent.TimerPrefix + ".", jsPublish(rawevent.TimerPrefix + ".x")},
		{"api.no-destroy", "delete RTC_HISTORY", "$JS.API.STREAM.DELETE.RTC_HISTORY", deleteStream(topology.StreamHistory)},
		{"api.no-destroy", "purge RTC_EVENTS", "$JS.API.STREAM.PURGE.RTC_EVENTS", purgeStream(events.StreamEvents)},
		{"api.no-destroy", "delete a message from RTC_HISTORY", "$JS.API.STREAM.MSG.DELETE.RTC_HISTORY", deleteMsg(topology.StreamHistory)},
		{"api.no-read", "read raw inputs", "$JS.API.CONSUMER.CREATE.RTC_RAW", orderedConsumer(rawevent.StreamRaw)},
		{"api.no-read", "read RTC_DLQ", "$JS.API.CONSUMER.CREATE.RTC_DLQ", orderedConsumer(rawevent.StreamDLQ)},
		{"api.no-read", "read rtc_rooms", "$JS.API.STREAM.INFO.KV_rtc_rooms", bindKV(rawevent.BucketRooms)},
		{"api.no-read", "watch rtc_workers", "$JS.API.STREAM.INFO.KV_rtc_workers", bindKV(rawevent.BucketWorkers)},
		{"api.no-read", "subscribe to the live re-publish", events.LivePrefix + ".>", subscribe(events.LivePrefix + ".>")},
		{"api.no-read", "snoop on the subscriber's inbox", "_INBOX.>", subscribe("_INBOX.>")},
	}
	for _, r := range refusals {
		t.Run("api/"+r.what, func(t *testing.T) {
			c := srv.Connect(t, authz.UserAPI)
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- r.do(ctx, c) }()
			v, reported := c.WaitViolation(r.subject, 5*time.Second)
			cancel()
			err := <-done
			if !reported {
				t.Fatalf("api may %s: no permission violation for %s (call returned %v)", r.what, r.subject, err)
			}
			if !errors.Is(err, nats.ErrPermissionViolation) && err == nil && !isSubscription(r.subject) {
				t.Errorf("the call returned no error despite %s", v)
			}
			shown[r.claim] = true
		})
	}
}
