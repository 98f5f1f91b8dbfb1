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
	"sort"
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
	// InboxPrefix replaces _INBOX for the replies this client receives, so
	// that the server can allow each user its own inboxes only (the shipped
	// permissions do: _INBOX_ingest, _INBOX_aggregator; docs/nats.md).
	InboxPrefix string `yaml:"inbox_prefix"`
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
	var methods []string
	for name, set := range map[string]bool{"creds_file": c.CredsFile != "", "nkey_seed_file": c.NKeySeedFile != "",
		"user": c.User != "", "token_file": c.TokenFile != ""} {
		if set {
			methods = append(methods, name)
		}
	}
	if len(methods) > 1 {
		sort.Strings(methods)
		errs = append(errs, fmt.Errorf("nats %s: choose one way to authenticate", strings.Join(methods, ", ")))
	}
	if p := c.InboxPrefix; p != "" && (strings.ContainsAny(p, "*> \t") || strings.HasPrefix(p, ".") || strings.HasSuffix(p, ".")) {
		errs = append(errs, fmt.Errorf("nats inbox_prefix %q: want a subject prefix without wildcards, e.g. _INBOX_ingest", p))
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
		pw := ""
		if c.PasswordFile != "" {
			var err error
			if pw, err = readSecret(c.PasswordFile); err != nil {
				return nil, fmt.Errorf("nats password_file: %w", err)
			}
		}
		opts = append(opts, nats.UserInfo(c.User, pw))
	}
	if c.TokenFile != "" {
		tok, err := readSecret(c.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("nats token_file: %w", err)
		}
		opts = append(opts, nats.Token(tok))
	}
	if c.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(c.InboxPrefix))
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

// readSecret reads a secret from a file; surrounding white space (the
// newline an editor or `echo` adds) is not part of it. An empty file is an
// error: it is always a mistake, and an empty password would be sent as none.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read secret file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("secret file %s is empty", path)
	}
	return s, nil
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
