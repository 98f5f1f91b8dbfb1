package proctest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Binaries are the paths of the built executables.
type Binaries struct {
	Dir        string
	Aggregator string
	Ingest     string
	RTCCtl     string
	NATSServer string // nats-server built from the version in go.mod
}

var build struct {
	once sync.Once
	bins Binaries
	took time.Duration
	err  error
}

// natsServerPkg is the nats-server main package; it is built at the version
// go.mod requires (the one the embedded mode and the tests use).
const natsServerPkg = "github.com/nats-io/nats-server/v2"

// Build builds cmd/aggregator, cmd/ingest, cmd/rtcctl and nats-server
// (without -race: the processes are the system under test, not the test)
// into a temporary directory, once per test process, and returns their
// paths. It fails the test when the build fails.
func Build(t testing.TB) Binaries {
	t.Helper()
	build.once.Do(func() {
		start := time.Now()
		build.bins, build.err = buildAll()
		build.took = time.Since(start)
	})
	if build.err != nil {
		t.Fatalf("proctest: %v", build.err)
	}
	t.Logf("proctest: binaries in %s (built in %s)", build.bins.Dir, build.took.Round(time.Millisecond))
	return build.bins
}

func buildAll() (Binaries, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return Binaries{}, fmt.Errorf("the go command is needed to build the binaries: %w", err)
	}
	root, err := moduleRoot(goBin)
	if err != nil {
		return Binaries{}, err
	}
	dir, err := os.MkdirTemp("", "proctest-bin-")
	if err != nil {
		return Binaries{}, fmt.Errorf("build directory: %w", err)
	}
	cmd := exec.Command(goBin, "build", "-o", dir+string(filepath.Separator),
		"./cmd/aggregator", "./cmd/ingest", "./cmd/rtcctl", natsServerPkg)
	cmd.Dir = root
	// No -race: `go test -race` does not pass it on to this build, and
	// the processes build like a release (faster, smaller).
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return Binaries{}, fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	b := Binaries{Dir: dir, Aggregator: filepath.Join(dir, "aggregator"), Ingest: filepath.Join(dir, "ingest"),
		RTCCtl: filepath.Join(dir, "rtcctl"), NATSServer: filepath.Join(dir, "nats-server")}
	for _, p := range []string{b.Aggregator, b.Ingest, b.RTCCtl, b.NATSServer} {
		if _, err := os.Stat(p); err != nil {
			return Binaries{}, fmt.Errorf("after the build: %w", err)
		}
	}
	return b, nil
}

// moduleRoot is the directory of the go.mod of the package under test.
func moduleRoot(goBin string) (string, error) {
	out, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := string(bytes.TrimSpace(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("go env GOMOD: not inside the module (GOMOD=%q)", mod)
	}
	return filepath.Dir(mod), nil
}

// Main runs the tests and then removes the build directory. Use it from
// TestMain: os.Exit(proctest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if build.bins.Dir != "" {
		_ = os.RemoveAll(build.bins.Dir)
	}
	return code
}
