// Package natsconn is the client side of internal/natsutil: how every
// rtc-sessions process (the services and rtcctl) connects to NATS. It is a
// package of its own so that a client (rtcctl) does not link nats-server,
// which internal/natsutil needs for the embedded server.
package natsconn

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// DefaultPort is where the aggregator's embedded server listens on loopback,
// and so where a client without URLs connects.
const DefaultPort = 4222

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
// MinServerVersion.
func Connect(ctx context.Context, c ConnConfig, log *zap.Logger, extra ...nats.Option) (*nats.Conn, error) {
	url := strings.Join(c.URLs, ",")
	if url == "" {
		url = fmt.Sprintf("nats://127.0.0.1:%d", DefaultPort)
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
	if err := CheckServerVersion(nc.ConnectedServerVersion()); err != nil {
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
