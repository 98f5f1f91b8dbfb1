// Package authztest runs an embedded nats-server with exactly the shipped
// users and permissions (configs/nats/rtc-accounts.conf) and connects to it
// as each user, recording the permission violations the server reports.
package authztest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/authz"
	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
)

// RepoRoot is the repository's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// Server is the embedded server with the shipped permissions, and the
// password file of each user.
type Server struct {
	NS            *server.Server
	PasswordFiles map[string]string
}

// Start sets a password for every shipped user in the environment (so it
// cannot run in parallel tests), starts the embedded server through
// natsutil.StartEmbedded with the shipped config file, and stops it when the
// test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	dir := t.TempDir()
	s := &Server{PasswordFiles: map[string]string{}}
	for _, u := range authz.Users() {
		pw := "pw-" + u.Name + "-" + filepath.Base(dir)
		t.Setenv(u.PasswordEnv, pw)
		p := filepath.Join(dir, u.Name+".password")
		if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		s.PasswordFiles[u.Name] = p
	}
	ns, err := natsutil.StartEmbedded(natsutil.EmbeddedConfig{DataDir: filepath.Join(dir, "nats"), Port: -1,
		ConfigFile: filepath.Join(RepoRoot(), authz.ConfPath)}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	s.NS = ns
	return s
}

// ConnConfig is how a service logs in as user: its password file and the
// inbox prefix its permissions allow.
func (s *Server) ConnConfig(user string) natsutil.ConnConfig {
	u, ok := authz.UserByName(user)
	if !ok {
		panic("no shipped user " + user)
	}
	c := natsutil.ConnConfig{URLs: []string{s.NS.ClientURL()}, Name: "rtc-" + user, User: user,
		PasswordFile: s.PasswordFiles[user]}
	if u.InboxPrefix != "_INBOX" {
		c.InboxPrefix = u.InboxPrefix
	}
	return c
}

// Client is a connection as one user with the violations it was told of.
type Client struct {
	NC *nats.Conn
	JS jetstream.JetStream

	mu         sync.Mutex
	violations []string
}

// Connect logs in as user and closes the connection when the test ends.
func (s *Server) Connect(t testing.TB, user string) *Client {
	t.Helper()
	c := &Client{}
	nc, err := natsutil.Connect(context.Background(), s.ConnConfig(user), zap.NewNop(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				c.mu.Lock()
				c.violations = append(c.violations, err.Error())
				c.mu.Unlock()
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c.NC, c.JS = nc, js
	return c
}

// Violations returns the permission violations reported so far.
func (c *Client) Violations() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.violations...)
}

// WaitViolation waits until the server reported a permission violation
// whose text contains subject (case-insensitive: nats.go lower-cases some).
func (c *Client) WaitViolation(subject string, within time.Duration) (string, bool) {
	deadline := time.Now().Add(within)
	for {
		for _, v := range c.Violations() {
			if strings.Contains(strings.ToLower(v), strings.ToLower(subject)) {
				return v, true
			}
		}
		if time.Now().After(deadline) {
			return "", false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
