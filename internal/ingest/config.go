package ingest

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/rtcsessions/rtc-sessions/internal/config"
	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
	"github.com/rtcsessions/rtc-sessions/internal/telemetry"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
)

// EnvPrefix is the prefix of the ingest's environment overrides
// (RTC_INGEST_APPSERVICE_LISTEN_ADDR, RTC_INGEST_NATS_URLS, ...).
const EnvPrefix = "RTC_INGEST"

// Config is the ingest's configuration (configs/ingest.yaml documents every
// field). Secrets are never inline: *_file fields name files holding them.
type Config struct {
	Log         telemetry.LogConfig `yaml:"log"`
	NATS        natsutil.ConnConfig `yaml:"nats"`
	Topology    TopologyConfig      `yaml:"topology"`
	MetricsAddr string              `yaml:"metrics_addr"`
	Appservice  AppserviceConfig    `yaml:"appservice"`
	Publish     PublishConfig       `yaml:"publish"`
	Sync        SyncConfig          `yaml:"sync"`
	Reconcile   ReconcileConfig     `yaml:"reconcile"`
	Relay       RelayConfig         `yaml:"relay"`
	Homeservers []HomeserverConfig  `yaml:"homeservers"`
}

// RelayConfig bounds the cross-homeserver rule (docs/ingest.md "Which
// homeserver may speak for which user"); the rule itself is set per
// homeserver (homeservers[].server_name, homeservers[].relay).
type RelayConfig struct {
	// MaxRooms: rooms remembered per homeserver as rooms it has shown one
	// of its own users in (in memory; the least recently shown dropped
	// first). Forgetting one loses no event, only a relayed copy.
	MaxRooms int `yaml:"max_rooms"`
}

// ReconcileConfig configures reconciliation (docs/ingest.md
// "Reconciliation"): re-reading the current call state of rooms from the
// homeservers that can read them (an appservice with as_token_file and url,
// or a sync bot) and publishing it as reconcile inputs.
type ReconcileConfig struct {
	AtStart           bool          `yaml:"at_start"`            // a pass when the ingest starts
	Interval          time.Duration `yaml:"interval"`            // between periodic passes; 0: none
	OnDemand          bool          `yaml:"on_demand"`           // answer `rtcctl reconcile` (NATS request on rtc.ctl.ingest.reconcile)
	MaxRoomsPerPass   int           `yaml:"max_rooms_per_pass"`  // the rest wait for later passes (the selection rotates)
	RequestsPerSecond float64       `yaml:"requests_per_second"` // state reads, all homeservers together
	RequestTimeout    time.Duration `yaml:"request_timeout"`     // one state read
	MaxStateBytes     int64         `yaml:"max_state_bytes"`     // one room's state answer; larger: failure too_large
	RecentWindow      time.Duration `yaml:"recent_window"`       // rooms seen with call state events this recently are candidates
	MaxRecentRooms    int           `yaml:"max_recent_rooms"`    // at most this many of them are remembered
}

// Options are the reconciler options of this configuration.
func (c ReconcileConfig) Options() ReconcileOptions {
	return ReconcileOptions{AtStart: c.AtStart, Interval: c.Interval, MaxRoomsPerPass: c.MaxRoomsPerPass,
		RequestsPerSecond: c.RequestsPerSecond, OnDemand: c.OnDemand}
}

// TopologyConfig is what the ingest needs of the topology: RTC_RAW.
type TopologyConfig struct {
	Partitions int    `yaml:"partitions"` // must match the aggregator's
	Replicas   int    `yaml:"replicas"`
	Mode       string `yaml:"mode"` // create (default) or verify
}

// AppserviceConfig configures the appservice listener and bounds what it
// holds in memory.
type AppserviceConfig struct {
	ListenAddr      string        `yaml:"listen_addr"`       // empty: no appservice listener
	MaxBodyBytes    int64         `yaml:"max_body_bytes"`    // one transaction; larger: 413
	BodyBudgetBytes int64         `yaml:"body_budget_bytes"` // all transactions in flight; over it: 429
	RetryAfter      time.Duration `yaml:"retry_after"`       // asked of a homeserver answered 429
	MaxEvents       int           `yaml:"max_events"`        // per transaction; more: 413
	MaxJSONDepth    int           `yaml:"max_json_depth"`    // nesting of an event or another member
	MaxArrayLen     int           `yaml:"max_array_len"`     // elements of any array inside them
	TxnCacheSize    int           `yaml:"txn_cache_size"`
}

