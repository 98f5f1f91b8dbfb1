package e2etest

import (
	"fmt"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// recorder is a testing.TB whose Fatalf records the message and stops the
// goroutine, as the real one does.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	panic(r)
}

// check runs Check on a recorder and returns its failure ("" if none).
func check(evs []events.SessionEvent, want []Step) (failed string) {
	r := &recorder{}
	defer func() {
		if p := recover(); p != nil && p != any(r) {
			panic(p)
		}
		failed = r.failed
	}()
	Check(r, evs, want)
	return ""
}

var (
	alice = Device{User: "@alice:hs1", Device: "A"}
	bob   = Device{User: "@bob:hs2", Device: "B"}
)

// call is a room's events: alice and bob join, bob and alice leave, and
// alice alone again, in a second session.
func call() []events.SessionEvent {
	ev := func(kind events.Kind, session string, at int64, m *Device, reason events.Reason, p, u int) events.SessionEvent {
		e := events.SessionEvent{Kind: kind, SessionID: session, RoomID: "!r:hs1", Application: "m.call", At: at,
			Reason: reason, Participants: p, Users: u}
		if m != nil {
			e.Member = &events.Member{UserID: m.User, DeviceID: m.Device, Format: events.FormatSession, EventID: id.EventID("$" + string(m.Device))}
		}
		return e
	}
	evs := []events.SessionEvent{
		ev(events.KindSessionStarted, "s1", 100, nil, "", 0, 0),
		ev(events.KindMemberJoined, "s1", 100, &alice, "", 1, 1),
		ev(events.KindMemberJoined, "s1", 200, &bob, "", 2, 2),
		ev(events.KindMemberLeft, "s1", 300, &bob, events.ReasonLeave, 1, 1),
		ev(events.KindMemberLeft, "s1", 400, &alice, events.ReasonLeave, 0, 0),
		ev(events.KindSessionEnded, "s1", 400, nil, events.ReasonLeave, 0, 0),
		ev(events.KindSessionStarted, "s2", 500, nil, "", 0, 0),
		ev(events.KindMemberJoined, "s2", 500, &alice, "", 1, 1),
	}
	evs[5].Summary = &events.Summary{StartedAt: 100, EndedAt: 400, DurationMS: 300, PeakParticipants: 2, DistinctUsers: 2, Joins: 2}
	for i := range evs {
		evs[i].Seq = uint64(i + 1)
		evs[i].ID = fmt.Sprintf("!r:hs1/%d", i+1)
	}
	return evs
}

func callSteps() []Step {
	return []Step{Started(), Joined(alice, 1, 1), Joined(bob, 2, 2).Event("$B"), Left(bob, events.ReasonLeave, 1, 1),
		Left(alice, events.ReasonLeave, 0, 0), Ended(events.ReasonLeave), Started(), Joined(alice, 1, 1)}
}

func TestCheck(t *testing.T) {
	type room = []events.SessionEvent
	for _, tc := range []struct {
		name string
		// from and to cut both lists (to 0: to the end), wantTo only want.
		from, to, wantTo int
		change           func(evs room, want []Step)
		fails            string // "" means it passes; else part of the failure
	}{
		{name: "as stated"},
		{name: "prefix", to: 3},
		{name: "one event more", wantTo: 7, fails: "8 session events, want 7"},
		{name: "not from seq 1", from: 1, fails: "gapless from 1"},
		{name: "seq gap", change: func(evs room, _ []Step) { evs[4].Seq = 6 }, fails: "#4 has seq 6"},
		{name: "users", change: func(_ room, want []Step) { want[2] = Joined(bob, 2, 1) }, fails: "#2 is member_joined"},
		{name: "reason", change: func(_ room, want []Step) { want[3] = Left(bob, events.ReasonExpired, 1, 1) },
			fails: "#3 is member_left"},
		{name: "device", change: func(_ room, want []Step) { want[2] = Joined(bob.On("OTHER"), 2, 2) },
			fails: "#2 member_joined: member"},
		{name: "format", change: func(_ room, want []Step) { want[1] = want[1].Fmt(events.FormatLegacy) },
			fails: "format legacy"},
		{name: "membership event", change: func(_ room, want []Step) { want[1] = want[1].Event("$other") },
			fails: "membership event $A"},
		{name: "call", change: func(_ room, want []Step) { want[0] = want[0].In("m.call", "c1") },
			fails: `want "m.call" call "c1"`},
		{name: "session id within a session", change: func(evs room, _ []Step) { evs[3].SessionID = "s2" },
			fails: "#3 is of session s2, want s1"},
		{name: "session id reused", change: func(evs room, _ []Step) { evs[6].SessionID, evs[7].SessionID = "s1", "s1" },
			fails: "#6 starts session s1"},
		{name: "another room", change: func(evs room, _ []Step) { evs[7].RoomID = "!other:hs1" },
			fails: "in the room of #0"},
		{name: "member on session_started", change: func(evs room, _ []Step) { evs[6].Member = evs[7].Member },
			fails: "#6 session_started names member"},
		{name: "no summary", change: func(evs room, _ []Step) { evs[5].Summary = nil },
			fails: "#5 session_ended at 400: summary <nil>"},
		{name: "member event without member", change: func(evs room, want []Step) { evs[1].Member, want[1].Member = nil, nil },
			fails: "#1 member_joined names no member"},
		{name: "summary joins", change: func(evs room, _ []Step) { evs[5].Summary.Joins = 3 }, fails: "2 joins"},
		{name: "summary peak", change: func(evs room, _ []Step) { evs[5].Summary.PeakParticipants = 1 }, fails: "peak 2"},
		{name: "summary end", change: func(evs room, _ []Step) { evs[5].Summary.EndedAt, evs[5].Summary.DurationMS = 399, 299 },
			fails: "want ended at 400"},
		{name: "summary on a member event", change: func(evs room, _ []Step) { evs[4].Summary = evs[5].Summary },
			fails: "#4 member_left has a summary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, want := call(), callSteps()
			if tc.to != 0 {
				evs, want = evs[:tc.to], want[:tc.to]
			}
			evs, want = evs[tc.from:], want[tc.from:]
			if tc.wantTo != 0 {
				want = want[:tc.wantTo]
			}
			if tc.change != nil {
				tc.change(evs, want)
			}
			got := check(evs, want)
			if tc.fails == "" && got != "" {
				t.Fatalf("Check failed: %s", got)
			}
			if tc.fails != "" && !strings.Contains(got, tc.fails) {
				t.Fatalf("Check failed with %q, want a failure containing %q", got, tc.fails)
			}
		})
	}
}
