package assign

import (
	"fmt"
	"reflect"
	"testing"
)

// TestOwnerGolden pins the hash: workers of two versions during a rolling
// upgrade must agree on every owner, so Owner may never change. These are the
// owners the aggregator computed before the function moved here.
func TestOwnerGolden(t *testing.T) {
	live := []string{"agg-0a1b2c", "agg-3d4e5f", "agg-6a7b8c"}
	want := []string{"agg-3d4e5f", "agg-0a1b2c", "agg-0a1b2c", "agg-0a1b2c", "agg-6a7b8c", "agg-3d4e5f", "agg-3d4e5f", "agg-3d4e5f"}
	for p, w := range want {
		if got := Owner(live, p); got != w {
			t.Errorf("partition %d: owner %s, want %s", p, got, w)
		}
	}
	// The order of the live list does not matter.
	rev := []string{live[2], live[1], live[0]}
	for p := range want {
		if Owner(rev, p) != Owner(live, p) {
			t.Errorf("partition %d: owner depends on the order of the live workers", p)
		}
	}
	if Owner(nil, 0) != "" {
		t.Error("an owner without workers")
	}
}

// TestOwnerStable: a worker leaving moves only its own partitions.
func TestOwnerStable(t *testing.T) {
	live := []string{"a", "b", "c", "d"}
	for p := 0; p < 128; p++ {
		o := Owner(live, p)
		for _, gone := range live {
			if gone == o {
				continue
			}
			var rest []string
			for _, w := range live {
				if w != gone {
					rest = append(rest, w)
				}
			}
			if Owner(rest, p) != o {
				t.Fatalf("partition %d moved from %s when %s left", p, o, gone)
			}
		}
	}
}

func TestAssignment(t *testing.T) {
	tests := []struct {
		live       []string
		partitions int
	}{{nil, 4}, {[]string{"solo"}, 4}, {[]string{"a", "b", "c"}, 32}, {[]string{"a", "b", "c", "d", "e", "f", "g", "h"}, 3}}
	for _, tc := range tests {
		t.Run(fmt.Sprint(len(tc.live), "x", tc.partitions), func(t *testing.T) {
			got := Assignment(tc.live, tc.partitions)
			if len(got) != len(tc.live) {
				t.Fatalf("workers %v, want one entry per live worker", got)
			}
			seen := map[int]bool{}
			for w, ps := range got {
				for i, p := range ps {
					if Owner(tc.live, p) != w || seen[p] || (i > 0 && ps[i-1] >= p) {
						t.Fatalf("%s: %v not its owned partitions, sorted, once", w, ps)
					}
					seen[p] = true
				}
			}
			if len(tc.live) > 0 && len(seen) != tc.partitions {
				t.Fatalf("%d of %d partitions assigned", len(seen), tc.partitions)
			}
		})
	}
	if got := Assignment([]string{"solo"}, 3); !reflect.DeepEqual(got, map[string][]int{"solo": {0, 1, 2}}) {
		t.Errorf("one worker owns everything: %v", got)
	}
}
