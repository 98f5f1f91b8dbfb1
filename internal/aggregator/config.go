package aggregator

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"time"

	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
	"github.com/rtcsessions/rtc-sessions/internal/telemetry"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// EnvPrefix is the prefix of the aggregator's environment overrides
// (RTC_AGG_NATS_URLS, RTC_AGG_WORKER_ID, ...).
const EnvPrefix = "RTC_AGG"

// Config is the aggregator's configuration (configs/aggregator.yaml).
type Config struct {
	// NATS says how to reach the server. With no urls, the aggregator starts
	// an embedded server (see Embedded).
	NATS     natsutil.ConnConfig `yaml:"nats"`
	Embedded EmbeddedConfig      `yaml:"embedded"`
	Topology TopologyConfig      `yaml:"topology"`
	Worker   WorkerConfig        `yaml:"worker"`
	Reducer  rtc.Config          `yaml:"reducer"`
	Log      telemetry.LogConfig `yaml:"log"`
	HTTP     HTTPConfig          `yaml:"http"`
	// ShutdownGrace bounds the graceful hand-off on SIGTERM.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// MemoryLimitMB is the Go runtime's soft memory limit in MiB: the
	// garbage collector works harder as the heap nears it instead of
	// letting it grow to twice what is live (a backlog of inputs over many
	// rooms doubled the peak RSS). 0 leaves the runtime's default. The
	// GOMEMLIMIT environment variable, when set, wins; so does a lower
	// container limit (80% of it).
	MemoryLimitMB int64 `yaml:"memory_limit_mb"`
	// GCPercent is the garbage collector's target (GOGC): how far the heap
	// may grow past what is live before a collection. Above the runtime's
	// 100 by default because the aggregator's live heap is small and its
	// garbage is short-lived, so collections were a fifth of its CPU under
	// load; the soft memory limit bounds the heap all the same. The GOGC
	// environment variable, when set, wins. 0: the runtime default.
	GCPercent int `yaml:"gc_percent"`
}

// EmbeddedConfig configures the embedded nats-server used when no NATS url
// is configured (declared once, in natsutil).
type EmbeddedConfig = natsutil.EmbeddedConfig

// TopologyConfig is the topology section: topology.Config (declared there,
// with its YAML names) plus the mode.
type TopologyConfig struct {
	Mode            topology.Mode `yaml:"mode"` // create or verify
	topology.Config `yaml:",inline"`
}

// Topology is the topology.Config of the section.
func (t TopologyConfig) Topology() topology.Config { return t.Config }

// WorkerConfig tunes one aggregator worker.
type WorkerConfig struct {
	// ID names the worker in rtc_workers; empty: $POD_NAME or the host name,
	// plus a random suffix so that a restarted process never inherits the
	// heartbeat of its predecessor.
	ID string `yaml:"id"`
	// CacheRooms bounds the in-memory cache of room records.
	CacheRooms int `yaml:"cache_rooms"`
	// MaxDeliver is how many times an input whose processing fails in a way
	// that retrying cannot fix (reducer panic, record too large) is tried
	// before it goes to RTC_DLQ. NATS outages are retried forever instead.
	MaxDeliver int `yaml:"max_deliver"`
	// RetryBackoff is the redelivery delay after a failed attempt (doubled
	// per attempt, capped at 8x).
	RetryBackoff time.Duration `yaml:"retry_backoff"`
	// OpTimeout bounds every NATS request made while processing an input.
	OpTimeout time.Duration `yaml:"op_timeout"`
	// BatchSize is the most inputs a partition processes as one batch: one
	// commit per room touched and one wait for all publishes per batch.
	BatchSize int `yaml:"batch_size"`
	// BatchLinger is how long a batch waits for more inputs once it has one.
	// Under load batches fill without waiting; when idle it adds at most
	// this much latency.
	BatchLinger time.Duration `yaml:"batch_linger"`
	// ConcurrentBatches is how many of the worker's partitions process a
	// batch at the same time; the others wait, their inputs buffering, so
	// that their next batch is bigger. A batch waits on round trips in
	// sequence (the rooms' commits, then their fenced live-session writes,
	// then their session events), so a few batches at once keep the CPU
	// busy; more only make batches smaller (less coalescing, more CPU per
	// input) and multiply what is held in memory (every batch holds its
	// inputs, its rooms' commits and its session events). Measured with
	// rtcbench: 8 gave the same backlog throughput as 4, at more CPU.
	ConcurrentBatches int `yaml:"concurrent_batches"`
	// StatsInterval is how often each owned partition's backlog is read for
	// rtc_aggregator_consumer_lag (0 disables the gauges of this paragraph);
	// the owner of partition 0 also keeps the live session and member
	// gauges, from a watch of rtc_sessions.
	StatsInterval time.Duration `yaml:"stats_interval"`
	// JoinDelay is how long a starting worker waits after registering
	// before it computes its first assignment, so that workers started
	// together (a rollout, a scale-up) divide the partitions at once
	// instead of one taking them all and handing half over moments later.
	JoinDelay time.Duration `yaml:"join_delay"`
}

// DefaultHTTPListen serves /metrics, /healthz and /readyz on loopback only
// (a Kubernetes pod sets its own address), on a port that does not collide
// with Prometheus's own 9090.
const DefaultHTTPListen = "127.0.0.1:29334"

// HTTPConfig is the metrics and health endpoint.
type HTTPConfig struct {
	Listen string `yaml:"listen"` // empty disables it
	// Pprof serves Go's profiles under /debug/pprof/ on the same listener
	// (CPU, heap, goroutines): for profiling a worker in place. Off by
	// default; keep the listener private when it is on.
	Pprof bool `yaml:"pprof"`
}

