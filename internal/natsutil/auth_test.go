package natsutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/natsutil/natstest"
)

// startServer runs a nats-server with JetStream on loopback, configured by
// conf (nats-server syntax), until the test ends.
func startServer(t *testing.T, conf string) *server.Server {
	t.Helper()
	dir := t.TempDir()
	opts, err := server.ProcessConfigFile(natstest.WriteFile(t, dir, "server.conf", []byte(conf)))
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	opts.JetStream, opts.StoreDir = true, filepath.Join(dir, "js")
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready after 10s")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

// useJetStream proves the connection is authenticated into an account with
// JetStream: it creates a stream and publishes to it.
func useJetStream(t *testing.T, nc *nats.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	if _, err := js.Publish(ctx, "t.x", []byte("x")); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// TestConnectAuthMethods connects with each way to authenticate that
// ConnConfig offers, to a server configured for it, and with a wrong secret,
// which must fail without the secret in the error.
func TestConnectAuthMethods(t *testing.T) {
	dir := t.TempDir()
	const password, token = "pw-7f3a9c", "tok-1b2e8d"
	nkeyPub, nkeySeed := natstest.NKeyUser(t, dir, "user.nk")
	_, otherSeed := natstest.NKeyUser(t, dir, "other.nk")
	op := natstest.OperatorCreds(t, dir)
	other := natstest.OperatorCreds(t, t.TempDir()) // a user of an operator the server does not trust
	pwFile := natstest.WriteFile(t, dir, "password", []byte(password+"\n"))
	badPW := natstest.WriteFile(t, dir, "bad-password", []byte("wrong\n"))
	tokFile := natstest.WriteFile(t, dir, "token", []byte(token+"\n"))
	badTok := natstest.WriteFile(t, dir, "bad-token", []byte("wrong"))

	tests := []struct {
		name       string
		conf       string
		good, bad  ConnConfig
		secretText string // must not appear in errors
	}{
		{"user and password file",
			fmt.Sprintf("jetstream: enabled\naccounts { A { jetstream: enabled, users: [{user: svc, password: %q}] } }\n", password),
			ConnConfig{User: "svc", PasswordFile: pwFile}, ConnConfig{User: "svc", PasswordFile: badPW}, password},
		{"nkey seed file",
			fmt.Sprintf("jetstream: enabled\naccounts { A { jetstream: enabled, users: [{nkey: %s}] } }\n", nkeyPub),
			ConnConfig{NKeySeedFile: nkeySeed}, ConnConfig{NKeySeedFile: otherSeed}, ""},
		{"token file",
			fmt.Sprintf("jetstream: enabled\nauthorization { token: %q }\n", token),
			ConnConfig{TokenFile: tokFile}, ConnConfig{TokenFile: badTok}, token},
		{"creds file (operator mode)",
			"jetstream: enabled\n" + op.ConfText,
			ConnConfig{CredsFile: op.CredsFile}, ConnConfig{CredsFile: other.CredsFile}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns := startServer(t, tc.conf)
			if _, err := Connect(context.Background(), ConnConfig{URLs: []string{ns.ClientURL()}}, zap.NewNop()); err == nil {
				t.Fatal("an anonymous client got in")
			}
			good := tc.good
			good.URLs = []string{ns.ClientURL()}
			if err := good.Validate(); err != nil {
				t.Fatal(err)
			}
			nc, err := Connect(context.Background(), good, zap.NewNop())
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer nc.Close()
			useJetStream(t, nc)

			bad := tc.bad
			bad.URLs = []string{ns.ClientURL()}
			_, err = Connect(context.Background(), bad, zap.NewNop())
			if err == nil {
				t.Fatal("a wrong secret got in")
			}
			if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
				t.Errorf("want an authorization error, got %v", err)
			}
			if tc.secretText != "" && strings.Contains(err.Error(), tc.secretText) {
				t.Errorf("the error shows the secret: %v", err)
			}
		})
	}
}

