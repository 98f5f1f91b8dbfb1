// Package e2etest is what the end-to-end suites (test/e2e, test/jsclient)
// share: reading what the pipeline stored in JetStream, and one way to
// state and check the session events a room must have.
package e2etest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// Device is a call member: a user's device.
type Device struct {
	User   id.UserID
	Device id.DeviceID
}

// Of is the device c is logged in with.
func Of(c *mautrix.Client) Device { return Device{User: c.UserID, Device: c.DeviceID} }

// On is the same user's device d.
func (d Device) On(device id.DeviceID) Device { d.Device = device; return d }

func (d Device) String() string { return string(d.User) + "/" + string(d.Device) }

// Step is what a test asserts of one session event.
type Step struct {
	Kind   events.Kind
	Member *Device       // nil for session_started / session_ended
	Format events.Format // the member's; "" means events.FormatSession
	// EventID is the member's membership event; "" leaves it unchecked.
	EventID id.EventID
	Reason  events.Reason
	// Participants and Users after the transition.
	Participants, Users int
	// App and Call are the session's application and call id; "" means
	// m.call's room call.
	App, Call string
}

// Started is a session_started.
func Started() Step { return Step{Kind: events.KindSessionStarted} }

// Ended is a session_ended for reason.
func Ended(reason events.Reason) Step { return Step{Kind: events.KindSessionEnded, Reason: reason} }

// Joined is a member_joined of d, after which the session has participants
// devices of users users.
func Joined(d Device, participants, users int) Step {
	return Step{Kind: events.KindMemberJoined, Member: &d, Participants: participants, Users: users}
}

// Updated is a member_updated of d.
func Updated(d Device, participants, users int) Step {
	return Step{Kind: events.KindMemberUpdated, Member: &d, Participants: participants, Users: users}
}

// Left is a member_left of d for reason.
func Left(d Device, reason events.Reason, participants, users int) Step {
	return Step{Kind: events.KindMemberLeft, Member: &d, Reason: reason, Participants: participants, Users: users}
}

// Fmt sets the member format a step expects.
func (s Step) Fmt(f events.Format) Step { s.Format = f; return s }

// Event sets the membership event a step expects.
func (s Step) Event(eid id.EventID) Step { s.EventID = eid; return s }

// In sets the session (application and call id) a step expects.
func (s Step) In(app, call string) Step { s.App, s.Call = app, call; return s }

// sessionKey is a session's application and call id.
type sessionKey struct{ app, call string }

// tally is what a session_ended's summary must add up to, from the
// session's events.
type tally struct {
	peak, joins int
	users       map[id.UserID]bool
}

// Check compares the session events of a room of its own (evs starts with
// the room's first event, seq 1; a prefix of the room's events is fine)
// with want, exactly: kinds, sessions, members, devices, formats, event ids
// (where given), reasons and counts; one room; per-room seq gapless from 1
// across the room's sessions; every event with an id and a session id, one
// session id per session and a new one after each end; a summary on every
// session_ended and on nothing else, agreeing with the session's events
// (peak participants, joins, distinct users, ended at the event's time).
func Check(t testing.TB, evs []events.SessionEvent, want []Step) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\nsession events:%s", append(args, Describe(evs))...)
	}
	if len(evs) != len(want) {
		fail("%d session events, want %d", len(evs), len(want))
	}
	current := map[sessionKey]string{} // the live session id
	tallies := map[sessionKey]*tally{}
	ids := map[string]bool{}
	for i, w := range want {
		e := evs[i]
		if e.Seq != uint64(i+1) {
			fail("#%d has seq %d, want %d (gapless from 1)", i, e.Seq, i+1)
		}
		if e.Kind != w.Kind || e.Reason != w.Reason || e.Participants != w.Participants || e.Users != w.Users {
			fail("#%d is %s reason %q participants %d users %d, want %s reason %q participants %d users %d", i,
				e.Kind, e.Reason, e.Participants, e.Users, w.Kind, w.Reason, w.Participants, w.Users)
		}
		sk := sessionKey{w.App, w.Call}
		if sk.app == "" {
			sk.app = "m.call"
		}
		if e.Application != sk.app || e.CallID != sk.call {
			fail("#%d is of application %q call %q, want %q call %q", i, e.Application, e.CallID, sk.app, sk.call)
		}
		if e.ID == "" || e.SessionID == "" || e.RoomID == "" || e.RoomID != evs[0].RoomID {
			fail("#%d has id %q, session id %q, room %q: want all set, in the room of #0", i, e.ID, e.SessionID, e.RoomID)
		}
		if e.Kind == events.KindSessionStarted {
			if ids[e.SessionID] || current[sk] != "" {
				fail("#%d starts session %s while %q is live or again", i, e.SessionID, current[sk])
			}
			current[sk] = e.SessionID
			ids[e.SessionID] = true
			tallies[sk] = &tally{users: map[id.UserID]bool{}}
		}
		if e.SessionID != current[sk] {
			fail("#%d is of session %s, want %s", i, e.SessionID, current[sk])
		}
		if e.Member == nil && e.Kind != events.KindSessionStarted && e.Kind != events.KindSessionEnded {
			fail("#%d %s names no member", i, e.Kind)
		}
		checkMember(fail, i, e, w)
		tl := tallies[sk]
		tl.peak = max(tl.peak, e.Participants)
		if e.Kind == events.KindMemberJoined {
			tl.joins++
			tl.users[e.Member.UserID] = true
		}
		if e.Kind != events.KindSessionEnded {
			if e.Summary != nil {
				fail("#%d %s has a summary", i, e.Kind)
			}
			continue
		}
		delete(current, sk)
		s := e.Summary
		if s == nil || s.EndedAt != e.At || s.DurationMS != max(s.EndedAt-s.StartedAt, 0) ||
			s.PeakParticipants != tl.peak || s.Joins != tl.joins || s.DistinctUsers != len(tl.users) {
			fail("#%d %s at %d: summary %+v, want ended at %d, duration ended-started, peak %d, %d joins, %d distinct users",
				i, e.Kind, e.At, s, e.At, tl.peak, tl.joins, len(tl.users))
		}
	}
}

