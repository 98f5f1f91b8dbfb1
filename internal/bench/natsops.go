package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// consumerPrefix names the aggregator's partition consumers on RTC_RAW
// (agg-p00, agg-p01, ...).
const consumerPrefix = "agg-p"

// asyncPending is how many publishes may await their PubAck, as in the ingest.
const asyncPending = 4096

// stallWait is how long a publish may wait for room among the pending
// ones: a busy server slows the publisher down instead of failing it.
const stallWait = 30 * time.Second

// natsMsg is a message to publish.
type natsMsg = nats.Msg

// client is a NATS connection with a JetStream context tuned for async
// publishing.
type client struct {
	nc        *nats.Conn
	js        jetstream.JetStream
	pubErrors atomic.Int64
}

func connect(url, name string) (*client, error) {
	nc, err := nats.Connect(url, nats.Name(name), nats.Timeout(5*time.Second), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", url, err)
	}
	c := &client{nc: nc}
	c.js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(asyncPending),
		jetstream.WithPublishAsyncTimeout(30*time.Second),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { c.pubErrors.Add(1) }))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream context: %w", err)
	}
	return c, nil
}

func (c *client) close() { c.nc.Close() }

// publishAll publishes n messages from next asynchronously (at most
// asyncPending awaiting their ack) and waits for every PubAck.
func (c *client) publishAll(ctx context.Context, n int, next func(i int) (*nats.Msg, error)) error {
	before := c.pubErrors.Load()
	for i := range n {
		m, err := next(i)
		if err != nil {
			return err
		}
		if _, err := c.js.PublishMsgAsync(m, jetstream.WithStallWait(stallWait)); err != nil {
			return fmt.Errorf("publish %d of %d: %w", i+1, n, err)
		}
	}
	select {
	case <-c.js.PublishAsyncComplete():
	case <-ctx.Done():
		return fmt.Errorf("waiting for %d PubAcks: %w", c.js.PublishAsyncPending(), ctx.Err())
	}
	if e := c.pubErrors.Load() - before; e > 0 {
		return fmt.Errorf("%d of %d publishes failed", e, n)
	}
	return nil
}

// partitionState is a snapshot of the aggregator's partition consumers.
type partitionState struct {
	at        time.Time
	consumers map[string]*jetstream.ConsumerInfo
}

// backlog is what is still to be done: pending plus unacknowledged.
func (s partitionState) backlog() uint64 {
	var n uint64
	for _, ci := range s.consumers {
		n += ci.NumPending + uint64(ci.NumAckPending)
	}
	return n
}

// acked is the sum of the consumers' ack floors (stream sequence numbers do
// not add up, consumer sequences count deliveries): it grows whenever any
// partition makes progress.
func (s partitionState) ackFloors() map[string]uint64 {
	out := make(map[string]uint64, len(s.consumers))
	for name, ci := range s.consumers {
		out[name] = ci.AckFloor.Consumer
	}
	return out
}

func (s partitionState) names() []string {
	var out []string
	for n := range s.consumers {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// readPartitions lists RTC_RAW's partition consumers in one request.
func readPartitions(ctx context.Context, js jetstream.JetStream) (partitionState, error) {
	st := partitionState{at: time.Now(), consumers: map[string]*jetstream.ConsumerInfo{}}
	s, err := js.Stream(ctx, rawevent.StreamRaw)
	if err != nil {
		return st, fmt.Errorf("stream %s: %w", rawevent.StreamRaw, err)
	}
	l := s.ListConsumers(ctx)
	for ci := range l.Info() {
		if strings.HasPrefix(ci.Name, consumerPrefix) {
			st.consumers[ci.Name] = ci
		}
	}
	if err := l.Err(); err != nil {
		return st, fmt.Errorf("list consumers of %s: %w", rawevent.StreamRaw, err)
	}
	return st, nil
}

// errStalled says that the aggregator stopped making progress.
var errStalled = errors.New("no progress")

// waitDrained polls the partition consumers until all `partitions` exist
// and none has anything pending or unacknowledged. It fails when the
// backlog has not shrunk for `stall`, or at ctx's deadline. progress, if
// not nil, sees every snapshot.
func waitDrained(ctx context.Context, js jetstream.JetStream, partitions int, stall time.Duration,
	progress func(partitionState)) (partitionState, error) {
	var last partitionState
	best := ^uint64(0)
	bestAt := time.Now()
	for {
		st, err := readPartitions(ctx, js)
		if err == nil {
			last = st
			if progress != nil {
				progress(st)
			}
			b := st.backlog()
			if len(st.consumers) >= partitions && b == 0 {
				return st, nil
			}
			if b < best {
				best, bestAt = b, time.Now()
			}
		}
		if time.Since(bestAt) > stall {
			return last, fmt.Errorf("%w for %s: %d inputs still pending or unacked (%d of %d partition consumers exist)",
				errStalled, stall, last.backlog(), len(last.consumers), partitions)
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("%d inputs still pending or unacked: %w", last.backlog(), ctx.Err())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// streamBytes returns the stored bytes and messages of a stream.
func streamBytes(ctx context.Context, js jetstream.JetStream, name string) (bytes, msgs uint64, err error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s: %w", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("info of stream %s: %w", name, err)
	}
	return info.State.Bytes, info.State.Msgs, nil
}

// dlqCount is how many inputs the aggregator dead-lettered (0 when the
// stream does not exist).
func dlqCount(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	_, n, err := streamBytes(ctx, js, rawevent.StreamDLQ)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	return n, err
}