// Options are the appservice options of this configuration.
func (c AppserviceConfig) Options() AppserviceOptions {
	return AppserviceOptions{MaxBodyBytes: c.MaxBodyBytes, BodyBudget: c.BodyBudgetBytes, RetryAfter: c.RetryAfter,
		Limits:       TxnLimits{MaxEvents: c.MaxEvents, MaxDepth: c.MaxJSONDepth, MaxArrayLen: c.MaxArrayLen},
		TxnCacheSize: c.TxnCacheSize}
}

// PublishConfig bounds publishing to JetStream.
type PublishConfig struct {
	MaxInFlight      int           `yaml:"max_in_flight"`
	MaxInFlightBytes int64         `yaml:"max_in_flight_bytes"`
	AckTimeout       time.Duration `yaml:"ack_timeout"`
}

// PublisherConfig is the publisher configuration of this configuration.
func (c PublishConfig) PublisherConfig() PublisherConfig {
	return PublisherConfig(c)
}

// SyncConfig is shared by every homeserver's sync source.
type SyncConfig struct {
	StateDir   string        `yaml:"state_dir"` // one next_batch file per homeserver
	Timeout    time.Duration `yaml:"timeout"`   // long-poll timeout of /sync
	BackoffMin time.Duration `yaml:"backoff_min"`
	BackoffMax time.Duration `yaml:"backoff_max"`
}

// HomeserverConfig is one homeserver: an appservice registration (hs_token),
// a sync bot, or both.
type HomeserverConfig struct {
	Name string `yaml:"name"`
	// ServerName is the Matrix server name of the homeserver's users (the
	// part after ':' in @alice:example.org); empty: Name. Its users' events
	// are accepted from it, and from other homeservers only as Relay says.
	ServerName string `yaml:"server_name"`
	// Relay says when the homeserver may deliver events of another listed
	// homeserver's users: rooms (default), never or always (RelayMode).
	Relay       string `yaml:"relay"`
	URL         string `yaml:"url"`
	HSTokenFile string `yaml:"hs_token_file"` // appservice: the homeserver's token for us
	// ASTokenFile is our token for the homeserver: with url, the
	// reconciliation reads room state as the appservice's sender user
	// (which must be joined to the rooms). Without it the appservice
	// homeserver is not reconciled.
	ASTokenFile string `yaml:"as_token_file"`
	Sync        struct {
		Enabled         bool   `yaml:"enabled"`
		UserID          string `yaml:"user_id"`
		AccessTokenFile string `yaml:"access_token_file"`
		PasswordFile    string `yaml:"password_file"` // login with user_id + password when no access token
		DeviceID        string `yaml:"device_id"`
	} `yaml:"sync"`
}

// DefaultConfig has a default for every field.
func DefaultConfig() Config {
	return Config{
		Log:         telemetry.LogConfig{Format: "json", Level: "info"},
		NATS:        natsutil.ConnConfig{Name: "rtc-ingest"},
		Topology:    TopologyConfig{Partitions: topology.DefaultConfig().Partitions, Replicas: 1, Mode: string(topology.ModeCreate)},
		MetricsAddr: "127.0.0.1:9101",
		Appservice: AppserviceConfig{ListenAddr: "127.0.0.1:29333", MaxBodyBytes: 10 << 20,
			// 64 MiB of bodies in flight: a new transaction holds about one
			// 1 MiB chunk of prepared events, a known id at most its own
			// size, so the ingest stays well under a 256 MiB pod limit
			// (measured under a hostile flood of concurrent 10 MiB
			// transactions: 41 MiB peak RSS, TestIngestProcessMemoryFlood).
			BodyBudgetBytes: 64 << 20, RetryAfter: time.Second,
			MaxEvents: 10000, MaxJSONDepth: 32, MaxArrayLen: 10000, TxnCacheSize: 256},
		Publish: PublishConfig{MaxInFlight: 1024, MaxInFlightBytes: 8 << 20, AckTimeout: 5 * time.Second},
		Sync:    SyncConfig{StateDir: "var/ingest-sync", Timeout: 30 * time.Second, BackoffMin: time.Second, BackoffMax: time.Minute},
		Reconcile: ReconcileConfig{AtStart: true, Interval: 10 * time.Minute, OnDemand: true, MaxRoomsPerPass: 500,
			RequestsPerSecond: 5, RequestTimeout: 30 * time.Second, MaxStateBytes: 64 << 20,
			RecentWindow: 24 * time.Hour, MaxRecentRooms: 10000},
		Relay: RelayConfig{MaxRooms: DefaultRelayMaxRooms},
	}
}

// LoadConfig reads defaults, then the YAML file (if path is not empty), then
// RTC_INGEST_* environment variables, and validates the result.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	if err := config.Load(path, EnvPrefix, &c); err != nil {
		return c, fmt.Errorf("ingest config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("ingest config: %w", err)
	}
	return c, nil
}

