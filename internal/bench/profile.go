package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Profiles: with Options.ProfileDir set, nats-server runs with its profiling
// port and the aggregators with /debug/pprof/, and the measured phases of
// the pipeline (1 aggregator) and latency scenarios write a CPU profile of
// each process there (SCENARIO-PROCESS.pprof, for `go tool pprof`), and
// at its end what each process allocated so far (.allocs.pprof) and its
// live heap (.heap.pprof), and a
// one-second execution trace of each aggregator (.trace). The
// figures of a profiled run are a little pessimistic: profiling costs CPU.

// profiling reports whether profiles are to be taken.
func (e *env) profiling() bool { return e.o.ProfileDir != "" }

// startProfiles starts a CPU profile of the server and each aggregator for
// d (at most until the returned function is called, which waits for them and
// writes them). Failures are logged, not returned: a profile is a by-product.
func (e *env) startProfiles(ctx context.Context, label string, d time.Duration, aggs []*aggregatorProc) (wait func()) {
	if !e.profiling() {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	type target struct{ name, url string }
	targets := []target{{"nats-server", e.nats.profileURL}}
	for _, a := range aggs {
		targets = append(targets, target{a.id, a.pprofURL})
	}
	secs := max(1, int(d.Seconds()))
	var wg sync.WaitGroup
	// A one-second execution trace of each aggregator (go tool trace):
	// where its goroutines wait, which a CPU profile does not show.
	for _, a := range aggs {
		if a.pprofURL == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := filepath.Join(e.o.ProfileDir, fmt.Sprintf("%s-%s-%s.trace", e.name, label, a.id))
			if err := fetchProfile(ctx, a.pprofURL+"/debug/pprof/trace?seconds=1", path); err != nil {
				e.logf("trace of %s: %v", a.id, err)
			}
		}()
	}
	for _, t := range targets {
		if t.url == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := filepath.Join(e.o.ProfileDir, fmt.Sprintf("%s-%s-%s.pprof", e.name, label, t.name))
			if err := fetchProfile(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", t.url, secs), path); err != nil {
				e.logf("profile of %s: %v", t.name, err)
				return
			}
			e.logf("CPU profile of %s over %ds: %s", t.name, secs, path)
			// And what it allocated since it started (go tool pprof
			// -sample_index=alloc_space).
			path = filepath.Join(e.o.ProfileDir, fmt.Sprintf("%s-%s-%s.allocs.pprof", e.name, label, t.name))
			if err := fetchProfile(ctx, t.url+"/debug/pprof/allocs", path); err != nil {
				e.logf("allocation profile of %s: %v", t.name, err)
			}
			// The live heap then (-sample_index=inuse_space), after a GC.
			path = filepath.Join(e.o.ProfileDir, fmt.Sprintf("%s-%s-%s.heap.pprof", e.name, label, t.name))
			if err := fetchProfile(ctx, t.url+"/debug/pprof/heap?gc=1", path); err != nil {
				e.logf("heap profile of %s: %v", t.name, err)
			}
		}()
	}
	return func() { wg.Wait(); cancel() }
}

// fetchProfile gets a profile from url into path. A process that was just
// started may not listen yet: connecting is retried for a few seconds.
func fetchProfile(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("profile request: %w", err)
	}
	var resp *http.Response
	for deadline := time.Now().Add(5 * time.Second); ; {
		resp, err = http.DefaultClient.Do(req)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: %s", url, resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("profile directory: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
