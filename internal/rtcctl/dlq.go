package rtcctl

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/ctlapi"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/rtcctl/safetext"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// Headers of a message in RTC_DLQ (declared in ctlapi, where the
// aggregator takes them from).
const (
	HeaderDLQReason    = ctlapi.HeaderDLQReason
	HeaderDLQError     = ctlapi.HeaderDLQError
	HeaderDLQPart      = ctlapi.HeaderDLQPart
	HeaderDLQSeq       = ctlapi.HeaderDLQSeq
	HeaderDLQSubject   = ctlapi.HeaderDLQSubject
	HeaderDLQAttempts  = ctlapi.HeaderDLQAttempts
	HeaderRedrivenFrom = ctlapi.HeaderRedrivenFrom
)

type dlqCmd struct {
	Ls      dlqListCmd    `cmd:"" name:"ls" aliases:"list" help:"List the dead-lettered inputs with their reasons."`
	Show    dlqShowCmd    `cmd:"" help:"Show one entry: its headers and the decoded input."`
	Redrive dlqRedriveCmd `cmd:"" help:"Publish entries back to RTC_RAW (rtc.raw.<room>), then delete them from RTC_DLQ."`
}

// DLQEntry is one message of RTC_DLQ.
type DLQEntry struct {
	Seq         uint64              `json:"seq"`
	Stored      time.Time           `json:"stored"`
	Subject     string              `json:"subject"`
	Reason      string              `json:"reason"`
	Error       string              `json:"error"`
	Partition   string              `json:"partition"`
	OrigSeq     string              `json:"orig_seq"`     // the input's RTC_RAW sequence
	OrigSubject string              `json:"orig_subject"` // the input's RTC_RAW subject
	Attempts    string              `json:"attempts"`
	Headers     map[string][]string `json:"headers"`
	// Input is the decoded input; DecodeError says why it is nil.
	Input       *rawevent.RawEvent `json:"input,omitempty"`
	DecodeError string             `json:"decode_error,omitempty"`
	// Body is the original input, as stored (base64 in JSON).
	Body []byte `json:"body"`
}

func newDLQEntry(seq uint64, stored time.Time, subject string, h nats.Header, body []byte) *DLQEntry {
	e := &DLQEntry{Seq: seq, Stored: stored, Subject: subject, Headers: map[string][]string(h), Body: body,
		Reason: h.Get(HeaderDLQReason), Error: h.Get(HeaderDLQError), Partition: h.Get(HeaderDLQPart),
		OrigSeq: h.Get(HeaderDLQSeq), OrigSubject: h.Get(HeaderDLQSubject), Attempts: h.Get(HeaderDLQAttempts)}
	if e.Headers == nil {
		e.Headers = map[string][]string{}
	}
	in, err := rawevent.DecodeRaw(body)
	if err != nil {
		e.DecodeError = err.Error()
	} else {
		e.Input = &in
	}
	return e
}

// Room is the entry's room: the decoded input's, else the one named by the
// room token of its original subject (rtc.part.<N>.<roomTok>); "" if neither.
func (e *DLQEntry) Room() id.RoomID {
	if e.Input != nil {
		return e.Input.RoomID
	}
	if tok := e.roomToken(); tok != "" {
		if room, err := events.ParseToken(tok); err == nil && strings.HasPrefix(room, "!") {
			return id.RoomID(room)
		}
	}
	return ""
}

func (e *DLQEntry) roomToken() string {
	parts := strings.Split(e.OrigSubject, ".")
	switch {
	case len(parts) == 4 && parts[0]+"."+parts[1] == rawevent.PartPrefix:
		return parts[3]
	case len(parts) == 5 && parts[0]+"."+parts[1] == rawevent.PartPrefix && parts[4] == "timer": // the timer path
		return parts[3]
	case len(parts) == 3 && (parts[0]+"."+parts[1] == rawevent.RawPrefix || parts[0]+"."+parts[1] == rawevent.TimerPrefix):
		return parts[2]
	}
	return ""
}

