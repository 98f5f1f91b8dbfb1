package rtcctl

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/rtcsessions/rtc-sessions/internal/version"
)

func TestHelpExitsZero(t *testing.T) {
	tests := []struct {
		args []string
		want string // the usage line
	}{
		{[]string{"--help"}, "Usage: rtcctl <command> [flags]"},
		{[]string{"-h"}, "Usage: rtcctl <command> [flags]"},
		{[]string{"help"}, "Usage: rtcctl <command> [flags]"},
		{[]string{"sessions", "--help"}, "Usage: rtcctl sessions [flags]"},
		{[]string{"help", "sessions"}, "Usage: rtcctl sessions [flags]"},
		{[]string{"tail", "-h"}, "Usage: rtcctl tail [flags]"},
		{[]string{"help", "tail"}, "Usage: rtcctl tail [flags]"},
		{[]string{"history", "--help"}, "Usage: rtcctl history [flags]"},
		{[]string{"room", "--help"}, "Usage: rtcctl room <room-id> [flags]"},
		{[]string{"help", "room"}, "Usage: rtcctl room <room-id> [flags]"},
		{[]string{"workers", "--help"}, "Usage: rtcctl workers [flags]"},
		{[]string{"dlq", "--help"}, "Usage: rtcctl dlq <command> [flags]"},
		{[]string{"help", "dlq", "redrive"}, "Usage: rtcctl dlq redrive [<seq> ...] [flags]"},
		{[]string{"dlq", "show", "--help"}, "Usage: rtcctl dlq show <seq> [flags]"},
		{[]string{"dlq", "ls", "--help"}, "Usage: rtcctl dlq ls (list) [flags]"},
		{[]string{"simulate", "--help"}, "Usage: rtcctl simulate <file> [flags]"},
		{[]string{"help", "simulate"}, "Usage: rtcctl simulate <file> [flags]"},
		{[]string{"version", "--help"}, "Usage: rtcctl version [flags]"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errs := run(t, tc.args...)
			if code != 0 || errs != "" {
				t.Fatalf("exit %d, stderr %q", code, errs)
			}
			if !strings.HasPrefix(out, tc.want) {
				t.Fatalf("stdout does not start with %q:\n%s", tc.want, out)
			}
			if !strings.Contains(out, "--server=URL") || !strings.Contains(out, "$NATS_URL") {
				t.Errorf("no connection flags in the help:\n%s", out)
			}
		})
	}
	// Every command has a help (a new command without one fails here).
	_, out, _ := run(t, "--help")
	for _, cmd := range []string{"sessions", "tail", "history", "room", "workers", "dlq ls (list)", "dlq show", "dlq redrive", "reconcile", "simulate", "token", "decode", "help", "version"} {
		if !strings.Contains(out, "\n  "+cmd+" ") {
			t.Errorf("the global help does not list %q", cmd)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string // on stderr
	}{
		{nil, "expected one of"},
		{[]string{"frobnicate"}, "unexpected argument frobnicate"},
		{[]string{"help", "frobnicate"}, `no command "frobnicate"`},
		{[]string{"sessions", "extra"}, "unexpected argument extra"},
		{[]string{"sessions", "--frob"}, "unknown flag --frob"},
		{[]string{"dlq"}, "expected one of"},
		{[]string{"dlq", "purge"}, "unexpected argument purge"},
		{[]string{"room"}, "expected \"<room-id>\""},
		{[]string{"room", "not-a-room"}, "is not a room id"},
		{[]string{"tail", "--kind", "nope"}, "--kind"},
		{[]string{"sessions", "--password", "pw"}, "--password needs --user"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errs := run(t, tc.args...)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr %s", code, errs)
			}
			if out != "" {
				t.Errorf("stdout %q: usage goes to stderr", out)
			}
			if !strings.Contains(errs, tc.want) || !strings.Contains(errs, "Usage: rtcctl") {
				t.Errorf("stderr lacks %q and the usage:\n%s", tc.want, errs)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	want := "rtcctl version " + version.Get().String() + "\n"
	for _, args := range [][]string{{"--version"}, {"version"}, {"sessions", "--version"}} {
		if code, out, errs := run(t, args...); code != 0 || out != want || errs != "" {
			t.Errorf("%v: exit %d, %q, %q", args, code, out, errs)
		}
	}
	code, out, _ := run(t, "version", "--json")
	var i version.Info
	if err := json.Unmarshal([]byte(out), &i); code != 0 || err != nil || i != version.Get() {
		t.Errorf("version --json: %d %v %s", code, err, out)
	}
}
