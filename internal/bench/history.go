package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/api/history"
	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

const (
	figHistory = "history of one room among ended sessions"
	tgtHistory = "≤ 50 ms"

	maxHistory = 50 * time.Millisecond

	// historySessions ended sessions, historyPerRoom per room; each
	// session is 6 events in RTC_EVENTS (started, 2 joins, 2 leaves, ended).
	historySessions = 100_000
	historyPerRoom  = 5
	historyQueries  = 30
)

// runHistory measures a room's history through RTC_HISTORY, the index the
// server keeps by room (what rtcapi and rtcctl history read), against a
// scan of RTC_EVENTS for the room's session_ended events (what rtcctl
// history did before the index), on the same server and data. The streams
// are the topology's own; the events are published as the aggregator
// would, and the server fills RTC_HISTORY from them.
func runHistory(ctx context.Context, e *env) ([]Row, error) {
	sessions := historySessions
	m, err := measureHistory(ctx, e.c, sessions, historyQueries, e.logf)
	if err != nil {
		return nil, err
	}
	v := Met
	if m.Index.P50 > maxHistory {
		v = Missed
	}
	return []Row{{
		Figure:   fmt.Sprintf("%s (%s, %d per room), p50 / max", figHistory, fmtCount(int64(sessions)), historyPerRoom),
		Measured: fmt.Sprintf("%s / %s ms (RTC_HISTORY)", fmtMS(m.Index.P50), fmtMS(m.Index.Max)),
		Baseline: fmt.Sprintf("%s / %s ms (scan of RTC_EVENTS)", fmtMS(m.Scan.P50), fmtMS(m.Scan.Max)),
		Target:   tgtHistory, Verdict: v,
		Note: fmt.Sprintf("%d rooms asked (after one uncounted query each way), each read whole (%d sessions) both ways; RTC_EVENTS holds %s events; the baseline is what rtcctl history did before RTC_HISTORY",
			m.Queries, historyPerRoom, fmtCount(int64(m.Events))),
	}}, nil
}

// historyFigures are the timings of measureHistory.
type historyFigures struct {
	Index, Scan LatencySummary
	Queries     int
	Events      int
}

