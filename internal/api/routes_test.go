package api

import (
	"encoding/json"
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
}