// TestConnectTLS connects to a server that requires TLS (and, in the second
// case, a client certificate) with tls_ca_file and tls_cert_file/key_file.
func TestConnectTLS(t *testing.T) {
	files := natstest.TLS(t, t.TempDir())
	tests := []struct {
		name     string
		verify   bool
		withCert bool
	}{
		{"server certificate", false, false},
		{"mutual TLS", true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conf := fmt.Sprintf("jetstream: enabled\ntls { cert_file: %q, key_file: %q, ca_file: %q, verify: %v }\n",
				files.ServerCert, files.ServerKey, files.CA, tc.verify)
			ns := startServer(t, conf)
			url := ns.ClientURL() // nats://: TLS comes from tls_ca_file, not the scheme
			if _, err := Connect(context.Background(), ConnConfig{URLs: []string{url}}, zap.NewNop()); err == nil {
				t.Fatal("a client without TLS settings connected to a TLS server")
			}
			c := ConnConfig{URLs: []string{url}, TLSCAFile: files.CA}
			if tc.verify {
				if _, err := Connect(context.Background(), c, zap.NewNop()); err == nil {
					t.Fatal("a client without a certificate passed verify")
				}
				c.TLSCertFile, c.TLSKeyFile = files.ClientCert, files.ClientKey
			}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			nc, err := Connect(context.Background(), c, zap.NewNop())
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer nc.Close()
			if !nc.TLSRequired() {
				t.Error("the server did not require TLS")
			}
			if _, err := nc.TLSConnectionState(); err != nil {
				t.Errorf("not a TLS connection: %v", err)
			}
			useJetStream(t, nc)
		})
	}
}

// TestInboxPrefix: a user who may subscribe only to its own inbox prefix
// works with InboxPrefix set (requests, JetStream API, async publish acks)
// and is refused with the default _INBOX.
func TestInboxPrefix(t *testing.T) {
	pw := natstest.WriteFile(t, t.TempDir(), "pw", []byte("s3cret"))
	ns := startServer(t, `jetstream: enabled
accounts { A { jetstream: enabled, users: [{user: svc, password: s3cret,
  permissions: {publish: {allow: ["t.>", "$JS.API.>"]}, subscribe: {allow: ["_INBOX_svc.>"]}}}] } }
`)
	nc, err := Connect(context.Background(), ConnConfig{URLs: []string{ns.ClientURL()}, User: "svc", PasswordFile: pw,
		InboxPrefix: "_INBOX_svc"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	useJetStream(t, nc)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	f, err := js.PublishAsync("t.y", []byte("y"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.Ok():
	case err := <-f.Err():
		t.Fatalf("async publish: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no async PubAck within 10s")
	}

	def, err := Connect(context.Background(), ConnConfig{URLs: []string{ns.ClientURL()}, User: "svc", PasswordFile: pw}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer def.Close()
	// The reply subscription on _INBOX.> is refused (asynchronously), so
	// the request gets no answer.
	if _, err = def.Request("$JS.API.INFO", nil, time.Second); err == nil {
		t.Fatal("a request with the default inbox prefix got an answer")
	}
	if !errors.Is(def.LastError(), nats.ErrPermissionViolation) {
		t.Fatalf("with the default inbox prefix: want a permission violation, got %v", def.LastError())
	}
}

func TestConnConfigValidateAuth(t *testing.T) {
	dir := t.TempDir()
	f := natstest.WriteFile(t, dir, "f", []byte("x"))
	tests := []struct {
		name string
		c    ConnConfig
		want string // "" = valid
	}{
		{"nothing", ConnConfig{}, ""},
		{"user only", ConnConfig{User: "u"}, ""},
		{"creds", ConnConfig{CredsFile: f, InboxPrefix: "_INBOX_x"}, ""},
		{"two methods", ConnConfig{CredsFile: f, User: "u", PasswordFile: f}, "creds_file, user: choose one"},
		{"token and nkey", ConnConfig{TokenFile: f, NKeySeedFile: f}, "nkey_seed_file, token_file: choose one"},
		{"wildcard inbox", ConnConfig{InboxPrefix: "_INBOX.>"}, "inbox_prefix"},
		{"dotted inbox", ConnConfig{InboxPrefix: "_INBOX."}, "inbox_prefix"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error with %q, got %v", tc.want, err)
			}
		})
	}
}

func TestConnectSecretFiles(t *testing.T) {
	dir := t.TempDir()
	empty := natstest.WriteFile(t, dir, "empty", []byte("\n"))
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name string
		c    ConnConfig
		want string
	}{
		{"empty password file", ConnConfig{User: "u", PasswordFile: empty}, "password_file"},
		{"missing token file", ConnConfig{TokenFile: missing}, "token_file"},
		{"empty token file", ConnConfig{TokenFile: empty}, "empty"},
		{"missing nkey seed", ConnConfig{NKeySeedFile: missing}, "nkey seed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.URLs = []string{"nats://127.0.0.1:1"}
			_, err := Connect(context.Background(), tc.c, zap.NewNop())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error with %q, got %v", tc.want, err)
			}
			if tc.c.TokenFile == missing && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the cause is lost: %v", err)
			}
		})
	}
}

