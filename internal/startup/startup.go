// Package startup creates or verifies a service's JetStream topology at start,
// retrying until it succeeds. On a fresh cluster the first requests can go
// unanswered for tens of seconds (several replicas creating the same stream
// at once, a meta leader still being elected, a server still joining), so a
// service keeps trying with a jittered exponential backoff and stays not
// ready meanwhile, for as long as it takes: a total deadline would make every
// replica started together give up together. Only an error that retrying
// cannot resolve, a configuration conflict, ends the wait.
package startup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/natsutil/natsconn"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
)

// Options tune Ensure; the zero value uses the defaults.
type Options struct {
	// What names the work in logs and errors, e.g. "topology (create mode)".
	What string
	// AttemptTimeout bounds one attempt (default 10s), so that a request
	// the server never answers costs one attempt, not the start.
	AttemptTimeout time.Duration
	// MinWait and MaxWait bound the wait between attempts (defaults 500ms
	// and 10s): it doubles per failed attempt and is drawn from its upper
	// half at random, so that replicas started together drift apart.
	MinWait, MaxWait time.Duration
	// OnRetry, when set, learns each failed attempt before the wait: the
	// service reports it on /readyz.
	OnRetry func(attempt int, err error, wait time.Duration)
}

func (o Options) withDefaults() Options {
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = 10 * time.Second
	}
	if o.MinWait <= 0 {
		o.MinWait = 500 * time.Millisecond
	}
	if o.MaxWait < o.MinWait {
		o.MaxWait = max(o.MinWait, 10*time.Second)
	}
	return o
}

// Ensure runs attempt until it returns nil, ctx ends, or it fails with an
// error Permanent reports. Each attempt gets a context bounded by
// o.AttemptTimeout; failures are logged as warnings with the error.
func Ensure(ctx context.Context, log *zap.Logger, o Options, attempt func(context.Context) error) error {
	o = o.withDefaults()
	n := 0
	var last error
	err := Retry(ctx, o.MinWait, o.MaxWait, func() error {
		n++
		actx, cancel := context.WithTimeout(ctx, o.AttemptTimeout)
		err := attempt(actx)
		cancel()
		if err != nil {
			last = err
			if Permanent(err) {
				return backoff.Permanent(err)
			}
		}
		return err
	}, func(err error, wait time.Duration) {
		log.Warn("not ready yet; retrying", zap.String("what", o.What), zap.Int("attempt", n),
			zap.Duration("wait", wait), zap.Error(err))
		if o.OnRetry != nil {
			o.OnRetry(n, err, wait)
		}
	})
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w (last error: %w)", o.What, ctx.Err(), last)
	default:
		return fmt.Errorf("%s: %w", o.What, err)
	}
}

// Backoff is the services' wait between attempts: it starts at minWait,
// doubles per failed attempt up to maxWait, and each wait is drawn at random
// from the upper half of that bound, so that replicas started together
// drift apart. (backoff's randomization spreads a wait by a factor around
// its interval: an interval of 3/4 of the bound with a factor of 1/3 is
// the range [bound/2, bound].)
func Backoff(minWait, maxWait time.Duration) *backoff.ExponentialBackOff {
	return &backoff.ExponentialBackOff{
		InitialInterval:     minWait * 3 / 4,
		RandomizationFactor: 1.0 / 3,
		Multiplier:          2,
		MaxInterval:         max(minWait, maxWait) * 3 / 4,
	}
}

// Retry calls op until it returns nil, an error wrapped by
// backoff.Permanent (returned unwrapped) or ctx ends (ctx's error), waiting
// Backoff(minWait, maxWait) between attempts, with no total deadline
// (backoff's default gives up after 15 minutes). notify, when not nil,
// learns each failure and the wait that follows it.
func Retry(ctx context.Context, minWait, maxWait time.Duration, op func() error, notify func(err error, wait time.Duration)) error {
	opts := []backoff.RetryOption{backoff.WithBackOff(Backoff(minWait, maxWait)), backoff.WithMaxElapsedTime(0)}
	if notify != nil {
		opts = append(opts, backoff.WithNotify(notify))
	}
	_, err := backoff.Retry(ctx, func() (struct{}, error) { return struct{}{}, op() }, opts...)
	return err
}

// permanentAPIErrors are JetStream API errors that mean the configuration
// cannot be applied to this server, however often it is tried.
var permanentAPIErrors = map[jetstream.ErrorCode]bool{
	10039: true, // JetStream not enabled for the account
	10052: true, // invalid stream configuration (or an update that cannot be made)
	10061: true, // replicas cannot be updated
	10065: true, // subjects overlap with another stream
	10074: true, // replicas > 1 on a server that is not clustered
	10076: true, // JetStream not enabled
}

// Permanent reports whether err is a configuration conflict that retrying
// cannot resolve: RTC_RAW with another partition count, a server too old, a
// stream whose settings let a publisher rewrite it (topology.ErrUnsafeStream:
// its message says what to do), a configuration JetStream refuses, or a
// connection closed for good.
// Everything else (timeouts, no responders, a cluster without a leader or
// without enough peers yet, a missing object in verify mode that another
// service or a job is about to create) is worth another attempt.
func Permanent(err error) bool {
	if errors.Is(err, topology.ErrPartitionMismatch) || errors.Is(err, natsconn.ErrServerTooOld) ||
		errors.Is(err, topology.ErrUnsafeStream) || errors.Is(err, nats.ErrConnectionClosed) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && permanentAPIErrors[apiErr.ErrorCode]
}
