package proctest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func shell(t *testing.T, h *Harness, name, script string) *Proc {
	t.Helper()
	p, err := h.Start(name, "/bin/sh", []string{"-c", script})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestKillTakesTheGroup: SIGKILL reaches what the process started too, and
// a killed process does not count as having exited on its own.
func TestKillTakesTheGroup(t *testing.T) {
	h := newHarness(t, Binaries{})
	p := shell(t, h, "parent", "sleep 60 & echo child $!; wait")
	var child int
	if err := p.WaitFor(10*time.Second, func() error {
		for _, l := range p.Tail(5) {
			if v, ok := strings.CutPrefix(l, "child "); ok {
				child, _ = strconv.Atoi(v)
				return nil
			}
		}
		return errors.New("no child pid yet")
	}); err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if p.Running() || p.ExitedOnItsOwn() {
		t.Errorf("after Kill: running %v, exited on its own %v (%s)", p.Running(), p.ExitedOnItsOwn(), p.State())
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(child) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d of the killed process still alive", child)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid runs: it exists and is not a zombie (an
// orphan stays one until its reaper gets to it).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

func TestExitsAndWaits(t *testing.T) {
	h := newHarness(t, Binaries{})
	crash := shell(t, h, "crash", "echo bye; exit 3")
	err := crash.WaitFor(10*time.Second, func() error { return errors.New("never ready") })
	if !errors.Is(err, ErrExited) {
		t.Fatalf("WaitFor on a process that exits: %v", err)
	}
	if !crash.ExitedOnItsOwn() || !strings.Contains(crash.State(), "exit status 3") {
		t.Errorf("state %s, exited on its own %v", crash.State(), crash.ExitedOnItsOwn())
	}
	if got := crash.Tail(10); len(got) != 1 || got[0] != "bye" {
		t.Errorf("output %q", got)
	}

	stopped := shell(t, h, "stopped", "trap 'exit 0' TERM; while :; do sleep 0.05; done")
	time.Sleep(100 * time.Millisecond) // let the shell install its trap
	if err := stopped.Stop(10 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if stopped.ExitedOnItsOwn() {
		t.Error("a stopped process counts as exited on its own")
	}

	slow := shell(t, h, "ignores SIGTERM", "trap '' TERM; while :; do sleep 0.05; done")
	time.Sleep(100 * time.Millisecond)
	if err := slow.Stop(300 * time.Millisecond); err == nil || slow.Running() {
		t.Errorf("Stop of a process that ignores SIGTERM: %v, running %v", err, slow.Running())
	}
	if n := len(h.Procs()); n != 3 {
		t.Errorf("%d processes listed, want 3", n)
	}
}
