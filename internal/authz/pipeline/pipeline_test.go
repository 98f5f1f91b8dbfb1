package pipeline

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/aggregator"
	"github.com/rtcsessions/rtc-sessions/internal/authz"
	"github.com/rtcsessions/rtc-sessions/internal/authz/authztest"
	"github.com/rtcsessions/rtc-sessions/internal/ingest"
	"github.com/rtcsessions/rtc-sessions/internal/rtcctl"
	"github.com/rtcsessions/rtc-sessions/internal/testutil"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

const hsToken = "hs-token-pipeline-3c1f"

// memberEvent is an Element Call membership (MSC4143 per-device form) as a
// homeserver pushes it; empty content is the leave.
func memberEvent(eventID, room, user, device string, ts int64, leave bool) string {
	content := fmt.Sprintf(`{"application":"m.call","call_id":"","scope":"m.room","device_id":%q,"expires":14400000,`+
		`"focus_active":{"type":"livekit","focus_selection":"oldest_membership"},`+
		`"foci_preferred":[{"type":"livekit","livekit_service_url":"https://sfu.example"}]}`, device)
	if leave {
		content = `{}`
	}
	return fmt.Sprintf(`{"type":"org.matrix.msc3401.call.member","state_key":"_%s_%s_m.call","sender":%q,`+
		`"event_id":%q,"room_id":%q,"origin_server_ts":%d,"content":%s}`, user, device, user, eventID, room, ts, content)
}

func putTxn(t *testing.T, addr, txnID string, evs ...string) {
	t.Helper()
	testutil.PutTransaction(t, addr, hsToken, txnID, evs...)
}

