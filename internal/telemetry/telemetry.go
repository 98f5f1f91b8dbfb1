// Package telemetry holds what every binary needs to be operated: the zap
// logger, and the HTTP server for Prometheus /metrics, /healthz and /readyz.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rtcsessions/rtc-sessions/internal/version"
)

// LogConfig selects the log format and level.
type LogConfig struct {
	Format string `yaml:"format"` // json (production) or console (development)
	Level  string `yaml:"level"`  // debug, info, warn, error
}

// Validate reports every problem at once.
func (c LogConfig) Validate() error {
	var errs []error
	if c.Format != "json" && c.Format != "console" {
		errs = append(errs, fmt.Errorf("log format %q: want json or console", c.Format))
	}
	if _, err := zapcore.ParseLevel(c.Level); err != nil {
		errs = append(errs, fmt.Errorf("log level %q: %w", c.Level, err))
	}
	return errors.Join(errs...)
}

// NewLogger builds the process logger. It is passed down explicitly; nothing
// in rtc-sessions uses a global logger.
func NewLogger(c LogConfig) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	var zc zap.Config
	if c.Format == "console" {
		zc = zap.NewDevelopmentConfig()
	} else {
		zc = zap.NewProductionConfig()
		zc.EncoderConfig.TimeKey = "ts"
		zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.DisableStacktrace = true
	return zc.Build()
}

// NewRegistry is a Prometheus registry with the Go and process collectors
// and rtc_build_info.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		BuildInfo(version.Get()))
	return r
}

// Health tracks named readiness checks. /healthz answers 200 while the
// process serves; /readyz answers 200 only when every check passes, and names
// the failing ones otherwise.
type Health struct {
	mu     sync.RWMutex
	checks map[string]func() error
}

// NewHealth returns a Health with no checks (ready).
func NewHealth() *Health { return &Health{checks: map[string]func() error{}} }

// AddCheck registers a readiness check.
func (h *Health) AddCheck(name string, f func() error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks[name] = f
}

// Ready runs every check and joins the failures.
func (h *Health) Ready() error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var errs []error
	for name, f := range h.checks {
		if err := f(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// Handler serves /metrics, /healthz and /readyz.
func Handler(reg *prometheus.Registry, h *Health) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := h.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}

// Serve runs an HTTP server on addr until ctx ends, then shuts it down
// gracefully. It returns the bound address through bound (useful with port 0)
// once listening.
func Serve(ctx context.Context, addr string, handler http.Handler, log *zap.Logger, bound chan<- string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	if bound != nil {
		bound <- ln.Addr().String()
	}
	// Bounded reads: a client that trickles a body cannot hold a connection
	// (and, for the ingest, a transaction) forever.
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("http listening", zap.String("addr", ln.Addr().String()))
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", addr, err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
}
