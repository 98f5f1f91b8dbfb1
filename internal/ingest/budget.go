package ingest

import (
	"errors"
	"io"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// errOverBudget is returned by a budgetReader when the global body budget
// cannot cover the next bytes: the transaction is answered 429 and retried.
var errOverBudget = errors.New("transaction body budget exhausted")

// bodyBudget is the global budget, in bytes, of transaction bodies being
// read and processed at once. A body reserves its Content-Length before a
// byte is read (or, without one, each chunk before reading it) and releases
// it when its answer is written; what a transaction holds in memory (its
// prepared events, at most its own size again) is bounded by the bytes it
// reserved, so the bodies in flight are bounded by the budget however many
// requests arrive together.
type bodyBudget struct {
	mu    sync.Mutex
	limit int64
	used  int64
	// share bounds what one homeserver may hold, so that one that stalls
	// its bodies (or sends too much) cannot starve the others of the
	// budget: half of it when several homeservers share the ingest.
	share int64
	byHS  map[string]int64
	gauge prometheus.Gauge // may be nil
}

func newBodyBudget(limit int64, gauge prometheus.Gauge) *bodyBudget {
	return &bodyBudget{limit: limit, share: limit, byHS: map[string]int64{}, gauge: gauge}
}

// tryReserve takes n bytes of the budget for homeserver hs if they are
// free, within hs's share; it never waits.
func (b *bodyBudget) tryReserve(hs string, n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n < 0 || b.used+n > b.limit || b.byHS[hs]+n > b.share {
		return false
	}
	b.used += n
	b.byHS[hs] += n
	if b.gauge != nil {
		b.gauge.Set(float64(b.used))
	}
	return true
}

func (b *bodyBudget) release(hs string, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	if b.byHS[hs] -= n; b.byHS[hs] <= 0 {
		delete(b.byHS, hs)
	}
	if b.gauge != nil {
		b.gauge.Set(float64(b.used))
	}
}

// inUse is the reserved total (tests).
func (b *bodyBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// budgetReader reads a body within its reservation. With a Content-Length
// the whole body was reserved up front (reserved == max); without one it
// reserves steps of chunk bytes, up to max in all, before reading them.
// Beyond max it reads on unreserved, so that the http.MaxBytesReader under
// it reports the oversized body (413) rather than a full budget (429).
// Close releases everything it reserved.
type budgetReader struct {
	r        io.Reader
	b        *bodyBudget
	hs       string // whose share the reservations count against
	reserved int64
	read     int64
	chunk    int64
	max      int64
}

func (br *budgetReader) Read(p []byte) (int, error) {
	if br.read >= br.reserved && br.reserved < br.max {
		step := min(br.chunk, br.max-br.reserved)
		if !br.b.tryReserve(br.hs, step) {
			return 0, errOverBudget
		}
		br.reserved += step
	}
	if room := br.reserved - br.read; room > 0 && int64(len(p)) > room {
		p = p[:room]
	}
	n, err := br.r.Read(p)
	br.read += int64(n)
	return n, err
}

func (br *budgetReader) Close() {
	br.b.release(br.hs, br.reserved)
	br.reserved = 0
}
