package rtcctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rtcsessions/rtc-sessions/internal/natsutil/natsconn"
	"github.com/rtcsessions/rtc-sessions/internal/rtcctl/safetext"
)

// ConnFlags are the connection flags of every command, named, with the
// environment variables, as in the nats CLI, so that an operator's NATS
// contexts and habits carry over.
type ConnFlags struct {
	Server      string        `group:"connection" short:"s" name:"server" aliases:"nats" env:"NATS_URL" placeholder:"URL" help:"NATS server URLs, comma separated (default: the context's, else nats://127.0.0.1:4222)."`
	Context     string        `group:"connection" name:"context" env:"NATS_CONTEXT" placeholder:"NAME" help:"NATS context: a name under ~/.config/nats/context/, or a context file's path (default: the one selected in ~/.config/nats/context.txt)."`
	Creds       string        `group:"connection" name:"creds" env:"NATS_CREDS" placeholder:"FILE" help:"User credentials file (JWT and nkey seed)."`
	NKey        string        `group:"connection" name:"nkey" env:"NATS_NKEY" placeholder:"FILE" help:"User nkey seed file."`
	User        string        `group:"connection" name:"user" env:"NATS_USER" help:"User name."`
	Password    string        `group:"connection" name:"password" env:"NATS_PASSWORD" help:"Password."`
	TLSCert     string        `group:"connection" name:"tlscert" env:"NATS_CERT" placeholder:"FILE" help:"TLS client certificate."`
	TLSKey      string        `group:"connection" name:"tlskey" env:"NATS_KEY" placeholder:"FILE" help:"TLS client private key."`
	TLSCA       string        `group:"connection" name:"tlsca" env:"NATS_CA" placeholder:"FILE" help:"TLS certificate authority chain."`
	InboxPrefix string        `group:"connection" name:"inbox-prefix" env:"NATS_INBOX_PREFIX" placeholder:"PREFIX" help:"Custom inbox prefix (replies go to PREFIX.>)."`
	Timeout     time.Duration `group:"connection" name:"timeout" env:"NATS_TIMEOUT" default:"5s" help:"Time to wait for a connection and for each NATS request."`
}

// NATSContext is the part of a nats CLI context file
// (~/.config/nats/context/NAME.json) that rtcctl uses; other fields
// (description, jetstream_domain, ...) are ignored.
type NATSContext struct {
	URL         string `json:"url"`
	Token       string `json:"token"`
	User        string `group:"connection" json:"user"`
	Password    string `group:"connection" json:"password"`
	Creds       string `group:"connection" json:"creds"`
	NKey        string `group:"connection" json:"nkey"`
	Cert        string `json:"cert"`
	Key         string `json:"key"`
	CA          string `json:"ca"`
	InboxPrefix string `group:"connection" json:"inbox_prefix"`
}

// natsConfigDir is where the nats CLI keeps its configuration:
// $XDG_CONFIG_HOME/nats, else ~/.config/nats.
func natsConfigDir() (string, error) {
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "nats"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("nats context: %w", err)
	}
	return filepath.Join(home, ".config", "nats"), nil
}

// loadContext reads the named context, or the selected one when name is
// empty (none selected: nil). A name that is a path to a file (absolute, or
// ending in .json) is read as such.
func loadContext(name string) (*NATSContext, string, error) {
	dir, err := natsConfigDir()
	if err != nil {
		return nil, "", err
	}
	if name == "" {
		b, err := os.ReadFile(filepath.Join(dir, "context.txt"))
		if errors.Is(err, os.ErrNotExist) {
			return nil, "", nil
		}
		if err != nil {
			return nil, "", fmt.Errorf("nats context: read the selected context: %w", err)
		}
		if name = strings.TrimSpace(string(b)); name == "" {
			return nil, "", nil
		}
	}
	var path string
	switch {
	case filepath.IsAbs(name) || strings.HasSuffix(name, ".json"):
		path = name
	case strings.Contains(name, "..") || strings.ContainsRune(name, os.PathSeparator):
		return nil, "", fmt.Errorf("nats context %q: invalid name", name)
	default:
		path = filepath.Join(dir, "context", name+".json")
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, "", fmt.Errorf("nats context %q: unknown (no %s)", name, path)
	}
	if err != nil {
		return nil, "", fmt.Errorf("nats context %q: %w", name, err)
	}
	var c NATSContext
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, "", fmt.Errorf("nats context %q: %s: %w", name, path, err)
	}
	c.Creds = os.ExpandEnv(c.Creds)
	for _, p := range []*string{&c.Creds, &c.NKey, &c.Cert, &c.Key, &c.CA} {
		*p = expandHome(*p)
	}
	return &c, name, nil
}

