package proctest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rtcsessions/rtc-sessions/internal/proctest/childproc"
	"github.com/rtcsessions/rtc-sessions/internal/testutil"
)

// AggregatorConfig is what a test chooses of an aggregator process's
// configuration; the rest keeps the documented defaults.
type AggregatorConfig struct {
	ID         string // worker id (rtc_workers key); a restarted process should get a new one
	NATSURL    string
	Partitions int // RTC_RAW partitions; 0: 8
	// Short take-over timings: a SIGKILLed worker's partitions move after
	// about this long. 0: 2s each.
	WorkerTTL time.Duration
	PinnedTTL time.Duration
	AckWait   time.Duration
	// Env holds extra RTC_AGG_* overrides (KEY=VALUE), e.g. for settings
	// this struct does not name.
	Env []string
}

// Aggregator is one cmd/aggregator process.
type Aggregator struct {
	*Proc
	Cfg      AggregatorConfig
	HTTPAddr string // /metrics, /healthz, /readyz
}

// StartAggregator writes a configuration file for cfg (http on a free
// loopback port, JSON logs) and starts cmd/aggregator with it. It does not
// wait for readiness: see WaitReady.
func (h *Harness) StartAggregator(cfg AggregatorConfig) (*Aggregator, error) {
	if cfg.Partitions == 0 {
		cfg.Partitions = 8
	}
	for _, d := range []*time.Duration{&cfg.WorkerTTL, &cfg.PinnedTTL, &cfg.AckWait} {
		if *d == 0 {
			*d = 2 * time.Second
		}
	}
	a := &Aggregator{Cfg: cfg, HTTPAddr: testutil.FreePort(h.t)}
	yaml := fmt.Sprintf(`nats:
  urls: [%q]
  name: %q
topology:
  mode: create
  partitions: %d
  ack_wait: %s
  pinned_ttl: %s
  worker_ttl: %s
worker:
  id: %q
  stats_interval: 0s
http:
  listen: %q
log:
  format: json
  level: info
shutdown_grace: 5s
`, cfg.NATSURL, "aggregator-"+cfg.ID, cfg.Partitions, cfg.AckWait, cfg.PinnedTTL, cfg.WorkerTTL, cfg.ID, a.HTTPAddr)
	path := filepath.Join(h.t.TempDir(), "aggregator.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		return nil, fmt.Errorf("aggregator config: %w", err)
	}
	p, err := h.Start("aggregator "+cfg.ID, h.Bins.Aggregator, []string{"-config", path}, cfg.Env...)
	if err != nil {
		return nil, err
	}
	a.Proc = p
	return a, nil
}

// WaitReady waits until /readyz answers 200 (connected, topology ensured,
// partitions assigned).
func (a *Aggregator) WaitReady(timeout time.Duration) error {
	return a.WaitFor(timeout, func() error { return childproc.HTTPOK("http://" + a.HTTPAddr + "/readyz") })
}

// Metrics returns the process's /metrics samples by series ("name" or
// `name{label="v",...}`).
func (a *Aggregator) Metrics() (map[string]float64, error) {
	return Scrape("http://" + a.HTTPAddr + "/metrics")
}

// IngestConfig is what a test chooses of an ingest process's configuration.
type IngestConfig struct {
	Name       string // process label
	NATSURL    string
	Partitions int // must equal the aggregators'; 0: 8
	// HSTokens maps homeserver names to their hs_token: one appservice
	// registration each.
	HSTokens map[string]string
	// AckTimeout bounds how long a transaction waits for its PubAcks
	// before the ingest answers 503; 0: 2s.
	AckTimeout time.Duration
	// Sync lists homeservers the ingest watches with a bot's /sync; their
	// sync tokens go to SyncStateDir (a temporary directory when empty;
	// keep it across restarts to resume).
	Sync         []SyncHomeserver
	SyncStateDir string
	Env          []string // extra RTC_INGEST_* overrides
}

// SyncHomeserver is a homeserver the ingest watches with a bot account.
type SyncHomeserver struct {
	Name, URL, UserID, AccessToken, DeviceID string
}

// Ingest is one `ingest serve` process.
type Ingest struct {
	*Proc
	Cfg            IngestConfig
	AppserviceAddr string // where homeservers PUT transactions
	MetricsAddr    string
}

// StartIngest writes a configuration (one appservice registration per
// homeserver, tokens in files) and starts `ingest serve`. listenAddr is the
// appservice address (empty: a free loopback port); pass the previous
// process's address to restart it where the homeservers expect it. It does
// not wait for readiness: see WaitReady.
func (h *Harness) StartIngest(cfg IngestConfig, listenAddr string) (*Ingest, error) {
	if cfg.Partitions == 0 {
		cfg.Partitions = 8
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 2 * time.Second
	}
	if listenAddr == "" {
		listenAddr = testutil.FreePort(h.t)
	}
	in := &Ingest{Cfg: cfg, AppserviceAddr: listenAddr, MetricsAddr: testutil.FreePort(h.t)}
	path, err := h.writeIngestConfig(cfg, in.AppserviceAddr, in.MetricsAddr)
	if err != nil {
		return nil, err
	}
	p, err := h.Start("ingest "+cfg.Name, h.Bins.Ingest, []string{"serve", "-config", path}, cfg.Env...)
	if err != nil {
		return nil, err
	}
	in.Proc = p
	return in, nil
}

