package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"
)

// SubscribeOptions selects session events.
type SubscribeOptions struct {
	Application string    // "" = every application
	Room        id.RoomID // "" = every room
	Kind        Kind      // "" = every kind
	// From where to start: the zero time means only new events; FromStart
	// replays the whole stream.
	Since     time.Time
	FromStart bool
}

// Delivery is a session event with its position in RTC_EVENTS.
type Delivery struct {
	Event   SessionEvent
	Stream  uint64    // RTC_EVENTS sequence
	Stored  time.Time // when the stream stored it
	Subject string
}

// Subscribe delivers session events in stream order to handle until ctx ends
// or handle returns an error (which Subscribe returns). It uses an ordered
// consumer: no server-side state, recreated on gaps. A message that does not
// decode stops the subscription with an error (wrapping ErrUnsupportedVersion
// for a newer schema): an old subscriber fails loudly instead of misreading.
func Subscribe(ctx context.Context, js jetstream.JetStream, o SubscribeOptions, handle func(Delivery) error) error {
	// The iterator blocks in Next until stopped; the goroutine that stops it
	// on ctx must also end when handle ends the subscription: cancelling
	// this context on return ends it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{SessionFilter(SessionPrefix, o.Application, o.Room, o.Kind)},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	}
	switch {
	case o.FromStart:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	case !o.Since.IsZero():
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		t := o.Since
		cfg.OptStartTime = &t
	}
	c, err := js.OrderedConsumer(ctx, StreamEvents, cfg)
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", StreamEvents, err)
	}
	it, err := c.Messages()
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", StreamEvents, err)
	}
	defer it.Stop()
	stopped := make(chan struct{})
	defer func() { cancel(); <-stopped }()
	go func() { defer close(stopped); <-ctx.Done(); it.Stop() }()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			return fmt.Errorf("read %s: %w", StreamEvents, err)
		}
		ev, err := DecodeSessionEvent(m.Data())
		if err != nil {
			return fmt.Errorf("message on %s: %w", m.Subject(), err)
		}
		d := Delivery{Event: ev, Subject: m.Subject()}
		if md, err := m.Metadata(); err == nil {
			d.Stream, d.Stored = md.Sequence.Stream, md.Timestamp
		}
		if err := handle(d); err != nil {
			return err
		}
	}
}

// SeqTracker checks the per-room sequence numbers of the events a subscriber
// sees: Check says whether an event is new, a duplicate, or follows a gap.
type SeqTracker struct{ last map[id.RoomID]uint64 }

// SeqStatus is the verdict of SeqTracker.Check.
type SeqStatus int

const (
	SeqNext      SeqStatus = iota // the next event of the room
	SeqFirst                      // the first event seen of the room
	SeqDuplicate                  // already seen
	SeqGap                        // events of the room were missed
)

// Check records e and says how it relates to what was seen of its room.
func (t *SeqTracker) Check(e *SessionEvent) SeqStatus {
	if t.last == nil {
		t.last = map[id.RoomID]uint64{}
	}
	last, ok := t.last[e.RoomID]
	switch {
	case !ok:
		t.last[e.RoomID] = e.Seq
		return SeqFirst
	case e.Seq <= last:
		return SeqDuplicate
	case e.Seq == last+1:
		t.last[e.RoomID] = e.Seq
		return SeqNext
	}
	t.last[e.RoomID] = e.Seq
	return SeqGap
}
