package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

// Types without the hand-written encoders: the reflective encoder encodes
// them field by field, as it encoded the originals before wire.go.
type (
	plainMember       Member
	plainSummary      Summary
	plainSessionEvent SessionEvent
	plainLiveSession  LiveSession
	plainLiveMember   LiveMember
)

// reflectiveEncode is the reflective encoding of v.
func reflectiveEncode(t *testing.T, v any) []byte {
	t.Helper()
	b, err := MarshalReflective(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type gen struct{ *rand.Rand }

// str is empty half the time, else of a length around the msgpack size
// classes.
func (g gen) str() string {
	if g.IntN(2) == 0 {
		return ""
	}
	return strings.Repeat("é", g.IntN(20)) + strings.Repeat("x", []int{1, 30, 31, 32, 200, 300}[g.IntN(6)])
}

func (g gen) i64() int64 {
	switch g.IntN(4) {
	case 0:
		return 0
	case 1:
		return -g.Int64N(1 << g.IntN(63))
	default:
		return g.Int64N(1 << g.IntN(63))
	}
}

func (g gen) raw() json.RawMessage {
	switch g.IntN(3) {
	case 0:
		return nil
	case 1:
		return json.RawMessage{}
	}
	return json.RawMessage(`{"type":"livekit","livekit_service_url":"` + strings.Repeat("u", g.IntN(300)) + `"}`)
}

func (g gen) member() Member {
	return Member{UserID: id.UserID(g.str()), DeviceID: id.DeviceID(g.str()), MembershipID: g.str(),
		JoinedAt: g.i64(), ExpiresAt: g.i64(), FocusActive: g.raw(), FociPreferred: g.raw(),
		CallIntent: g.str(), Format: Format(g.str()), EventID: id.EventID(g.str())}
}

// changed is nil, empty or a few names (also long ones).
func (g gen) changed() []string {
	switch g.IntN(3) {
	case 0:
		return nil
	case 1:
		return []string{}
	}
	out := make([]string, 1+g.IntN(20))
	for i := range out {
		out[i] = g.str()
	}
	return out
}

func (g gen) summary() *Summary {
	if g.IntN(3) == 0 {
		return nil
	}
	return &Summary{StartedAt: g.i64(), EndedAt: g.i64(), DurationMS: g.i64(), PeakParticipants: int(g.i64()),
		DistinctUsers: int(g.i64()), Joins: int(g.i64())}
}

func TestHandWrittenEncodersMatchReflection(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(3, 5))}
	check := func(name string, fast msgpackAppender, plain any) {
		t.Helper()
		got, err := Marshal(fast)
		if err != nil {
			t.Fatal(err)
		}
		if want := reflectiveEncode(t, plain); !bytes.Equal(got, want) {
			t.Fatalf("%s %+v:\n got % x\nwant % x", name, fast, got, want)
		}
		// Nested in a value the reflective encoder walks, the hand-written
		// encoder is used through EncodeMsgpack: same bytes again.
		if nested := reflectiveEncode(t, []any{fast}); !bytes.Equal(nested[1:], got) {
			t.Fatalf("%s nested:\n got % x\nwant % x", name, nested[1:], got)
		}
	}
	for range 3000 {
		m := g.member()
		if g.IntN(10) == 0 {
			m = Member{}
		}
		check("member", &m, (*plainMember)(&m))

		if s := g.summary(); s != nil {
			check("summary", s, (*plainSummary)(s))
		}

		ev := SessionEvent{V: int(g.i64()), ID: g.str(), Seq: uint64(g.i64()), Kind: Kind(g.str()), SessionID: g.str(),
			RoomID: id.RoomID(g.str()), Application: g.str(), CallID: g.str(), At: g.i64(), Reason: Reason(g.str()),
			Participants: int(g.i64()), Users: int(g.i64()), Summary: g.summary(), Changed: g.changed()}
		if g.IntN(2) == 0 {
			mm := g.member()
			ev.Member = &mm
		}
		check("session event", &ev, (*plainSessionEvent)(&ev))

		ls := LiveSession{V: int(g.i64()), SessionID: g.str(), RoomID: id.RoomID(g.str()), Application: g.str(),
			CallID: g.str(), StartedAt: g.i64(), Participants: int(g.i64()), Users: int(g.i64()), Seq: uint64(g.i64()),
			UpdatedAt: g.i64(), MembersInKeys: g.IntN(2) == 0}
		switch g.IntN(3) {
		case 0:
			ls.Members = []Member{}
		case 1:
			for range g.IntN(20) {
				ls.Members = append(ls.Members, g.member())
			}
		}
		check("live session", &ls, (*plainLiveSession)(&ls))

		lm := LiveMember{V: int(g.i64()), Member: g.member()}
		if g.IntN(4) == 0 {
			lm.Member = Member{}
		}
		check("live member", &lm, (*plainLiveMember)(&lm))
	}
}

