package rtc

import (
	"slices"
	"strings"
	"testing"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// The expected outcomes of the example events, one test per example set.

func TestE1JoinSessionForm(t *testing.T) {
	st, evs, _ := run(t, example(t, "E1")...)
	wantKinds(t, evs, "session_started", "member_joined")
	ls, ok := st.LiveSession("m.call", "")
	if !ok || ls.Participants != 1 {
		t.Fatalf("live session %+v", ls)
	}
	m := ls.Members[0]
	if m.UserID != "@alice:example.org" || m.DeviceID != "ALICEDEV" || m.JoinedAt != 1767225601234 ||
		m.ExpiresAt != 1767240001234 || m.Format != events.FormatSession {
		t.Fatalf("member %+v", m)
	}
	if ls.StartedAt != 1767225601234 || st.NextDeadline() != 1767240001234 {
		t.Fatalf("started %d next deadline %d", ls.StartedAt, st.NextDeadline())
	}
}

func TestE2UpdateKeepsStartRefreshesExpiry(t *testing.T) {
	st, evs, _ := run(t, append(example(t, "E1"), example(t, "E2")...)...)
	wantKinds(t, evs, "session_started", "member_joined", "member_updated")
	ls, _ := st.LiveSession("m.call", "")
	if ls.Participants != 1 || ls.StartedAt != 1767225601234 || ls.Members[0].JoinedAt != 1767225601234 ||
		ls.Members[0].ExpiresAt != 1767254401234 {
		t.Fatalf("after update: %+v", ls)
	}
	if evs[1].Member.MembershipID != evs[2].Member.MembershipID {
		t.Fatal("an update must keep the membership id")
	}
}

func TestE3LeaveEndsSession(t *testing.T) {
	in := append(append(example(t, "E1"), example(t, "E2")...), example(t, "E3")...)
	st, evs, _ := run(t, in...)
	wantKinds(t, evs, "session_started", "member_joined", "member_updated", "member_left/leave", "session_ended/leave")
	end := evs[len(evs)-1]
	want := events.Summary{StartedAt: 1767225601234, EndedAt: 1767231000000, DurationMS: 5398766,
		PeakParticipants: 1, DistinctUsers: 1, Joins: 1}
	if end.Summary == nil || *end.Summary != want || end.At != 1767231000000 {
		t.Fatalf("summary %+v at %d", end.Summary, end.At)
	}
	if len(st.Sessions) != 0 || st.NextDeadline() != 0 {
		t.Fatal("session still live")
	}
	// Every event of a session carries its id; seq counts up from 1.
	for i, e := range evs {
		if e.SessionID != evs[0].SessionID || e.Seq != uint64(i+1) || e.ID != eventcodec.EventID(room, e.Seq) {
			t.Fatalf("event %d: session %s seq %d id %s", i, e.SessionID, e.Seq, e.ID)
		}
	}
}

func TestE4StaleLegacyArrayNotCounted(t *testing.T) {
	_, evs, _ := run(t, received(example(t, "E4"), NOW)...)
	wantKinds(t, evs)
	// The same array delivered while it was fresh counts, as a legacy
	// membership, and expires on its own deadline (created_ts()+expires).
	st, evs, _ := run(t, append(example(t, "E4"), tick(1704070800000))...)
	wantKinds(t, evs, "session_started", "member_joined", "member_left/expired", "session_ended/expired")
	if evs[1].Member.Format != events.FormatLegacy || evs[2].At != 1704070800000 {
		t.Fatalf("legacy member %+v left at %d", evs[1].Member, evs[2].At)
	}
	if len(st.Sessions) != 0 {
		t.Fatal("still live")
	}
}

func TestE5CrashedMemberExpires(t *testing.T) {
	_, evs, _ := run(t, received(example(t, "E5"), NOW)...)
	wantKinds(t, evs) // expired long before NOW

	st, evs, _ := run(t, append(received(example(t, "E5"), 1767200000000), tick(1767210000000))...)
	wantKinds(t, evs, "session_started", "member_joined")
	if members(st)[0] != "m.call| @carol:other.example/CAROLWEB" {
		t.Fatalf("members %v", members(st))
	}
	// The durable timer fires at the deadline: the member leaves at exactly
	// created + 4 h and the session ends then.
	res := Apply(DefaultConfig(), st, &[]rawevent.RawEvent{tick(1767214400000)}[0])
	wantKinds(t, res.Events, "member_left/expired", "session_ended/expired")
	if res.Events[1].At != 1767214400000 || res.Events[1].Summary.DurationMS != 14400000 {
		t.Fatalf("ended %+v", res.Events[1])
	}
}

func TestE6HostileWriteIgnored(t *testing.T) {
	_, evs, rej := run(t, example(t, "E6")...)
	wantKinds(t, evs)
	if len(rej) != 1 || !strings.Contains(rej[0].Reason, "@alice:example.org") {
		t.Fatalf("rejections %v", rej)
	}
	// Mallory overwrote Alice's key: Alice's membership is gone from the
	// room state, so she leaves, with reason invalid; Mallory never joins.
	in := append(received(example(t, "E1"), 1767225601234), example(t, "E6")...)
	_, evs, _ = run(t, in...)
	wantKinds(t, evs, "session_started", "member_joined", "member_left/invalid", "session_ended/invalid")
}

func TestE7MalformedContent(t *testing.T) {
	_, evs, rej := run(t, example(t, "E7")...)
	wantKinds(t, evs)
	if len(rej) != 1 || !strings.Contains(rej[0].Reason, "device_id must be a string") ||
		!strings.Contains(rej[0].Reason, "focus_active.type") || !strings.Contains(rej[0].Reason, "expires must be a number") {
		t.Fatalf("want one rejection naming every problem, got %v", rej)
	}
}

func TestE8StickyJoinAndLeave(t *testing.T) {
	evs8 := example(t, "E8")
	st, evs, _ := run(t, evs8[0])
	wantKinds(t, evs, "session_started", "member_joined")
	m := evs[1].Member
	if m.UserID != "@erin:example.org" || m.DeviceID != "ERINX" || m.ExpiresAt != 1767234000000 || m.Format != events.FormatSticky {
		t.Fatalf("member %+v", m)
	}
	if evs[0].Application != "m.call" || evs[0].CallID != "" {
		t.Fatalf("m.call#ROOM must be the room call: %s %q", evs[0].Application, evs[0].CallID)
	}
	res := Apply(DefaultConfig(), st, &evs8[1])
	wantKinds(t, res.Events, "member_left/leave", "session_ended/leave")
	if res.Events[0].At != 1767230700000 {
		t.Fatalf("left at %d", res.Events[0].At)
	}
}

func TestE9SlotAndStickyMember(t *testing.T) {
	evs9 := example(t, "E9")
	st, evs, _ := run(t, evs9...)
	wantKinds(t, evs, "session_started", "member_joined")
	if got := members(st); !slices.Equal(got, []string{"m.call| @frank:example.org/"}) {
		t.Fatalf("members %v", got)
	}
	// Closing the slot ends the session.
	closeSlot := ev{typ: "m.rtc.slot", stateKey: "m.call#ROOM", sender: "@admin:example.org", id: "$slotClose",
		ts: 1767231000000, content: `{"status":"closed"}`}.raw()
	res := Apply(DefaultConfig(), st, &closeSlot)
	wantKinds(t, res.Events, "member_left/slot_closed", "session_ended/slot_closed")

	// A member who is not in the room does not count (MSC4143 head).
	_, evs, _ = run(t, evs9[0], roomMember("@frank:example.org", "leave", 1767230000000), evs9[1])
	wantKinds(t, evs)
}

func TestE10RedactedMember(t *testing.T) {
	// E10 is E5 as it looks after a redaction: same event id, content {}.
	_, evs, _ := run(t, example(t, "E10")...)
	wantKinds(t, evs)
	// The redacted copy is received after the redaction (1767201000000): a
	// redaction time later than the receive time plus the skew allowance
	// would not be believed (EffectiveTime).
	st, evs, _ := run(t, append(received(example(t, "E5"), 1767200000000), received(example(t, "E10"), 1767201000500)...)...)
	wantKinds(t, evs, "session_started", "member_joined", "member_left/redacted", "session_ended/redacted")
	if evs[2].At != 1767201000000 {
		t.Fatalf("left at %d, want the redaction's time", evs[2].At)
	}
	if len(st.Sessions) != 0 {
		t.Fatal("still live")
	}
}
