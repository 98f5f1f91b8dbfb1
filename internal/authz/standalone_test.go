package authz_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/rtcsessions/rtc-sessions/internal/authz"
	"github.com/rtcsessions/rtc-sessions/internal/authz/authztest"
	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
	"github.com/rtcsessions/rtc-sessions/internal/natsutil/natstest"
)

// TestStandaloneServerConf starts a server from configs/nats/nats-server.conf
// (with test certificates in place of /etc/nats/tls, a temporary store, and
// a loopback port): clients need TLS and a shipped user.
func TestStandaloneServerConf(t *testing.T) {
	root := authztest.RepoRoot()
	conf, err := os.ReadFile(filepath.Join(root, "configs/nats/nats-server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	accounts, err := os.ReadFile(filepath.Join(root, authz.ConfPath))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certs := natstest.TLS(t, dir)
	text := string(conf)
	for old, repl := range map[string]string{
		"/etc/nats/tls/tls.crt": certs.ServerCert, "/etc/nats/tls/tls.key": certs.ServerKey,
		"/etc/nats/tls/ca.crt": certs.CA, "/var/lib/nats": filepath.Join(dir, "js"),
	} {
		if !strings.Contains(text, old) {
			t.Fatalf("nats-server.conf no longer mentions %s; update this test", old)
		}
		text = strings.ReplaceAll(text, old, repl)
	}
	natstest.WriteFile(t, dir, "nats-server.conf", []byte(text))
	natstest.WriteFile(t, dir, filepath.Base(authz.ConfPath), accounts)
	pw := map[string]string{}
	for _, u := range authz.Users() {
		pw[u.Name] = natstest.WriteFile(t, dir, u.Name+".pw", []byte("pw-"+u.Name))
		t.Setenv(u.PasswordEnv, "pw-"+u.Name)
	}
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "nats-server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !opts.JetStream || opts.StoreDir != filepath.Join(dir, "js") || opts.TLSConfig == nil || len(opts.Users) != len(authz.Users()) {
		t.Fatalf("nats-server.conf: want JetStream, TLS and the %d users", len(authz.Users()))
	}
	opts.Host, opts.Port, opts.HTTPHost, opts.HTTPPort, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, "127.0.0.1", -1, true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	defer ns.Shutdown()

	url := ns.ClientURL()
	for _, c := range []natsutil.ConnConfig{
		{URLs: []string{url}, User: authz.UserSubscriber, PasswordFile: pw[authz.UserSubscriber]}, // no TLS
		{URLs: []string{url}, TLSCAFile: certs.CA},                                                // no user
	} {
		if nc, err := natsutil.Connect(context.Background(), c, zap.NewNop()); err == nil {
			nc.Close()
			t.Fatalf("connected without TLS or without a user: %+v", c)
		}
	}
	nc, err := natsutil.Connect(context.Background(), natsutil.ConnConfig{URLs: []string{url}, User: authz.UserAggregator,
		PasswordFile: pw[authz.UserAggregator], InboxPrefix: "_INBOX_aggregator", TLSCAFile: certs.CA}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.TLSConnectionState(); err != nil {
		t.Fatalf("not TLS: %v", err)
	}
	if _, err := nc.Request("$JS.API.INFO", nil, 5*time.Second); err != nil {
		t.Fatalf("aggregator: JetStream account info: %v", err)
	}
}

// TestBcryptPasswords: the documented way, a bcrypt hash in the server's
// environment and the password in the service's file, works with the
// shipped file.
func TestBcryptPasswords(t *testing.T) {
	dir := t.TempDir()
	pwFile := natstest.WriteFile(t, dir, "pw", []byte("s3cret-ingest\n"))
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret-ingest"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range authz.Users() {
		t.Setenv(u.PasswordEnv, string(hash))
	}
	ns, err := natsutil.StartEmbedded(natsutil.EmbeddedConfig{DataDir: filepath.Join(dir, "js"), Port: -1,
		ConfigFile: filepath.Join(authztest.RepoRoot(), authz.ConfPath)}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	c := natsutil.ConnConfig{URLs: []string{ns.ClientURL()}, User: authz.UserIngest, PasswordFile: pwFile, InboxPrefix: "_INBOX_ingest"}
	nc, err := natsutil.Connect(context.Background(), c, zap.NewNop())
	if err != nil {
		t.Fatalf("password against its bcrypt hash: %v", err)
	}
	nc.Close()
	c.PasswordFile = natstest.WriteFile(t, dir, "wrong", []byte("wrong"))
	if nc, err := natsutil.Connect(context.Background(), c, zap.NewNop()); err == nil {
		nc.Close()
		t.Fatal("a wrong password passed the bcrypt check")
	}
}