var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// serverNameRe is the Matrix server name grammar: a DNS name, an IPv4
// address or a bracketed IPv6 literal, with an optional port.
var serverNameRe = regexp.MustCompile(`^(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9][A-Za-z0-9.-]{0,254})(:[0-9]{1,5})?$`)

// EffectiveServerName is the server name of the homeserver's users:
// server_name, or the name when it is not set.
func (h HomeserverConfig) EffectiveServerName() string {
	if h.ServerName != "" {
		return h.ServerName
	}
	return h.Name
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(c.Log.Validate())
	add(c.NATS.Validate())
	tc := c.TopologyConfig()
	add(tc.Validate())
	if c.Topology.Mode != string(topology.ModeCreate) && c.Topology.Mode != string(topology.ModeVerify) {
		add(fmt.Errorf("topology.mode %q: want create or verify", c.Topology.Mode))
	}
	if c.Appservice.MaxBodyBytes < 1024 {
		add(fmt.Errorf("appservice.max_body_bytes %d: must be at least 1024", c.Appservice.MaxBodyBytes))
	}
	if c.Appservice.BodyBudgetBytes < c.Appservice.MaxBodyBytes {
		add(fmt.Errorf("appservice.body_budget_bytes %d: must be at least max_body_bytes %d (else the largest transaction never fits)",
			c.Appservice.BodyBudgetBytes, c.Appservice.MaxBodyBytes))
	}
	if c.Appservice.RetryAfter < 100*time.Millisecond || c.Appservice.RetryAfter > 5*time.Minute {
		add(fmt.Errorf("appservice.retry_after %s: must be between 100ms and 5m", c.Appservice.RetryAfter))
	}
	if c.Appservice.MaxEvents < 1 {
		add(fmt.Errorf("appservice.max_events %d: must be positive", c.Appservice.MaxEvents))
	}
	if c.Appservice.MaxJSONDepth < 4 || c.Appservice.MaxJSONDepth > 1000 {
		add(fmt.Errorf("appservice.max_json_depth %d: must be between 4 and 1000", c.Appservice.MaxJSONDepth))
	}
	if c.Appservice.MaxArrayLen < 1 {
		add(fmt.Errorf("appservice.max_array_len %d: must be positive", c.Appservice.MaxArrayLen))
	}
	if c.Appservice.TxnCacheSize < 1 {
		add(fmt.Errorf("appservice.txn_cache_size %d: must be positive", c.Appservice.TxnCacheSize))
	}
	if c.Publish.MaxInFlight < 1 || c.Publish.MaxInFlight > 1<<20 {
		add(fmt.Errorf("publish.max_in_flight %d: must be between 1 and 1048576", c.Publish.MaxInFlight))
	}
	if c.Publish.MaxInFlightBytes < 1<<20 {
		add(fmt.Errorf("publish.max_in_flight_bytes %d: must be at least 1 MiB", c.Publish.MaxInFlightBytes))
	}
	if c.Publish.AckTimeout < 100*time.Millisecond {
		add(fmt.Errorf("publish.ack_timeout %s: must be at least 100ms", c.Publish.AckTimeout))
	}
	if c.Sync.Timeout < 0 || c.Sync.BackoffMin <= 0 || c.Sync.BackoffMax < c.Sync.BackoffMin {
		add(fmt.Errorf("sync: timeout %s must be >= 0 and 0 < backoff_min %s <= backoff_max %s",
			c.Sync.Timeout, c.Sync.BackoffMin, c.Sync.BackoffMax))
	}
	rc := c.Reconcile
	if rc.Interval != 0 && rc.Interval < 10*time.Second {
		add(fmt.Errorf("reconcile.interval %s: must be 0 (no periodic passes) or at least 10s", rc.Interval))
	}
	if rc.MaxRoomsPerPass < 1 {
		add(fmt.Errorf("reconcile.max_rooms_per_pass %d: must be positive", rc.MaxRoomsPerPass))
	}
	if rc.RequestsPerSecond <= 0 || rc.RequestsPerSecond > 1000 {
		add(fmt.Errorf("reconcile.requests_per_second %g: must be above 0 and at most 1000", rc.RequestsPerSecond))
	}
	if rc.RequestTimeout < time.Second {
		add(fmt.Errorf("reconcile.request_timeout %s: must be at least 1s", rc.RequestTimeout))
	}
	if rc.MaxStateBytes < 1<<20 {
		add(fmt.Errorf("reconcile.max_state_bytes %d: must be at least 1 MiB", rc.MaxStateBytes))
	}
	if rc.RecentWindow < 0 || rc.MaxRecentRooms < 0 {
		add(fmt.Errorf("reconcile: recent_window %s and max_recent_rooms %d must not be negative", rc.RecentWindow, rc.MaxRecentRooms))
	}
	if c.Relay.MaxRooms < 1 || c.Relay.MaxRooms > 10_000_000 {
		add(fmt.Errorf("relay.max_rooms %d: must be between 1 and 10000000", c.Relay.MaxRooms))
	}
	names := map[string]bool{}
	servers := map[string]string{} // lower-cased server name -> homeserver
	anySync, anyAS := false, false
	for i, h := range c.Homeservers {
		where := fmt.Sprintf("homeservers[%d] (%s)", i, h.Name)
		if !nameRe.MatchString(h.Name) {
			add(fmt.Errorf("%s: name %q: want letters, digits and . _ : - (at most 128)", where, h.Name))
		} else if names[h.Name] {
			add(fmt.Errorf("%s: name %q used twice", where, h.Name))
		}
		names[h.Name] = true
		if h.ServerName != "" && !serverNameRe.MatchString(h.ServerName) {
			add(fmt.Errorf("%s: server_name %q: want a Matrix server name (host[:port])", where, h.ServerName))
		}
		// Two homeservers owning the same users would each refuse the
		// other's copies: the owner must be one.
		sn := strings.ToLower(h.EffectiveServerName())
		if other, dup := servers[sn]; dup {
			add(fmt.Errorf("%s: server_name %q is also %s's: each server's users belong to one homeserver", where, h.EffectiveServerName(), other))
		}
		servers[sn] = h.Name
		if err := validRelayMode(h.Relay); err != nil {
			add(fmt.Errorf("%s: %w", where, err))
		}
		if h.URL != "" {
			if u, err := url.Parse(h.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				add(fmt.Errorf("%s: url %q: want http(s)://host[:port]", where, h.URL))
			}
		}
		if h.ASTokenFile != "" && h.URL == "" {
			add(fmt.Errorf("%s: as_token_file needs url (reconciliation reads room state from the homeserver)", where))
		}
		if h.HSTokenFile == "" && !h.Sync.Enabled {
			add(fmt.Errorf("%s: neither hs_token_file (appservice) nor sync.enabled: the homeserver would send nothing", where))
		}
		if h.HSTokenFile != "" {
			anyAS = true
		}
		if h.Sync.Enabled {
			anySync = true
			if h.URL == "" {
				add(fmt.Errorf("%s: sync needs url", where))
			}
			if h.Sync.AccessTokenFile == "" && (h.Sync.UserID == "" || h.Sync.PasswordFile == "") {
				add(fmt.Errorf("%s: sync needs access_token_file, or user_id and password_file", where))
			}
		}
	}
	if anyAS && c.Appservice.ListenAddr == "" {
		add(errors.New("appservice.listen_addr is empty but homeservers have hs_token_file"))
	}
	if anySync && c.Sync.StateDir == "" {
		add(errors.New("sync.state_dir: needed to persist sync tokens"))
	}
	return errors.Join(errs...)
}

