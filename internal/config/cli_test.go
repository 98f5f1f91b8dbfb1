package config

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

type testCLI struct {
	Config  string      `name:"config"`
	Version VersionFlag `name:"version"`
	Run     struct {
		Speed float64 `name:"speed" default:"1"`
		File  string  `arg:""`
	} `cmd:""`
}

func TestParse(t *testing.T) {
	tests := []struct {
		args     []string
		ok       bool
		code     int
		stdout   string // prefix
		inStderr string
		config   string
		speed    float64
		file     string
	}{
		{[]string{"run", "f"}, true, 0, "", "", "", 1, "f"},
		{[]string{"-config", "c.yaml", "run", "-speed=2", "--", "-config"}, true, 0, "", "", "c.yaml", 2, "-config"},
		{[]string{"run", "-s", "f"}, false, 2, "", "unknown flag -s", "", 0, ""},
		{[]string{"--help"}, false, 0, "Usage: prog <command>", "", "", 0, ""},
		{[]string{"-help"}, false, 0, "Usage: prog <command>", "", "", 0, ""},
		{[]string{"run", "-h"}, false, 0, "Usage: prog run <file>", "", "", 0, ""},
		{[]string{"-version"}, false, 0, "prog version ", "", "", 0, ""},
		{[]string{"run"}, false, 2, "", `prog: error: expected "<file>"`, "", 0, ""},
		{[]string{"walk"}, false, 2, "", "unexpected argument walk", "", 0, ""},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var c testCLI
			var out, errb bytes.Buffer
			kctx, code, ok := Parse("prog", "A test program.", &c, tc.args, &out, &errb)
			if ok != tc.ok || code != tc.code || (kctx != nil) != ok {
				t.Fatalf("ok %v code %d, want %v %d; stderr %q", ok, code, tc.ok, tc.code, errb.String())
			}
			if !strings.HasPrefix(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.inStderr) {
				t.Errorf("stdout %q\nstderr %q", out.String(), errb.String())
			}
			if tc.ok && (c.Config != tc.config || c.Run.Speed != tc.speed || c.Run.File != tc.file) {
				t.Errorf("parsed %+v", c)
			}
		})
	}
}

func TestDoubleDashLongFlags(t *testing.T) {
	var c testCLI
	var out bytes.Buffer
	kctx, _, ok := Parse("prog", "", &c, []string{"run", "f"}, &out, &out)
	if !ok {
		t.Fatal(out.String())
	}
	root := kctx.Model.Node
	tests := []struct{ in, want []string }{
		{[]string{"-config", "x", "-speed=3", "-h", "-v"}, []string{"--config", "x", "--speed=3", "-h", "-v"}},
		{[]string{"--config", "-", "-frob"}, []string{"--config", "-", "-frob"}},
		{[]string{"run", "--", "-config"}, []string{"run", "--", "-config"}},
	}
	for _, tc := range tests {
		if got := DoubleDashLongFlags(root, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("%q: %q, want %q", tc.in, got, tc.want)
		}
	}
}
