// Package history reads ended sessions from RTC_HISTORY, the index the
// server keeps of RTC_EVENTS' session_ended events under
// rtc.history.<roomTok>.<appTok>.<callTok> (internal/topology). A room's
// history is a subject-filtered read: the server finds the room's
// messages from its per-subject index instead of scanning the stream.
// Pages go from the newest to the oldest; a cursor is the stream sequence
// of the oldest entry of the previous page.
package history

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// ErrNoIndex is returned when RTC_HISTORY does not exist (an aggregator of
// a version before it has not created it yet).
var ErrNoIndex = errors.New("no history index (stream " + topology.StreamHistory + ")")

// Query selects ended sessions.
type Query struct {
	// Rooms: the rooms to read (nil: every room). A room listed with an
	// application reads only that application's sessions.
	Rooms []id.RoomID
	App   string // "" = every application
	// Before: only entries with a stream sequence below it (the cursor of
	// the previous page); 0 = from the newest.
	Before uint64
	// Limit: at most this many entries (>= 1).
	Limit int
	// Since: only sessions stored since this time (zero: all RTC_HISTORY keeps).
	Since time.Time
}

// Entry is one ended session: its session_ended event with the summary.
type Entry struct {
	Seq    uint64 // RTC_HISTORY stream sequence
	Stored time.Time
	Event  events.SessionEvent
}

// Page is a query's answer, newest first. Next is the cursor of the next
// (older) page; 0 when there is none.
type Page struct {
	Entries []Entry
	Next    uint64
}

// Filters are the RTC_HISTORY subject filters of the query.
func (q Query) Filters() []string {
	if len(q.Rooms) == 0 {
		return []string{topology.HistoryFilter("", q.App)}
	}
	out := make([]string, 0, len(q.Rooms))
	for _, r := range q.Rooms {
		out = append(out, topology.HistoryFilter(r, q.App))
	}
	return out
}

// Read answers q with one ephemeral consumer over RTC_HISTORY (no
// acknowledgements, in memory, removed by the server when idle: a read-only
// user may not delete it). It reads forward from the oldest match below the
// cursor and keeps the last Limit+1, so its cost is the number of matching
// entries, which the per-subject index keeps to the rooms asked for. When
// every room is asked for, every entry matches and the read starts Limit+1
// entries below the cursor.
func Read(ctx context.Context, js jetstream.JetStream, q Query) (Page, error) {
	if q.Limit < 1 {
		return Page{}, fmt.Errorf("history: limit %d: want at least 1", q.Limit)
	}
	cfg := jetstream.ConsumerConfig{
		FilterSubjects:    q.Filters(),
		AckPolicy:         jetstream.AckNonePolicy,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: 30 * time.Second,
		MemoryStorage:     true,
		Replicas:          1,
	}
	before := q.Before
	if before == 0 {
		before = math.MaxUint64
	}
	switch {
	case !q.Since.IsZero():
		since := q.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	case len(q.Rooms) == 0 && q.App == "":
		// Every entry matches: read only the window below the cursor,
		// which needs the stream's bounds (one more request). A filtered
		// read goes straight to its consumer.
		s, err := js.Stream(ctx, topology.StreamHistory)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return Page{}, ErrNoIndex
		}
		if err != nil {
			return Page{}, fmt.Errorf("history: look up %s: %w", topology.StreamHistory, err)
		}
		st := s.CachedInfo().State
		before = min(before, st.LastSeq+1)
		if st.Msgs == 0 || before <= st.FirstSeq {
			return Page{}, nil
		}
		start := uint64(1)
		if before > uint64(q.Limit)+1 {
			start = before - uint64(q.Limit) - 1
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, max(start, st.FirstSeq)
	}
	if len(cfg.FilterSubjects) == 1 {
		cfg.FilterSubject, cfg.FilterSubjects = cfg.FilterSubjects[0], nil
	}
	cons, err := js.CreateConsumer(ctx, topology.StreamHistory, cfg)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return Page{}, ErrNoIndex
	}
	if err != nil {
		return Page{}, fmt.Errorf("history: read %s: %w", topology.StreamHistory, err)
	}
	// The last Limit+1 entries below the cursor, oldest first in a ring.
	ring := make([]Entry, q.Limit+1)
	n := 0
	pending := cons.CachedInfo().NumPending
