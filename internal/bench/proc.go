package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Binaries are the programs the benchmark runs as separate processes.
type Binaries struct {
	NATSServer string
	Aggregator string
}

// Build builds nats-server (the version go.mod requires) and cmd/aggregator
// into dir, from the module at moduleDir.
func Build(ctx context.Context, moduleDir, dir string) (Binaries, error) {
	b := Binaries{NATSServer: filepath.Join(dir, "nats-server"), Aggregator: filepath.Join(dir, "aggregator")}
	for _, t := range []struct{ out, pkg string }{
		{b.NATSServer, "github.com/nats-io/nats-server/v2"},
		{b.Aggregator, "./cmd/aggregator"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", t.out, t.pkg)
		cmd.Dir = moduleDir
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build -o %s %s: %w\n%s", t.out, t.pkg, err, out)
		}
	}
	return b, nil
}

// ModuleDir is the directory of the go.mod the go command sees from the
// current directory.
func ModuleDir(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside a Go module: run from the rtc-sessions checkout")
	}
	return filepath.Dir(mod), nil
}

// proc is one child process whose output goes to a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

func startProc(name, logPath string, bin string, args ...string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("log file of %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C of the benchmark does not reach it
	// first, so the benchmark decides the order of shutdown. Pdeathsig: a
	// benchmark that is killed itself leaves no server or aggregator behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.exited) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *proc) kill() error { return p.signal(syscall.SIGKILL, 10*time.Second) }

// stop sends SIGTERM, waits up to grace, then SIGKILLs.
func (p *proc) stop(grace time.Duration) error {
	if err := p.signal(syscall.SIGTERM, grace); err != nil {
		return p.kill()
	}
	return nil
}

func (p *proc) signal(sig syscall.Signal, wait time.Duration) error {
	if !p.alive() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s to %s: %w", sig, p.name, err)
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(wait):
		return fmt.Errorf("%s still running %s after %s", p.name, wait, sig)
	}
}

// logTail is the end of the process's log, for error messages.
func (p *proc) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// natsServer is a standalone nats-server with JetStream on file storage.
type natsServer struct {
	*proc
	url        string
	profileURL string // http://127.0.0.1:PORT of its profiling port, "" without
}

// startNATS starts the server; with profile, its profiling port too.
func startNATS(ctx context.Context, bin, dir string, profile bool) (*natsServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	store := filepath.Join(dir, "jetstream")
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", store, "-n", "rtcbench"}
	var profileURL string
	if profile {
		pport, err := freePort()
		if err != nil {
			return nil, err
		}
		args = append(args, "-profile", strconv.Itoa(pport))
		profileURL = fmt.Sprintf("http://127.0.0.1:%d", pport)
	}
	p, err := startProc("nats-server", filepath.Join(dir, "nats-server.log"), bin, args...)
	if err != nil {
		return nil, err
	}
	s := &natsServer{proc: p, url: fmt.Sprintf("nats://127.0.0.1:%d", port), profileURL: profileURL}
	deadline := time.Now().Add(20 * time.Second)
	for {
		nc, err := nats.Connect(s.url, nats.Timeout(time.Second))
		if err == nil {
			nc.Close()
			return s, nil
		}
		if !p.alive() || time.Now().After(deadline) || ctx.Err() != nil {
			_ = p.kill()
			return nil, fmt.Errorf("nats-server did not accept connections on %s: %w\n%s", s.url, err, p.logTail(2000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// aggregatorProc is one cmd/aggregator process.
type aggregatorProc struct {
	*proc
	id      string
	metrics string // http://127.0.0.1:PORT/metrics
	// pprofURL is http://127.0.0.1:PORT when it serves /debug/pprof/.
	pprofURL string
	// stopped is set before the benchmark kills or stops it on purpose.
	stopped atomic.Bool
}

// startAggregator writes a configuration pointing at the server and starts
// cmd/aggregator with it. Everything else keeps the production defaults
// (pprof adds /debug/pprof/ to its HTTP listener).
func startAggregator(bin, dir, natsURL, id string, partitions int, pprof bool) (*aggregatorProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`# generated by rtcbench
nats:
  urls: [%q]
  name: %q
topology:
  partitions: %d
worker:
  id: %q
log:
  format: json
  level: warn
http:
  listen: "127.0.0.1:%d"
  pprof: %t
`, natsURL, id, partitions, id, port, pprof)
	cfgPath := filepath.Join(dir, id+".yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("write aggregator config: %w", err)
	}
	p, err := startProc(id, filepath.Join(dir, id+".log"), bin, "-config", cfgPath)
	if err != nil {
		return nil, err
	}
	a := &aggregatorProc{proc: p, id: id, metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", port)}
	if pprof {
		a.pprofURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	}
	return a, nil
}

// ownedPartitions reads the rtc_aggregator_owned_partitions gauge; ok is
// false when the process does not (yet) serve it.
func (a *aggregatorProc) ownedPartitions() (n int, ok bool) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(a.metrics)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, false
	}
	mf := families["rtc_aggregator_owned_partitions"]
	if mf == nil || len(mf.GetMetric()) == 0 {
		return 0, false
	}
	return int(mf.GetMetric()[0].GetGauge().GetValue()), true
}

// cpuTime is the user+system CPU time a process has used so far
// (/proc/PID/stat utime + stime).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read /proc/%d/stat: %w", pid, err)
	}
	return parseStatCPU(string(b))
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

func parseStatCPU(stat string) (time.Duration, error) {
	// The command name (field 2) is in parentheses and may contain spaces:
	// count fields after its closing parenthesis.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc stat line %q", stat)
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed /proc stat line %q", stat)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse utime/stime: %w", err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// memory is what /proc/PID/status says about resident memory.
type memory struct {
	RSS, HWM int64 // bytes: VmRSS (now) and VmHWM (peak)
}

func readMemory(pid int) (memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, fmt.Errorf("read /proc/%d/status: %w", pid, err)
	}
	return parseStatusMemory(string(b))
}

func parseStatusMemory(status string) (memory, error) {
	var m memory
	var found int
	for _, line := range strings.Split(status, "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("unexpected %s line %q", key, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("parse %s: %w", key, err)
		}
		if key == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.HWM = kb << 10
		}
		found++
	}
	if found != 2 {
		return m, errors.New("VmRSS/VmHWM missing from /proc status")
	}
	return m, nil
}