// TestEmbeddedExposure: a non-loopback host needs authorization. The
// refusal happens before anything listens, so the test never opens a port
// beyond loopback.
func TestEmbeddedExposure(t *testing.T) {
	dir := t.TempDir()
	users := natstest.WriteFile(t, dir, "users.conf", []byte(`accounts { A { jetstream: enabled, users: [{user: a, password: b}] } }`))
	noAuthUser := natstest.WriteFile(t, dir, "noauth.conf",
		[]byte("accounts { A { jetstream: enabled, users: [{user: a, password: b}] } }\nno_auth_user: a\n"))
	load := func(path string) *server.Options {
		if path == "" {
			return &server.Options{}
		}
		o, err := server.ProcessConfigFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	tests := []struct {
		host, conf string
		ok         bool
	}{
		{"127.0.0.1", "", true},
		{"::1", "", true},
		{"[::1]", "", true},
		{"localhost", "", true},
		{"127.0.0.2", "", true},
		{"0.0.0.0", "", false},
		{"::", "", false},
		{"10.1.2.3", "", false},
		{"nats.example.org", "", false},
		{"0.0.0.0", users, true},
		{"0.0.0.0", noAuthUser, false}, // anonymous clients get in as the no_auth_user
	}
	for _, tc := range tests {
		err := checkExposure(tc.host, load(tc.conf))
		if tc.ok != (err == nil) {
			t.Errorf("host %q conf %q: got %v", tc.host, filepath.Base(tc.conf), err)
		}
		if err != nil && (!errors.Is(err, ErrEmbeddedExposed) || !strings.Contains(err.Error(), "config_file")) {
			t.Errorf("host %q: the error must be ErrEmbeddedExposed and name the fix: %v", tc.host, err)
		}
	}
	// And StartEmbedded applies it before listening.
	_, err := StartEmbedded(EmbeddedConfig{DataDir: filepath.Join(dir, "nats"), Host: "0.0.0.0", Port: -1}, zap.NewNop())
	if !errors.Is(err, ErrEmbeddedExposed) || !strings.Contains(err.Error(), `"0.0.0.0"`) {
		t.Fatalf("want ErrEmbeddedExposed naming the host, got %v", err)
	}
}

// TestEmbeddedWithUsers runs the embedded server from a config file with
// users: anonymous clients are refused, a user gets JetStream in its account.
func TestEmbeddedWithUsers(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("RTC_TEST_EMBEDDED_PW", "pw-embedded")
	conf := natstest.WriteFile(t, dir, "users.conf",
		[]byte(`accounts { RTC { jetstream: enabled, users: [{user: svc, password: $RTC_TEST_EMBEDDED_PW}] } }`))
	ns, err := StartEmbedded(EmbeddedConfig{DataDir: filepath.Join(dir, "nats"), Port: -1, ConfigFile: conf}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	if !strings.HasPrefix(ns.ClientURL(), "nats://127.0.0.1:") {
		t.Fatalf("the default host must be loopback: %s", ns.ClientURL())
	}
	if _, err := Connect(context.Background(), ConnConfig{URLs: []string{ns.ClientURL()}}, zap.NewNop()); err == nil {
		t.Fatal("an anonymous client got into the embedded server with users")
	}
	pw := natstest.WriteFile(t, dir, "pw", []byte("pw-embedded\n"))
	nc, err := Connect(context.Background(), ConnConfig{URLs: []string{ns.ClientURL()}, User: "svc", PasswordFile: pw}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	useJetStream(t, nc)

	_, err = StartEmbedded(EmbeddedConfig{DataDir: filepath.Join(dir, "nats2"), Port: -1,
		ConfigFile: filepath.Join(dir, "missing.conf")}, zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), "config_file") {
		t.Fatalf("want a config_file error, got %v", err)
	}
}
