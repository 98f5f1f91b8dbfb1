// Package proctest runs the project's real binaries (cmd/aggregator,
// cmd/ingest, cmd/rtcctl) and a standalone nats-server as child processes,
// for black-box tests that kill and restart them: it builds the binaries
// once per test process, starts each process in its own process group with
// its output captured, and kills every process it started when the test
// ends. On failure it prints the last lines of every process's output.
//
// A test package that uses it should call Main from its TestMain, so that the
// build directory is removed after the tests:
//
//	func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }
package proctest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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
			p.kill()
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

// Proc is one child process. Its stdout and stderr are captured together
// (the last MaxOutput bytes are kept).
type Proc struct {
	Name string
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{}
	pgid int

	mu       sync.Mutex
	exitErr  error
	killedAt time.Time
	stopped  bool // the test sent SIGTERM or SIGKILL
}

// MaxOutput bounds the captured output of one process.
const MaxOutput = 1 << 20

// Start runs bin with args and extra environment variables in a new
// process group. The environment is the test process's without its RTC_*
// variables (a developer's RTC_AGG_NATS_URLS must not reach the system
// under test), plus env. The process is killed (SIGKILL to its group) when
// the test ends if it is still running.
func (h *Harness) Start(name, bin string, args []string, env ...string) (*Proc, error) {
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RTC_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &Proc{Name: name, cmd: cmd, out: newTailBuffer(MaxOutput), done: make(chan struct{})}
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p.pgid = cmd.Process.Pid
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(p.done)
	}()
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	return p, nil
}

// Pid is the process id (also its process group id).
func (p *Proc) Pid() int { return p.pgid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// State describes the process: running, or how it ended.
func (p *Proc) State() string {
	if p.Running() {
		return fmt.Sprintf("pid %d running", p.pgid)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	how := "exited 0"
	if p.exitErr != nil {
		how = p.exitErr.Error()
	}
	if !p.killedAt.IsZero() {
		how += ", killed by the test at " + p.killedAt.UTC().Format("15:04:05.000")
	}
	return fmt.Sprintf("pid %d %s", p.pgid, how)
}

// Kill sends SIGKILL to the process group and waits for the process to exit.
func (p *Proc) Kill() error {
	if !p.kill() {
		return fmt.Errorf("%s (pid %d) did not exit within 10s of SIGKILL", p.Name, p.pgid)
	}
	return nil
}

func (p *Proc) kill() bool {
	if p.Running() {
		p.mu.Lock()
		p.killedAt = time.Now()
		p.stopped = true
		p.mu.Unlock()
		// The negative pid addresses the process group: nothing the
		// process may have started survives it.
		_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
	}
	select {
	case <-p.done:
		return true
	case <-time.After(10 * time.Second):
		return false
	}
}

// Stop sends SIGTERM to the process and waits up to grace for it to exit;
// then it kills the group. It returns the process's exit error, if any.
func (p *Proc) Stop(grace time.Duration) error {
	if p.Running() {
		p.mu.Lock()
		p.stopped = true
		p.mu.Unlock()
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(grace):
		if !p.kill() {
			return fmt.Errorf("%s (pid %d) did not exit after SIGTERM and SIGKILL", p.Name, p.pgid)
		}
		return fmt.Errorf("%s (pid %d) did not exit within %s of SIGTERM: killed", p.Name, p.pgid, grace)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// Err is the process's exit error once it has exited (nil: exit status 0);
// ErrRunning while it runs.
func (p *Proc) Err() error {
	if p.Running() {
		return ErrRunning
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// ErrRunning is Err of a process that has not exited.
var ErrRunning = errors.New("process still running")

// ExitedOnItsOwn reports whether the process has exited without the test
// stopping or killing it (a crash, or a fatal error).
func (p *Proc) ExitedOnItsOwn() bool {
	if p.Running() {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.stopped
}

// Output is the captured output (the last MaxOutput bytes).
func (p *Proc) Output() string { return p.out.String() }

// Tail returns the last n lines of the output.
func (p *Proc) Tail(n int) []string {
	s := strings.TrimRight(p.out.String(), "\n")
	if s == "" {
		return nil
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// ErrExited is returned by waits that end because the process exited.
var ErrExited = errors.New("process exited")

// WaitFor polls cond every 25ms until it returns nil, the process exits or
// timeout passes; it returns the last error of cond in the two latter cases.
func (p *Proc) WaitFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if !p.Running() {
			return fmt.Errorf("%s: %w (%s) while waiting: %v", p.Name, ErrExited, p.State(), err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not ready after %s: %w", p.Name, timeout, err)
		}
		select {
		case <-p.done:
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped int64
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		// Cut at a line start when there is one close by, so that Tail
		// never returns half a line first.
		cut := over
		if i := bytes.IndexByte(b.buf[over:], '\n'); i >= 0 && i < 4096 {
			cut = over + i + 1
		}
		b.dropped += int64(cut)
		b.buf = append(b.buf[:0], b.buf[cut:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
