package hostile

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"maunium.net/go/mautrix/id"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rtcsessions/rtc-sessions/internal/aggregator"
	"github.com/rtcsessions/rtc-sessions/internal/authz"
	"github.com/rtcsessions/rtc-sessions/internal/authz/authztest"
	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/ingest"
	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/testutil"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// TestHostilePodOnNATS: a compromised pod's NATS credentials against the running pipeline. With
// the shipped NATS users (the aggregator and the ingest each log in as
// their own), a pod that reaches NATS cannot bypass the hs_token: without
// credentials it cannot connect, with the read-only subscriber's it cannot
// publish a forged membership to RTC_RAW or delete a stream, and the
// ingest's cannot forge a session event or read the sessions. Each refusal
// is the server's (a permissions violation naming the subject), nothing
// forged becomes a session event, and the pipeline keeps working.
// (internal/authz tests every permission of every user.)
func TestHostilePodOnNATS(t *testing.T) {
	srv := authztest.Start(t)
	startAggregator(t, srv.ConnConfig(authz.UserAggregator))
	ingestAddr, _ := startIngest(t, srv.NS, func(c *ingest.Config) { c.NATS = srv.ConnConfig(authz.UserIngest) })
	sub := srv.Connect(t, authz.UserSubscriber)
	ing := srv.Connect(t, authz.UserIngest)
	agg := srv.Connect(t, authz.UserAggregator)
	sessions := followSessions(t, sub.JS)

	for _, tc := range []struct {
		name string
		opts []nats.Option
	}{
		{"no credentials", nil},
		{"the ingest's user with a wrong password", []nats.Option{nats.UserInfo(authz.UserIngest, "wrong")}},
		{"an unknown user", []nats.Option{nats.UserInfo("mallory", "x")}},
	} {
		t.Run("connect with "+tc.name, func(t *testing.T) {
			nc, err := nats.Connect(srv.NS.ClientURL(), append(tc.opts, nats.Timeout(5*time.Second), nats.NoReconnect())...)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Errorf("refused with %v, want an authorization violation", err)
			}
		})
	}

	room := id.RoomID("!pod:" + hsA)
	mallory, bob := id.UserID("@mallory:"+hsA), id.UserID("@bob:"+hsA)
	forged, err := ingest.Prepare([]byte(join(t, "$pod-forged", room, mallory, "MAL", time.Now().UnixMilli())),
		room, time.Now().UnixMilli(), hsA, rawevent.SourceAppservice)
	if err != nil {
		t.Fatal(err)
	}
	forgedRaw, err := rawevent.EncodeRaw(&forged)
	if err != nil {
		t.Fatal(err)
	}
	forgedSession, err := eventcodec.EncodeSessionEvent(&events.SessionEvent{V: events.SchemaVersion, ID: "forged", Seq: 1,
		Kind: events.KindMemberJoined, RoomID: room, Application: "m.call", Member: &events.Member{UserID: mallory, DeviceID: "MAL"}})
	if err != nil {
		t.Fatal(err)
	}
	sessionSubject := events.SessionSubject("m.call", "", room, events.KindMemberJoined)

	cases := []struct {
		name    string
		client  *authztest.Client
		subject string // the subject the server's refusal names
		do      func(ctx context.Context, c *authztest.Client) error
	}{
		{"subscriber publishes a forged membership to RTC_RAW", sub, rawevent.RawSubject(room),
			func(ctx context.Context, c *authztest.Client) error {
				_, err := c.JS.Publish(ctx, rawevent.RawSubject(room), forgedRaw, jetstream.WithMsgID(forged.MsgID()))
				return err
			}},
		{"subscriber deletes RTC_RAW", sub, "$JS.API.STREAM.DELETE." + rawevent.StreamRaw,
			func(ctx context.Context, c *authztest.Client) error {
				return c.JS.DeleteStream(ctx, rawevent.StreamRaw)
			}},
		{"subscriber deletes RTC_EVENTS", sub, "$JS.API.STREAM.DELETE." + events.StreamEvents,
			func(ctx context.Context, c *authztest.Client) error {
				return c.JS.DeleteStream(ctx, events.StreamEvents)
			}},
		{"subscriber writes rtc_sessions", sub, "$KV." + events.BucketSessions + ".",
			func(ctx context.Context, c *authztest.Client) error {
				_, err := c.JS.Publish(ctx, "$KV."+events.BucketSessions+".forged", []byte("forged"))
				return err
			}},
		{"ingest forges a session event", ing, sessionSubject,
			func(ctx context.Context, c *authztest.Client) error {
				_, err := c.JS.Publish(ctx, sessionSubject, forgedSession, jetstream.WithMsgID("forged"))
				return err
			}},
		// The ingest may list rtc_sessions' subjects (reconciliation: the
		// rooms with live sessions), not read a session.
		{"ingest reads the live sessions", ing, "$JS.API.DIRECT.GET.KV_" + events.BucketSessions,
			func(ctx context.Context, c *authztest.Client) error {
				kv, err := c.JS.KeyValue(ctx, events.BucketSessions)
				if err != nil {
					return err
				}
				_, err = kv.Get(ctx, "any")
				return err
			}},
		{"ingest deletes RTC_RAW", ing, "$JS.API.STREAM.DELETE." + rawevent.StreamRaw,
			func(ctx context.Context, c *authztest.Client) error {
				return c.JS.DeleteStream(ctx, rawevent.StreamRaw)
			}},
		{"aggregator deletes RTC_EVENTS", agg, "$JS.API.STREAM.DELETE." + events.StreamEvents,
			func(ctx context.Context, c *authztest.Client) error {
				return c.JS.DeleteStream(ctx, events.StreamEvents)
			}},
	}
	// A refused request gets no answer: each waits out its timeout, so they
	// run at once. The timeout cannot make a case pass: the server's
	// violation report is what each case requires.
	results := make([]error, len(cases))
	var wg sync.WaitGroup
	for i, tc := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			results[i] = tc.do(ctx, tc.client)
		}()
	}
	wg.Wait()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if results[i] == nil {
				t.Fatal("the server allowed it")
			}
			if _, ok := tc.client.WaitViolation(tc.subject, waitTimeout); !ok {
				t.Errorf("no permissions violation naming %s (violations %q)", tc.subject, tc.client.Violations())
			}
		})
	}

	// The pipeline works on: a homeserver's transaction becomes a session
	// with Bob alone; nothing forged reached RTC_RAW or RTC_EVENTS, and
	// the streams are all there.
	putOK(t, ingestAddr, hsTokens[hsA], "pod-1", join(t, "$pod-bob", room, bob, "BOB", time.Now().UnixMilli()))
	bobJoined := sessions.waitJoined(t, room, bob)
	if got := summarize(sessions.room(t, room)); len(got) != 2 || bobJoined.Participants != 1 {
		t.Errorf("session events %q, want Bob's session alone", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for _, name := range []string{rawevent.StreamRaw, events.StreamEvents, "KV_" + events.BucketSessions, "KV_" + rawevent.BucketRooms} {
		if _, err := agg.JS.Stream(ctx, name); err != nil {
			t.Errorf("stream %s: %v", name, err)
		}
	}
	for _, r := range rawRecords(t, agg.JS, room) {
		if r.Sender == mallory {
			t.Errorf("RTC_RAW holds the forged %s", r.EventID)
		}
	}
}

// TestEmbeddedNATSNotExposed: the aggregator's embedded nats-server had no
// authorization and listened wherever embedded.host said. Asked to listen
// beyond loopback without the shipped users, the aggregator now refuses to
// start, with a clear message, and serves nothing.
func TestEmbeddedNATSNotExposed(t *testing.T) {
	cfg := aggregator.DefaultConfig()
	// A pod address, as with embedded.host 0.0.0.0 or $POD_IP. It is from
	// TEST-NET-1 and on no interface here: should the check regress, the
	// server fails to bind instead of listening beyond loopback.
	cfg.Embedded.Host = "192.0.2.1"
	cfg.Embedded.Port = -1
	cfg.Embedded.DataDir = filepath.Join(t.TempDir(), "nats")
	cfg.HTTP.Listen = ""
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	err := aggregator.Run(ctx, cfg, zap.NewNop(), prometheus.NewRegistry())
	if !errors.Is(err, natsutil.ErrEmbeddedExposed) {
		t.Fatalf("aggregator with embedded.host %s and no users: %v, want %v", cfg.Embedded.Host, err, natsutil.ErrEmbeddedExposed)
	}
	if ctx.Err() != nil {
		t.Errorf("refused only after %s", waitTimeout)
	}
}

// TestAggregatorWaitsForNATS: the aggregator exited at once (rc 1) when
// NATS was unreachable at start, so its pods crash-looped through a NATS
// outage. Now it stays up, serves /readyz (503, saying why) and retries,
// and becomes ready once NATS is there.
func TestAggregatorWaitsForNATS(t *testing.T) {
	natsAddr := testutil.FreePort(t)
	_, portText, err := net.SplitHostPort(natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.WarnLevel)
	cfg := aggregator.DefaultConfig()
	cfg.NATS.URLs = []string{"nats://" + natsAddr}
	cfg.Topology.Partitions = 4
	cfg.HTTP.Listen = testutil.FreePort(t)
	cfg.Worker.StatsInterval = 0
	cfg.ShutdownGrace = 5 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- aggregator.Run(ctx, cfg, zap.New(core), prometheus.NewRegistry()) }()

	readyz := "http://" + cfg.HTTP.Listen + "/readyz"
	waitFor(t, "two failed connection attempts, not ready meanwhile", func() bool {
		select {
		case err := <-done:
			t.Fatalf("the aggregator stopped while NATS was unreachable: %v", err)
		default:
		}
		resp, err := http.Get(readyz)
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("ready without NATS: %s", b)
		}
		return strings.Contains(string(b), "NATS") && logs.FilterMessageSnippet("NATS unreachable").Len() >= 2
	})

	testutil.NATS(t, "", port)
	waitReady(t, readyz)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("aggregator: %v", err)
		}
	case <-time.After(cfg.ShutdownGrace + waitTimeout):
		t.Error("aggregator did not stop")
	}
}
