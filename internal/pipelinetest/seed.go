package pipelinetest

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// Seed is the workload seed of a randomized pipeline test: the value of the
// environment variable env when set (to replay a failed run), else a new one
// from the clock. It logs the seed, and again at the end of a failed test's
// output with the command that replays it (make target).
func Seed(t *testing.T, env, target string) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano()) % 1_000_000_000
	if s := os.Getenv(env); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", env, s, err)
		}
		seed = v
	}
	t.Logf("seed %d (rerun with %s=%d make %s)", seed, env, seed, target)
	// Registered before the test's own cleanups, so it runs last: the seed
	// ends the failure output.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d failed (rerun with %s=%d make %s)", seed, env, seed, target)
		}
	})
	return seed
}
