package rtcctl

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// fmtMS renders a Matrix millisecond timestamp (0: "-").
func fmtMS(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}

// fmtTime renders a time like fmtMS.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// parseSince accepts RFC 3339 or a duration back from now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%w: --since %q: want RFC 3339 (2025-01-02T15:04:05Z) or a duration (10m)", ErrUsage, s)
	}
	return now.Add(-d), nil
}

// readRange reads the messages of a stream under filter, from since (zero:
// the beginning), to the end of the stream as it is when the read starts, in
// stream order. It uses an ephemeral pull consumer that acknowledges nothing
// and is removed by the server once idle: the read-only subscriber user may
// create consumers but not delete them.
func readRange(ctx context.Context, js jetstream.JetStream, stream, filter string, since time.Time,
	handle func(jetstream.Msg) error) error {
	cfg := jetstream.ConsumerConfig{
		FilterSubject:     filter,
		AckPolicy:         jetstream.AckNonePolicy,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: 30 * time.Second,
		MemoryStorage:     true,
		Replicas:          1,
	}
	if !since.IsZero() {
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &since
	}
	cons, err := js.CreateConsumer(ctx, stream, cfg)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("stream %s: %w (has the aggregator run against this server?)", stream, ErrNotFound)
		}
		return fmt.Errorf("read %s: create a consumer: %w", stream, err)
	}
	// What is in the stream now; newer messages are read too while some are
	// left, so the read ends with pending 0.
	pending := cons.CachedInfo().NumPending
	for pending > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := cons.Fetch(int(min(pending, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("read %s: %w", stream, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("read %s: %w", stream, err)
			}
			pending = md.NumPending
			if err := handle(m); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("read %s: %w", stream, err)
		}
		if got == 0 {
			// Nothing within the wait although messages were pending: they
			// were removed meanwhile (age, a re-drive): done.
			return nil
		}
	}
	return nil
}
