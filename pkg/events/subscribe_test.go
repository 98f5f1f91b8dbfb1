package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/testutil"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

func embedded(t *testing.T) jetstream.JetStream {
	_, js := testutil.JetStream(t, testutil.NATS(t, "", -1))
	return js
}

func TestSubscribeFiltersAndOrders(t *testing.T) {
	js := embedded(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.StreamEvents, Subjects: []string{events.SessionPrefix + ".>"}}); err != nil {
		t.Fatal(err)
	}
	pub := func(e events.SessionEvent) {
		b, _ := eventcodec.EncodeSessionEvent(&e)
		if _, err := js.Publish(ctx, e.Subject(), b, jetstream.WithMsgID(e.ID)); err != nil {
			t.Fatal(err)
		}
	}
	for seq := uint64(1); seq <= 3; seq++ {
		pub(events.SessionEvent{ID: eventcodec.EventID("!a:x", seq), Seq: seq, Kind: events.KindMemberJoined, RoomID: "!a:x", Application: "m.call"})
		pub(events.SessionEvent{ID: eventcodec.EventID("!b:x", seq), Seq: seq, Kind: events.KindMemberJoined, RoomID: "!b:x", Application: "m.call"})
	}
	var got []uint64
	var tr events.SeqTracker
	err := events.Subscribe(ctx, js, events.SubscribeOptions{Room: "!a:x", FromStart: true}, func(d events.Delivery) error {
		if d.Event.RoomID != "!a:x" {
			t.Fatalf("filter leaked %s", d.Event.RoomID)
		}
		if st := tr.Check(&d.Event); st != events.SeqFirst && st != events.SeqNext {
			t.Fatalf("seq %d: status %d", d.Event.Seq, st)
		}
		got = append(got, d.Event.Seq)
		if len(got) == 3 {
			cancel()
		}
		return nil
	})
	if err != context.Canceled || len(got) != 3 || got[0] != 1 || got[2] != 3 {
		t.Fatalf("got %v, %v", got, err)
	}
}

func TestSeqTracker(t *testing.T) {
	var tr events.SeqTracker
	e := func(seq uint64) *events.SessionEvent { return &events.SessionEvent{RoomID: "!r:x", Seq: seq} }
	for i, want := range []events.SeqStatus{events.SeqFirst, events.SeqNext, events.SeqDuplicate, events.SeqGap, events.SeqNext} {
		seq := []uint64{4, 5, 5, 8, 9}[i]
		if got := tr.Check(e(seq)); got != want {
			t.Fatalf("seq %d: %d, want %d", seq, got, want)
		}
	}
}
