package rtcctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/roomstore"
	"github.com/rtcsessions/rtc-sessions/internal/rtcctl/safetext"
	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// ErrNotFound is returned when the bucket or key asked for does not exist.
var ErrNotFound = errors.New("not found")

type sessionsCmd struct {
	Room RoomID `name:"room" placeholder:"ROOM_ID" help:"Only the sessions of this room (a room id, !opaque:server)."`
	App  string `name:"app" help:"Only the sessions of this application (m.call, ...)."`
	JSON bool   `name:"json" help:"Print the events.LiveSession values as JSON."`
}

func (c *sessionsCmd) Run(e *runEnv) error {
	nc, js, err := e.connect(e.ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	sessions, err := LiveSessions(e.ctx, js)
	if err != nil {
		return err
	}
	sessions = filterSessions(sessions, id.RoomID(c.Room), c.App)
	if c.JSON {
		if sessions == nil {
			sessions = []events.LiveSession{}
		}
		return writeJSON(e.stdout, sessions)
	}
	if len(sessions) == 0 {
		fmt.Fprintln(e.stdout, "no live sessions"+c.filterText())
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROOM\tAPP\tCALL\tSTARTED\tFOR\tDEVICES\tUSERS\tMEMBERS")
	t := now()
	for _, s := range sessions {
		members := make([]string, 0, len(s.Members))
		for _, m := range s.Members {
			members = append(members, string(m.UserID)+"/"+string(m.DeviceID))
		}
		safetext.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", s.RoomID, s.Application, callName(s.CallID),
			fmtMS(s.StartedAt), fmtDur(t.Sub(time.UnixMilli(s.StartedAt))), s.Participants, s.Users, strings.Join(members, ","))
	}
	return tw.Flush()
}

// filterSessions keeps the sessions of room and app ("": any).
func filterSessions(in []events.LiveSession, room id.RoomID, app string) []events.LiveSession {
	out := in[:0]
	for _, s := range in {
		if (room == "" || s.RoomID == room) && (app == "" || s.Application == app) {
			out = append(out, s)
		}
	}
	return out
}

func (c *sessionsCmd) filterText() string {
	var f []string
	if c.Room != "" {
		f = append(f, "in room "+string(safetext.Escape(string(c.Room))))
	}
	if c.App != "" {
		f = append(f, "of application "+string(safetext.Escape(c.App)))
	}
	if len(f) == 0 {
		return ""
	}
	return " " + strings.Join(f, " ")
}

// writeJSON prints v indented, exactly (safetext.NewJSONEncoder: what
// decodes is what was read, and a terminal shows it safely).
func writeJSON(w io.Writer, v any) error {
	enc := safetext.NewJSONEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}

// LiveSessions reads every live session of the rtc_sessions bucket, whole
// (members assembled from their keys), sorted by room, application and call.
func LiveSessions(ctx context.Context, js jetstream.JetStream) ([]events.LiveSession, error) {
	if _, err := js.KeyValue(ctx, events.BucketSessions); err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("bucket %s: %w (has the aggregator run against this server?)", events.BucketSessions, ErrNotFound)
		}
		return nil, fmt.Errorf("open bucket %s: %w", events.BucketSessions, err)
	}
	out, err := events.ListLiveSessions(ctx, js)
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.RoomID != b.RoomID {
			return a.RoomID < b.RoomID
		}
		if a.Application != b.Application {
			return a.Application < b.Application
		}
		return a.CallID < b.CallID
	})
	return out, nil
}

var errStop = errors.New("enough events")

type tailCmd struct {
	Since string `name:"since" placeholder:"TIME" help:"Start at this time: RFC 3339, or a duration back from now (10m). Default: only new events."`
	All   bool   `name:"all" help:"Start at the beginning of the stream."`
	Room  RoomID `name:"room" placeholder:"ROOM_ID" help:"Only this room (a room id, !opaque:server)."`
	App   string `name:"app" help:"Only this application (m.call, ...)."`
	Kind  string `name:"kind" help:"Only this kind (session_started, member_joined, member_updated, member_left, session_ended)."`
	Max   int    `name:"max" placeholder:"N" help:"Stop after N events (0: follow until interrupted)."`
	JSON  bool   `name:"json" help:"Print one events.SessionEvent per line as JSON."`
}

