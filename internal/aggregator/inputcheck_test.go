package aggregator

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// year2500 is a deadline (ms) far in the future, within what the reducer
// would otherwise accept for a timer.
var year2500 = time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()

func TestInputCheck(t *testing.T) {
	roomA, roomB := id.RoomID("!a:hs"), id.RoomID("!b:hs")
	tokA := events.Token(string(roomA))
	pA := 3
	input := rawevent.PartitionSubject(pA, tokA)
	timerPath := input + "." + rawevent.TimerPathToken
	for _, tc := range []struct {
		name    string
		subject string
		raw     rawevent.RawEvent
		reason  string
	}{
		{"an event of the subject's room", input, rawevent.RawEvent{Kind: rawevent.InputEvent, RoomID: roomA}, ""},
		{"a timer on the timer path", timerPath, rawevent.RawEvent{Kind: rawevent.InputTimer, RoomID: roomA}, ""},
		{"another room's event", input, rawevent.RawEvent{Kind: rawevent.InputEvent, RoomID: roomB}, reasonRoomMismatch},
		{"another room's timer on the timer path", timerPath, rawevent.RawEvent{Kind: rawevent.InputTimer, RoomID: roomB}, reasonRoomMismatch},
		{"a timer published as an input", input, rawevent.RawEvent{Kind: rawevent.InputTimer, RoomID: roomA}, reasonTimerPath},
		{"an event on the timer path", timerPath, rawevent.RawEvent{Kind: rawevent.InputEvent, RoomID: roomA}, reasonSubject},
		{"another partition's subject", rawevent.PartitionSubject(pA+1, tokA), rawevent.RawEvent{Kind: rawevent.InputEvent, RoomID: roomA}, reasonSubject},
		{"not a partition subject", rawevent.RawSubject(roomA), rawevent.RawEvent{Kind: rawevent.InputEvent, RoomID: roomA}, reasonSubject},
		{"another fifth token", input + ".x", rawevent.RawEvent{Kind: rawevent.InputEvent, RoomID: roomA}, reasonSubject},
		{"a partition that is not a number", rawevent.PartPrefix + ".x." + tokA, rawevent.RawEvent{Kind: rawevent.InputEvent, RoomID: roomA}, reasonSubject},
		{"an empty room token", rawevent.PartPrefix + ".3.", rawevent.RawEvent{Kind: rawevent.InputEvent, RoomID: ""}, reasonSubject},
		{"the empty room's token", rawevent.PartitionSubject(pA, events.Token("")), rawevent.RawEvent{Kind: rawevent.InputEvent, RoomID: ""}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reason, err := inputCheck(pA, tc.subject, &tc.raw)
			if reason != tc.reason || (err != nil) != (tc.reason != "") {
				t.Fatalf("inputCheck(%q, %s %q) = %q, %v; want %q", tc.subject, tc.raw.Kind, tc.raw.RoomID, reason, err, tc.reason)
			}
			if tc.reason == reasonRoomMismatch && !strings.Contains(err.Error(), string(roomA)) {
				t.Errorf("the error does not name the subject's room: %v", err)
			}
		})
	}
}

func TestCapTimer(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		deadline                 int64
		armed, next, clock, want int64
	}{
		{"the armed deadline fires", 5_000, 5_000, 9_000, 1_000, 5_000},
		{"an early, stale timer", 3_000, 5_000, 9_000, 4_000, 3_000},
		{"a fired schedule the room replaced by an earlier one", 8_000, 5_000, 5_000, 4_000, 5_000},
		{"a refresh in the batch moved the soonest deadline past the armed one", 8_000, 5_000, 9_000, 4_000, 8_000},
		{"year 2500", year2500, 5_000, 9_000, 4_000, 9_000},
		{"year 2500, nothing armed", year2500, 0, 0, 4_000, 4_000},
		{"nothing armed, a deadline in the room's past", 3_000, 0, 0, 4_000, 3_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := rawevent.RawEvent{Kind: rawevent.InputTimer, Deadline: tc.deadline, ReceivedAt: tc.deadline}
			capTimer(&raw, tc.armed, tc.next, tc.clock)
			if raw.Deadline != tc.want || raw.ReceivedAt != tc.want {
				t.Fatalf("capped to deadline %d, received_at %d; want %d", raw.Deadline, raw.ReceivedAt, tc.want)
			}
		})
	}
}

func TestTimerLost(t *testing.T) {
	for _, tc := range []struct {
		armed, clock int64
		lost         bool
	}{
		{0, 1_000_000, false},
		{1_000_000, 1_000_000, false},
		{1_000_000, 1_000_000 + lostTimerSlack, false},
		{1_000_000, 1_000_001 + lostTimerSlack, true},
		{2_000_000, 1_000_000, false},
	} {
		if got := timerLost(tc.armed, tc.clock); got != tc.lost {
			t.Errorf("timerLost(%d, %d) = %v, want %v", tc.armed, tc.clock, got, tc.lost)
		}
	}
}

