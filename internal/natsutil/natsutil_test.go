package natsutil

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestEmbeddedAndConnect(t *testing.T) {
	ns, err := StartEmbedded(EmbeddedConfig{DataDir: filepath.Join(t.TempDir(), "nats"), Port: -1}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	if !strings.HasPrefix(ns.ClientURL(), "nats://127.0.0.1:") {
		t.Fatalf("the embedded server must listen on loopback only: %s", ns.ClientURL())
	}
	if !ns.JetStreamEnabled() {
		t.Fatal("JetStream is off")
	}
	nc, err := Connect(context.Background(), ConnConfig{URLs: []string{ns.ClientURL()}, Name: "t"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}

func TestConnectUnreachable(t *testing.T) {
	_, err := Connect(context.Background(), ConnConfig{URLs: []string{"nats://user:secret@127.0.0.1:1"}}, zap.NewNop())
	if err == nil || strings.Contains(err.Error(), "secret") || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("want an error naming the server without the password, got %v", err)
	}
}

func TestEmbeddedNeedsDataDir(t *testing.T) {
	if _, err := StartEmbedded(EmbeddedConfig{Port: -1}, zap.NewNop()); err == nil {
		t.Fatal("want an error without a data dir")
	}
}

func TestConnConfigValidate(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := (ConnConfig{URLs: []string{"nats://a:4222"}, User: "u", PasswordFile: pw}).Validate(); err != nil {
		t.Fatal(err)
	}
	err := ConnConfig{URLs: []string{"a:4222"}, CredsFile: filepath.Join(dir, "missing.creds"),
		TLSCertFile: pw, PasswordFile: pw}.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"a:4222", "creds_file", "tls_key_file", "needs user"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q: %v", want, err)
		}
	}
}