// RedriveSubject is where a re-drive publishes the entry: the RTC_RAW
// subject of its room, as the ingest publishes (rawevent.RawSubject).
func (e *DLQEntry) RedriveSubject() (string, error) {
	// A timer counts only from the timer path, which only the scheduler
	// writes: re-driven onto rtc.raw it would go straight back to the DLQ
	// (timer_not_from_timer_path). The room arms its next deadline on its
	// next input; nothing is lost by leaving it.
	if e.Input != nil && e.Input.Kind == rawevent.InputTimer {
		return "", fmt.Errorf("RTC_DLQ #%d: a timer input cannot be re-driven (only the timer path may carry one; the room arms its next deadline on its next input)", e.Seq)
	}
	// Re-encoded from the room, never the header's token as it is: a
	// header cannot steer the publish to another subject.
	if room := e.Room(); room != "" {
		return rawevent.RawSubject(room), nil
	}
	// "%s" in quotes, not %q: the message is escaped where it is printed.
	return "", fmt.Errorf("RTC_DLQ #%d: the input does not decode (%s) and %s \"%s\" names no room", e.Seq, e.DecodeError, HeaderDLQSubject, e.OrigSubject)
}

// describe is a short description of the input.
func (e *DLQEntry) describe() string {
	in := e.Input
	if in == nil {
		return fmt.Sprintf("undecodable (%d bytes)", len(e.Body))
	}
	if in.Kind == rawevent.InputTimer {
		return "timer for " + fmtMS(in.Deadline)
	}
	s := in.Type + " " + string(in.EventID)
	if in.Sender != "" {
		s += " from " + string(in.Sender)
	}
	return s
}

// DLQEntries reads every entry of RTC_DLQ, oldest first.
func DLQEntries(e *runEnv, js jetstream.JetStream) ([]*DLQEntry, error) {
	var out []*DLQEntry
	err := readRange(e.ctx, js, rawevent.StreamDLQ, rawevent.DLQPrefix+".>", time.Time{}, func(m jetstream.Msg) error {
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read %s: %w", rawevent.StreamDLQ, err)
		}
		out = append(out, newDLQEntry(md.Sequence.Stream, md.Timestamp, m.Subject(), m.Headers(), m.Data()))
		return nil
	})
	return out, err
}

// GetDLQEntry reads one entry of RTC_DLQ by its stream sequence.
func GetDLQEntry(e *runEnv, js jetstream.JetStream, seq uint64) (*DLQEntry, error) {
	s, err := dlqStream(e, js)
	if err != nil {
		return nil, err
	}
	m, err := s.GetMsg(e.ctx, seq)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, fmt.Errorf("RTC_DLQ #%d: %w", seq, ErrNotFound)
		}
		return nil, fmt.Errorf("read RTC_DLQ #%d: %w", seq, err)
	}
	return newDLQEntry(m.Sequence, m.Time, m.Subject, m.Header, m.Data), nil
}

func dlqStream(e *runEnv, js jetstream.JetStream) (jetstream.Stream, error) {
	s, err := js.Stream(e.ctx, rawevent.StreamDLQ)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("stream %s: %w (has the aggregator run against this server?)", rawevent.StreamDLQ, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", rawevent.StreamDLQ, err)
	}
	return s, nil
}

type dlqListCmd struct {
	Reason string `name:"reason" help:"Only entries with this reason (decode, apply, store, room_state, room_mismatch, timer_not_from_timer_path, bad_subject)."`
	JSON   bool   `name:"json" help:"Print the entries as a JSON array."`
}

