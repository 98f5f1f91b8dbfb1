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

	"github.com/rtcsessions/rtc-sessions/internal/topology"
)

// DefaultEmbeddedPort is where the embedded server listens on loopback, so
// that the ingest and rtcctl find it with their default configuration.
const DefaultEmbeddedPort = 4222

// ConnConfig says how to reach NATS. Secrets come from files.
type ConnConfig struct {
	URLs         []string `yaml:"urls"`       // empty: the embedded server (aggregator) or nats://127.0.0.1:4222
	Name         string   `yaml:"name"`       // client name shown by the server
	CredsFile    string   `yaml:"creds_file"` // NATS credentials (JWT + nkey seed)
	NKeySeedFile string   `yaml:"nkey_seed_file"`
	User         string   `yaml:"user"`
	PasswordFile string   `yaml:"password_file"`
	TokenFile    string   `yaml:"token_file"`
	TLSCAFile    string   `yaml:"tls_ca_file"`
	TLSCertFile  string   `yaml:"tls_cert_file"`
	TLSKeyFile   string   `yaml:"tls_key_file"`
}

// Validate reports every problem at once.
func (c ConnConfig) Validate() error {
	var errs []error
	for _, u := range c.URLs {
		if !strings.Contains(u, "://") {
			errs = append(errs, fmt.Errorf("nats url %q: want scheme://host:port", u))
		}
	}
	for name, f := range map[string]string{"creds_file": c.CredsFile, "nkey_seed_file": c.NKeySeedFile,
		"password_file": c.PasswordFile, "token_file": c.TokenFile, "tls_ca_file": c.TLSCAFile,
		"tls_cert_file": c.TLSCertFile, "tls_key_file": c.TLSKeyFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			errs = append(errs, fmt.Errorf("nats %s: %w", name, err))
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("nats tls_cert_file and tls_key_file go together"))
	}
	if c.PasswordFile != "" && c.User == "" {
		errs = append(errs, errors.New("nats password_file needs user"))
	}
	return errors.Join(errs...)
}

// Connect dials NATS with reconnects forever: a NATS outage is something the
// services ride out, not a reason to exit. It refuses servers older than
// topology.MinServerVersion.
func Connect(ctx context.Context, c ConnConfig, log *zap.Logger, extra ...nats.Option) (*nats.Conn, error) {
	url := strings.Join(c.URLs, ",")
	if url == "" {
		url = fmt.Sprintf("nats://127.0.0.1:%d", DefaultEmbeddedPort)
	}
	opts := []nats.Option{
		nats.Name(c.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected", zap.Error(err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", zap.String("server", nc.ConnectedUrlRedacted()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("nats async error", zap.String("subject", subj), zap.Error(err))
		}),
	}
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.NKeySeedFile != "" {
		o, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed %s: %w", c.NKeySeedFile, err)
		}
		opts = append(opts, o)
	}
	if c.User != "" {
		pw, err := readSecret(c.PasswordFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserInfo(c.User, pw))
	}
	if c.TokenFile != "" {
		tok, err := readSecret(c.TokenFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Token(tok))
	}
	if c.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(c.TLSCAFile))
	}
	if c.TLSCertFile != "" {
		opts = append(opts, nats.ClientCert(c.TLSCertFile, c.TLSKeyFile))
	}
	opts = append(opts, extra...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", redact(url), err)
	}
	if err := topology.CheckServerVersion(nc.ConnectedServerVersion()); err != nil {
		nc.Close()
		return nil, err
	}
	return nc, nil
}

func readSecret(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read secret file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// redact hides user:password@ in URLs for error messages.
func redact(url string) string {
	parts := strings.Split(url, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			if s := strings.Index(p, "://"); s >= 0 && s < at {
				parts[i] = p[:s+3] + "***" + p[at:]
			}
		}
	}
	return strings.Join(parts, ",")
}

// EmbeddedConfig configures the embedded server.
type EmbeddedConfig struct {
	DataDir  string // JetStream file storage
	Host     string // loopback by default: the embedded server is not for the network
	Port     int    // -1 picks a free port (tests)
	MaxStore int64  // bytes; 0 = server default
}

// StartEmbedded starts an in-process nats-server with JetStream and waits
// until it accepts connections.
func StartEmbedded(c EmbeddedConfig, log *zap.Logger) (*server.Server, error) {
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.DataDir == "" {
		return nil, errors.New("embedded nats: no data directory")
	}
	if err := os.MkdirAll(c.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("embedded nats data dir: %w", err)
	}
	opts := &server.Options{
		ServerName:         "rtc-embedded",
		JetStream:          true,
		StoreDir:           c.DataDir,
		Host:               c.Host,
		Port:               c.Port,
		NoSigs:             true,
		NoLog:              true,
		JetStreamMaxStore:  c.MaxStore,
		JetStreamMaxMemory: 64 << 20,
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
		zap.String("version", server.VERSION), zap.String("data_dir", c.DataDir))
	return ns, nil
}
