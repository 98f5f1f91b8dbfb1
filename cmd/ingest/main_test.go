package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/rtcsessions/rtc-sessions/internal/version"
)

func TestVersion(t *testing.T) {
	want := "ingest version " + version.Get().String() + "\n"
	for _, args := range [][]string{{"--version"}, {"-version"}, {"version"}} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != 0 || out.String() != want || errb.Len() != 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
		}
	}
	// Everything else is the ingest's own command line.
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "ingest replay") {
		t.Errorf("help: exit %d, %q", code, out.String())
	}
	if code := run(context.Background(), []string{"serve", "--version", "x"}, &out, &errb); code != 2 {
		t.Errorf("--version among other arguments is not ours: exit %d", code)
	}
}
