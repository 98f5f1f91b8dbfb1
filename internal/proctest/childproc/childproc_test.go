package childproc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestTailBuffer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		max    int
		writes []string
		want   string
	}{
		{"under the bound", 100, []string{"a\n", "b\n"}, "a\nb\n"},
		{"cut at a line start", 8, []string{"line1\n", "line2\n", "line3\n"}, "line3\n"},
		{"no newline to cut at", 4, []string{"abcdefgh"}, "efgh"},
		{"exactly the bound", 6, []string{"abc", "def"}, "abcdef"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newTailBuffer(tc.max)
			for _, w := range tc.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			if got := b.String(); got != tc.want {
				t.Errorf("kept %q, want %q", got, tc.want)
			}
		})
	}
}

func TestExeName(t *testing.T) {
	for _, tc := range []struct{ pkg, want string }{
		{"./cmd/aggregator", "aggregator"},
		{"./cmd/rtcctl/", "rtcctl"},
		{NATSServerPkg, "nats-server"},
		{"example.org/tool/v10", "tool"},
		{"example.org/v1", "v1"},
		{"example.org/tool/vnext", "vnext"},
		{"v2", "v2"},
	} {
		if got := exeName(tc.pkg); got != tc.want {
			t.Errorf("exeName(%q) = %q, want %q", tc.pkg, got, tc.want)
		}
	}
}

func start(t *testing.T, s Spec) *Proc {
	t.Helper()
	p, err := Start(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	return p
}

// TestLogFileAndEnvironment: the output goes to the log file and to the
// kept tail, the parent's RTC_* variables do not reach the process, and
// Spec.Env does.
func TestLogFileAndEnvironment(t *testing.T) {
	t.Setenv("RTC_AGG_NATS_URLS", "nats://parent.invalid:4222")
	log := filepath.Join(t.TempDir(), "sh.log")
	p := start(t, Spec{Name: "env", Bin: "/bin/sh", Args: []string{"-c", `echo "agg=${RTC_AGG_NATS_URLS:-unset} own=$RTC_OWN"; echo err >&2`},
		Env: []string{"RTC_OWN=yes"}, LogFile: log, DieWithParent: true})
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the shell did not exit")
	}
	if err := p.Err(); err != nil || !p.ExitedOnItsOwn() {
		t.Fatalf("exit: %v (%s)", err, p.State())
	}
	want := []string{"agg=unset own=yes", "err"}
	if got := p.Tail(5); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("tail %q, want %q", got, want)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != p.Output() {
		t.Errorf("log file %q, kept output %q", b, p.Output())
	}
}

func TestStartFails(t *testing.T) {
	if _, err := Start(Spec{Name: "nats-server", Bin: "/nonexistent/nats-server"}); err == nil || !strings.Contains(err.Error(), "start nats-server") {
		t.Errorf("Start of a missing binary: %v", err)
	}
	if _, err := Start(Spec{Name: "x", Bin: "/bin/true", LogFile: filepath.Join(t.TempDir(), "no", "such", "dir.log")}); err == nil {
		t.Error("Start with a log file that cannot be created: no error")
	}
}

// TestSignalStopAndWait: SIGSTOP/SIGCONT do not count as stopping the
// process, a wait ends with its context, and Stop of a process that
// ignores SIGTERM kills it and says so.
func TestSignalStopAndWait(t *testing.T) {
	p := start(t, Spec{Name: "stubborn", Bin: "/bin/sh", Args: []string{"-c", "trap '' TERM; echo up; while :; do sleep 0.05; done"}})
	if err := p.WaitFor(10*time.Second, func() error {
		if len(p.Tail(1)) == 0 {
			return errors.New("not up")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGSTOP, syscall.SIGCONT} {
		if err := p.Signal(sig); err != nil {
			t.Fatalf("Signal(%s): %v", sig, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	err := p.WaitForContext(ctx, time.Minute, func() error { return errors.New("never ready") })
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(began) > 5*time.Second {
		t.Errorf("WaitForContext with a context that ends: %v after %s", err, time.Since(began))
	}
	if err := p.Stop(300 * time.Millisecond); !errors.Is(err, ErrKilled) || p.Running() {
		t.Errorf("Stop of a process that ignores SIGTERM: %v, running %v", err, p.Running())
	}
	if p.ExitedOnItsOwn() || !strings.Contains(p.State(), "killed") {
		t.Errorf("after Stop: exited on its own %v, state %s", p.ExitedOnItsOwn(), p.State())
	}
	if err := p.Signal(syscall.SIGCONT); !errors.Is(err, ErrExited) {
		t.Errorf("Signal after the exit: %v", err)
	}
}