func (c *dlqListCmd) Run(e *runEnv) error {
	nc, js, err := e.connect(e.ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	all, err := DLQEntries(e, js)
	if err != nil {
		return err
	}
	entries := filterReason(all, c.Reason)
	if c.JSON {
		return writeJSON(e.stdout, entries)
	}
	if len(entries) == 0 {
		fmt.Fprintln(e.stdout, "RTC_DLQ is empty")
		if len(all) > 0 {
			fmt.Fprintf(e.stdout, "(%d entries with other reasons)\n", len(all))
		}
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tSTORED\tPARTITION\tREASON\tATTEMPTS\tROOM\tINPUT\tERROR")
	for _, d := range entries {
		safetext.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Seq, fmtTime(d.Stored), d.Partition, d.Reason, d.Attempts,
			orDash(string(d.Room())), d.describe(), clipText(d.Error, 100))
	}
	return tw.Flush()
}

func filterReason(entries []*DLQEntry, reason string) []*DLQEntry {
	out := []*DLQEntry{}
	for _, d := range entries {
		if reason == "" || d.Reason == reason {
			out = append(out, d)
		}
	}
	return out
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// clipText cuts s to at most n bytes, at a character boundary.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

type dlqShowCmd struct {
	Seq  uint64 `arg:"" name:"seq" help:"The entry's RTC_DLQ sequence (first column of dlq ls)."`
	JSON bool   `name:"json" help:"Print the entry as JSON."`
}

func (c *dlqShowCmd) Run(e *runEnv) error {
	nc, js, err := e.connect(e.ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	d, err := GetDLQEntry(e, js, c.Seq)
	if err != nil {
		return err
	}
	if c.JSON {
		return writeJSON(e.stdout, d)
	}
	PrintDLQEntry(e.stdout, d)
	return nil
}

// PrintDLQEntry prints an entry: where it is, its headers, its input. Every
// header value and input field is escaped (safetext).
func PrintDLQEntry(w io.Writer, d *DLQEntry) {
	safetext.Fprintf(w, "RTC_DLQ #%d  %s  stored %s\n", d.Seq, d.Subject, fmtTime(d.Stored))
	safetext.Fprintf(w, "  reason %s  attempts %s  partition %s  from RTC_RAW #%s %s\n", d.Reason, d.Attempts, d.Partition, d.OrigSeq, d.OrigSubject)
	safetext.Fprintf(w, "  error  %s\n", d.Error)
	fmt.Fprintln(w, "headers")
	keys := make([]string, 0, len(d.Headers))
	for k := range d.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range d.Headers[k] {
			safetext.Fprintf(w, "  %s: %s\n", k, v)
		}
	}
	if d.Input == nil {
		safetext.Fprintf(w, "input (%d bytes) does not decode: %s\n", len(d.Body), d.DecodeError)
		safetext.Fprintf(w, "  %s\n", safetext.Quote(clipText(string(d.Body), 2048)))
		return
	}
	fmt.Fprintln(w, "input")
	in := d.Input
	safetext.Fprintf(w, "  kind %s  room %s  received %s\n", in.Kind, in.RoomID, fmtMS(in.ReceivedAt))
	if in.Kind == rawevent.InputTimer {
		safetext.Fprintf(w, "  deadline %s\n", fmtMS(in.Deadline))
		return
	}
	safetext.Fprintf(w, "  event %s  type %s  sender %s  origin_server_ts %s\n", in.EventID, in.Type, in.Sender, fmtMS(in.OriginServerTS))
	safetext.Fprintf(w, "  homeserver %s  source %s\n", orDash(in.Homeserver), orDash(string(in.Source)))
	if in.StateKey != nil {
		safetext.Fprintf(w, "  state_key %s\n", safetext.Quote(*in.StateKey))
	}
	if in.Redacts != "" {
		safetext.Fprintf(w, "  redacts %s\n", in.Redacts)
	}
	if in.RedactedBy != "" {
		safetext.Fprintf(w, "  redacted by %s at %s\n", in.RedactedBy, fmtMS(in.RedactedAt))
	}
	if in.StickyDurationMS != nil {
		safetext.Fprintf(w, "  sticky %dms\n", *in.StickyDurationMS)
	}
	safetext.Fprintf(w, "  content %s\n", in.Content)
}

type dlqRedriveCmd struct {
	Seqs   []uint64 `arg:"" optional:"" name:"seq" help:"The entries to re-drive (RTC_DLQ sequences)."`
	All    bool     `name:"all" help:"Re-drive every entry (with --reason: every entry with that reason)."`
	Reason string   `name:"reason" help:"With --all: only entries with this reason."`
	DryRun bool     `name:"dry-run" help:"Only say what would be re-driven."`
}

func (c *dlqRedriveCmd) Run(e *runEnv) error {
	switch {
	case c.All && len(c.Seqs) > 0:
		return fmt.Errorf("%w: give sequences or --all, not both", ErrUsage)
	case !c.All && len(c.Seqs) == 0:
		return fmt.Errorf("%w: give the sequences to re-drive, or --all", ErrUsage)
	case c.Reason != "" && !c.All:
		return fmt.Errorf("%w: --reason goes with --all", ErrUsage)
	}
	nc, js, err := e.connect(e.ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	// Every entry that can be re-driven is; one that cannot (no room to
	// re-drive it to, gone, refused) is reported on stderr with its
	// sequence and why, and does not stop the others.
	var entries []*DLQEntry
	var failed []uint64
	fail := func(seq uint64, err error) {
		failed = append(failed, seq)
		safetext.Fprintf(e.stderr, "rtcctl: %s\n", err)
	}
	if c.All {
		all, err := DLQEntries(e, js)
		if err != nil {
			return err
		}
		entries = filterReason(all, c.Reason)
	} else {
		for _, seq := range c.Seqs {
			d, err := GetDLQEntry(e, js, seq)
			if err != nil {
				if e.ctx.Err() != nil {
					return err
				}
				fail(seq, err)
				continue
			}
			entries = append(entries, d)
		}
	}
	total := len(entries) + len(failed)
	if total == 0 {
		fmt.Fprintln(e.stdout, "nothing to re-drive")
		return nil
	}
	var s jetstream.Stream
	if len(entries) > 0 && !c.DryRun {
		if s, err = dlqStream(e, js); err != nil {
			return err
		}
	}
	done := 0
	for _, d := range entries {
		if err := e.ctx.Err(); err != nil {
			return fmt.Errorf("%w (%d of %d re-driven)", err, done, total)
		}
		subj, err := d.RedriveSubject()
		if err != nil {
			fail(d.Seq, err)
			continue
		}
		if c.DryRun {
			done++
			safetext.Fprintf(e.stdout, "would re-drive RTC_DLQ #%d (%s: %s) to %s, room %s\n", d.Seq, d.Reason, d.describe(), subj, orDash(string(d.Room())))
			continue
		}
		rawSeq, err := Redrive(e, js, s, d, subj)
		if err != nil {
			fail(d.Seq, err)
			continue
		}
		done++
		safetext.Fprintf(e.stdout, "re-driven RTC_DLQ #%d (%s: %s) to %s as RTC_RAW #%d\n", d.Seq, d.Reason, d.describe(), subj, rawSeq)
	}
	verb := "re-driven"
	if c.DryRun {
		verb = "can be re-driven (dry run)"
	}
	if len(failed) == 0 {
		if c.DryRun {
			fmt.Fprintf(e.stdout, "%d of %d %s\n", done, total, verb)
		} else {
			fmt.Fprintf(e.stdout, "%d %s\n", done, verb)
		}
		return nil
	}
	fmt.Fprintf(e.stdout, "%d of %d %s\n", done, total, verb)
	seqs := make([]string, len(failed))
	for i, q := range failed {
		seqs[i] = "#" + strconv.FormatUint(q, 10)
	}
	return fmt.Errorf("%d of %d %s; not: RTC_DLQ %s (why: above)", done, total, verb, strings.Join(seqs, ", "))
}

// Redrive publishes an entry's original input to subj and, once RTC_RAW
// acknowledged it, deletes the entry from RTC_DLQ. The publish carries a
// Nats-Msg-Id of the DLQ entry, so that a re-drive repeated after the delete
// failed is stored once (within RTC_RAW's duplicate window); the original
// event id is not used, because RTC_RAW would drop the input as the duplicate
// of its first delivery.
func Redrive(e *runEnv, js jetstream.JetStream, dlq jetstream.Stream, d *DLQEntry, subj string) (uint64, error) {
	m := nats.NewMsg(subj)
	m.Data = d.Body
	m.Header.Set(jetstream.MsgIDHeader, "rtcctl-redrive-"+strconv.FormatUint(d.Seq, 10))
	m.Header.Set(HeaderRedrivenFrom, rawevent.StreamDLQ+" #"+strconv.FormatUint(d.Seq, 10))
	ack, err := js.PublishMsg(e.ctx, m, jetstream.WithExpectStream(rawevent.StreamRaw))
	if err != nil {
		return 0, fmt.Errorf("re-drive RTC_DLQ #%d to %s: %w (the entry stays in RTC_DLQ)", d.Seq, subj, err)
	}
	if err := dlq.DeleteMsg(e.ctx, d.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return ack.Sequence, fmt.Errorf("RTC_DLQ #%d was re-driven as RTC_RAW #%d but could not be deleted from RTC_DLQ: %w "+
			"(re-driving it again within the duplicate window stores it once)", d.Seq, ack.Sequence, err)
	}
	return ack.Sequence, nil
}
