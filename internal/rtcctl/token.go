package rtcctl

import (
	"fmt"
	"text/tabwriter"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/rtcctl/safetext"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// tokenCmd is `rtcctl token ROOM`: a room's subject token, its partition,
// and the subjects and keys under which the pipeline keeps it, for the nats
// CLI. It needs no server: the token and the partition are computed as the
// pipeline and the server's subject transform compute them.
type tokenCmd struct {
	Partitions int    `name:"partitions" placeholder:"N" help:"RTC_RAW's partition count (topology.partitions; default: the shipped default)."`
	JSON       bool   `name:"json" help:"Print the token, partition and subjects as JSON."`
	Room       RoomID `arg:"" name:"room-id" help:"The room (a room id, !opaque:server)."`
}

// RoomSubjects is what `rtcctl token --json` prints.
type RoomSubjects struct {
	RoomID     id.RoomID `json:"room_id"`
	Token      string    `json:"token"`
	Partition  int       `json:"partition"`
	Partitions int       `json:"partitions"`
	// Subjects and keys, as the nats CLI takes them.
	Raw      string `json:"raw"`      // where the ingest publishes the room's inputs
	Stored   string `json:"stored"`   // under which RTC_RAW stores them (partition transform)
	Timer    string `json:"timer"`    // the room's schedule in RTC_TIMERS
	Events   string `json:"events"`   // its session events in RTC_EVENTS
	Live     string `json:"live"`     // the same, re-published for core NATS subscribers
	DLQ      string `json:"dlq"`      // its partition's dead letters (shared with other rooms)
	RoomKey  string `json:"room_key"` // its state in rtc_rooms
	Sessions string `json:"sessions"` // its live sessions and their members in rtc_sessions
}

// SubjectsOf computes a room's subjects and keys for a topology of n
// partitions.
func SubjectsOf(room id.RoomID, n int) RoomSubjects {
	tok := events.Token(string(room))
	p := rawevent.Partition(tok, n)
	return RoomSubjects{
		RoomID: room, Token: tok, Partition: p, Partitions: n,
		Raw:      rawevent.RawSubject(room),
		Stored:   rawevent.PartitionSubject(p, tok),
		Timer:    rawevent.TimerSubject(room),
		Events:   events.SessionFilter(events.SessionPrefix, "", room, ""),
		Live:     events.SessionFilter(events.LivePrefix, "", room, ""),
		DLQ:      fmt.Sprintf("%s.%d", rawevent.DLQPrefix, p),
		RoomKey:  rawevent.RoomKey(room),
		Sessions: "*." + tok + ".>",
	}
}

func (c *tokenCmd) Run(e *runEnv) error {
	n := c.Partitions
	if n == 0 {
		n = topology.DefaultConfig().Partitions
	}
	if n < 1 || n > 1024 {
		return fmt.Errorf("%w: --partitions %d: want 1 to 1024", ErrUsage, n)
	}
	s := SubjectsOf(id.RoomID(c.Room), n)
	if c.JSON {
		return writeJSON(e.stdout, s)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	note := ""
	if c.Partitions == 0 {
		note = " (the default count: give --partitions if topology.partitions differs)"
	}
	safetext.Fprintf(tw, "room\t%s\n", s.RoomID)
	safetext.Fprintf(tw, "token\t%s\n", s.Token)
	safetext.Fprintf(tw, "partition\t%d of %d%s\n", s.Partition, s.Partitions, note)
	_ = tw.Flush()
	safetext.Fprintf(e.stdout, "\nwith the nats CLI:\n")
	tw = tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	const dec = " --translate 'rtcctl decode'"
	for _, l := range [][2]string{
		{"inputs as published", fmt.Sprintf("nats sub '%s'%s", s.Raw, dec)},
		{"inputs stored (RTC_RAW)", fmt.Sprintf("nats stream view RTC_RAW --subject '%s'%s", s.Stored, dec)},
		{"session events (RTC_EVENTS)", fmt.Sprintf("nats stream view RTC_EVENTS --subject '%s'%s", s.Events, dec)},
		{"session events as they happen", fmt.Sprintf("nats sub '%s'%s", s.Live, dec)},
		{"live sessions (keys)", fmt.Sprintf("nats kv ls rtc_sessions | grep -F '.%s.'", s.Token)},
		{"a live session or member", "nats kv get rtc_sessions KEY --raw | rtcctl decode"},
		{"the aggregator's state", fmt.Sprintf("nats kv get rtc_rooms '%s'   (readable: rtcctl room)", s.RoomKey)},
		{"its timer (RTC_TIMERS)", fmt.Sprintf("nats stream view RTC_TIMERS --subject '%s'", s.Timer)},
		{"dead letters of its partition", fmt.Sprintf("nats stream view RTC_DLQ --subject '%s'%s   (or: rtcctl dlq ls)", s.DLQ, dec)},
	} {
		safetext.Fprintf(tw, "  %s\t%s\n", l[0], l[1])
	}
	return tw.Flush()
}