// The encoders the services use end to end: what EncodeSessionEvent and
// EncodeLiveSession write decodes back to the same value.
func TestHandWrittenEncodingsDecode(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(9, 9))}
	for range 500 {
		m := g.member()
		m.FocusActive, m.FociPreferred = nil, nil
		ev := SessionEvent{ID: g.str(), Seq: uint64(g.Int64N(1 << 40)), Kind: KindMemberJoined, RoomID: "!r:x",
			Member: &m, Summary: g.summary(), Changed: g.changed()}
		b, err := EncodeSessionEvent(&ev)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeSessionEvent(b)
		if err != nil {
			t.Fatal(err)
		}
		if b2, _ := EncodeSessionEvent(&back); !bytes.Equal(b, b2) {
			t.Fatalf("session event does not round-trip:\n% x\n% x", b, b2)
		}
	}
}

func TestLiveSessionParticipants(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(4, 4))}
	for range 500 {
		ls := LiveSession{SessionID: g.str(), RoomID: "!r:x", Participants: int(g.Int64N(1 << 20)), Users: 3,
			MembersInKeys: g.IntN(2) == 0}
		for range g.IntN(5) {
			ls.Members = append(ls.Members, g.member())
		}
		b, err := EncodeLiveSession(&ls)
		if err != nil {
			t.Fatal(err)
		}
		n, err := LiveSessionParticipants(b)
		if err != nil || n != ls.Participants {
			t.Fatalf("participants of %+v: %d, %v; want %d", ls, n, err, ls.Participants)
		}
	}
	bad := LiveSession{V: 99, Participants: 2}
	b, _ := Marshal(&bad)
	if _, err := LiveSessionParticipants(b); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("version 99: %v, want ErrUnsupportedVersion", err)
	}
	if _, err := LiveSessionParticipants([]byte{0x81, 0xa1}); err == nil {
		t.Fatal("truncated value: no error")
	}
}

// The values of the previous versions, as they were encoded: what stored
// data (redo records of rooms, rtc_sessions during an upgrade, RTC_EVENTS)
// may still hold.
type (
	memberV1 struct {
		UserID        id.UserID       `json:"user_id"`
		DeviceID      id.DeviceID     `json:"device_id"`
		MembershipID  string          `json:"membership_id"`
		JoinedAt      int64           `json:"joined_at"`
		ExpiresAt     int64           `json:"expires_at"`
		FocusActive   json.RawMessage `json:"focus_active,omitempty"`
		FociPreferred json.RawMessage `json:"foci_preferred,omitempty"`
		Format        Format          `json:"format"`
		EventID       id.EventID      `json:"event_id"`
	}
	sessionEventV1 struct {
		V            int       `json:"v"`
		ID           string    `json:"id"`
		Seq          uint64    `json:"seq"`
		Kind         Kind      `json:"kind"`
		SessionID    string    `json:"session_id"`
		RoomID       id.RoomID `json:"room_id"`
		Application  string    `json:"application"`
		CallID       string    `json:"call_id"`
		At           int64     `json:"at"`
		Member       *memberV1 `json:"member,omitempty"`
		Reason       Reason    `json:"reason,omitempty"`
		Participants int       `json:"participants"`
		Users        int       `json:"users"`
		Summary      *Summary  `json:"summary,omitempty"`
	}
	liveSessionV2 struct {
		V             int        `json:"v"`
		SessionID     string     `json:"session_id"`
		RoomID        id.RoomID  `json:"room_id"`
		Application   string     `json:"application"`
		CallID        string     `json:"call_id"`
		StartedAt     int64      `json:"started_at"`
		Members       []memberV1 `json:"members"`
		Participants  int        `json:"participants"`
		Users         int        `json:"users"`
		Seq           uint64     `json:"seq"`
		UpdatedAt     int64      `json:"updated_at"`
		MembersInKeys bool       `json:"members_in_keys,omitempty"`
	}
	liveMemberV2 struct {
		V      int      `json:"v"`
		Member memberV1 `json:"member"`
	}
)

