package aggregator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
	"github.com/rtcsessions/rtc-sessions/internal/natsutil/natsconn"
	"github.com/rtcsessions/rtc-sessions/internal/startup"
	"github.com/rtcsessions/rtc-sessions/internal/telemetry"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
)

// Run is the aggregator service: it connects to NATS (starting an embedded
// server when no url is configured), ensures the topology, serves /metrics,
// /healthz and /readyz, and runs one worker until ctx ends. Then it hands
// its partitions off within cfg.ShutdownGrace and returns.
func Run(ctx context.Context, cfg Config, log *zap.Logger, reg *prometheus.Registry) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("aggregator config: %w", err)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if limit := memoryLimit(cfg.MemoryLimitMB<<20, os.Getenv("GOMEMLIMIT"), cgroupMemoryLimit()); limit > 0 {
		debug.SetMemoryLimit(limit)
		log.Info("soft memory limit", zap.Int64("bytes", limit))
	}
	if cfg.GCPercent > 0 && os.Getenv("GOGC") == "" {
		debug.SetGCPercent(cfg.GCPercent)
	}
	health := telemetry.NewHealth()

	var ns *server.Server
	if len(cfg.NATS.URLs) == 0 {
		var err error
		ns, err = natsutil.StartEmbedded(cfg.Embedded, log)
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
			log.Info("embedded nats-server stopped")
		}()
		cfg.NATS.URLs = []string{ns.ClientURL()}
	}
	// /healthz, /readyz and /metrics are served from the start: while NATS
	// is unreachable the process is alive but not ready, rather than exiting
	// (a pod would crash-loop through a NATS outage).
	var state atomic.Pointer[string]
	setState := func(s string) { state.Store(&s) }
	setState("connecting to NATS")
	health.AddCheck("startup", func() error {
		if s := *state.Load(); s != "" {
			return errors.New(s)
		}
		return nil
	})
	httpCtx, stopHTTP := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHTTP()
	httpDone := make(chan error, 1)
	if cfg.HTTP.Listen != "" {
		go func() {
			httpDone <- telemetry.Serve(httpCtx, cfg.HTTP.Listen, httpHandler(cfg.HTTP, reg, health), log, nil)
		}()
	} else {
		httpDone <- nil
	}

	closed := make(chan struct{})
	nc, err := connectRetrying(ctx, cfg.NATS, log, nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		return err
	}
	defer nc.Close()
	health.AddCheck("nats", func() error {
		if !nc.IsConnected() {
			return errors.New("not connected")
		}
		return nil
	})
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	setState("creating or verifying the topology")
	h, err := ensureTopology(ctx, js, cfg.Topology, log, setState)
	if err != nil {
		return err
	}
	w := NewWorker(nc, js, h, WorkerOptions{ID: cfg.Worker.ID, Topology: cfg.Topology.Topology(),
		Worker: cfg.Worker, Reducer: cfg.Reducer, Log: log, Metrics: NewMetrics(reg), Grace: cfg.ShutdownGrace,
		hooks: faultHooks(os.Getenv, log)})
	// The worker's own check first, then the start-up one goes: /readyz is
	// never ready between the topology and the worker's registration.
	health.AddCheck("partitions", w.Ready)
	setState("")

	werr := w.Run(ctx)
	// The worker has handed off; drain what is left of the connection.
	if err := nc.Drain(); err == nil {
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
		}
	}
	stopHTTP()
	if herr := <-httpDone; herr != nil && werr == nil {
		werr = herr
	}
	return werr
}

// connectRetrying connects to NATS, retrying with a capped back-off until
// it succeeds or ctx ends. Configuration errors (a missing credentials file,
// a refused server version) are not retried.
func connectRetrying(ctx context.Context, c natsutil.ConnConfig, log *zap.Logger, opts ...nats.Option) (*nats.Conn, error) {
	delay := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		nc, err := natsutil.Connect(ctx, c, log, opts...)
		if err == nil {
			return nc, nil
		}
		if errors.Is(err, natsconn.ErrServerTooOld) || errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		log.Warn("NATS unreachable; retrying", zap.Int("attempt", attempt), zap.Duration("delay", delay), zap.Error(err))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to NATS: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// ensureTopology creates or verifies the streams, buckets and consumers,
// retrying (startup.Ensure) until it succeeds: on a fresh cluster, replicas
// started together may wait long for their first answers. Meanwhile
// setState tells /readyz why the service is not ready. Only a configuration
// conflict (startup.Permanent) or the end of ctx ends the wait.
func ensureTopology(ctx context.Context, js jetstream.JetStream, tc TopologyConfig, log *zap.Logger,
	setState func(string)) (*topology.Handles, error) {
	what := fmt.Sprintf("topology (%s mode)", tc.Mode)
	if err := tc.Topology().Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	var h *topology.Handles
	err := startup.Ensure(ctx, log, startup.Options{What: what, OnRetry: func(n int, err error, _ time.Duration) {
		setState(fmt.Sprintf("%s not ready after %d attempts, retrying: %v", what, n, err))
	}}, func(ctx context.Context) (err error) {
		h, err = topology.Ensure(ctx, js, tc.Topology(), tc.Mode)
		return err
	})
	if err != nil {
		return nil, err
	}
	log.Info("topology ready", zap.String("mode", string(tc.Mode)), zap.Int("partitions", tc.Partitions),
		zap.Int("replicas", tc.Replicas))
	return h, nil
}

// httpHandler is /metrics, /healthz and /readyz, plus /debug/pprof/ when
// enabled.
func httpHandler(c HTTPConfig, reg *prometheus.Registry, health *telemetry.Health) http.Handler {
	h := telemetry.Handler(reg, health)
	if !c.Pprof {
		return h
	}
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// memoryLimit is the soft memory limit to set: none when GOMEMLIMIT is set
// (the runtime applied it) or nothing is configured; the configured one, or
// 80% of the container's limit when that is lower.
func memoryLimit(configured int64, env string, container int64) int64 {
	if env != "" || configured <= 0 {
		return 0
	}
	if container > 0 && container*8/10 < configured {
		return container * 8 / 10
	}
	return configured
}

// cgroupMemoryLimit is the container's memory limit in bytes (cgroup v2 or
// v1), or 0 when there is none.
func cgroupMemoryLimit() int64 {
	for _, f := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || v <= 0 || v >= 1<<62 {
			return 0 // "max", or the v1 value for none
		}
		return v
	}
	return 0
}
