package telemetry

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

func TestHealthEndpoints(t *testing.T) {
	h := NewHealth()
	ready := errors.New("not connected")
	h.AddCheck("nats", func() error { return ready })
	h.AddCheck("partitions", func() error { return nil })
	srv := Handler(NewRegistry(), h)
	if code, body := get(t, srv, "/readyz"); code != 503 || !strings.Contains(body, "nats: not connected") || strings.Contains(body, "partitions") {
		t.Fatalf("/readyz while not connected: %d %q", code, body)
	}
	if code, _ := get(t, srv, "/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	ready = nil
	if code, _ := get(t, srv, "/readyz"); code != 200 {
		t.Fatalf("/readyz when ready: %d", code)
	}
	if code, body := get(t, srv, "/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics: %d", code)
	}
}

func TestLogConfigValidate(t *testing.T) {
	if err := (LogConfig{Format: "json", Level: "info"}).Validate(); err != nil {
		t.Fatal(err)
	}
	err := (LogConfig{Format: "xml", Level: "loud"}).Validate()
	if err == nil || !strings.Contains(err.Error(), "xml") || !strings.Contains(err.Error(), "loud") {
		t.Fatalf("want both problems, got %v", err)
	}
}
