package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
)

// TestRoutesInOpenAPI: every route the server serves is in the OpenAPI
// document it serves, with its method, and the document has no path the
// server does not serve.
func TestRoutesInOpenAPI(t *testing.T) {
	ns, err := natsutil.StartEmbedded(natsutil.EmbeddedConfig{DataDir: t.TempDir(), Port: -1}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cfg := DefaultConfig()
	cfg.Auth.AllowAnonymous = true
	s, err := New(cfg, nc, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	var served, documented []string
	for _, r := range s.Routes() {
		served = append(served, r[0]+" "+r[1])
	}
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	sort.Strings(served)
	sort.Strings(documented)
	if !slices.Equal(served, documented) {
		t.Errorf("served routes and the OpenAPI document differ:\nserved     %v\ndocumented %v", served, documented)
	}
	if len(served) < 6 {
		t.Errorf("only %d routes", len(served))
	}

	// With metrics_listen, /metrics is served there and not on the API's
	// address; the probes on both.
	cfg.MetricsListen = "127.0.0.1:0"
	s2, err := New(cfg, nc, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		h    http.Handler
		path string
		code int
	}{
		{s2.Handler(), "/metrics", 404}, {s2.OpsHandler(), "/metrics", 200}, {s2.OpsHandler(), "/healthz", 200},
		{s2.Handler(), "/healthz", 200}, {s.Handler(), "/metrics", 200},
	} {
		rec := httptest.NewRecorder()
		tc.h.ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
		if rec.Code != tc.code {
			t.Errorf("%s: %d, want %d", tc.path, rec.Code, tc.code)
		}
	}
}