// DefaultConfig returns the documented defaults (configs/aggregator.yaml).
func DefaultConfig() Config {
	return Config{
		NATS:     natsutil.ConnConfig{Name: "rtc-aggregator"},
		Embedded: EmbeddedConfig{DataDir: "./data/nats", Host: "127.0.0.1", Port: natsutil.DefaultEmbeddedPort},
		Topology: TopologyConfig{Mode: topology.ModeCreate, Config: topology.DefaultConfig()},
		Worker: WorkerConfig{
			CacheRooms: 10000, MaxDeliver: 5, RetryBackoff: 500 * time.Millisecond, BatchSize: 1024,
			BatchLinger: time.Millisecond, ConcurrentBatches: 4,
			OpTimeout: 10 * time.Second, StatsInterval: 10 * time.Second, JoinDelay: time.Second,
		},
		Reducer:       rtc.DefaultConfig(),
		Log:           telemetry.LogConfig{Format: "json", Level: "info"},
		HTTP:          HTTPConfig{Listen: DefaultHTTPListen},
		ShutdownGrace: 20 * time.Second,
		MemoryLimitMB: 256,
		GCPercent:     400,
	}
}

var workerIDRe = regexp.MustCompile(`^[-_=a-zA-Z0-9]{1,64}$`)

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if err := c.NATS.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(c.NATS.URLs) == 0 {
		if c.Embedded.DataDir == "" {
			errs = append(errs, errors.New("embedded.data_dir: required when nats.urls is empty"))
		}
		if c.Embedded.Port < -1 || c.Embedded.Port > 65535 {
			errs = append(errs, fmt.Errorf("embedded.port %d: want -1 (random) or 0-65535", c.Embedded.Port))
		}
	}
	if c.Topology.Mode != topology.ModeCreate && c.Topology.Mode != topology.ModeVerify {
		errs = append(errs, fmt.Errorf("topology.mode %q: want create or verify", c.Topology.Mode))
	}
	if err := c.Topology.Topology().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("topology: %w", err))
	}
	if c.Worker.ID != "" && !workerIDRe.MatchString(c.Worker.ID) {
		errs = append(errs, fmt.Errorf("worker.id %q: want 1-64 characters of [-_=a-zA-Z0-9]", c.Worker.ID))
	}
	if c.Worker.CacheRooms < 1 {
		errs = append(errs, fmt.Errorf("worker.cache_rooms %d: must be at least 1", c.Worker.CacheRooms))
	}
	if c.Worker.MaxDeliver < 1 {
		errs = append(errs, fmt.Errorf("worker.max_deliver %d: must be at least 1", c.Worker.MaxDeliver))
	}
	if c.Worker.RetryBackoff <= 0 {
		errs = append(errs, fmt.Errorf("worker.retry_backoff %s: must be positive", c.Worker.RetryBackoff))
	}
	if c.Worker.OpTimeout < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("worker.op_timeout %s: must be at least 100ms", c.Worker.OpTimeout))
	}
	if c.Worker.BatchSize < 1 || c.Worker.BatchSize > 4096 {
		errs = append(errs, fmt.Errorf("worker.batch_size %d: want 1-4096", c.Worker.BatchSize))
	}
	if c.Worker.ConcurrentBatches < 1 || c.Worker.ConcurrentBatches > 1024 {
		errs = append(errs, fmt.Errorf("worker.concurrent_batches %d: want 1-1024", c.Worker.ConcurrentBatches))
	}
	if c.Worker.BatchLinger < 0 || c.Worker.BatchLinger > time.Second {
		errs = append(errs, fmt.Errorf("worker.batch_linger %s: want 0-1s", c.Worker.BatchLinger))
	}
	if c.Worker.BatchSize > c.Topology.MaxAckPending {
		errs = append(errs, fmt.Errorf("worker.batch_size %d: must not exceed topology.max_ack_pending %d", c.Worker.BatchSize, c.Topology.MaxAckPending))
	}
	if c.Worker.JoinDelay < 0 || c.Worker.JoinDelay > c.Topology.WorkerTTL {
		errs = append(errs, fmt.Errorf("worker.join_delay %s: want 0 to topology.worker_ttl (%s)", c.Worker.JoinDelay, c.Topology.WorkerTTL))
	}
	if c.Worker.StatsInterval < 0 {
		errs = append(errs, fmt.Errorf("worker.stats_interval %s: must not be negative", c.Worker.StatsInterval))
	}
	if err := c.Reducer.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("reducer: %w", err))
	}
	if err := c.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.GCPercent < 0 {
		errs = append(errs, fmt.Errorf("gc_percent %d: want 0 (runtime default) or a positive percentage", c.GCPercent))
	}
	if c.MemoryLimitMB < 0 || (c.MemoryLimitMB > 0 && c.MemoryLimitMB < 64) {
		errs = append(errs, fmt.Errorf("memory_limit_mb %d: want 0 (runtime default) or at least 64", c.MemoryLimitMB))
	}
	if c.ShutdownGrace < time.Second {
		errs = append(errs, fmt.Errorf("shutdown_grace %s: must be at least 1s", c.ShutdownGrace))
	}
	return errors.Join(errs...)
}

// defaultWorkerID is $POD_NAME (or the host name) plus a random suffix.
func defaultWorkerID() string {
	base := os.Getenv("POD_NAME")
	if base == "" {
		base, _ = os.Hostname()
	}
	clean := make([]byte, 0, len(base))
	for i := 0; i < len(base) && len(clean) < 48; i++ {
		ch := base[i]
		if ch == '-' || ch == '_' || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') {
			clean = append(clean, ch)
		}
	}
	if len(clean) == 0 {
		clean = []byte("worker")
	}
	return string(clean) + "-" + randomSuffix()
}