// Older versions still decode; versions this build does not know do not.
func TestOlderVersionsDecode(t *testing.T) {
	m1 := memberV1{UserID: "@a:x", DeviceID: "D", MembershipID: "@a:x/D/5", JoinedAt: 5, ExpiresAt: 9,
		FocusActive: json.RawMessage(`{"type":"livekit"}`), Format: FormatSession, EventID: "$e"}
	want := Member{UserID: "@a:x", DeviceID: "D", MembershipID: "@a:x/D/5", JoinedAt: 5, ExpiresAt: 9,
		FocusActive: json.RawMessage(`{"type":"livekit"}`), Format: FormatSession, EventID: "$e"}
	same := func(a, b Member) bool { ab, _ := Marshal(&a); bb, _ := Marshal(&b); return bytes.Equal(ab, bb) }

	for _, v := range []int{1, SchemaVersion, 99} {
		b, _ := MarshalReflective(&sessionEventV1{V: v, ID: "i", Seq: 3, Kind: KindMemberUpdated, SessionID: "s",
			RoomID: "!r:x", Application: "m.call", At: 7, Member: &m1, Participants: 1, Users: 1})
		ev, err := DecodeSessionEvent(b)
		if v == 99 {
			if !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("session event version 99: %v, want ErrUnsupportedVersion", err)
			}
			continue
		}
		if err != nil || ev.Seq != 3 || ev.Member == nil || !same(*ev.Member, want) || ev.Changed != nil {
			t.Fatalf("session event version %d: %+v, %v", v, ev, err)
		}
	}
	for _, v := range []int{1, 2, LiveSessionVersion, LiveSessionVersion + 1} {
		b, _ := MarshalReflective(&liveSessionV2{V: v, SessionID: "s", RoomID: "!r:x", Application: "m.call",
			Members: []memberV1{m1}, Participants: 1, Users: 1, Seq: 4})
		ls, err := DecodeLiveSession(b)
		n, perr := LiveSessionParticipants(b)
		if v > LiveSessionVersion {
			if !errors.Is(err, ErrUnsupportedVersion) || !errors.Is(perr, ErrUnsupportedVersion) {
				t.Fatalf("live session version %d: %v / %v, want ErrUnsupportedVersion", v, err, perr)
			}
			continue
		}
		if err != nil || perr != nil || n != 1 || len(ls.Members) != 1 || !same(ls.Members[0], want) {
			t.Fatalf("live session version %d: %+v, %v; participants %d, %v", v, ls, err, n, perr)
		}
	}
	for _, v := range []int{1, 2, LiveSessionVersion, LiveSessionVersion + 1} {
		b, _ := MarshalReflective(&liveMemberV2{V: v, Member: m1})
		m, err := DecodeLiveMember(b)
		if v == 1 || v > LiveSessionVersion { // version 1 had no member keys
			if !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("live member version %d: %v, want ErrUnsupportedVersion", v, err)
			}
			continue
		}
		if err != nil || !same(m, want) {
			t.Fatalf("live member version %d: %+v, %v", v, m, err)
		}
	}
	// What this version writes carries the new fields.
	nm := want
	nm.CallIntent = "audio"
	b, _ := EncodeSessionEvent(&SessionEvent{Kind: KindMemberUpdated, RoomID: "!r:x", Member: &nm,
		Changed: []string{ChangeCallIntent, ChangeEventID}})
	ev, err := DecodeSessionEvent(b)
	if err != nil || ev.V != SchemaVersion || ev.Member.CallIntent != "audio" ||
		strings.Join(ev.Changed, ",") != "call_intent,event_id" {
		t.Fatalf("version %d: %+v, %v", SchemaVersion, ev, err)
	}
	lb, _ := EncodeLiveMember(&nm)
	if m, err := DecodeLiveMember(lb); err != nil || m.CallIntent != "audio" {
		t.Fatalf("live member: %+v, %v", m, err)
	}
}