// writeIngestConfig writes the ingest's YAML configuration (and the
// homeservers' token files) into a new temporary directory.
func (h *Harness) writeIngestConfig(cfg IngestConfig, listenAddr, metricsAddr string) (string, error) {
	dir := h.t.TempDir()
	stateDir := cfg.SyncStateDir
	if stateDir == "" {
		stateDir = filepath.Join(dir, "sync-state")
	}
	var b strings.Builder
	fmt.Fprintf(&b, `log:
  format: json
  level: info
nats:
  urls: [%q]
  name: %q
topology:
  partitions: %d
  mode: create
metrics_addr: %q
appservice:
  listen_addr: %q
publish:
  ack_timeout: %s
sync:
  state_dir: %q
  timeout: 5s
  backoff_min: 200ms
  backoff_max: 2s
homeservers:
`, cfg.NATSURL, "ingest-"+cfg.Name, cfg.Partitions, metricsAddr, listenAddr, cfg.AckTimeout, stateDir)
	names := make([]string, 0, len(cfg.HSTokens))
	for name := range cfg.HSTokens {
		names = append(names, name)
	}
	slices.Sort(names)
	for i, name := range names {
		tokFile := filepath.Join(dir, fmt.Sprintf("hs%d.hs_token", i))
		if err := os.WriteFile(tokFile, []byte(cfg.HSTokens[name]+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("ingest token file: %w", err)
		}
		fmt.Fprintf(&b, "  - name: %q\n    hs_token_file: %q\n", name, tokFile)
	}
	for i, hs := range cfg.Sync {
		tokFile := filepath.Join(dir, fmt.Sprintf("sync%d.access_token", i))
		if err := os.WriteFile(tokFile, []byte(hs.AccessToken+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("ingest access token file: %w", err)
		}
		fmt.Fprintf(&b, "  - name: %q\n    url: %q\n    sync:\n      enabled: true\n      user_id: %q\n      access_token_file: %q\n      device_id: %q\n",
			hs.Name, hs.URL, hs.UserID, tokFile, hs.DeviceID)
	}
	if len(names)+len(cfg.Sync) == 0 {
		b.WriteString("  []\n")
	}
	path := filepath.Join(dir, "ingest.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return "", fmt.Errorf("ingest config: %w", err)
	}
	return path, nil
}

// IngestReplay runs `ingest replay FILE` (extra flags in args, e.g.
// "--now") to completion and returns its output; the error includes the
// output when it fails. cfg.HSTokens may be empty.
func (h *Harness) IngestReplay(cfg IngestConfig, file string, args ...string) (string, error) {
	if cfg.Partitions == 0 {
		cfg.Partitions = 8
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 2 * time.Second
	}
	path, err := h.writeIngestConfig(cfg, testutil.FreePort(h.t), testutil.FreePort(h.t))
	if err != nil {
		return "", err
	}
	p, err := h.Start("ingest replay "+filepath.Base(file), h.Bins.Ingest,
		append(append([]string{"replay", "-config", path}, args...), file), cfg.Env...)
	if err != nil {
		return "", err
	}
	select {
	case <-p.Done():
	case <-time.After(2 * time.Minute):
		_ = p.Kill()
		return p.Output(), fmt.Errorf("ingest replay %s: still running after 2m: killed", file)
	}
	if err := p.Err(); err != nil {
		return p.Output(), fmt.Errorf("ingest replay %s: %w\n%s", file, err, p.Output())
	}
	return p.Output(), nil
}

// URL is the appservice base URL.
func (in *Ingest) URL() string { return "http://" + in.AppserviceAddr }

// Metrics returns the process's /metrics samples by series ("name" or
// `name{label="v",...}`).
func (in *Ingest) Metrics() (map[string]float64, error) {
	return Scrape("http://" + in.MetricsAddr + "/metrics")
}

// WaitReady waits until /readyz answers 200 (NATS connected, RTC_RAW
// ensured).
func (in *Ingest) WaitReady(timeout time.Duration) error {
	return in.WaitFor(timeout, func() error { return childproc.HTTPOK("http://" + in.MetricsAddr + "/readyz") })
}

// Scrape reads the Prometheus text exposition at url into series ("name"
// or `name{label="v",...}`, as the exposition writes them; a histogram's
// name_bucket{...,le="x"}, name_sum and name_count) -> value.
func Scrape(url string) (map[string]float64, error) { return childproc.Scrape(url) }
