package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"

	"github.com/rtcsessions/rtc-sessions/internal/jsutil"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// ErrUnavailable is returned by Publisher.Publish when some event did not get
// its PubAck: NATS is down, the stream does not answer, or the acks did not
// come within the timeout. The caller must make the sender retry (HTTP 503,
// keep the sync token, ...); retrying is harmless because every event is
// published with Nats-Msg-Id = event id.
var ErrUnavailable = errors.New("event store unavailable")

// PublisherConfig bounds the publisher.
type PublisherConfig struct {
	MaxInFlight      int           // publishes waiting for their PubAck, across all sources
	MaxInFlightBytes int64         // their encoded bytes (0: 8 MiB); the NATS client holds each until acked
	AckTimeout       time.Duration // how long one batch may wait for its PubAcks
}

// Publisher publishes RawEvents to RTC_RAW asynchronously, with a bounded
// number in flight, and reports a batch stored only when every event of it
// is acknowledged by JetStream.
type Publisher struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	cfg   PublisherConfig
	sem   *semaphore.Weighted // publishes awaiting their PubAck
	bytes *semaphore.Weighted // their encoded bytes
	maxB  int64               // MaxInFlightBytes: a larger message waits for all of it
	m     *Metrics
	log   *zap.Logger
	relay *Relay // the cross-homeserver rule; nil: every event is published
}

// SetRelay makes Publish apply the cross-homeserver rule (relay.go) to every
// batch first: every source publishes through here, so no path skips it.
func (p *Publisher) SetRelay(r *Relay) { p.relay = r }

// NewPublisher builds a publisher on a NATS connection.
func NewPublisher(nc *nats.Conn, cfg PublisherConfig, m *Metrics, log *zap.Logger) (*Publisher, error) {
	if cfg.MaxInFlight < 1 {
		cfg.MaxInFlight = 1
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	if cfg.MaxInFlightBytes <= 0 {
		cfg.MaxInFlightBytes = 8 << 20
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxInFlight),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout))
	if err != nil {
		return nil, fmt.Errorf("jetstream context: %w", err)
	}
	return &Publisher{nc: nc, js: js, cfg: cfg, sem: semaphore.NewWeighted(int64(cfg.MaxInFlight)),
		bytes: semaphore.NewWeighted(cfg.MaxInFlightBytes), maxB: cfg.MaxInFlightBytes, m: m, log: log}, nil
}

// JetStream is the publisher's JetStream context (for topology.EnsureRaw).
func (p *Publisher) JetStream() jetstream.JetStream { return p.js }

// Ready reports whether the connection to NATS is up.
func (p *Publisher) Ready() error {
	if st := p.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("%w: nats connection %s", ErrUnavailable, st)
	}
	return nil
}

// Stats is what a batch did.
type Stats struct {
	Stored     int // new in RTC_RAW
	Duplicates int // already in RTC_RAW (PubAck.Duplicate)
	Refused    int // not published: the homeserver may not deliver them (Relay)
}

// Publish publishes the events of one batch (a transaction, a sync response,
// a file chunk) and waits for every PubAck. It returns an error wrapping
// ErrUnavailable unless all were acknowledged; some may have been stored
// anyway, which a retry de-duplicates. A batch larger than MaxInFlight is
// published as slots free up. Events the relay rule refuses are dropped
// first (Stats.Refused): on return evs[:len(evs)-Stats.Refused] holds the
// others, in order (evs' array is reused).
func (p *Publisher) Publish(ctx context.Context, homeserver string, src rawevent.Source, evs []rawevent.RawEvent) (Stats, error) {
	var st Stats
	n := len(evs)
	evs = p.relay.Admit(homeserver, src, evs)
	st.Refused = n - len(evs)
	if len(evs) == 0 {
		return st, nil
	}
	if err := p.Ready(); err != nil {
		p.m.PublishFail.WithLabelValues(homeserver, string(src)).Add(float64(len(evs)))
		return st, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.AckTimeout)
	defer cancel()

	msgs := make([]*nats.Msg, 0, len(evs))
	types := make([]string, 0, len(evs))
	for i := range evs {
		ev := &evs[i]
		data, err := rawevent.EncodeRaw(ev)
		if err != nil { // cannot happen for a RawEvent built by Prepare
			p.m.rejected(homeserver, src, RejectEncode)
			p.log.Warn("event rejected", zap.String("homeserver", homeserver), zap.String("event_id", string(ev.EventID)),
				zap.String("reason", RejectEncode), zap.Error(err))
			continue
		}
		msg := nats.NewMsg(rawevent.RawSubject(ev.RoomID))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, ev.MsgID())
		msg.Header.Set(jetstream.ExpectedStreamHeader, rawevent.StreamRaw)
		msgs = append(msgs, msg)
		types = append(types, ev.Type)
	}
	// At most MaxInFlight publishes and MaxInFlightBytes of them await
	// their PubAck across all sources: a larger batch is published as acks
	// free room, and a timed-out batch gives its room back as its acks (or
	// the async publish timeout) arrive.
	starts := make([]time.Time, len(msgs))
	res, _ := jsutil.PublishAllFlow(ctx, p.js, msgs, jsutil.Flow{
		Acquire: func(ctx context.Context, i int) error {
			if err := p.sem.Acquire(ctx, 1); err != nil {
				return fmt.Errorf("waiting for a publish slot: %w", err)
			}
			if err := p.bytes.Acquire(ctx, p.weight(msgs[i].Data)); err != nil {
				p.sem.Release(1)
				return fmt.Errorf("waiting for publish bytes: %w", err)
			}
			p.m.InFlight.Inc()
			starts[i] = time.Now()
			return nil
		},
		Release: func(i int, r jsutil.Result) {
			if r.Err == nil {
				p.m.PublishTime.WithLabelValues(homeserver).Observe(time.Since(starts[i]).Seconds())
			}
			p.sem.Release(1)
			p.bytes.Release(p.weight(msgs[i].Data))
			p.m.InFlight.Dec()
		},
	})
	var failed error
	for i, r := range res {
		switch {
		case r.Err != nil:
			if failed == nil {
				failed = fmt.Errorf("%w: %w", ErrUnavailable, r.Err)
			}
		case r.Ack.Duplicate:
			st.Duplicates++
			p.m.Duplicates.WithLabelValues(homeserver, string(src)).Inc()
		default:
			st.Stored++
			p.m.Forwarded.WithLabelValues(homeserver, string(src), types[i]).Inc()
		}
	}
	if failed != nil {
		p.m.PublishFail.WithLabelValues(homeserver, string(src)).Add(float64(len(evs) - st.Stored - st.Duplicates))
	}
	return st, failed
}

// weight is what a message takes of the byte budget: encoded messages
// waiting for their PubAck stay in the NATS client's memory, so their total
// is bounded as well as their number; a message larger than the whole budget
// waits for all of it.
func (p *Publisher) weight(data []byte) int64 { return min(int64(len(data)), p.maxB) }
