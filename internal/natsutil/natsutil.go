// Package natsutil connects the services to NATS: an external server or
// cluster (URLs, credentials, TLS), or an embedded JetStream server for the
// zero-setup mode and for tests.
package natsutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/natsutil/natsconn"
)

// DefaultEmbeddedPort is where the embedded server listens on loopback, so
// that the ingest and rtcctl find it with their default configuration.
const DefaultEmbeddedPort = natsconn.DefaultPort

// ConnConfig says how to reach NATS (internal/natsutil/natsconn, which a
// client such as rtcctl uses without linking nats-server).
type ConnConfig = natsconn.ConnConfig

// Connect dials NATS with reconnects forever: see natsconn.Connect.
func Connect(ctx context.Context, c ConnConfig, log *zap.Logger, extra ...nats.Option) (*nats.Conn, error) {
	return natsconn.Connect(ctx, c, log, extra...)
}

// EmbeddedConfig configures the embedded server.
type EmbeddedConfig struct {
	DataDir  string `yaml:"data_dir"`  // JetStream file storage
	Host     string `yaml:"host"`      // loopback by default: see StartEmbedded
	Port     int    `yaml:"port"`      // -1 picks a free port (tests)
	MaxStore int64  `yaml:"max_store"` // bytes; 0 = server default
	// ConfigFile is a nats-server configuration file loaded first, e.g.
	// configs/nats/rtc-accounts.conf for the shipped users and their
	// permissions (its passwords come from the environment), and TLS. The
	// fields above override its listen address and JetStream storage.
	ConfigFile string `yaml:"config_file"`
}

// ErrEmbeddedExposed is returned by StartEmbedded for a non-loopback host
// without authorization.
var ErrEmbeddedExposed = errors.New("embedded nats: refusing to listen beyond loopback without authorization")

// StartEmbedded starts an in-process nats-server with JetStream and waits
// until it accepts connections.
//
// The embedded server listens on loopback unless authorization is
// configured: on any other address (0.0.0.0, a pod IP) without users anyone
// who reaches the port could publish inputs, read every session or delete
// the streams, so StartEmbedded refuses it with ErrEmbeddedExposed.
func StartEmbedded(c EmbeddedConfig, log *zap.Logger) (*server.Server, error) {
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.DataDir == "" {
		return nil, errors.New("embedded nats: no data directory")
	}
	opts := &server.Options{}
	if c.ConfigFile != "" {
		var err error
		if opts, err = server.ProcessConfigFile(c.ConfigFile); err != nil {
			return nil, fmt.Errorf("embedded nats config_file: %w", err)
		}
	}
	if err := checkExposure(c.Host, opts); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("embedded nats data dir: %w", err)
	}
	if opts.ServerName == "" {
		opts.ServerName = "rtc-embedded"
	}
	opts.JetStream = true
	opts.StoreDir = c.DataDir
	opts.Host = c.Host
	opts.Port = c.Port
	opts.NoSigs = true
	opts.NoLog = true
	if c.MaxStore != 0 {
		opts.JetStreamMaxStore = c.MaxStore
	}
	if opts.JetStreamMaxMemory == 0 {
		opts.JetStreamMaxMemory = 64 << 20
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s: not ready after 15s (is the port in use?)",
			net.JoinHostPort(c.Host, strconv.Itoa(c.Port)))
	}
	log.Info("embedded nats-server started", zap.String("url", ns.ClientURL()),
		zap.String("version", server.VERSION), zap.String("data_dir", c.DataDir),
		zap.Bool("authorization", HasAuthorization(opts)))
	return ns, nil
}

// checkExposure refuses a non-loopback host unless every client must
// authenticate.
func checkExposure(host string, opts *server.Options) error {
	if IsLoopback(host) || HasAuthorization(opts) {
		return nil
	}
	return fmt.Errorf("%w: host %q is reachable from the network and no users are configured; "+
		"keep host 127.0.0.1, or set the embedded config_file to a nats-server config with users "+
		"(configs/nats/rtc-accounts.conf, docs/nats.md), or use a NATS server of your own (nats.urls)",
		ErrEmbeddedExposed, host)
}

// IsLoopback reports whether host (a name or an address, no port) can only
// be reached from this machine.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// HasAuthorization reports whether a server with these options requires
// every client to authenticate. A no_auth_user lets anonymous clients in
// as that user, so it does not count.
func HasAuthorization(o *server.Options) bool {
	if o.NoAuthUser != "" {
		return false
	}
	return len(o.Users) > 0 || len(o.Nkeys) > 0 || o.Authorization != "" || o.Username != "" ||
		len(o.TrustedOperators) > 0 || len(o.TrustedKeys) > 0 || o.AuthCallout != nil
}