// CheckSummary checks a session_ended event's summary against exact
// figures: the session's start and end times (ms), its peak participants,
// distinct users and joins.
func CheckSummary(t testing.TB, e events.SessionEvent, startedAt, endedAt int64, peak, users, joins int) {
	t.Helper()
	want := events.Summary{StartedAt: startedAt, EndedAt: endedAt, DurationMS: endedAt - startedAt,
		PeakParticipants: peak, DistinctUsers: users, Joins: joins}
	if e.Kind != events.KindSessionEnded || e.Summary == nil || *e.Summary != want {
		t.Errorf("#%d %s: summary %+v, want %+v", e.Seq, e.Kind, e.Summary, want)
	}
	if e.At != endedAt {
		t.Errorf("#%d %s at %d, want %d", e.Seq, e.Kind, e.At, endedAt)
	}
}

// checkMember checks the member of event #i against w's.
func checkMember(fail func(string, ...any), i int, e events.SessionEvent, w Step) {
	if w.Member == nil {
		if e.Member != nil {
			fail("#%d %s names member %+v", i, e.Kind, *e.Member)
		}
		return
	}
	format := w.Format
	if format == "" {
		format = events.FormatSession
	}
	if e.Member == nil || e.Member.UserID != w.Member.User || e.Member.DeviceID != w.Member.Device || e.Member.Format != format {
		fail("#%d %s: member %+v, want %s format %s", i, e.Kind, e.Member, *w.Member, format)
	}
	if w.EventID != "" && e.Member.EventID != w.EventID {
		fail("#%d %s: membership event %s, want %s", i, e.Kind, e.Member.EventID, w.EventID)
	}
}

// Describe prints session events for failure messages.
func Describe(evs []events.SessionEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "\n  #%d %s session %s at %d participants %d users %d", e.Seq, e.Kind, e.SessionID, e.At,
			e.Participants, e.Users)
		if e.Application != "m.call" || e.CallID != "" {
			fmt.Fprintf(&b, " (application %q call %q)", e.Application, e.CallID)
		}
		if m := e.Member; m != nil {
			fmt.Fprintf(&b, " %s/%s (event %s, format %s, joined %d, expires %d, intent %q)", m.UserID, m.DeviceID,
				m.EventID, m.Format, m.JoinedAt, m.ExpiresAt, m.CallIntent)
		}
		if e.Reason != "" {
			fmt.Fprintf(&b, " reason %s", e.Reason)
		}
		if len(e.Changed) > 0 {
			fmt.Fprintf(&b, " changed %v", e.Changed)
		}
		if e.Summary != nil {
			fmt.Fprintf(&b, " summary %+v", *e.Summary)
		}
	}
	return b.String()
}

// Stored reads the messages of stream matching filter, from the first to
// the last stored when it is called (an ordered consumer: no server-side
// state left behind).
func Stored(ctx context.Context, js jetstream.JetStream, stream, filter string) ([]jetstream.Msg, error) {
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stream, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stream, err)
	}
	var out []jetstream.Msg
	for pending := info.NumPending; pending > 0; {
		batch, err := c.Fetch(int(min(pending, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			out = append(out, m)
			n++
			md, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", stream, err)
			}
			pending = md.NumPending
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("read %s: %w", stream, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("read %s: %d messages pending but none delivered", stream, pending)
		}
	}
	return out, nil
}

// SessionEvents reads every session event of room stored in RTC_EVENTS so
// far, in stream order.
func SessionEvents(ctx context.Context, js jetstream.JetStream, room id.RoomID) ([]events.SessionEvent, error) {
	msgs, err := Stored(ctx, js, events.StreamEvents, events.SessionFilter(events.SessionPrefix, "", room, ""))
	if err != nil {
		return nil, err
	}
	out := make([]events.SessionEvent, 0, len(msgs))
	for _, m := range msgs {
		ev, err := events.DecodeSessionEvent(m.Data())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.Subject(), err)
		}
		out = append(out, ev)
	}
	return out, nil
}
