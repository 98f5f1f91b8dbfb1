package rtcctl

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/natsutil/natsconn"
	"github.com/rtcsessions/rtc-sessions/internal/natsutil/natstest"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
)

// natsHome gives the test a HOME of its own and returns its nats CLI
// configuration directory (~/.config/nats).
func natsHome(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	dir := filepath.Join(home, ".config", "nats")
	if err := os.MkdirAll(filepath.Join(dir, "context"), 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeContext(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, "context", name+".json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func selectContext(t *testing.T, dir, name string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "context.txt"), []byte(name+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestResolve(t *testing.T) {
	dir := natsHome(t)
	files := t.TempDir()
	creds := natstest.WriteFile(t, files, "u.creds", []byte("x"))
	seed := natstest.WriteFile(t, files, "u.nk", []byte("x"))
	ca := natstest.WriteFile(t, files, "ca.pem", []byte("x"))
	ca2 := natstest.WriteFile(t, files, "ca2.pem", []byte("x"))
	writeContext(t, dir, "prod", fmt.Sprintf(`{"description":"production","url":"tls://nats-1.example:4222,nats-2.example:4222",
		"user":"subscriber","password":"pw-from-context","ca":%q,"inbox_prefix":"_INBOX_ops","jetstream_domain":"hub"}`, ca))
	writeContext(t, dir, "creds", fmt.Sprintf(`{"url":"nats://c.example:4222","creds":%q,"token":""}`, creds))
	pathCtx := filepath.Join(files, "elsewhere.json")
	if err := os.WriteFile(pathCtx, []byte(`{"url":"nats://path.example:4222","nkey":"`+seed+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	prod := natsconn.ConnConfig{URLs: []string{"tls://nats-1.example:4222", "nats://nats-2.example:4222"}, Name: "rtcctl",
		User: "subscriber", TLSCAFile: ca, InboxPrefix: "_INBOX_ops"}

	tests := []struct {
		name     string
		selected string
		flags    ConnFlags
		want     natsconn.ConnConfig
		password string
		context  string
		err      string
	}{
		{name: "nothing: the embedded server's default", want: natsconn.ConnConfig{URLs: []string{"nats://127.0.0.1:4222"}, Name: "rtcctl"}},
		{name: "server flag", flags: ConnFlags{Server: "nats://a:1, b:2"}, want: natsconn.ConnConfig{URLs: []string{"nats://a:1", "nats://b:2"}, Name: "rtcctl"}},
		{name: "named context", flags: ConnFlags{Context: "prod"}, want: prod, password: "pw-from-context", context: "prod"},
		{name: "selected context", selected: "prod", want: prod, password: "pw-from-context", context: "prod"},
		{name: "flag wins over the context", selected: "prod", flags: ConnFlags{Server: "nats://override:4222", TLSCA: ca2, InboxPrefix: "_INBOX_me", Password: "pw-flag"},
			want:     natsconn.ConnConfig{URLs: []string{"nats://override:4222"}, Name: "rtcctl", User: "subscriber", TLSCAFile: ca2, InboxPrefix: "_INBOX_me"},
			password: "pw-flag", context: "prod"},
		{name: "an auth flag replaces the context's", selected: "prod", flags: ConnFlags{Creds: creds},
			want: natsconn.ConnConfig{URLs: prod.URLs, Name: "rtcctl", CredsFile: creds, TLSCAFile: ca, InboxPrefix: "_INBOX_ops"}, context: "prod"},
		{name: "creds context", flags: ConnFlags{Context: "creds"}, want: natsconn.ConnConfig{URLs: []string{"nats://c.example:4222"}, Name: "rtcctl", CredsFile: creds}, context: "creds"},
		{name: "context by path", flags: ConnFlags{Context: pathCtx}, want: natsconn.ConnConfig{URLs: []string{"nats://path.example:4222"}, Name: "rtcctl", NKeySeedFile: seed}, context: pathCtx},
		{name: "user and password flags", flags: ConnFlags{User: "u", Password: "p", TLSCert: ca, TLSKey: ca2},
			want: natsconn.ConnConfig{URLs: []string{"nats://127.0.0.1:4222"}, Name: "rtcctl", User: "u", TLSCertFile: ca, TLSKeyFile: ca2}, password: "p"},
		{name: "unknown context", flags: ConnFlags{Context: "nope"}, err: `nats context "nope": unknown`},
		{name: "selected context missing", selected: "gone", err: `nats context "gone": unknown`},
		{name: "invalid name", flags: ConnFlags{Context: "../prod"}, err: "invalid name"},
		{name: "missing creds file", flags: ConnFlags{Creds: filepath.Join(files, "missing.creds")}, err: "creds_file"},
		{name: "cert without key", flags: ConnFlags{TLSCert: ca}, err: "go together"},
		{name: "password without user", flags: ConnFlags{Password: "p"}, err: "--password needs --user"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(filepath.Join(dir, "context.txt"))
			if tc.selected != "" {
				selectContext(t, dir, tc.selected)
			}
			got, err := tc.flags.resolve()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Config, tc.want) || got.Password != tc.password || got.Context != tc.context {
				t.Errorf("got %+v password %q context %q\nwant %+v password %q context %q", got.Config, got.Password, got.Context, tc.want, tc.password, tc.context)
			}
		})
	}

	t.Run("XDG_CONFIG_HOME", func(t *testing.T) {
		xdg := t.TempDir()
		t.Setenv("XDG_CONFIG_HOME", xdg)
		if err := os.MkdirAll(filepath.Join(xdg, "nats", "context"), 0o700); err != nil {
			t.Fatal(err)
		}
		writeContext(t, filepath.Join(xdg, "nats"), "x", `{"url":"nats://xdg.example:4222"}`)
		got, err := (&ConnFlags{Context: "x"}).resolve()
		if err != nil || got.Config.URLs[0] != "nats://xdg.example:4222" {
			t.Fatalf("%+v %v", got, err)
		}
	})
}

// TestContextsAndEnv connects to a real server through a selected context,
// a named one (flag and NATS_CONTEXT) and NATS_URL.
func TestContextsAndEnv(t *testing.T) {
	url, _ := embedded(t)
	dir := natsHome(t)
	writeContext(t, dir, "local", `{"description":"test server","url":"`+url+`"}`)
	writeContext(t, dir, "dead", `{"url":"nats://127.0.0.1:1"}`)

	ok := func(args ...string) {
		t.Helper()
		code, out, errs := run(t, append([]string{"sessions"}, args...)...)
		if code != 0 || !strings.Contains(out, "no live sessions") {
			t.Fatalf("%v: exit %d %q %s", args, code, out, errs)
		}
	}
	fails := func(want string, args ...string) {
		t.Helper()
		code, _, errs := run(t, append([]string{"sessions", "--timeout", "1s"}, args...)...)
		if code != 1 || !strings.Contains(errs, want) {
			t.Fatalf("%v: exit %d %s", args, code, errs)
		}
	}
	selectContext(t, dir, "local")
	ok()
	ok("--context", "local")
	fails(`nats context "dead"`, "--context", "dead")
	ok("--context", "dead", "--server", url) // the flag wins
	t.Setenv("NATS_CONTEXT", "dead")
	fails(`nats context "dead"`)
	t.Setenv("NATS_URL", url)
	ok() // NATS_URL wins over the context's url, as the --server flag would
	t.Setenv("NATS_CONTEXT", "")
	selectContext(t, dir, "dead")
	ok() // NATS_URL alone
}

// TestContextWithAuthAndTLS: a context with user, password, CA and inbox
// prefix reaches a server that requires TLS and a password and lets the user
// receive replies only under its own inbox prefix.
func TestContextWithAuthAndTLS(t *testing.T) {
	files := natstest.TLS(t, t.TempDir())
	conf := natstest.WriteFile(t, t.TempDir(), "server.conf", fmt.Appendf(nil, `
jetstream: enabled
tls { cert_file: %q, key_file: %q, ca_file: %q }
accounts { A { jetstream: enabled, users: [{user: ops, password: "s3cret-pw",
  permissions: {publish: {allow: ["$JS.API.>", "$KV.>", "rtc.>"]}, subscribe: {allow: ["_INBOX_ops.>"]}}}] } }
`, files.ServerCert, files.ServerKey, files.CA))
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.StoreDir, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, t.TempDir(), true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(ns.Shutdown)

	// The topology, made by the same user.
	nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("ops", "s3cret-pw"), nats.RootCAs(files.CA), nats.CustomInboxPrefix("_INBOX_ops"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	tc := topology.DefaultConfig()
	tc.Partitions = 2
	if _, err := topology.Ensure(context.Background(), js, tc, topology.ModeCreate); err != nil {
		t.Fatal(err)
	}

	dir := natsHome(t)
	ctxBody := func(password, inbox string) string {
		return fmt.Sprintf(`{"url":%q,"user":"ops","password":%q,"ca":%q,"inbox_prefix":%q}`, ns.ClientURL(), password, files.CA, inbox)
	}
	writeContext(t, dir, "prod", ctxBody("s3cret-pw", "_INBOX_ops"))
	writeContext(t, dir, "wrongpw", ctxBody("not-the-password", "_INBOX_ops"))
	writeContext(t, dir, "noinbox", ctxBody("s3cret-pw", ""))

	code, out, errs := run(t, "sessions", "--context", "prod")
	if code != 0 || !strings.Contains(out, "no live sessions") {
		t.Fatalf("prod: exit %d %q %s", code, out, errs)
	}
	if code, out, errs := run(t, "workers", "--context", "prod"); code != 0 || !strings.Contains(out, "workers (0 live)") {
		t.Fatalf("workers: exit %d %q %s", code, out, errs)
	}
	code, _, errs = run(t, "sessions", "--context", "wrongpw")
	if code != 1 || !strings.Contains(strings.ToLower(errs), "authorization") || strings.Contains(errs, "not-the-password") {
		t.Errorf("wrong password: exit %d %s", code, errs)
	}
	// Without its inbox prefix the user gets no replies.
	code, _, errs = run(t, "sessions", "--context", "noinbox", "--timeout", "1s")
	if code != 1 || !strings.Contains(errs, `user "ops" may not subscribe to _INBOX.`) || !strings.Contains(errs, "--inbox-prefix") {
		t.Errorf("no inbox prefix: exit %d %s", code, errs)
	}
	// The same with flags instead of a context, the prefix from NATS_INBOX_PREFIX.
	t.Setenv("NATS_INBOX_PREFIX", "_INBOX_ops")
	code, out, errs = run(t, "sessions", "-s", ns.ClientURL(), "--user", "ops", "--password", "s3cret-pw", "--tlsca", files.CA)
	if code != 0 || !strings.Contains(out, "no live sessions") {
		t.Fatalf("flags: exit %d %q %s", code, out, errs)
	}
}
