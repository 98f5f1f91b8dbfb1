// Package assign is how partitions are shared among the live aggregator
// workers: rendezvous (highest-random-weight) hashing. The aggregator uses it
// to decide what to consume, rtcctl to show who owns what; both must compute
// the same answer, so it lives here, apart from either.
package assign

import (
	"crypto/sha256"
	"encoding/binary"
	"sort"
	"strconv"
)

// Owner is the rendezvous-hashing owner of a partition among the live
// workers: the worker with the highest SHA-256 of "<worker>/<partition>"
// (first 8 bytes, big-endian; ties to the smaller id). Every worker computes
// the same answer from the same live set; "" when no worker is live.
func Owner(live []string, partition int) string {
	best, bestH := "", uint64(0)
	for _, id := range live {
		s := sha256.Sum256([]byte(id + "/" + strconv.Itoa(partition)))
		h := binary.BigEndian.Uint64(s[:8])
		if best == "" || h > bestH || (h == bestH && id < best) {
			best, bestH = id, h
		}
	}
	return best
}

// Assignment maps each live worker to the partitions it owns (sorted), for
// partitions 0..partitions-1. A worker that owns nothing is present with an
// empty list.
func Assignment(live []string, partitions int) map[string][]int {
	out := make(map[string][]int, len(live))
	for _, id := range live {
		out[id] = []int{}
	}
	for p := 0; p < partitions; p++ {
		if o := Owner(live, p); o != "" {
			out[o] = append(out[o], p)
		}
	}
	for _, ps := range out {
		sort.Ints(ps)
	}
	return out
}
