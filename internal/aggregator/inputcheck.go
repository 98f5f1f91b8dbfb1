package aggregator

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// DLQ reasons of inputs that are not what their subject says. An input's
// subject is set by the server (RTC_RAW's transform of the publisher's
// rtc.raw.<roomTok>, or its source of RTC_TIMERS' fired timers); its body
// is whatever the publisher wrote. A publisher allowed one room's subject
// must not be able to write another room, and only the timer path may move
// a room's clock by a deadline.
const (
	// reasonRoomMismatch: the body's room_id is not the room of the
	// subject. Grouped under neither room: under the body's, one room's
	// publisher would write another room (and an input of the other room
	// could be dropped as a duplicate); under the subject's, the reducer
	// would apply another room's input.
	reasonRoomMismatch = "room_mismatch"
	// reasonTimerPath: a timer input that did not come from RTC_TIMERS
	// (for instance published on rtc.raw.<roomTok>): it could move the
	// room's clock anywhere, ending every call of the room.
	reasonTimerPath = "timer_not_from_timer_path"
	// reasonSubject: an input on a subject that is not a partition
	// subject of this partition, or an event on the timer path.
	reasonSubject = "bad_subject"
)

// inputReasons are the DLQ reasons of inputCheck, for the metrics.
var inputReasons = []string{reasonRoomMismatch, reasonTimerPath, reasonSubject}

// partitionPath splits a subject of RTC_RAW: rtc.part.<N>.<roomTok> (a
// publisher's input) or rtc.part.<N>.<roomTok>.timer (a fired timer).
func partitionPath(subject string) (part int, roomTok string, timer, ok bool) {
	rest, found := strings.CutPrefix(subject, rawevent.PartPrefix+".")
	if !found {
		return 0, "", false, false
	}
	toks := strings.Split(rest, ".")
	switch {
	case len(toks) == 2:
	case len(toks) == 3 && toks[2] == rawevent.TimerPathToken:
		timer = true
	default:
		return 0, "", false, false
	}
	n, err := strconv.Atoi(toks[0])
	if err != nil || toks[1] == "" {
		return 0, "", false, false
	}
	return n, toks[1], timer, true
}

// inputCheck says whether an input of partition part is what its subject
// says: the subject is a partition subject of part, the body's room is the
// subject's, a timer input came from the timer path, and the timer path
// carries only timers. It returns the DLQ reason and the error to report,
// or "" and nil.
func inputCheck(part int, subject string, raw *rawevent.RawEvent) (string, error) {
	p, roomTok, timer, ok := partitionPath(subject)
	switch {
	case !ok:
		return reasonSubject, fmt.Errorf("subject %q is not a partition subject of RTC_RAW", subject)
	case p != part:
		return reasonSubject, fmt.Errorf("subject %q is not of partition %d", subject, part)
	}
	if tok := events.Token(string(raw.RoomID)); tok != roomTok {
		subjectRoom := roomTok
		if r, err := events.ParseToken(roomTok); err == nil {
			subjectRoom = strconv.Quote(r)
		}
		return reasonRoomMismatch, fmt.Errorf("the input names room %q, its subject %s room %s", raw.RoomID, subject, subjectRoom)
	}
	switch {
	case raw.Kind == rawevent.InputTimer && !timer:
		return reasonTimerPath, fmt.Errorf("a timer input on %s: timers count only from the timer path (%s.<N>.<roomTok>.%s)",
			subject, rawevent.PartPrefix, rawevent.TimerPathToken)
	case timer && raw.Kind != rawevent.InputTimer:
		return reasonSubject, fmt.Errorf("a %q input on the timer path %s", raw.Kind, subject)
	}
	return "", nil
}

// capTimer bounds what a timer input (from the timer path: inputCheck
// passed it) can do to its room's clock: it moves the clock at most to a
// deadline the room itself holds, the later of its armed deadline (armed,
// rm.TimerAt) and its soonest membership deadline (next), and not at all
// when it holds none (clock, the room's clock). The timer path is written
// only by the server's scheduler from schedules the aggregator published,
// so a deadline past those is a race (a schedule that had fired when the
// room armed an earlier one) or a bug, never a reason to jump the clock:
// a far-future deadline would end every call of the room and make it
// ignore every later join. Capped, the input expires what is due by the
// room's own deadline, which is due anyway (the timer fired, so that time
// has come), and the room arms its next one.
//
// next matters besides armed because within a batch a refresh or leave can
// move the soonest deadline past the armed one; with it, the cap does not
// depend on where batches (and so the commits that arm timers) begin.
//
// The cap depends only on the room's state, so a redelivery or a replay
// applies the input the same way.
func capTimer(raw *rawevent.RawEvent, armed, next, clock int64) {
	limit := max(armed, next)
	if limit == 0 {
		limit = clock
	}
	if raw.Deadline > limit {
		raw.Deadline = limit
	}
	if raw.ReceivedAt > limit {
		raw.ReceivedAt = limit
	}
}

// applyBounded applies an input to the room's state; a timer input is
// applied capped (capTimer) while the input keeps its deadline as fired,
// which says whether the armed schedule is the one that fired.
func (r *partRunner) applyBounded(st *rtc.RoomState, armed int64, in *input) (rtc.Result, error) {
	if in.raw.Kind != rawevent.InputTimer {
		return r.apply(st, in)
	}
	fired := in.raw
	defer func() { in.raw = fired }()
	capTimer(&in.raw, armed, st.NextDeadline(), st.Clock)
	return r.apply(st, in)
}

// timerLost reports whether the room's armed deadline lies well in the
// room's past (lostTimerSlack) without its timer having come back: its
// schedule was lost (an RTC_TIMERS that was recreated, such as when an
// earlier version's RTC_RAW, which held the schedules, was migrated). The
// room then arms its next deadline instead of waiting for a timer that
// never fires: without that, a room whose armed deadline passed would never
// arm another (a deadline later than the armed one is not armed).
func timerLost(armed, clock int64) bool {
	return armed != 0 && clock-armed > lostTimerSlack
}

// lostTimerSlack is how far the room's clock (its inputs' receive times)
// may run past its armed deadline before the schedule counts as lost. A
// schedule fires within about a second of its deadline and lands in the
// partition's order among inputs received then, so a room clock a minute
// past it means the timer is not coming; a re-arm that was not needed costs
// one schedule.
const lostTimerSlack = 60_000
