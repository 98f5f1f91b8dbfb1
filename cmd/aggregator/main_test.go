package main

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/rtcsessions/rtc-sessions/internal/version"
)

func TestFlags(t *testing.T) {
	i := version.Get()
	tests := []struct {
		name    string
		args    []string
		wantErr error
		wantOut string
	}{
		{"version", []string{"--version"}, nil, "aggregator version " + i.String() + "\n"},
		{"single dash", []string{"-version"}, nil, "aggregator version " + i.String() + "\n"},
		{"help", []string{"-h"}, flag.ErrHelp, ""},
		{"unknown flag", []string{"--frobnicate"}, errUsage, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(tc.args, &out)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if out.String() != tc.wantOut {
				t.Errorf("stdout %q, want %q", out.String(), tc.wantOut)
			}
		})
	}
	if !strings.Contains(i.String(), i.GoVersion) || i.Commit == "" {
		t.Errorf("version info lacks the Go version or commit: %+v", i)
	}
}