read:
	for pending > 0 {
		if err := ctx.Err(); err != nil {
			return Page{}, err
		}
		batch, err := cons.Fetch(int(min(pending, 512)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return Page{}, fmt.Errorf("history: read %s: %w", topology.StreamHistory, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return Page{}, fmt.Errorf("history: read %s: %w", topology.StreamHistory, err)
			}
			pending = md.NumPending
			if md.Sequence.Stream >= before {
				break read
			}
			ev, err := events.DecodeSessionEvent(m.Data())
			if err != nil {
				return Page{}, fmt.Errorf("history: message %d on %s: %w", md.Sequence.Stream, m.Subject(), err)
			}
			ring[n%len(ring)] = Entry{Seq: md.Sequence.Stream, Stored: md.Timestamp, Event: ev}
			n++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return Page{}, fmt.Errorf("history: read %s: %w", topology.StreamHistory, err)
		}
		if got == 0 {
			break // removed meanwhile (max age): done
		}
	}
	var p Page
	keep := min(n, q.Limit)
	for i := 0; i < keep; i++ {
		p.Entries = append(p.Entries, ring[(n-1-i)%len(ring)])
	}
	if n > q.Limit {
		p.Next = p.Entries[len(p.Entries)-1].Seq
	}
	return p, nil
}

// CaughtUp waits up to within until RTC_HISTORY holds every session_ended
// event of RTC_EVENTS that q selects (the server copies them a few
// milliseconds after RTC_EVENTS stored them), so that a read right after a
// session ended finds it. It reports whether the index caught up. The
// newest matching event is found with a consumer that starts at the last
// match, which the server finds from its subject index.
func CaughtUp(ctx context.Context, js jetstream.JetStream, q Query, within time.Duration) (bool, error) {
	filters := make([]string, 0, len(q.Rooms)+1)
	if len(q.Rooms) == 0 {
		filters = append(filters, events.SessionFilter(events.SessionPrefix, q.App, "", events.KindSessionEnded))
	}
	for _, r := range q.Rooms {
		filters = append(filters, events.SessionFilter(events.SessionPrefix, q.App, r, events.KindSessionEnded))
	}
	cfg := jetstream.ConsumerConfig{FilterSubjects: filters, AckPolicy: jetstream.AckNonePolicy,
		DeliverPolicy: jetstream.DeliverLastPolicy, InactiveThreshold: 30 * time.Second, MemoryStorage: true, Replicas: 1}
	if len(filters) == 1 {
		cfg.FilterSubject, cfg.FilterSubjects = filters[0], nil
	}
	cons, err := js.CreateConsumer(ctx, events.StreamEvents, cfg)
	if err != nil {
		return false, fmt.Errorf("history: find the newest session_ended in %s: %w", events.StreamEvents, err)
	}
	// It starts at the newest match (and delivers whatever matches after it).
	var newest uint64
	pending := cons.CachedInfo().NumPending
	for pending > 0 {
		batch, err := cons.Fetch(int(min(pending, 512)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return false, fmt.Errorf("history: read %s: %w", events.StreamEvents, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return false, fmt.Errorf("history: read %s: %w", events.StreamEvents, err)
			}
			pending = md.NumPending
			newest = max(newest, md.Sequence.Stream)
		}
		if got == 0 {
			break
		}
	}
	if newest == 0 {
		return true, nil
	}
	deadline := time.Now().Add(within)
	for {
		s, err := js.Stream(ctx, topology.StreamHistory)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return false, ErrNoIndex
		}
		if err != nil {
			return false, fmt.Errorf("history: look up %s: %w", topology.StreamHistory, err)
		}
		for _, src := range s.CachedInfo().Sources {
			if src != nil && src.Name == events.StreamEvents && src.Seq >= newest {
				return true, nil
			}
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
