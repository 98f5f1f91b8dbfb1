// Package proctest runs the project's real binaries (cmd/aggregator,
// cmd/ingest, cmd/rtcctl) and a standalone nats-server as child processes,
// for black-box tests that kill and restart them: it builds the binaries
// once per test process, starts each process in its own process group with
// its output captured, and kills every process it started when the test
// ends. On failure it prints the last lines of every process's output.
//
// It ties package childproc, which builds, starts, stops and waits for the
// processes and reports errors (the benchmark in internal/bench runs its
// processes with it too), to a test: Fatal instead of errors, Cleanup
// instead of shutting down by hand.
//
// A test package that uses it should call Main from its TestMain, so that the
// build directory is removed after the tests:
//
//	func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }
package proctest

import (
	"strings"
	"sync"
	"testing"

	"github.com/rtcsessions/rtc-sessions/internal/proctest/childproc"
)

// Harness owns the processes of one test: it kills the ones still running
// at cleanup and, when the test failed, logs the tail of every process's
// output (including the ones that already exited or were killed).
type Harness struct {
	t    testing.TB
	Bins Binaries

	mu    sync.Mutex
	procs []*Proc
	// DumpLines is how many trailing output lines per process are logged
	// when the test fails.
	DumpLines int
}

// New builds the binaries (once per test process) and returns a harness
// whose processes are cleaned up when t ends.
func New(t testing.TB) *Harness {
	t.Helper()
	return newHarness(t, Build(t))
}

func newHarness(t testing.TB, bins Binaries) *Harness {
	h := &Harness{t: t, Bins: bins, DumpLines: 25}
	t.Cleanup(func() {
		h.mu.Lock()
		procs := append([]*Proc(nil), h.procs...)
		h.mu.Unlock()
		for _, p := range procs {
			_ = p.Kill()
		}
		if t.Failed() {
			h.DumpLogs(h.DumpLines)
		}
	})
	return h
}

// Procs lists every process started so far, oldest first.
func (h *Harness) Procs() []*Proc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Proc(nil), h.procs...)
}

// DumpLogs writes the last n output lines of every process started so far
// to the test log, oldest process first.
func (h *Harness) DumpLogs(n int) {
	h.mu.Lock()
	procs := append([]*Proc(nil), h.procs...)
	h.mu.Unlock()
	for _, p := range procs {
		h.t.Logf("---- last %d lines of %s (%s) ----\n%s", n, p.Name, p.State(), strings.Join(p.Tail(n), "\n"))
	}
}

// Proc is one child process (see childproc.Proc): its stdout and stderr
// are captured together (the last MaxOutput bytes are kept).
type Proc = childproc.Proc

// MaxOutput bounds the captured output of one process.
const MaxOutput = childproc.MaxOutput

var (
	// ErrRunning is Err of a process that has not exited.
	ErrRunning = childproc.ErrRunning
	// ErrExited is returned by waits that end because the process exited.
	ErrExited = childproc.ErrExited
)

// Start runs bin with args and extra environment variables in a new
// process group. The environment is the test process's without its RTC_*
// variables (a developer's RTC_AGG_NATS_URLS must not reach the system
// under test), plus env. The process is killed (SIGKILL to its group) when
// the test ends if it is still running.
func (h *Harness) Start(name, bin string, args []string, env ...string) (*Proc, error) {
	p, err := childproc.Start(childproc.Spec{Name: name, Bin: bin, Args: args, Env: env})
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	return p, nil
}
