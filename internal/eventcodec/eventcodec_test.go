package eventcodec

import (
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

func TestEventIDsDeterministic(t *testing.T) {
	a, b := EventID("!r:x", 1), EventID("!r:x", 1)
	if a != b || a == EventID("!r:x", 2) || a == EventID("!s:x", 1) {
		t.Fatal("event ids must depend on exactly the room and the seq")
	}
	s1 := SessionID("!r:x", "m.call", "", 5)
	if s1 != SessionID("!r:x", "m.call", "", 5) || s1 == SessionID("!r:x", "m.call", "", 6) ||
		s1 == SessionID("!r:x", "m.call", "x", 5) || s1 == SessionID("!s:x", "m.call", "", 5) {
		t.Fatal("session ids must depend on exactly the key and the seq of the start")
	}
	// Length-prefixing keeps part boundaries: these must differ.
	if SessionID("!r:x", "ab", "c", 5) == SessionID("!r:x", "a", "bc", 5) {
		t.Fatal("part boundaries collide")
	}
}

func TestSessionEventRoundTrip(t *testing.T) {
	ev := events.SessionEvent{ID: "x", Kind: events.KindSessionEnded, RoomID: "!r:x", Summary: &events.Summary{Joins: 2}}
	b, _ := EncodeSessionEvent(&ev)
	b2, _ := EncodeSessionEvent(&ev)
	if string(b) != string(b2) {
		t.Fatal("encoding is not deterministic")
	}
	back, err := events.DecodeSessionEvent(b)
	if err != nil || back.Summary.Joins != 2 || back.Kind != events.KindSessionEnded {
		t.Fatalf("%+v %v", back, err)
	}
	if _, err := events.DecodeSessionEvent([]byte{0xc1}); err == nil {
		t.Fatal("garbage must not decode")
	}
}

func TestSetLiveSessionHeader(t *testing.T) {
	var m nats.Msg
	SetLiveSessionHeader(&m)
	if m.Header.Get(events.HeaderSchemaVersion) != strconv.Itoa(events.LiveSessionVersion) {
		t.Errorf("live session header %v", m.Header)
	}
}
