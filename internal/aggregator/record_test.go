package aggregator

import (
	"fmt"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// TestRoomRecordCompressed: a 1,000-member room's record fits the server's
// default 1 MB max_payload with room to spare, round-trips, and records
// written uncompressed (older versions) still decode.
func TestRoomRecordCompressed(t *testing.T) {
	room := id.RoomID("!big:example.org")
	st := rtc.NewRoomState(room)
	for i := 0; i < 1000; i++ {
		u := fmt.Sprintf("@user%d:example.org", i)
		key := "_" + u + "_DEV_m.call"
		ev := events.RawEvent{V: 1, Kind: events.InputEvent, RoomID: room, EventID: id.EventID(fmt.Sprintf("$e%d", i)),
			Type: events.TypeCallMember.Type, StateKey: &key, Sender: id.UserID(u), OriginServerTS: 1767225600000 + int64(i),
			ReceivedAt: 1767225600000 + int64(i),
			Content:    []byte(`{"application":"m.call","call_id":"","scope":"m.room","device_id":"DEV","focus_active":{"type":"livekit","focus_selection":"multi_sfu"},"foci_preferred":[{"type":"livekit","livekit_service_url":"https://rtc.example.org/livekit/jwt","livekit_alias":"!big:example.org"}]}`)}
		if res := rtc.Apply(rtc.DefaultConfig(), st, &ev); len(res.Events) == 0 {
			t.Fatalf("member %d did not join: %v", i, res.Rejections)
		}
	}
	rec := &RoomRecord{LastIn: 7, State: st}
	b, err := EncodeRoomRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := events.Marshal(rec)
	t.Logf("1,000-member room: %d bytes compressed, %d uncompressed", len(b), len(plain))
	if len(b) > 300_000 || len(b)*4 > len(plain) {
		t.Fatalf("record of %d bytes (uncompressed %d): not compressed enough for 1 MB max_payload", len(b), len(plain))
	}
	for _, data := range [][]byte{b, plain} {
		got, err := DecodeRoomRecord(data)
		if err != nil {
			t.Fatal(err)
		}
		if got.LastIn != 7 || len(got.State.LiveSessions()) != 1 || got.State.LiveSessions()[0].Participants != 1000 {
			t.Fatalf("decoded %+v", got.State.LiveSessions())
		}
	}
	if _, err := DecodeRoomRecord(append([]byte("\x00s2"), 0xff, 0xff)); err == nil {
		t.Fatal("a corrupt compressed record must not decode")
	}
}