func expandHome(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, p[1:])
		}
	}
	return p
}

// connTarget is what the flags and the context resolve to.
type connTarget struct {
	Config   natsconn.ConnConfig
	Password string // given directly (flag, environment or context), not as a file
	Token    string
	Context  string // the context used, "" for none
}

// resolve merges the context with the flags: a flag (or its environment
// variable) wins over the context's field, and an authentication flag
// (--creds, --nkey, --user) replaces the context's authentication whole.
func (f *ConnFlags) resolve() (connTarget, error) {
	var t connTarget
	nctx, name, err := loadContext(f.Context)
	if err != nil {
		return t, err
	}
	if nctx == nil {
		nctx = &NATSContext{}
	}
	t.Context = name
	url := first(f.Server, nctx.URL, fmt.Sprintf("nats://127.0.0.1:%d", natsconn.DefaultPort))
	for _, u := range strings.Split(url, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		t.Config.URLs = append(t.Config.URLs, u)
	}
	t.Config.Name = "rtcctl"
	auth := NATSContext{User: nctx.User, Password: nctx.Password, Creds: nctx.Creds, NKey: nctx.NKey, Token: nctx.Token}
	if f.Creds != "" || f.NKey != "" || f.User != "" {
		auth = NATSContext{User: f.User, Password: f.Password, Creds: f.Creds, NKey: f.NKey}
	} else if f.Password != "" {
		auth.Password = f.Password
	}
	// One way to authenticate, in the nats CLI's order of preference.
	switch {
	case auth.User != "":
		t.Config.User, t.Password = auth.User, auth.Password
	case auth.Creds != "":
		t.Config.CredsFile = auth.Creds
	case auth.NKey != "":
		t.Config.NKeySeedFile = auth.NKey
	case auth.Password != "":
		return t, fmt.Errorf("%w: --password needs --user", ErrUsage)
	}
	t.Token = auth.Token
	t.Config.TLSCertFile = first(f.TLSCert, nctx.Cert)
	t.Config.TLSKeyFile = first(f.TLSKey, nctx.Key)
	t.Config.TLSCAFile = first(f.TLSCA, nctx.CA)
	t.Config.InboxPrefix = first(f.InboxPrefix, nctx.InboxPrefix)
	if err := t.Config.Validate(); err != nil {
		return t, err
	}
	return t, nil
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// connect dials NATS through natsconn.Connect, the connection code of the
// services, and opens JetStream with the request timeout.
func (e *runEnv) connect(ctx context.Context) (*nats.Conn, jetstream.JetStream, error) {
	t, err := e.conn.resolve()
	if err != nil {
		return nil, nil, err
	}
	// Warnings quote what the server sent: escaped, and the console
	// encoder's columns separated by spaces (a tab would be escaped).
	ec := zap.NewDevelopmentEncoderConfig()
	ec.ConsoleSeparator = "  "
	log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(ec),
		zapcore.AddSync(safetext.LineWriter{W: e.stderr}), zapcore.WarnLevel))
	extra := []nats.Option{
		nats.Timeout(e.conn.Timeout),
		// Closing the connection at the end of a command is no news.
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", zap.Error(err))
			}
		}),
	}
	if t.Config.User != "" {
		extra = append(extra, nats.UserInfo(t.Config.User, t.Password))
	}
	if t.Token != "" {
		extra = append(extra, nats.Token(t.Token))
	}
	// A refusal arrives as an asynchronous error, not as the answer to the
	// request: it ends the command at once (the context passed on to the
	// command is cancelled with it), instead of the request's timeout.
	who := describeUser(t)
	e.who = who
	pctx, cancel := context.WithCancelCause(ctx)
	e.perm = &permWatch{cancel: cancel}
	e.ctx = pctx
	extra = append(extra, nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		if p := parseViolation(err, who, t.Config.InboxPrefix); p != nil {
			if !benignViolation(p) {
				e.perm.report(p)
			}
			return
		}
		subj := ""
		if sub != nil {
			subj = sub.Subject
		}
		log.Warn("nats async error", zap.String("subject", subj), zap.Error(err))
	}))
	// The nats client waits its whole timeout for a server that never
	// greets (an HTTP port): find that out quickly first.
	var nc *nats.Conn
	err = probeAll(ctx, t.Config.URLs, e.conn.Timeout)
	if err == nil {
		nc, err = natsconn.Connect(ctx, t.Config, log, extra...)
	}
	if err != nil {
		if t.Context != "" {
			return nil, nil, fmt.Errorf("nats context %q: %w", t.Context, err)
		}
		return nil, nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(e.conn.Timeout))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}