func (c *tailCmd) Run(e *runEnv) error {
	o := events.SubscribeOptions{Application: c.App, Room: id.RoomID(c.Room), Kind: events.Kind(c.Kind), FromStart: c.All}
	if c.Since != "" {
		if c.All {
			return fmt.Errorf("%w: --since and --all exclude each other", ErrUsage)
		}
		var err error
		if o.Since, err = parseSince(c.Since, now()); err != nil {
			return err
		}
	}
	if c.Kind != "" && !validKind(events.Kind(c.Kind)) {
		return fmt.Errorf("%w: --kind %q: want one of %v", ErrUsage, c.Kind, events.Kinds)
	}
	nc, js, err := e.connect(e.ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	n := 0
	enc := safetext.NewJSONEncoder(e.stdout)
	err = events.Subscribe(e.ctx, js, o, func(d events.Delivery) error {
		if c.JSON {
			if err := enc.Encode(d.Event); err != nil {
				return fmt.Errorf("write event %s: %w", d.Event.ID, err)
			}
		} else {
			fmt.Fprintln(e.stdout, FormatEvent(&d.Event))
		}
		n++
		if c.Max > 0 && n >= c.Max {
			return errStop
		}
		return nil
	})
	if errors.Is(err, errStop) {
		return nil
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s: %w (has the aggregator run against this server?)", events.StreamEvents, ErrNotFound)
	}
	return err
}

func validKind(k events.Kind) bool {
	for _, x := range events.Kinds {
		if x == k {
			return true
		}
	}
	return false
}

// FormatEvent renders a session event as one readable line, safe to print:
// every field is escaped (safetext), so that no id can end the line early,
// move the cursor or reorder what is shown.
func FormatEvent(e *events.SessionEvent) string {
	var b strings.Builder
	safetext.Fprintf(&b, "%s  %-15s  %s  %s %s", fmtMS(e.At), e.Kind, e.RoomID, e.Application, callName(e.CallID))
	if e.Member != nil {
		safetext.Fprintf(&b, "  %s/%s", e.Member.UserID, e.Member.DeviceID)
	}
	if e.Reason != "" {
		safetext.Fprintf(&b, "  reason=%s", e.Reason)
	}
	fmt.Fprintf(&b, "  devices=%d users=%d", e.Participants, e.Users)
	if s := e.Summary; s != nil {
		fmt.Fprintf(&b, "  duration=%s peak=%d distinct_users=%d joins=%d",
			fmtDur(time.Duration(s.DurationMS)*time.Millisecond), s.PeakParticipants, s.DistinctUsers, s.Joins)
	}
	fmt.Fprintf(&b, "  seq=%d", e.Seq)
	return b.String()
}

func callName(callID string) string {
	if callID == "" {
		return `call=""`
	}
	return "call=" + callID
}

func fmtDur(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if d < time.Minute {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

type roomCmd struct {
	Room RoomID `arg:"" name:"room-id" help:"The room (a room id, !opaque:server)."`
	JSON bool   `name:"json" help:"Print the whole record as JSON (keys made readable)."`
}

func (c *roomCmd) Run(e *runEnv) error {
	room := id.RoomID(c.Room)
	nc, js, err := e.connect(e.ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	rec, err := RoomRecord(e.ctx, js, room)
	if err != nil {
		return err
	}
	if c.JSON {
		return writeJSON(e.stdout, RoomView{LastIn: rec.LastIn, TimerAt: rec.TimerAt, Split: rec.Split, State: readableState(rec.State)})
	}
	PrintRoom(e.stdout, room, rec)
	return nil
}

// RoomView is what `rtcctl room --json` prints: a room's state as the
// aggregator stores it in rtc_rooms.
type RoomView struct {
	LastIn  uint64         `json:"last_in"`
	TimerAt int64          `json:"timer_at,omitempty"`
	Split   bool           `json:"split"`
	State   *rtc.RoomState `json:"state"`
}

// RoomRecord reads a room's state from rtc_rooms (its header, and its parts
// when the room is split).
func RoomRecord(ctx context.Context, js jetstream.JetStream, room id.RoomID) (*roomstore.Room, error) {
	kv, err := js.KeyValue(ctx, rawevent.BucketRooms)
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("bucket %s: %w (has the aggregator run against this server?)", rawevent.BucketRooms, ErrNotFound)
		}
		return nil, fmt.Errorf("open bucket %s: %w", rawevent.BucketRooms, err)
	}
	rm, err := roomstore.Load(ctx, kv, room)
	if err != nil {
		return nil, err
	}
	if rm.Rev == 0 {
		return nil, fmt.Errorf("room %s: %w: the aggregator holds no state for it", room, ErrNotFound)
	}
	return rm, nil
}

// printable shows a key of the reducer's maps (registers, sessions,
// members: their parts are separated by NUL bytes) as text: the parts joined
// by "|".
func printable(k string) string { return strings.ReplaceAll(k, "\x00", "|") }

// readableState is a copy of st for printing whose map keys are printable.
// The values are shared with st: it is only read.
func readableState(st *rtc.RoomState) *rtc.RoomState {
	if st == nil {
		return nil
	}
	cp := *st
	cp.Registers = make(wire.SortedMap[string, *rtc.Register], len(st.Registers))
	for k, r := range st.Registers {
		cp.Registers[printable(k)] = r
	}
	cp.Sessions = make(wire.SortedMap[string, *rtc.Session], len(st.Sessions))
	for k, s := range st.Sessions {
		sc := *s
		sc.Members = make(wire.SortedMap[string, *rtc.SessionMember], len(s.Members))
		for mk, m := range s.Members {
			sc.Members[printable(mk)] = m
		}
		cp.Sessions[printable(k)] = &sc
	}
	cp.Slots = make(wire.SortedMap[string, rtc.Slot], len(st.Slots))
	for k, sl := range st.Slots {
		cp.Slots[printable(k)] = sl
	}
	return &cp
}

var registerKinds = map[rtc.RegisterKind]string{rtc.RegisterJoin: "join", rtc.RegisterLeave: "leave",
	rtc.RegisterInvalid: "invalid", rtc.RegisterRedacted: "redacted"}

// PrintRoom prints a summary of a room record, every field escaped
// (safetext).
func PrintRoom(w io.Writer, room id.RoomID, rec *roomstore.Room) {
	st := rec.State
	form := "inline"
	if rec.Split {
		form = "split"
	}
	pending := 0
	if rec.Redo != nil {
		pending = len(rec.Redo.Events)
	}
	safetext.Fprintf(w, "room %s\n", room)
	safetext.Fprintf(w, "  clock %s  seq %d  last input RTC_RAW #%d  timer %s  stored %s  last outbox %d event(s)\n",
		fmtMS(st.Clock), st.Seq, rec.LastIn, fmtMS(rec.TimerAt), form, pending)

	safetext.Fprintf(w, "sessions (%d)\n", len(st.Sessions))
	for _, k := range sortedKeys(st.Sessions) {
		s := st.Sessions[k]
		safetext.Fprintf(w, "  %s %s  id %s  started %s  devices %d  users %d  peak %d  joins %d\n",
			s.App, callName(s.CallID), s.ID, fmtMS(s.StartedAt), len(s.Members), len(s.UserDevices), s.Peak, s.Joins)
		for _, mk := range sortedKeys(s.Members) {
			m := s.Members[mk].Member
			safetext.Fprintf(w, "    %s/%s  joined %s  expires %s  %s  %s\n", m.UserID, m.DeviceID,
				fmtMS(m.JoinedAt), fmtMS(m.ExpiresAt), m.Format, m.EventID)
		}
	}

	safetext.Fprintf(w, "registers (%d)\n", len(st.Registers))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(st.Registers) > 0 {
		fmt.Fprintln(tw, "  KEY\tKIND\tSENDER\tEVENT\tTS\tCLAIMS\tWHY NOT COUNTED")
	}
	for _, k := range sortedKeys(st.Registers) {
		r := st.Registers[k]
		claims := make([]string, 0, len(r.Claims))
		for _, c := range r.Claims {
			claims = append(claims, fmt.Sprintf("%s %s %s/%s until %s", c.App, callName(c.CallID), c.User, c.Device, fmtMS(c.Deadline)))
		}
		kind := registerKinds[r.Kind]
		if kind == "" {
			kind = fmt.Sprint(r.Kind)
		}
		why := WhyNotCounted(st, r)
		safetext.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", printable(k), kind, r.Sender, r.EventID, fmtMS(r.TS),
			strings.Join(claims, "; "), why)
	}
	_ = tw.Flush()

	if len(st.RoomMembers) > 0 {
		safetext.Fprintf(w, "room members (%d)\n", len(st.RoomMembers))
		for _, u := range sortedKeys(st.RoomMembers) {
			m := st.RoomMembers[u]
			safetext.Fprintf(w, "  %s  %s  %s\n", u, m.Membership, fmtMS(m.TS))
		}
	}
	if len(st.Slots) > 0 {
		safetext.Fprintf(w, "slots (%d)\n", len(st.Slots))
		for _, s := range sortedKeys(st.Slots) {
			sl := st.Slots[s]
			state := "closed"
			if sl.Open {
				state = "open"
			}
			safetext.Fprintf(w, "  %s  %s  %s\n", s, state, fmtMS(sl.TS))
		}
	}
}

func sortedKeys[K ~string, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}
