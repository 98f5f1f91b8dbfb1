package ingest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestPublisherByteBudget: with a byte budget smaller than any message,
// every message waits for the whole budget and is published alone; nothing
// waits for ever and everything is stored.
func TestPublisherByteBudget(t *testing.T) {
	e := newEnv(t)
	pub, err := NewPublisher(e.nc, PublisherConfig{MaxInFlight: 4, MaxInFlightBytes: 16, AckTimeout: 2 * time.Second}, e.m, e.log)
	if err != nil {
		t.Fatal(err)
	}
	srv := newAppserviceServer(t, e, pub, 10<<20)
	var evs []string
	want := map[string]string{}
	for i := range 20 {
		id := fmt.Sprintf("$b%d", i)
		evs = append(evs, memberEvent(id, "!budget:hs1.test", fmt.Sprintf("@u%d:hs1.test", i), "D", 1700000000000+int64(i)))
		want[id] = "hs1"
	}
	if code, body := do(t, srv.URL, asReq{"PUT", "/_matrix/app/v1/transactions/b1", tokHS1, false, txn(evs...)}); code != 200 {
		t.Fatalf("transaction: %d %s", code, body)
	}
	assertStored(t, rawContents(t, e.url), want)
}

func TestRateLimiter(t *testing.T) {
	tests := []struct {
		perSecond float64
		waits     int
		min, max  time.Duration
	}{
		{0, 100, 0, 50 * time.Millisecond},               // no limit
		{20, 5, 190 * time.Millisecond, 2 * time.Second}, // 50ms apart, the first at once
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.perSecond), func(t *testing.T) {
			l := newRateLimiter(tc.perSecond)
			start := time.Now()
			for range tc.waits {
				if err := l.Wait(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			if d := time.Since(start); d < tc.min || d > tc.max {
				t.Errorf("%d waits took %s, want within [%s, %s]", tc.waits, d, tc.min, tc.max)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := l.Wait(ctx); !errors.Is(err, context.Canceled) {
				t.Errorf("wait with an ended context: %v", err)
			}
		})
	}
}
