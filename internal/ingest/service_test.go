package ingest

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/rtcsessions/rtc-sessions/internal/ctlapi"
	"github.com/rtcsessions/rtc-sessions/internal/testutil"
)

// TestRunStartsBeforeNATS: the service starts, waits for NATS, creates
// RTC_RAW, becomes ready and accepts transactions over a real listener.
func TestRunStartsBeforeNATS(t *testing.T) {
	dir := t.TempDir()
	natsAddr := testutil.FreePort(t)
	_, portStr, _ := net.SplitHostPort(natsAddr)
	tok1, tok2 := filepath.Join(dir, "hs1"), filepath.Join(dir, "hs2")
	_ = os.WriteFile(tok1, []byte(tokHS1+"\n"), 0o600)
	_ = os.WriteFile(tok2, []byte(tokHS2), 0o600)

	cfg := DefaultConfig()
	cfg.NATS.URLs = []string{"nats://" + natsAddr}
	cfg.Topology.Partitions = 4
	cfg.MetricsAddr = testutil.FreePort(t)
	cfg.Appservice.ListenAddr = "127.0.0.1:0"
	cfg.Homeservers = []HomeserverConfig{{Name: "hs1", HSTokenFile: tok1}, {Name: "hs2", HSTokenFile: tok2}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	bound := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, zaptest.NewLogger(t), prometheus.NewRegistry(), bound) }()

	readyz := func() int {
		resp, err := http.Get("http://" + cfg.MetricsAddr + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor(t, func() bool { return readyz() == http.StatusServiceUnavailable })

	port, _ := strconv.Atoi(portStr)
	ns := startNATS(t, t.TempDir(), port)
	defer ns.Shutdown()

	var addr string
	select {
	case addr = <-bound:
	case <-time.After(15 * time.Second):
		t.Fatal("appservice listener not started")
	}
	waitFor(t, func() bool { return readyz() == http.StatusOK })
	code, _ := do(t, "http://"+addr, asReq{"PUT", "/_matrix/app/v1/transactions/1", tokHS2, false,
		txn(memberEvent("$run1", "!r:hs2.test", "@a:hs2.test", "A", 1700000000000))})
	if code != 200 {
		t.Fatalf("transaction: %d", code)
	}
	assertStored(t, rawContents(t, ns.ClientURL()), map[string]string{"$run1": "hs2"})

	// No homeserver it can read room state from: it still answers
	// rtcctl reconcile, with why it does not reconcile.
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msg, err := nc.Request(ctlapi.ReconcileSubject, []byte(`{"room_id":"!r:hs2.test"}`), 5*time.Second)
	if err != nil {
		t.Fatalf("reconcile request: %v", err)
	}
	var reply ctlapi.ReconcileReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil || reply.RoomID != "!r:hs2.test" ||
		!strings.Contains(reply.Off, "no homeserver has as_token_file") || reply.Error == "" {
		t.Fatalf("reconcile reply %+v (%v)", reply, err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
}

// TestRunReturnsAFailingSourcesError: when one of the service's goroutines
// fails (a listener that cannot bind), Run stops the others and returns
// that error, also while it is still waiting for NATS.
func TestRunReturnsAFailingSourcesError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	e := newEnv(t)
	dir := t.TempDir()
	tok := filepath.Join(dir, "hs1")
	_ = os.WriteFile(tok, []byte(tokHS1), 0o600)
	tests := []struct {
		name     string
		natsURL  string
		metrics  string
		listen   string
		wantText string
	}{
		// Nothing answers on the NATS url: the service would wait for it
		// for ever; the metrics listener's failure ends the wait.
		{"metrics listener, nats not up", "nats://" + testutil.FreePort(t), busy.Addr().String(), "127.0.0.1:0", "listen " + busy.Addr().String()},
		{"appservice listener", e.url, "127.0.0.1:0", busy.Addr().String(), "appservice listener: listen " + busy.Addr().String()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.NATS.URLs = []string{tc.natsURL}
			cfg.Topology.Partitions = 4
			cfg.MetricsAddr = tc.metrics
			cfg.Appservice.ListenAddr = tc.listen
			cfg.Homeservers = []HomeserverConfig{{Name: "hs1", HSTokenFile: tok}}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- Run(context.Background(), cfg, zaptest.NewLogger(t), prometheus.NewRegistry(), nil) }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.wantText) {
					t.Fatalf("Run: %v, want an error with %q", err, tc.wantText)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("Run did not return the failure")
			}
		})
	}
}