// measureHistory fills RTC_EVENTS (and through it RTC_HISTORY) with the
// events of sessions ended sessions, then reads the history of queries
// rooms both ways and checks that both ways find the same sessions.
func measureHistory(ctx context.Context, c *client, sessions, queries int, logf func(string, ...any)) (historyFigures, error) {
	var f historyFigures
	tc := topology.DefaultConfig()
	for _, cfg := range []jetstream.StreamConfig{topology.EventsStream(tc), topology.HistoryStream(tc)} {
		if _, err := c.js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return f, fmt.Errorf("create %s: %w", cfg.Name, err)
		}
	}
	rooms := sessions / historyPerRoom
	room := func(r int) id.RoomID { return id.RoomID(fmt.Sprintf("!hist%06d:bench.example.org", r)) }
	const perSession = 6
	start := time.Now()
	// Sessions end in rounds: round k ends the k-th session of every room,
	// so a room's sessions are spread over the whole stream, as months of
	// calls would be.
	err := c.publishAll(ctx, sessions*perSession, func(i int) (*nats.Msg, error) {
		s, step := i/perSession, i%perSession
		r, k := s%rooms, s/rooms
		rm := room(r)
		seq := uint64(k*perSession + step + 1)
		at := int64(1_700_000_000_000 + s*1000 + step*100)
		ev := events.SessionEvent{V: events.SchemaVersion, ID: eventcodec.EventID(rm, seq), Seq: seq,
			SessionID: fmt.Sprintf("hist-%d-%d", r, k), RoomID: rm, Application: "m.call", At: at}
		switch step {
		case 0:
			ev.Kind, ev.Participants, ev.Users = events.KindSessionStarted, 0, 0
		case 1, 2:
			ev.Kind, ev.Participants, ev.Users = events.KindMemberJoined, step, step
			ev.Member = &events.Member{UserID: id.UserID(fmt.Sprintf("@u%d:bench.example.org", step)), DeviceID: id.DeviceID(fmt.Sprintf("D%d", step)),
				MembershipID: fmt.Sprintf("m%d", step), JoinedAt: at, ExpiresAt: at + 4*3_600_000, Format: events.FormatSession,
				EventID: id.EventID(fmt.Sprintf("$e%d-%d", s, step))}
		case 3, 4:
			ev.Kind, ev.Reason, ev.Participants, ev.Users = events.KindMemberLeft, events.ReasonLeave, 4-step, 4-step
		default:
			ev.Kind, ev.Reason = events.KindSessionEnded, events.ReasonLeave
			ev.Summary = &events.Summary{StartedAt: at - 500, EndedAt: at, DurationMS: 500, PeakParticipants: 2, DistinctUsers: 2, Joins: 2}
		}
		data, err := wire.Marshal(&ev)
		if err != nil {
			return nil, err
		}
		m := nats.NewMsg(ev.Subject())
		m.Data = data
		m.Header.Set(nats.MsgIdHdr, ev.ID)
		return m, nil
	})
	if err != nil {
		return f, fmt.Errorf("publish the session events: %w", err)
	}
	f.Events = sessions * perSession
	logf("%s session events of %s ended sessions stored in %s", fmtCount(int64(f.Events)), fmtCount(int64(sessions)), time.Since(start).Round(time.Millisecond))
	// The server sources the session_ended events into RTC_HISTORY.
	for {
		s, err := c.js.Stream(ctx, topology.StreamHistory)
		if err != nil {
			return f, fmt.Errorf("look up %s: %w", topology.StreamHistory, err)
		}
		if n := s.CachedInfo().State.Msgs; n >= uint64(sessions) {
			break
		}
		select {
		case <-ctx.Done():
			return f, fmt.Errorf("%s did not fill: %w", topology.StreamHistory, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	logf("%s holds the %s ended sessions after %s", topology.StreamHistory, fmtCount(int64(sessions)), time.Since(start).Round(time.Millisecond))

	// One query each way first, not counted: both read the stream's block
	// indexes from disk the first time.
	if _, err := history.Read(ctx, c.js, history.Query{Rooms: []id.RoomID{room(rooms - 1)}, Limit: 50}); err != nil {
		return f, fmt.Errorf("warm-up: %w", err)
	}
	if _, err := scanEnded(ctx, c.js, room(rooms-1)); err != nil {
		return f, fmt.Errorf("warm-up: %w", err)
	}
	var index, scan []time.Duration
	for q := 0; q < queries; q++ {
		rm := room((q * 7919) % rooms) // rooms spread over the stream
		t0 := time.Now()
		page, err := history.Read(ctx, c.js, history.Query{Rooms: []id.RoomID{rm}, Limit: 50})
		index = append(index, time.Since(t0))
		if err != nil {
			return f, fmt.Errorf("history of %s: %w", rm, err)
		}
		t0 = time.Now()
		scanned, err := scanEnded(ctx, c.js, rm)
		scan = append(scan, time.Since(t0))
		if err != nil {
			return f, fmt.Errorf("scan for %s: %w", rm, err)
		}
		if len(page.Entries) != historyPerRoom || len(scanned) != historyPerRoom {
			return f, fmt.Errorf("room %s: %d sessions from %s, %d from the scan, want %d",
				rm, len(page.Entries), topology.StreamHistory, len(scanned), historyPerRoom)
		}
		for i, e := range page.Entries { // newest first vs stream order
			if e.Event.SessionID != scanned[len(scanned)-1-i] {
				return f, fmt.Errorf("room %s: the index and the scan disagree", rm)
			}
		}
	}
	f.Queries = queries
	f.Index, f.Scan = Summarize(index), Summarize(scan)
	logf("history of one room: RTC_HISTORY %s, scan of RTC_EVENTS %s", f.Index, f.Scan)
	return f, nil
}

// scanEnded reads the session_ended events of a room from RTC_EVENTS with
// one filtered consumer, as `rtcctl history --room` did before RTC_HISTORY.
func scanEnded(ctx context.Context, js jetstream.JetStream, room id.RoomID) ([]string, error) {
	cons, err := js.CreateConsumer(ctx, events.StreamEvents, jetstream.ConsumerConfig{
		FilterSubject: events.SessionFilter(events.SessionPrefix, "", room, events.KindSessionEnded),
		AckPolicy:     jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		InactiveThreshold: 30 * time.Second, MemoryStorage: true, Replicas: 1,
	})
	if err != nil {
		return nil, err
	}
	defer func() { _ = js.DeleteConsumer(context.WithoutCancel(ctx), events.StreamEvents, cons.CachedInfo().Name) }()
	var out []string
	pending := cons.CachedInfo().NumPending
	for pending > 0 {
		batch, err := cons.Fetch(int(min(pending, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			pending = md.NumPending
			ev, err := events.DecodeSessionEvent(m.Data())
			if err != nil {
				return nil, err
			}
			out = append(out, ev.SessionID)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, err
		}
		if got == 0 {
			break
		}
	}
	return out, nil
}
