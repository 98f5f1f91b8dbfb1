package startup

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/natsutil/natsconn"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
)

func apiErr(code jetstream.ErrorCode, desc string) error {
	return &jetstream.APIError{Code: 400, ErrorCode: code, Description: desc}
}

func TestPermanent(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"partition mismatch", fmt.Errorf("ensure: %w: RTC_RAW has 8 partitions", topology.ErrPartitionMismatch), true},
		{"server too old", fmt.Errorf("connect: %w", natsconn.ErrServerTooOld), true},
		{"unsafe stream", fmt.Errorf("%w: stream RTC_RAW: allow_msg_schedules", topology.ErrUnsafeStream), true},
		{"connection closed", fmt.Errorf("ensure stream RTC_RAW: %w", nats.ErrConnectionClosed), true},
		{"replicas on a single server", fmt.Errorf("ensure stream RTC_RAW: %w",
			apiErr(10074, "replicas > 1 not supported in non-clustered mode")), true},
		{"subjects overlap", fmt.Errorf("ensure stream RTC_EVENTS: %w", apiErr(10065, "subjects overlap")), true},
		{"invalid config", apiErr(10052, "stream configuration update can not change storage type"), true},
		{"JetStream disabled for the account", apiErr(10039, "JetStream not enabled for account"), true},
		// What a fresh or recovering cluster answers, or does not answer:
		{"deadline of an attempt", fmt.Errorf("ensure stream RTC_EVENTS: %w", context.DeadlineExceeded), false},
		{"no responders", fmt.Errorf("ensure stream RTC_RAW: %w", jetstream.ErrNoStreamResponse), false},
		{"nats timeout", nats.ErrTimeout, false},
		{"no meta leader", apiErr(10008, "JetStream system temporarily unavailable"), false},
		{"not enough peers yet", apiErr(10023, "insufficient resources"), false},
		{"no suitable peers", apiErr(10005, "no suitable peers for placement"), false},
		{"created meanwhile with other defaults", apiErr(10058, "stream name already in use with a different configuration"), false},
		{"missing in verify mode", fmt.Errorf("stream RTC_RAW: %w", topology.ErrMissing), false},
		{"anything else", errors.New("boom"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Permanent(tc.err); got != tc.want {
				t.Errorf("Permanent(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// fast are options whose waits keep the test short.
func fast(onRetry func(int, error, time.Duration)) Options {
	return Options{What: "test", AttemptTimeout: 50 * time.Millisecond, MinWait: time.Millisecond,
		MaxWait: 4 * time.Millisecond, OnRetry: onRetry}
}

func TestEnsureRetriesUntilSuccess(t *testing.T) {
	var waits []time.Duration
	var errs []error
	calls := 0
	err := Ensure(context.Background(), zap.NewNop(), fast(func(n int, err error, wait time.Duration) {
		if n != len(waits)+1 {
			t.Errorf("OnRetry attempt %d, want %d", n, len(waits)+1)
		}
		waits, errs = append(waits, wait), append(errs, err)
	}), func(ctx context.Context) error {
		calls++
		switch {
		case calls <= 3:
			// The attempt hangs as a request the server never answers:
			// its own timeout ends it, and it is tried again.
			<-ctx.Done()
			return fmt.Errorf("ensure stream RTC_EVENTS: %w", ctx.Err())
		case calls <= 6:
			return apiErr(10008, "JetStream system temporarily unavailable")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if calls != 7 || len(waits) != 6 {
		t.Fatalf("%d attempts, %d retries; want 7 and 6", calls, len(waits))
	}
	if !errors.Is(errs[0], context.DeadlineExceeded) {
		t.Errorf("first failure %v, want the attempt's deadline", errs[0])
	}
	// Exponential with jitter: wait n is within [min(2^n ms, 4ms)/2, min(2^n ms, 4ms)].
	for i, w := range waits {
		hi := min(time.Millisecond<<i, 4*time.Millisecond)
		if w < hi/2 || w > hi {
			t.Errorf("wait %d = %s, want within [%s, %s]", i+1, w, hi/2, hi)
		}
	}
}

func TestEnsureStopsOnConflict(t *testing.T) {
	calls := 0
	conflict := fmt.Errorf("%w: RTC_RAW has 8 partitions, the configuration says 4", topology.ErrPartitionMismatch)
	err := Ensure(context.Background(), zap.NewNop(), fast(nil), func(context.Context) error {
		calls++
		if calls == 1 {
			return jetstream.ErrNoStreamResponse
		}
		return conflict
	})
	if !errors.Is(err, topology.ErrPartitionMismatch) || calls != 2 {
		t.Fatalf("Ensure = %v after %d attempts; want the partition mismatch after 2", err, calls)
	}
}

func TestEnsureEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	done := make(chan error, 1)
	go func() {
		done <- Ensure(ctx, zap.NewNop(), fast(nil), func(context.Context) error {
			calls++
			if calls == 5 {
				cancel()
			}
			return errors.New("still electing")
		})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || calls != 5 {
			t.Fatalf("Ensure = %v after %d attempts; want context.Canceled after 5", err, calls)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Ensure did not return after its context ended")
	}
}

// TestEnsureHasNoTotalDeadline: transient failures are retried for longer
// than many attempt timeouts put together.
func TestEnsureHasNoTotalDeadline(t *testing.T) {
	start := time.Now()
	calls := 0
	err := Ensure(context.Background(), zap.NewNop(), Options{AttemptTimeout: 10 * time.Millisecond,
		MinWait: time.Millisecond, MaxWait: 2 * time.Millisecond}, func(ctx context.Context) error {
		calls++
		if time.Since(start) < 500*time.Millisecond {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
	if err != nil || calls < 20 {
		t.Fatalf("Ensure = %v after %d attempts; want success after at least 20", err, calls)
	}
}

// TestBackoff: each wait is within the upper half of its bound, which
// doubles from the minimum to the maximum; both halves are used.
func TestBackoff(t *testing.T) {
	for _, tc := range []struct{ minWait, maxWait time.Duration }{
		{500 * time.Millisecond, 10 * time.Second},
		{250 * time.Millisecond, 5 * time.Second},
		{time.Second, time.Second},
	} {
		var low, high bool
		for range 200 {
			b := Backoff(tc.minWait, tc.maxWait)
			for i := range 8 {
				bound := min(tc.minWait<<i, tc.maxWait)
				w := b.NextBackOff()
				if w < bound/2 || w > bound {
					t.Fatalf("%v..%v: wait %d = %s, want within [%s, %s]", tc.minWait, tc.maxWait, i+1, w, bound/2, bound)
				}
				low = low || w < bound*3/4
				high = high || w > bound*3/4
			}
		}
		if !low || !high {
			t.Errorf("%v..%v: the waits are not spread over the upper half (low %v, high %v)", tc.minWait, tc.maxWait, low, high)
		}
	}
}

func TestRetry(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name      string
		failures  int  // transient failures before the outcome
		permanent bool // the outcome is a permanent failure
		cancelAt  int  // cancel ctx in this attempt (0: never)
		want      error
		calls     int
	}{
		{"success at once", 0, false, 0, nil, 1},
		{"success after failures", 3, false, 0, nil, 4},
		{"permanent failure, unwrapped", 2, true, 0, boom, 3},
		{"context ends", 100, false, 4, context.Canceled, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			calls, notified := 0, 0
			err := Retry(ctx, time.Millisecond, 2*time.Millisecond, func() error {
				calls++
				if calls == tc.cancelAt {
					cancel()
				}
				switch {
				case calls <= tc.failures:
					return fmt.Errorf("transient %d", calls)
				case tc.permanent:
					return backoff.Permanent(boom)
				}
				return nil
			}, func(error, time.Duration) { notified++ })
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) || calls != tc.calls {
				t.Fatalf("Retry = %v after %d calls; want %v after %d", err, calls, tc.want, tc.calls)
			}
			if tc.permanent && err != boom {
				t.Errorf("the permanent error is returned wrapped: %#v", err)
			}
			if want := min(calls-1, tc.failures); tc.cancelAt == 0 && notified != want {
				t.Errorf("notified %d times, want %d", notified, want)
			}
		})
	}
}
