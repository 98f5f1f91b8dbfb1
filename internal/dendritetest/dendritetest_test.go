package dendritetest

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

var callMemberType = event.Type{Type: "org.matrix.msc3401.call.member", Class: event.StateEventType}

// TestDendrite starts a real Dendrite, registers two users with the shared
// secret (each logged in with a chosen device), lets one create a call room
// and the other join it and send an Element Call membership, and reads the
// membership back as room state; the homeserver enforces what it should
// (a wrong shared secret and a short password are refused).
func TestDendrite(t *testing.T) {
	Require(t)
	hs := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	alice := hs.NewUser(t, "alice", "ALICEDEV")
	bob := hs.NewUser(t, "bob", "BOBDEV")
	if alice.UserID != hs.UserID("alice") || alice.DeviceID != "ALICEDEV" || bob.DeviceID != "BOBDEV" {
		t.Fatalf("logged in as %s/%s and %s/%s", alice.UserID, alice.DeviceID, bob.UserID, bob.DeviceID)
	}
	who, err := bob.Whoami(ctx)
	if err != nil || who.UserID != hs.UserID("bob") || who.DeviceID != "BOBDEV" {
		t.Fatalf("whoami of bob: %+v, %v", who, err)
	}

	room, err := CreateCallRoom(ctx, alice, bob.UserID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatalf("bob joins %s: %v", room, err)
	}
	key := "_" + string(bob.UserID) + "_BOBDEV_m.call"
	content := map[string]any{"application": "m.call", "call_id": "", "scope": "m.room", "device_id": "BOBDEV",
		"expires": 14400000, "focus_active": map[string]any{"type": "livekit", "focus_selection": "oldest_membership"},
		"foci_preferred": []any{map[string]any{"type": "livekit", "livekit_service_url": "https://sfu.example"}}}
	sent, err := bob.SendStateEvent(ctx, room, callMemberType, key, content)
	if err != nil {
		t.Fatalf("bob's call membership: %v", err)
	}
	var got map[string]any
	if err := alice.StateEvent(ctx, room, callMemberType, key, &got); err != nil {
		t.Fatalf("alice reads bob's membership: %v", err)
	}
	if got["device_id"] != "BOBDEV" || got["application"] != "m.call" {
		t.Errorf("state %s of %s reads %v", key, room, got)
	}
	// The event as the homeserver stored it: sender and event id.
	var ev struct {
		EventID id.EventID `json:"event_id"`
		Sender  id.UserID  `json:"sender"`
	}
	if _, err := alice.MakeRequest(ctx, "GET", alice.BuildClientURL("v3", "rooms", room, "event", sent.EventID), nil, &ev); err != nil {
		t.Fatalf("read event %s: %v", sent.EventID, err)
	}
	if ev.EventID != sent.EventID || ev.Sender != bob.UserID {
		t.Errorf("event %s: %+v", sent.EventID, ev)
	}

	// What the homeserver refuses.
	wrong := &Server{Addr: hs.Addr, Name: hs.Name, Secret: "not-the-secret"}
	if _, _, err := wrong.Register(ctx, "mallory", Password("mallory")); err == nil {
		t.Error("registration with a wrong shared secret succeeded")
	}
	if _, _, err := hs.Register(ctx, "carol", "short"); err == nil || !strings.Contains(err.Error(), "M_WEAK_PASSWORD") {
		t.Errorf("registration with a 5-character password: %v, want M_WEAK_PASSWORD", err)
	}
	var raw json.RawMessage
	err = alice.StateEvent(ctx, room, callMemberType, "_@alice:nowhere_X_m.call", &raw)
	if !errors.Is(err, mautrix.MNotFound) {
		t.Errorf("reading state nobody sent: %v, want M_NOT_FOUND", err)
	}
}

// TestRestart: a restarted Dendrite keeps its users and rooms (SQLite in
// the work directory).
func TestRestart(t *testing.T) {
	Require(t)
	hs := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	alice := hs.NewUser(t, "alice", "ALICEDEV")
	room, err := CreateCallRoom(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if err := hs.Restart(); err != nil {
		t.Fatal(err)
	}
	rooms, err := alice.JoinedRooms(ctx)
	if err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	if len(rooms.JoinedRooms) != 1 || rooms.JoinedRooms[0] != room {
		t.Errorf("after the restart alice is in %v, want [%s]", rooms.JoinedRooms, room)
	}
}

// TestFederation: two federating Dendrites on loopback; a user of the
// second joins a room of the first and sends a call membership, which the
// first homeserver's user reads as room state.
func TestFederation(t *testing.T) {
	Require(t)
	hs1 := Start(t, Options{Federation: true})
	hs2 := Start(t, Options{Federation: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	alice := hs1.NewUser(t, "alice", "ALICEDEV")
	bob := hs2.NewUser(t, "bob", "BOBDEV")
	if bob.UserID.Homeserver() != hs2.FedAddr {
		t.Fatalf("bob is %s, want a user of %s", bob.UserID, hs2.FedAddr)
	}
	room, err := CreateCallRoom(ctx, alice, bob.UserID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{hs1.Name}}); err != nil {
		t.Fatalf("bob (%s) joins %s over federation: %v", hs2.Name, room, err)
	}
	key := "_" + string(bob.UserID) + "_BOBDEV_m.call"
	if _, err := bob.SendStateEvent(ctx, room, callMemberType, key, map[string]any{"application": "m.call",
		"call_id": "", "scope": "m.room", "device_id": "BOBDEV", "expires": 14400000}); err != nil {
		t.Fatalf("bob's call membership: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got map[string]any
		err := alice.StateEvent(ctx, room, callMemberType, key, &got)
		if err == nil && got["device_id"] == "BOBDEV" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob's membership did not reach %s within 30s: %v, %v", hs1.Name, got, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
