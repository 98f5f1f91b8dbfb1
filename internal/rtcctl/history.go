package rtcctl

import (
	"errors"
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/api/history"
	"github.com/rtcsessions/rtc-sessions/internal/rtcctl/safetext"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

type historyCmd struct {
	Room  string `name:"room" placeholder:"ROOM_ID" help:"The ended sessions of this room (default: every room)."`
	App   string `name:"app" help:"The ended sessions of this application, m.call, ... (default: every application)."`
	Since string `name:"since" placeholder:"TIME" help:"Only sessions ended since: RFC 3339, or a duration back from now (24h). Default: all RTC_HISTORY keeps."`
	Last  int    `name:"last" placeholder:"N" help:"Only the N that ended last (0: all)."`
	JSON  bool   `name:"json" help:"Print the session_ended events (with their summaries) as a JSON array."`
}

// EndedSessions reads the session_ended events of a room and/or an
// application ("" for every one) stored since the given time (zero: from the
// start of RTC_EVENTS), in stream order.
func EndedSessions(e *runEnv, js jetstream.JetStream, room id.RoomID, app string, since time.Time) ([]events.SessionEvent, error) {
	var out []events.SessionEvent
	filter := events.SessionFilter(events.SessionPrefix, app, room, events.KindSessionEnded)
	err := readRange(e.ctx, js, events.StreamEvents, filter, since, func(m jetstream.Msg) error {
		ev, err := events.DecodeSessionEvent(m.Data())
		if err != nil {
			return fmt.Errorf("message on %s: %w", m.Subject(), err)
		}
		out = append(out, ev)
		return nil
	})
	return out, err
}

// IndexedEndedSessions reads the same as EndedSessions from RTC_HISTORY,
// the index by room the server keeps of RTC_EVENTS' session_ended events:
// a room's history is read from the server's per-subject index instead of
// a scan of every session event. It returns history.ErrNoIndex when the
// stream does not exist (an aggregator older than the index created the
// topology). Since is when RTC_HISTORY stored a session, milliseconds
// after RTC_EVENTS did.
func IndexedEndedSessions(e *runEnv, js jetstream.JetStream, room id.RoomID, app string, since time.Time) ([]events.SessionEvent, error) {
	q := history.Query{App: app, Since: since, Limit: 1000}
	if room != "" {
		q.Rooms = []id.RoomID{room}
	}
	// A session that ended a moment ago is in RTC_EVENTS first: wait
	// (briefly) until the index has it too.
	if ok, err := history.CaughtUp(e.ctx, js, q, 2*time.Second); err != nil {
		return nil, err
	} else if !ok {
		fmt.Fprintf(e.stderr, "note: %s is behind %s: the sessions that ended last may be missing\n", topology.StreamHistory, events.StreamEvents)
	}
	var newestFirst []events.SessionEvent
	for {
		page, err := history.Read(e.ctx, js, q)
		if err != nil {
			return nil, err
		}
		for _, en := range page.Entries {
			newestFirst = append(newestFirst, en.Event)
		}
		if page.Next == 0 {
			break
		}
		q.Before = page.Next
	}
	out := make([]events.SessionEvent, len(newestFirst))
	for i, ev := range newestFirst {
		out[len(out)-1-i] = ev
	}
	return out, nil
}

func endedAt(e *events.SessionEvent) int64 {
	if e.Summary != nil {
		return e.Summary.EndedAt
	}
	return e.At
}

func (c *historyCmd) Run(e *runEnv) error {
	if c.Last < 0 {
		return fmt.Errorf("%w: --last %d: want 0 or more", ErrUsage, c.Last)
	}
	var since time.Time
	if c.Since != "" {
		var err error
		if since, err = parseSince(c.Since, now()); err != nil {
			return err
		}
	}
	nc, js, err := e.connect(e.ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	ended, err := IndexedEndedSessions(e, js, id.RoomID(c.Room), c.App, since)
	if errors.Is(err, history.ErrNoIndex) {
		fmt.Fprintf(e.stderr, "note: no %s (the aggregator creates it when it starts; an older one did not): scanning %s instead, which takes longer the more it holds\n",
			topology.StreamHistory, events.StreamEvents)
		ended, err = EndedSessions(e, js, id.RoomID(c.Room), c.App, since)
	}
	if err != nil {
		return err
	}
	// By end time: stream order is per room, partitions are processed
	// independently, so rooms interleave in any order.
	sort.SliceStable(ended, func(i, j int) bool { return endedAt(&ended[i]) < endedAt(&ended[j]) })
	if c.Last > 0 && len(ended) > c.Last {
		ended = ended[len(ended)-c.Last:]
	}
	if c.JSON {
		if ended == nil {
			ended = []events.SessionEvent{}
		}
		return writeJSON(e.stdout, ended)
	}
	if len(ended) == 0 {
		fmt.Fprintln(e.stdout, "no ended sessions")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROOM\tAPP\tCALL\tSTARTED\tENDED\tDURATION\tPEAK\tUSERS\tJOINS\tREASON\tSESSION")
	for _, ev := range ended {
		s := ev.Summary
		if s == nil {
			s = &events.Summary{EndedAt: ev.At}
		}
		safetext.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", ev.RoomID, ev.Application, callName(ev.CallID),
			fmtMS(s.StartedAt), fmtMS(s.EndedAt), fmtDur(time.Duration(s.DurationMS)*time.Millisecond),
			s.PeakParticipants, s.DistinctUsers, s.Joins, ev.Reason, ev.SessionID)
	}
	return tw.Flush()
}
