package events

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/testutil"
)

func embedded(t *testing.T) jetstream.JetStream {
	_, js := testutil.JetStream(t, testutil.NATS(t, "", -1))
	return js
}

func TestSubscribeFiltersAndOrders(t *testing.T) {
	js := embedded(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: StreamEvents, Subjects: []string{SessionPrefix + ".>"}}); err != nil {
		t.Fatal(err)
	}
	pub := func(e SessionEvent) {
		b, _ := EncodeSessionEvent(&e)
		if _, err := js.Publish(ctx, e.Subject(), b, jetstream.WithMsgID(e.ID)); err != nil {
			t.Fatal(err)
		}
	}
	for seq := uint64(1); seq <= 3; seq++ {
		pub(SessionEvent{ID: EventID("!a:x", seq), Seq: seq, Kind: KindMemberJoined, RoomID: "!a:x", Application: "m.call"})
		pub(SessionEvent{ID: EventID("!b:x", seq), Seq: seq, Kind: KindMemberJoined, RoomID: "!b:x", Application: "m.call"})
	}
	var got []uint64
	var tr SeqTracker
	err := Subscribe(ctx, js, SubscribeOptions{Room: "!a:x", FromStart: true}, func(d Delivery) error {
		if d.Event.RoomID != "!a:x" {
			t.Fatalf("filter leaked %s", d.Event.RoomID)
		}
		if st := tr.Check(&d.Event); st != SeqFirst && st != SeqNext {
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
	var tr SeqTracker
	e := func(seq uint64) *SessionEvent { return &SessionEvent{RoomID: "!r:x", Seq: seq} }
	for i, want := range []SeqStatus{SeqFirst, SeqNext, SeqDuplicate, SeqGap, SeqNext} {
		seq := []uint64{4, 5, 5, 8, 9}[i]
		if got := tr.Check(e(seq)); got != want {
			t.Fatalf("seq %d: %d, want %d", seq, got, want)
		}
	}
}