// observed is a logger that keeps every entry, to find NATS permission
// violations the services were told of.
func observed(t *testing.T) (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

func violations(logs *observer.ObservedLogs) []string {
	var out []string
	for _, e := range logs.All() {
		text := e.Message
		for _, f := range e.Context {
			if f.Type == zapcore.ErrorType {
				text += " " + f.Interface.(error).Error()
			} else {
				text += " " + f.String
			}
		}
		if strings.Contains(strings.ToLower(text), "permissions violation") {
			out = append(out, text)
		}
	}
	return out
}

// TestPipelineWithShippedPermissions: the aggregator and the ingest run as
// their own users on a server with exactly the shipped permissions; a
// transaction pushed to the ingest becomes session events and a live session
// that the read-only subscriber sees, and no service is refused anything.
func TestPipelineWithShippedPermissions(t *testing.T) {
	srv := authztest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	aggLog, aggLogs := observed(t)
	acfg := aggregator.DefaultConfig()
	acfg.NATS = srv.ConnConfig(authz.UserAggregator)
	acfg.Topology.Partitions = 4
	acfg.HTTP.Listen = testutil.FreePort(t)
	acfg.ShutdownGrace = 5 * time.Second
	aggDone := make(chan error, 1)
	wg.Add(1)
	aggReg := prometheus.NewRegistry()
	go func() { defer wg.Done(); aggDone <- aggregator.Run(ctx, acfg, aggLog, aggReg) }()

	dir := t.TempDir()
	tokFile := filepath.Join(dir, "hs.token")
	if err := os.WriteFile(tokFile, []byte(hsToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ingLog, ingLogs := observed(t)
	icfg := ingest.DefaultConfig()
	icfg.NATS = srv.ConnConfig(authz.UserIngest)
	icfg.Topology.Partitions = 4
	icfg.MetricsAddr = testutil.FreePort(t)
	icfg.Appservice.ListenAddr = "127.0.0.1:0"
	icfg.Homeservers = []ingest.HomeserverConfig{{Name: "hs.test", HSTokenFile: tokFile}}
	bound := make(chan string, 1)
	ingDone := make(chan error, 1)
	wg.Add(1)
	go func() { defer wg.Done(); ingDone <- ingest.Run(ctx, icfg, ingLog, prometheus.NewRegistry(), bound) }()

	var addr string
	select {
	case addr = <-bound:
	case err := <-ingDone:
		t.Fatalf("ingest stopped: %v (violations %q)", err, violations(ingLogs))
	case <-time.After(30 * time.Second):
		t.Fatalf("the ingest's appservice listener did not start (violations %q)", violations(ingLogs))
	}
	waitReady(t, "http://"+acfg.HTTP.Listen+"/readyz", aggDone, aggLogs)

	// The subscriber follows session events and the live sessions.
	sub := srv.Connect(t, authz.UserSubscriber)
	kinds := make(chan events.SessionEvent, 16)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = events.Subscribe(ctx, sub.JS, events.SubscribeOptions{FromStart: true}, func(d events.Delivery) error {
			kinds <- d.Event
			return nil
		})
	}()

	room, user := "!call:hs.test", "@alice:hs.test"
	now := time.Now().UnixMilli()
	putTxn(t, addr, "1", memberEvent("$join1", room, user, "DEV1", now, false))
	expect(t, kinds, events.KindSessionStarted, events.KindMemberJoined)

	// The live session is in rtc_sessions, readable by the subscriber.
	kv, err := sub.JS.KeyValue(ctx, events.BucketSessions)
	if err != nil {
		t.Fatalf("subscriber: rtc_sessions: %v", err)
	}
	waitFor(t, "a live session in rtc_sessions", func() bool {
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			return false
		}
		n := 0
		for range keys.Keys() {
			n++
		}
		return n > 0
	})

	// rtcctl's read paths work as the subscriber: sessions and the room.
	waitFor(t, "rtcctl sessions as the subscriber", func() bool {
		live, err := rtcctl.LiveSessions(ctx, sub.JS)
		return err == nil && len(live) == 1
	})
	if _, err := rtcctl.RoomRecord(ctx, sub.JS, id.RoomID(room)); err != nil {
		t.Fatalf("rtcctl room as the subscriber: %v (violations %q)", err, sub.Violations())
	}

	putTxn(t, addr, "2", memberEvent("$leave1", room, user, "DEV1", now+1000, true))
	expect(t, kinds, events.KindMemberLeft, events.KindSessionEnded)

	// The leave's two events went as one fast batch: the aggregator may
	// publish batches and subscribe to their replies in its inbox. (The
	// subscriber can see the events before the aggregator has the ack.)
	waitFor(t, "a fast batch of events stored", func() bool {
		return counter(t, aggReg, "rtc_aggregator_event_batches_total", "stored") >= 1
	})
	if failed := counter(t, aggReg, "rtc_aggregator_event_batches_total", "failed"); failed != 0 {
		t.Errorf("%v event batches failed (violations %q)", failed, violations(aggLogs))
	}
	for name, logs := range map[string]*observer.ObservedLogs{"aggregator": aggLogs, "ingest": ingLogs} {
		if v := violations(logs); len(v) > 0 {
			t.Errorf("%s was refused something it needs: %q", name, v)
		}
	}
	cancel()
	for name, done := range map[string]chan error{"aggregator": aggDone, "ingest": ingDone} {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not stop", name)
		}
	}
}

func expect(t *testing.T, got <-chan events.SessionEvent, want ...events.Kind) {
	t.Helper()
	for _, k := range want {
		select {
		case e := <-got:
			if e.Kind != k {
				t.Fatalf("session event %s, want %s", e.Kind, k)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s event within 30s", k)
		}
	}
}

func waitReady(t *testing.T, url string, done <-chan error, logs *observer.ObservedLogs) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-done:
			t.Fatalf("aggregator stopped: %v (violations %q)", err, violations(logs))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("aggregator not ready (violations %q)", violations(logs))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// counter is the value of a counter of reg with the given value of its
// only label (0 when absent).
func counter(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if ls := m.GetLabel(); len(ls) == 1 && ls[0].GetValue() == label {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
