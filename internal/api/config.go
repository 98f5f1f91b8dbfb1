package api

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/rtcsessions/rtc-sessions/internal/config"
	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
	"github.com/rtcsessions/rtc-sessions/internal/telemetry"
)

// EnvPrefix is the prefix of rtcapi's environment overrides
// (RTC_API_LISTEN, RTC_API_NATS_URLS, RTC_API_AUTH_ALLOW_ANONYMOUS, ...).
const EnvPrefix = "RTC_API"

// Config is rtcapi's configuration (configs/rtcapi.yaml documents every
// field). Secrets are never inline: the bearer tokens and the NATS
// password are read from files.
type Config struct {
	Log  telemetry.LogConfig `yaml:"log"`
	NATS natsutil.ConnConfig `yaml:"nats"`
	// Listen is the HTTP address of the API, the live-calls page, /healthz
	// and /readyz, and of /metrics unless MetricsListen is set.
	Listen string `yaml:"listen"`
	// MetricsListen, when set, serves /metrics, /healthz and /readyz on a
	// second address (kept off the public one: a pod's metrics port), and
	// /metrics no longer on Listen.
	MetricsListen string        `yaml:"metrics_listen"`
	Auth          AuthConfig    `yaml:"auth"`
	CORS          CORSConfig    `yaml:"cors"`
	SSE           SSEConfig     `yaml:"sse"`
	History       HistoryConfig `yaml:"history"`
	// ShutdownGrace bounds the graceful shutdown on SIGTERM: requests in
	// flight finish, event streams are closed (clients reconnect to
	// another replica with Last-Event-ID).
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
}

// AuthConfig says who may read what.
type AuthConfig struct {
	// AllowAnonymous lets requests without a token read every room. Off by
	// default: sessions name users and devices.
	AllowAnonymous bool          `yaml:"allow_anonymous"`
	Tokens         []TokenConfig `yaml:"tokens"`
}

// TokenConfig is one bearer token: a secret read from a file, and the rooms
// it may read.
type TokenConfig struct {
	Name string `yaml:"name"` // shown in logs and metrics, never the secret
	File string `yaml:"file"` // holds the token (surrounding white space trimmed)
	// Rooms limits the token to these room ids; empty: every room.
	Rooms []string `yaml:"rooms"`
}

// CORSConfig lists the origins whose pages may call the API from a browser.
type CORSConfig struct {
	// AllowedOrigins: exact origins (https://dash.example.org) or "*"; empty:
	// no cross-origin access (the live-calls page is same-origin).
	AllowedOrigins []string `yaml:"allowed_origins"`
}

// SSEConfig configures GET /v1/events.
type SSEConfig struct {
	Heartbeat  time.Duration `yaml:"heartbeat"`   // a comment line this often keeps proxies from closing an idle stream
	MaxClients int           `yaml:"max_clients"` // event streams open at once per replica; more: 503
	Retry      time.Duration `yaml:"retry"`       // the reconnection delay the server asks of EventSource clients
}

// HistoryConfig configures GET /v1/rooms/{room}/history and /v1/history.
type HistoryConfig struct {
	DefaultLimit int `yaml:"default_limit"`
	MaxLimit     int `yaml:"max_limit"`
	// ReadTimeout bounds one history read from RTC_HISTORY.
	ReadTimeout time.Duration `yaml:"read_timeout"`
}

// DefaultConfig has a default for every field.
func DefaultConfig() Config {
	return Config{
		Log:           telemetry.LogConfig{Format: "json", Level: "info"},
		NATS:          natsutil.ConnConfig{Name: "rtc-api"},
		Listen:        "127.0.0.1:8090",
		SSE:           SSEConfig{Heartbeat: 15 * time.Second, MaxClients: 1000, Retry: 2 * time.Second},
		History:       HistoryConfig{DefaultLimit: 50, MaxLimit: 500, ReadTimeout: 10 * time.Second},
		ShutdownGrace: 10 * time.Second,
	}
}

// LoadConfig reads defaults, then the YAML file (if path is not empty), then
// RTC_API_* environment variables, and validates the result.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	if err := config.Load(path, EnvPrefix, &c); err != nil {
		return c, fmt.Errorf("rtcapi config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("rtcapi config: %w", err)
	}
	return c, nil
}

var tokenNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(c.Log.Validate())
	if err := c.NATS.Validate(); err != nil {
		add(fmt.Errorf("nats: %w", err))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		add(fmt.Errorf("listen %q: %w", c.Listen, err))
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			add(fmt.Errorf("metrics_listen %q: %w", c.MetricsListen, err))
		} else if c.MetricsListen == c.Listen {
			add(fmt.Errorf("metrics_listen %q: the same as listen; leave it empty to serve /metrics there", c.MetricsListen))
		}
	}
	if !c.Auth.AllowAnonymous && len(c.Auth.Tokens) == 0 {
		add(errors.New("auth: no tokens and allow_anonymous false: nobody could read anything; add auth.tokens or set auth.allow_anonymous"))
	}
	names := map[string]bool{}
	for i, t := range c.Auth.Tokens {
		if !tokenNameRe.MatchString(t.Name) {
			add(fmt.Errorf("auth.tokens[%d].name %q: want 1-64 of [A-Za-z0-9._-]", i, t.Name))
		}
		if names[t.Name] {
			add(fmt.Errorf("auth.tokens[%d].name %q: used twice", i, t.Name))
		}
		names[t.Name] = true
		if t.File == "" {
			add(fmt.Errorf("auth.tokens[%d] (%s): file is required", i, t.Name))
		}
		for _, r := range t.Rooms {
			if !strings.HasPrefix(r, "!") || !strings.Contains(r, ":") {
				add(fmt.Errorf("auth.tokens[%d] (%s): room %q is not a room id (!opaque:server)", i, t.Name, r))
			}
		}
	}
	for _, o := range c.CORS.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			add(fmt.Errorf("cors.allowed_origins %q: want scheme://host[:port] or *", o))
		}
	}
	if c.SSE.Heartbeat < time.Second {
		add(fmt.Errorf("sse.heartbeat %s: want at least 1s", c.SSE.Heartbeat))
	}
	if c.SSE.MaxClients < 1 {
		add(fmt.Errorf("sse.max_clients %d: want at least 1", c.SSE.MaxClients))
	}
	if c.SSE.Retry < 100*time.Millisecond {
		add(fmt.Errorf("sse.retry %s: want at least 100ms", c.SSE.Retry))
	}
	if c.History.DefaultLimit < 1 || c.History.MaxLimit < c.History.DefaultLimit || c.History.MaxLimit > 10000 {
		add(fmt.Errorf("history.default_limit %d, max_limit %d: want 1 <= default_limit <= max_limit <= 10000",
			c.History.DefaultLimit, c.History.MaxLimit))
	}
	if c.History.ReadTimeout < 100*time.Millisecond {
		add(fmt.Errorf("history.read_timeout %s: want at least 100ms", c.History.ReadTimeout))
	}
	if c.ShutdownGrace < 0 {
		add(fmt.Errorf("shutdown_grace %s: want 0 or more", c.ShutdownGrace))
	}
	return errors.Join(errs...)
}
