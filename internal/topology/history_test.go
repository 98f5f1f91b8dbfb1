package topology_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// TestHistoryStream: the server copies exactly the session_ended events of
// RTC_EVENTS into RTC_HISTORY, room first, so that a room's (and a room's
// and application's) history is a subject-filtered read; a RTC_HISTORY
// created after the events fills itself from RTC_EVENTS.
func TestHistoryStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := embedded(t)
	if _, err := js.CreateStream(ctx, topology.EventsStream(small())); err != nil {
		t.Fatal(err)
	}
	roomA, roomB := id.RoomID("!a:hs.test"), id.RoomID("!b.c:hs.test")
	pub := func(room id.RoomID, app, call string, seq uint64, kind events.Kind) {
		t.Helper()
		ev := events.SessionEvent{V: events.SchemaVersion, ID: eventcodec.EventID(room, seq), Seq: seq, Kind: kind,
			SessionID: "s-" + call, RoomID: room, Application: app, CallID: call, At: int64(seq)}
		if kind == events.KindSessionEnded {
			ev.Summary = &events.Summary{StartedAt: 1, EndedAt: int64(seq), DurationMS: int64(seq) - 1, Joins: 1}
		}
		b, err := wire.Marshal(&ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, ev.Subject(), b); err != nil {
			t.Fatal(err)
		}
	}
	// before RTC_HISTORY exists
	pub(roomA, "m.call", "", 1, events.KindSessionStarted)
	pub(roomA, "m.call", "", 2, events.KindSessionEnded)
	h, err := topology.Ensure(ctx, js, small(), topology.ModeCreate)
	if err != nil {
		t.Fatal(err)
	}
	if h.History == nil {
		t.Fatal("Ensure returned no RTC_HISTORY handle")
	}
	pub(roomB, "m.call", "x", 1, events.KindSessionEnded)
	pub(roomA, "io.game", "t1", 3, events.KindMemberLeft)
	pub(roomA, "io.game", "t1", 4, events.KindSessionEnded)

	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := h.History.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("RTC_HISTORY holds %d messages, want the 3 session_ended", info.State.Msgs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tests := []struct {
		room id.RoomID
		app  string
		want []uint64 // seq of the session_ended events, in stream order
	}{
		{roomA, "", []uint64{2, 4}},
		{roomA, "io.game", []uint64{4}},
		{roomB, "", []uint64{1}},
		{"", "m.call", []uint64{2, 1}},
		{"!none:hs.test", "", nil},
	}
	for _, tc := range tests {
		filter := topology.HistoryFilter(tc.room, tc.app)
		c, err := js.OrderedConsumer(ctx, topology.StreamHistory, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		info, _ := c.Info(ctx)
		for n := info.NumPending; n > 0; n-- {
			m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
			if err != nil {
				t.Fatal(err)
			}
			ev, err := events.DecodeSessionEvent(m.Data())
			if err != nil {
				t.Fatal(err)
			}
			if ev.Kind != events.KindSessionEnded || ev.Summary == nil {
				t.Errorf("%s: %s without summary", filter, ev.Kind)
			}
			room := events.Token(string(ev.RoomID))
			if want := topology.HistoryPrefix + "." + room + "." + events.Token(ev.Application) + "." + events.Token(ev.CallID); m.Subject() != want {
				t.Errorf("subject %s, want %s", m.Subject(), want)
			}
			got = append(got, ev.Seq)
		}
		if len(got) != len(tc.want) {
			t.Errorf("%s: got %v, want %v", filter, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: got %v, want %v", filter, got, tc.want)
			}
		}
	}
	// verify mode finds it; the default retention applies to a config without one
	c := small()
	c.HistoryMaxAge = 0
	if _, err := topology.Ensure(ctx, js, c, topology.ModeVerify); err != nil {
		t.Fatal(err)
	}
	if topology.HistoryStream(c).MaxAge != topology.DefaultHistoryMaxAge {
		t.Errorf("history max age of an unset config: %s", topology.HistoryStream(c).MaxAge)
	}
}
