package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   string // prefix
		inStderr string
	}{
		{"version", []string{"--version"}, 0, "rtcapi version", ""},
		{"version word", []string{"version"}, 0, "rtcapi version", ""},
		{"help", []string{"-h"}, 0, "", "Usage: rtcapi"},
		{"unknown flag", []string{"--frobnicate"}, 2, "", "frobnicate"},
		{"extra argument", []string{"serve"}, 2, "", `unexpected argument "serve"`},
		{"unknown field", []string{"-config", write("typo.yaml", "listn: x\n")}, 2, "", "listn"},
		{"no token", []string{"-config", write("none.yaml", "listen: 127.0.0.1:0\n")}, 2, "", "allow_anonymous"},
		{"missing token file", []string{"-config", write("missing.yaml", "auth:\n  tokens:\n    - name: a\n      file: "+filepath.Join(dir, "nope")+"\n")}, 2, "", "token a"},
		{"missing config", []string{"-config", filepath.Join(dir, "absent.yaml")}, 2, "", "read config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errb)
			if code != tc.code || !strings.HasPrefix(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.inStderr) {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errb.String())
			}
		})
	}
}

// TestServeUntilSignal: with a valid configuration rtcapi serves until its
// context ends (SIGTERM), then exits 0.
func TestServeUntilSignal(t *testing.T) {
	ns, err := natsutil.StartEmbedded(natsutil.EmbeddedConfig{DataDir: t.TempDir(), Port: -1}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	cfg := filepath.Join(t.TempDir(), "rtcapi.yaml")
	if err := os.WriteFile(cfg, []byte("log: {format: console, level: error}\nlisten: 127.0.0.1:0\nauth: {allow_anonymous: true}\nnats: {urls: ["+ns.ClientURL()+"]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(500*time.Millisecond, cancel)
	var out, errb bytes.Buffer
	if code := run(ctx, []string{"-config", cfg}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}