// TestInputsAreWhatTheirSubjectSays: with a publisher's access to rtc.raw.>
// (the ingest's, an operator's re-drive), an input for room B published on
// room A's subject, and a timer input dated 2500 published on room A's
// subject, go to RTC_DLQ with their reasons and change neither room: B's
// real join (the same event id) is applied, A's clock stays where its
// inputs put it. A timer dated 2500 on the timer path itself (as if a
// schedule had fired it) moves A's clock only to A's own deadline: Alice
// expires then, as by her own timer, and Carol's later join is applied.
func TestInputsAreWhatTheirSubjectSays(t *testing.T) {
	e := newEnv(t)
	w := e.startWorker("w1", hooks{})
	e.waitOwned(w)
	roomA, roomB := id.RoomID("!subjA:"+testHS), id.RoomID("!subjB:"+testHS)
	alice, bob, carol, dave := id.UserID("@alice:"+testHS), id.UserID("@bob:"+testHS), id.UserID("@carol:"+testHS), id.UserID("@dave:"+testHS)
	now := time.Now().UnixMilli()
	aliceJoin := joinEv(roomA, alice, "A", now, 3_600_000, "$alice")
	bobJoin := joinEv(roomB, bob, "B", now+1, 3_600_000, "$bob")
	e.publish([]rawevent.RawEvent{aliceJoin})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	forge := func(subject string, ev rawevent.RawEvent, msgID string) {
		t.Helper()
		data, err := rawevent.EncodeRaw(&ev)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(subject)
		m.Data = data
		if msgID != "" {
			m.Header.Set(jetstream.MsgIDHeader, msgID)
		}
		if _, err := e.js.PublishMsg(ctx, m); err != nil {
			t.Fatalf("publish on %s: %v", subject, err)
		}
	}
	forge(rawevent.RawSubject(roomA), bobJoin, "forged-bob")
	forge(rawevent.RawSubject(roomA), rawevent.RawEvent{V: events.SchemaVersion, Kind: rawevent.InputTimer, Source: rawevent.SourceTimer,
		RoomID: roomA, Deadline: year2500, ReceivedAt: year2500}, "forged-timer")
	// On the timer path: only the server's scheduler writes rtc.fired.>
	// in production; this test's connection has no permissions.
	forge(rawevent.FiredPrefix+"."+events.Token(string(roomA)), rawevent.RawEvent{V: events.SchemaVersion, Kind: rawevent.InputTimer,
		Source: rawevent.SourceTimer, RoomID: roomA, Deadline: year2500, ReceivedAt: year2500}, "")
	// Sourced asynchronously: Carol's join comes after it.
	tokA := events.Token(string(roomA))
	timerPath := rawevent.PartitionSubject(rawevent.Partition(tokA, e.topo.Partitions), tokA) + "." + rawevent.TimerPathToken
	for {
		if _, err := e.h.Raw.GetLastMsgForSubject(ctx, timerPath); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("the fired timer was not sourced into RTC_RAW: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	carolJoin := joinEv(roomA, carol, "C", now+2, 3_600_000, "$carol")
	daveJoin := joinEv(roomB, dave, "D", now+3, 3_600_000, "$dave")
	e.publish([]rawevent.RawEvent{bobJoin, carolJoin, daveJoin})

	aliceTimer := rawevent.RawEvent{V: events.SchemaVersion, Kind: rawevent.InputTimer, Source: rawevent.SourceTimer, RoomID: roomA,
		Deadline: now + 3_600_000, ReceivedAt: now + 3_600_000} // her own deadline
	want := offline([]rawevent.RawEvent{aliceJoin, aliceTimer, bobJoin, carolJoin, daveJoin})
	e.waitIdle(countEvents(want), 30*time.Second)
	assertMatches(t, e.sessionEvents(), want)

	reasons := map[string]int{}
	for _, d := range e.readStream(rawevent.StreamDLQ, rawevent.DLQPrefix+".") {
		reasons[d.hdr.Get(HeaderDLQReason)]++
		t.Logf("dead letter: %s: %s", d.hdr.Get(HeaderDLQReason), d.hdr.Get(HeaderDLQError))
	}
	if fmt.Sprint(reasons) != fmt.Sprint(map[string]int{reasonRoomMismatch: 1, reasonTimerPath: 1}) {
		t.Errorf("dead letters by reason %v, want one %s and one %s", reasons, reasonRoomMismatch, reasonTimerPath)
	}
	for _, r := range []string{reasonRoomMismatch, reasonTimerPath} {
		if v := testutil.ToFloat64(w.w.m.DLQ.WithLabelValues(r)); v != 1 {
			t.Errorf("dlq_total{reason=%s} = %v", r, v)
		}
	}
}
