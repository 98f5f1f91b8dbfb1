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

// TestDependencies keeps rtcctl a small client: it links no service code
// (internal/aggregator, internal/ingest), no nats-server, no Prometheus.
// What it may import of this module is listed; anything new must be added
// here on purpose.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := map[string]bool{
		module + "/cmd/rtcctl": true, module + "/internal/rtcctl": true,
		module + "/internal/roomstore": true, module + "/internal/jsutil": true, // the room-record codec
		module + "/internal/natsutil/natsconn": true, module + "/internal/assign": true,
		module + "/internal/simulate": true, module + "/internal/topology": true, module + "/internal/version": true,
		module + "/internal/wire":            true, // pkg/events' hand-written msgpack
		module + "/internal/ctlapi":          true, // the rtcctl reconcile request and reply
		module + "/internal/rtcctl/safetext": true, // escaping for the terminal
		module + "/internal/api/history":     true, // the RTC_HISTORY index that history reads
		module + "/internal/jsonscan":        true, // pkg/rtc's JSON scanner (simulate)
		module + "/internal/rawevent":        true, // the raw inputs (simulate, dlq, the room's inputs)
		module + "/internal/eventcodec":      true, // simulate's session events and live sessions
	}
	var mine []string
	for _, pkg := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(pkg, module+"/pkg/"):
		case strings.HasPrefix(pkg, module+"/"):
			mine = append(mine, pkg)
			if !allowed[pkg] {
				t.Errorf("rtcctl depends on %s", pkg)
			}
		case strings.Contains(pkg, "nats-server"), strings.Contains(pkg, "prometheus"):
			t.Errorf("rtcctl links %s", pkg)
		}
	}
	if len(mine) < 3 {
		t.Fatalf("go list found too little: %v", mine)
	}
}

// TestBinary builds rtcctl as `make build` does, stamping a version, and runs
// it: --version, help and a usage error, with their exit statuses.
func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "rtcctl")
	ld := "-X " + module + "/internal/version.version=v9.8.7-test -X " + module + "/internal/version.commit=0123abcd"
	if out, err := exec.Command("go", "build", "-ldflags", ld, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	tests := []struct {
		args     []string
		code     int
		stdout   string // prefix
		inStderr string
	}{
		{[]string{"--version"}, 0, "rtcctl version v9.8.7-test (commit 0123abcd", ""},
		{[]string{"version"}, 0, "rtcctl version v9.8.7-test (commit 0123abcd", ""},
		{[]string{"--help"}, 0, "Usage: rtcctl <command>", ""},
		{[]string{"sessions", "--help"}, 0, "Usage: rtcctl sessions", ""},
		{[]string{"help", "sessions"}, 0, "Usage: rtcctl sessions", ""},
		{[]string{"frobnicate"}, 2, "", "Usage: rtcctl <command>"},
		{[]string{}, 2, "", "Usage: rtcctl <command>"},
		{[]string{"tail", "--room", "gaming"}, 2, "", `"gaming" is not a room id`},
		{[]string{"token", "!a:hs1.test"}, 0, "room       !a:hs1.test\ntoken      IWE6aHMxLnRlc3Q\n", ""},
		{[]string{"decode"}, 1, "", "nothing on standard input"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			cmd := exec.Command(bin, tc.args...)
			cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "NATS_CONTEXT=", "NATS_URL=")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.HasPrefix(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.inStderr) {
				t.Errorf("exit %d (want %d)\nstdout %q\nstderr %q", code, tc.code, stdout.String(), stderr.String())
			}
		})
	}
}
