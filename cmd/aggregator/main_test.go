package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rtcsessions/rtc-sessions/internal/version"
)

func TestCommandLine(t *testing.T) {
	i := version.Get()
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("frobnicate: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	invalid := filepath.Join(t.TempDir(), "invalid.yaml")
	if err := os.WriteFile(invalid, []byte("topology:\n  partitions: -1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		code     int
		stdout   string // prefix
		inStderr string
	}{
		{"version", []string{"--version"}, nil, 0, "aggregator version " + i.String() + "\n", ""},
		{"single dash version", []string{"-version"}, nil, 0, "aggregator version " + i.String() + "\n", ""},
		{"help", []string{"--help"}, nil, 0, "Usage: aggregator [flags]", ""},
		{"short help", []string{"-h"}, nil, 0, "Usage: aggregator [flags]", ""},
		{"single dash help", []string{"-help"}, nil, 0, "Usage: aggregator [flags]", ""},
		{"unknown flag", []string{"--frobnicate"}, nil, 2, "", "unknown flag --frobnicate"},
		{"argument", []string{"serve"}, nil, 2, "", "unexpected argument serve"},
		{"config without a value", []string{"--config"}, nil, 2, "", "--config"},
		{"unknown field", []string{"--config", bad}, nil, 2, "", "frobnicate"},
		{"single dash config", []string{"-config", bad}, nil, 2, "", "frobnicate"},
		{"config=", []string{"-config=" + bad}, nil, 2, "", "frobnicate"},
		{"config from the environment", nil, map[string]string{"RTC_AGG_CONFIG": bad}, 2, "", "frobnicate"},
		{"invalid", []string{"-config", invalid}, nil, 2, "", "invalid configuration"},
		{"bad environment", nil, map[string]string{"RTC_AGG_TOPOLOGY_PARTITIONS": "many"}, 2, "", "RTC_AGG_TOPOLOGY_PARTITIONS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var out, errb bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errb)
			if code != tc.code || !strings.HasPrefix(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.inStderr) {
				t.Errorf("exit %d (want %d)\nstdout %q\nstderr %q", code, tc.code, out.String(), errb.String())
			}
			if code != 0 && out.Len() != 0 {
				t.Errorf("an error printed on stdout: %q", out.String())
			}
		})
	}
	var out, errb bytes.Buffer
	if run(context.Background(), []string{"--help"}, &out, &errb); !strings.Contains(out.String(), "$RTC_AGG_CONFIG") ||
		!strings.Contains(out.String(), "RTC_AGG_*") {
		t.Errorf("the help does not name the environment variables:\n%s", out.String())
	}
	if !strings.Contains(i.String(), i.GoVersion) || i.Commit == "" {
		t.Errorf("version info lacks the Go version or commit: %+v", i)
	}
}