// TopologyConfig is the topology configuration the ingest ensures RTC_RAW with.
func (c Config) TopologyConfig() topology.Config {
	tc := topology.DefaultConfig()
	tc.Partitions = c.Topology.Partitions
	tc.Replicas = c.Topology.Replicas
	return tc
}

// Secrets reads the homeservers' secret files and reports every problem at
// once (never the secrets themselves). Two homeservers with the same
// hs_token are an error: the token is how a transaction is attributed.
func (c Config) Secrets() ([]Homeserver, error) {
	var errs []error
	var out []Homeserver
	seen := map[string]string{}
	for _, h := range c.Homeservers {
		hs := Homeserver{Name: h.Name, URL: h.URL, ServerName: h.EffectiveServerName(), Relay: RelayMode(h.Relay)}
		if h.ASTokenFile != "" {
			tok, err := config.ReadSecretFile(h.ASTokenFile)
			if err != nil {
				errs = append(errs, fmt.Errorf("homeserver %s: as_token_file: %w", h.Name, err))
			} else {
				hs.ASToken = tok
			}
		}
		if h.HSTokenFile != "" {
			tok, err := config.ReadSecretFile(h.HSTokenFile)
			if err != nil {
				errs = append(errs, fmt.Errorf("homeserver %s: hs_token_file: %w", h.Name, err))
			} else if other, dup := seen[tok]; dup {
				errs = append(errs, fmt.Errorf("homeserver %s: same hs_token as %s", h.Name, other))
			} else {
				seen[tok] = h.Name
				hs.HSToken = tok
			}
		}
		out = append(out, hs)
	}
	return out, errors.Join(errs...)
}
