package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/rtcsessions/rtc-sessions"

// TestBinary builds the ingest as `make build` does, stamping a version, and
// runs it: help, --version and usage errors with their exit statuses, as
// deployments and scripts invoke it (one-dash long flags included).
func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "ingest")
	ld := "-X " + module + "/internal/version.version=v9.8.7-test -X " + module + "/internal/version.commit=0123abcd"
	if out, err := exec.Command("go", "build", "-ldflags", ld, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	badCfg := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(badCfg, []byte("frobnicate: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const version = "ingest version v9.8.7-test (commit 0123abcd"
	tests := []struct {
		args     []string
		code     int
		stdout   string // prefix
		inStderr string
	}{
		{[]string{"--version"}, 0, version, ""},
		{[]string{"-version"}, 0, version, ""},
		{[]string{"version"}, 0, version, ""},
		{[]string{"--help"}, 0, "Usage: ingest <command> [flags]", ""},
		{[]string{"-h"}, 0, "Usage: ingest <command> [flags]", ""},
		{[]string{"help"}, 0, "Usage: ingest <command> [flags]", ""},
		{[]string{"serve", "--help"}, 0, "Usage: ingest serve [flags]", ""},
		{[]string{"replay", "--help"}, 0, "Usage: ingest replay <file> [flags]", ""},
		{[]string{"help", "push"}, 0, "Usage: ingest push --to=URL <file> [flags]", ""},
		{[]string{"push", "-h"}, 0, "Usage: ingest push --to=URL <file> [flags]", ""},
		{[]string{"serve", "--to", "http://x"}, 2, "", "unknown flag --to"},
		{[]string{"serve", "-config", badCfg, "--now"}, 2, "", "unknown flag --now"},
		{[]string{"replay", "--live", "f.jsonl"}, 2, "", "unknown flag --live"},
		{[]string{"serve", "extra"}, 2, "", "unexpected argument extra"},
		{[]string{"frobnicate"}, 2, "", "unexpected argument frobnicate"},
		{[]string{"--frobnicate"}, 2, "", "unknown flag --frobnicate"},
		{[]string{"replay"}, 2, "", `expected "<file>"`},
		{[]string{"push", "f.jsonl"}, 2, "", "missing flags: --to=URL"},
		{[]string{"help", "frobnicate"}, 2, "", "frobnicate"},
		{[]string{"serve", "-config", badCfg}, 2, "", "frobnicate"},
		{[]string{"-config", badCfg}, 2, "", "frobnicate"},
		{[]string{"--config=" + badCfg}, 2, "", "frobnicate"},
		{[]string{"replay", "-config", badCfg, "-now", "-homeserver", "hs1", "f.jsonl"}, 2, "", "frobnicate"},
		{[]string{"push", "-config", badCfg, "-to", "http://x", "-live", "-speed", "2", "f.jsonl"}, 2, "", "frobnicate"},
		{[]string{"replay", filepath.Join(t.TempDir(), "missing.jsonl")}, 2, "", "missing.jsonl"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := runBin(t, bin, nil, tc.args...)
			if code != tc.code || !strings.HasPrefix(stdout, tc.stdout) || !strings.Contains(stderr, tc.inStderr) {
				t.Errorf("exit %d (want %d)\nstdout %q\nstderr %q", code, tc.code, stdout, stderr)
			}
			if tc.code == 2 && stdout != "" {
				t.Errorf("a usage error printed on stdout: %q", stdout)
			}
		})
	}
	// The help names the environment variables.
	if _, out, _ := runBin(t, bin, nil, "--help"); !strings.Contains(out, "$RTC_INGEST_CONFIG") || !strings.Contains(out, "RTC_INGEST_*") {
		t.Errorf("the help does not name the environment variables:\n%s", out)
	}
	// RTC_INGEST_CONFIG is --config.
	if code, _, stderr := runBin(t, bin, []string{"RTC_INGEST_CONFIG=" + badCfg}); code != 2 || !strings.Contains(stderr, "frobnicate") {
		t.Errorf("RTC_INGEST_CONFIG: exit %d, stderr %q", code, stderr)
	}
}

func runBin(t *testing.T, bin string, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RTC_INGEST_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), stdout.String(), stderr.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, stdout.String(), stderr.String()
}
