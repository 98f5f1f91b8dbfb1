package rtcctl

import (
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rtcctl/safetext"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

type historyCmd struct {
	Room  string `name:"room" placeholder:"ROOM_ID" help:"The ended sessions of this room (default: every room)."`
	App   string `name:"app" help:"The ended sessions of this application, m.call, ... (default: every application)."`
	Since string `name:"since" placeholder:"TIME" help:"Only sessions ended since: RFC 3339, or a duration back from now (24h). Default: all RTC_EVENTS keeps."`
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
	ended, err := EndedSessions(e, js, id.RoomID(c.Room), c.App, since)
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
