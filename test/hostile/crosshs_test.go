package hostile

import (
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// TestCrossHomeserverForgery: a listed homeserver's token (hs-b.test) pushes
// events that end the call membership of a user of another listed
// homeserver (@alice:hs-a.test) in a room hs-b never showed itself in: her
// own leave `{}` (the sender forged as her), `{}` on her key by one of hs-b's
// users, and a kick of her by one. Each is answered 200 (so hs-b does not
// retry it forever), refused by the ingest (counted with its reason), never
// reaches RTC_RAW, and Alice stays in the call. Once one of hs-b's own users
// is in the room, hs-b's copy of Alice's real leave is stored, as federation
// delivers it (the default keeps relays in shared rooms).
func TestCrossHomeserverForgery(t *testing.T) {
	s := startStack(t)
	room := id.RoomID("!crosshs:" + hsA)
	alice, carol := id.UserID("@alice:"+hsA), id.UserID("@carol:"+hsA)
	bob, mallory := id.UserID("@bob:"+hsB), id.UserID("@mallory:"+hsB)
	refused := func() float64 {
		return metric(t, s.ingestHTTP, "rtc_ingest_events_refused_total",
			"homeserver", hsB, "source", "appservice", "reason", "foreign_user_unknown_room")
	}
	before := refused()

	putOK(t, s.ingestAddr, hsTokens[hsA], "crosshs-1", join(t, "$crosshs-alice", room, alice, "ALICE", time.Now().UnixMilli()))
	s.sessions.waitJoined(t, room, alice)

	now := time.Now().UnixMilli()
	kick := roomMember("$crosshs-kick", room, mallory, now)
	kick["state_key"], kick["content"] = string(alice), obj{"membership": "leave"}
	forged := map[string]string{
		"$crosshs-leave": mustJSON(t, callMember("$crosshs-leave", room, alice, alice, "ALICE", now, obj{})),
		"$crosshs-clear": mustJSON(t, callMember("$crosshs-clear", room, mallory, alice, "ALICE", now, obj{})),
		"$crosshs-kick":  mustJSON(t, kick),
	}
	var txn []string
	for _, ev := range forged {
		txn = append(txn, ev)
	}
	putOK(t, s.ingestAddr, hsTokens[hsB], "crosshs-forged", txn...)

	// hs-a's next join is stored after the forged transaction was answered:
	// had any forged event been stored, the aggregator would have applied it
	// first and Carol would join a call without Alice.
	putOK(t, s.ingestAddr, hsTokens[hsA], "crosshs-2", join(t, "$crosshs-carol", room, carol, "CAROL", time.Now().UnixMilli()))
	if j := s.sessions.waitJoined(t, room, carol); j.Participants != 2 {
		t.Errorf("Carol joined with %d participants, want 2 (Alice still in the call); the room's session events:%s",
			j.Participants, describe(s.sessions.room(t, room)))
	}
	for eid := range forged {
		if _, stored := rawRecord(t, s.js, room, eid); stored {
			t.Errorf("forged %s stored in RTC_RAW", eid)
		}
	}
	if d := refused() - before; d != float64(len(forged)) {
		t.Errorf("rtc_ingest_events_refused_total{homeserver=%q,reason=\"foreign_user_unknown_room\"} +%v, want +%d", hsB, d, len(forged))
	}
	for _, e := range s.sessions.room(t, room) {
		if e.Kind == events.KindMemberLeft {
			t.Errorf("a member left after the forged events: %s", describe([]events.SessionEvent{e}))
		}
	}

	// Bob, of hs-b, joins the room and the call: hs-b is in the room now,
	// and its copy of Alice's real leave is what federation delivers.
	putOK(t, s.ingestAddr, hsTokens[hsB], "crosshs-3",
		mustJSON(t, roomMember("$crosshs-bob-room", room, bob, time.Now().UnixMilli())),
		join(t, "$crosshs-bob", room, bob, "BOB", time.Now().UnixMilli()))
	s.sessions.waitJoined(t, room, bob)
	leave := callMember("$crosshs-alice-leave", room, alice, alice, "ALICE", time.Now().UnixMilli(), obj{})
	putOK(t, s.ingestAddr, hsTokens[hsB], "crosshs-4", mustJSON(t, leave))
	waitFor(t, "Alice's leave relayed by hs-b applied", func() bool {
		for _, e := range s.sessions.room(t, room) {
			if e.Kind == events.KindMemberLeft && e.Member != nil && e.Member.UserID == alice {
				return true
			}
		}
		return false
	})
	if raw, ok := rawRecord(t, s.js, room, "$crosshs-alice-leave"); !ok || raw.Homeserver != hsB {
		t.Errorf("Alice's leave in RTC_RAW: %v from %q, want stored from %s", ok, raw.Homeserver, hsB)
	}
	if d := refused() - before; d != float64(len(forged)) {
		t.Errorf("refusals +%v after hs-b joined the room, want still +%d", d, len(forged))
	}
	if t.Failed() {
		t.Logf("session events of %s:%s", room, describe(s.sessions.room(t, room)))
	}
}
