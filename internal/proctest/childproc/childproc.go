// Package childproc runs the project's programs (nats-server,
// cmd/aggregator, cmd/ingest, ...) as child processes: it builds them,
// starts each in its own process group with its output kept (the last
// MaxOutput bytes in memory, and a log file when asked), signals, stops and
// kills it, and waits for it to become ready.
//
// It reports errors and knows nothing of testing: package proctest wraps it
// for tests (the processes of a test are killed when the test ends, and a
// failed test prints their output), and package bench runs the benchmark's
// processes with it, so that both drive the binaries the same way.
package childproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Spec is what to run.
type Spec struct {
	Name string // the label of the process in errors and in State
	Bin  string
	Args []string
	// Env is appended to the inherited environment, from which every RTC_*
	// variable is removed: a developer's RTC_AGG_NATS_URLS must not reach
	// the system under test (or under measurement).
	Env []string
	// LogFile, when not empty, is created (or truncated) and receives the
	// output as well; it stays after the process has exited.
	LogFile string
	// DieWithParent asks the kernel to SIGKILL the process when the thread
	// that started it dies, so that a parent that is itself killed leaves
	// no process behind. Go keeps its threads alive unless a goroutine
	// locked to one exits, so in practice the parent process is meant.
	DieWithParent bool
}

// Proc is one child process. Its stdout and stderr are captured together
// (the last MaxOutput bytes are kept).
type Proc struct {
	Name string
	cmd  *exec.Cmd
	out  *tailBuffer
	log  *os.File // nil without Spec.LogFile
	done chan struct{}
	pgid int

	mu       sync.Mutex
	exitErr  error
	killedAt time.Time
	stopped  bool // the owner sent SIGTERM or SIGKILL
}

// MaxOutput bounds the captured output of one process.
const MaxOutput = 1 << 20

// Start runs s.Bin with s.Args in a new process group (so that a signal
// meant for the parent, such as a terminal's Ctrl-C, does not reach it
// first, and Kill takes whatever it started too).
func Start(s Spec) (*Proc, error) {
	cmd := exec.Command(s.Bin, s.Args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RTC_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, s.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if s.DieWithParent {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	p := &Proc{Name: s.Name, cmd: cmd, out: newTailBuffer(MaxOutput), done: make(chan struct{})}
	var out io.Writer = p.out
	if s.LogFile != "" {
		f, err := os.Create(s.LogFile)
		if err != nil {
			return nil, fmt.Errorf("log file of %s: %w", s.Name, err)
		}
		p.log = f
		out = io.MultiWriter(p.out, f)
	}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		p.closeLog()
		return nil, fmt.Errorf("start %s (%s): %w", s.Name, s.Bin, err)
	}
	p.pgid = cmd.Process.Pid
	go func() {
		err := cmd.Wait()
		p.closeLog()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

func (p *Proc) closeLog() {
	if p.log != nil {
		_ = p.log.Close()
	}
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
		how += ", killed by its owner at " + p.killedAt.UTC().Format("15:04:05.000")
	}
	return fmt.Sprintf("pid %d %s", p.pgid, how)
}

// Signal sends sig to the process (not its group) while it runs, e.g.
// SIGSTOP and SIGCONT. It does not count as stopping the process: see
// ExitedOnItsOwn.
func (p *Proc) Signal(sig syscall.Signal) error {
	if !p.Running() {
		return fmt.Errorf("signal %s to %s: %w", sig, p.Name, ErrExited)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s to %s (pid %d): %w", sig, p.Name, p.pgid, err)
	}
	return nil
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
// then it kills the group. It returns the process's exit error, if any, or
// ErrKilled when it had to kill it.
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
		return fmt.Errorf("%s (pid %d) did not exit within %s of SIGTERM: %w", p.Name, p.pgid, grace, ErrKilled)
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

var (
	// ErrRunning is Err of a process that has not exited.
	ErrRunning = errors.New("process still running")
	// ErrExited is returned by waits that end because the process exited.
	ErrExited = errors.New("process exited")
	// ErrKilled is Stop's error when the process outlived its grace
	// period and was killed.
	ErrKilled = errors.New("killed")
)

// ExitedOnItsOwn reports whether the process has exited without its owner
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

// WaitFor polls cond every 25ms until it returns nil, the process exits or
// timeout passes; it returns the last error of cond in the two latter cases.
func (p *Proc) WaitFor(timeout time.Duration, cond func() error) error {
	return p.WaitForContext(context.Background(), timeout, cond)
}

// WaitForContext is WaitFor that also ends when ctx is done.
func (p *Proc) WaitForContext(ctx context.Context, timeout time.Duration, cond func() error) error {
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
		case <-ctx.Done():
			return fmt.Errorf("%s: not ready (%w): %w", p.Name, context.Cause(ctx), err)
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
