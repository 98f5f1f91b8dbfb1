package proctest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/rtcsessions/rtc-sessions/internal/proctest/childproc"
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
	ctx := context.Background()
	root, err := childproc.ModuleDir(ctx)
	if err != nil {
		return Binaries{}, err
	}
	dir, err := os.MkdirTemp("", "proctest-bin-")
	if err != nil {
		return Binaries{}, fmt.Errorf("build directory: %w", err)
	}
	paths, err := childproc.Build(ctx, root, dir, "./cmd/aggregator", "./cmd/ingest", "./cmd/rtcctl", childproc.NATSServerPkg)
	if err != nil {
		_ = os.RemoveAll(dir)
		return Binaries{}, err
	}
	return Binaries{Dir: dir, Aggregator: paths[0], Ingest: paths[1], RTCCtl: paths[2], NATSServer: paths[3]}, nil
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
