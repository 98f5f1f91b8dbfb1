package bench

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (0 < p ≤ 100) of samples by the
// nearest-rank method: the smallest sample such that at least p % of the
// samples are ≤ it. It is what an operator reads as "p99": no interpolation
// that invents a latency nobody saw. It returns 0 for no samples.
func Percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	return percentileSorted(sorted, p)
}

func percentileSorted(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// LatencySummary is the distribution of a set of latency samples.
type LatencySummary struct {
	N             int
	P50, P99, Max time.Duration
}

// Summarize computes p50, p99 and max of samples.
func Summarize(samples []time.Duration) LatencySummary {
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	s := LatencySummary{N: len(sorted)}
	if len(sorted) > 0 {
		s.P50 = percentileSorted(sorted, 50)
		s.P99 = percentileSorted(sorted, 99)
		s.Max = sorted[len(sorted)-1]
	}
	return s
}

// String is "p50 / p99 / max" in milliseconds.
func (s LatencySummary) String() string {
	return fmt.Sprintf("%s / %s / %s ms", fmtMS(s.P50), fmtMS(s.P99), fmtMS(s.Max))
}

// fmtMS prints a duration in milliseconds with a precision that suits its
// size (0.42, 3.1, 317).
func fmtMS(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms < 10:
		return fmt.Sprintf("%.2f", ms)
	case ms < 100:
		return fmt.Sprintf("%.1f", ms)
	default:
		return fmt.Sprintf("%.0f", ms)
	}
}

// fmtCount prints an integer with thousands separators (83,512).
func fmtCount(n int64) string {
	neg := n < 0
	if neg {
		n = -n
	}
	s := fmt.Sprint(n)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// fmtRate prints a per-second rate rounded to an integer with separators.
func fmtRate(r float64) string { return fmtCount(int64(math.Round(r))) + "/s" }

// fmtMiB prints bytes in MiB.
func fmtMiB(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
