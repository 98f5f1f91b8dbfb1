package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// The reference encoding of the public messages: a reflective msgpack
// encoder with Marshal's settings but no field left out, of mirror types
// without the hand-written encoders whose nested JSON is the generic value
// it decodes to (integers that fit 64 bits as int64 or uint64, other
// numbers as float64).
type (
	refMember struct {
		UserID        id.UserID     `json:"user_id"`
		DeviceID      id.DeviceID   `json:"device_id"`
		MembershipID  string        `json:"membership_id"`
		JoinedAt      int64         `json:"joined_at"`
		ExpiresAt     int64         `json:"expires_at"`
		FocusActive   any           `json:"focus_active"`
		FociPreferred any           `json:"foci_preferred"`
		CallIntent    string        `json:"call_intent"`
		Format        events.Format `json:"format"`
		EventID       id.EventID    `json:"event_id"`
	}
	refSessionEvent struct {
		V            int           `json:"v"`
		ID           string        `json:"id"`
		Seq          uint64        `json:"seq"`
		Kind         events.Kind   `json:"kind"`
		SessionID    string        `json:"session_id"`
		RoomID       id.RoomID     `json:"room_id"`
		Application  string        `json:"application"`
		CallID       string        `json:"call_id"`
		At           int64         `json:"at"`
		Member       *refMember    `json:"member"`
		Changed      []string      `json:"changed"`
		Reason       events.Reason `json:"reason"`
		Participants int           `json:"participants"`
		Users        int           `json:"users"`
		Summary      *plainSummary `json:"summary"`
	}
	plainSummary   events.Summary
	refLiveSession struct {
		V             int         `json:"v"`
		SessionID     string      `json:"session_id"`
		RoomID        id.RoomID   `json:"room_id"`
		Application   string      `json:"application"`
		CallID        string      `json:"call_id"`
		StartedAt     int64       `json:"started_at"`
		Members       []refMember `json:"members"`
		Participants  int         `json:"participants"`
		Users         int         `json:"users"`
		Seq           uint64      `json:"seq"`
		UpdatedAt     int64       `json:"updated_at"`
		MembersInKeys bool        `json:"members_in_keys"`
	}
	refLiveMember struct {
		V      int       `json:"v"`
		Member refMember `json:"member"`
	}
)

// genericJSON is the nested JSON as the reference writes it: the msgpack
// value wire.AppendJSON makes of it (whose tests compare it with the
// reflective encoding of the JSON's generic value), or nil.
func genericJSON(t *testing.T, raw json.RawMessage) any {
	t.Helper()
	if len(raw) == 0 {
		return nil
	}
	b, err := wire.AppendJSON(nil, raw)
	if err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return msgpack.RawMessage(b)
}

func toRefMember(t *testing.T, m *events.Member) *refMember {
	if m == nil {
		return nil
	}
	return &refMember{UserID: m.UserID, DeviceID: m.DeviceID, MembershipID: m.MembershipID, JoinedAt: m.JoinedAt,
		ExpiresAt: m.ExpiresAt, FocusActive: genericJSON(t, m.FocusActive), FociPreferred: genericJSON(t, m.FociPreferred),
		CallIntent: m.CallIntent, Format: m.Format, EventID: m.EventID}
}

func toRef(t *testing.T, v any) any {
	switch v := v.(type) {
	case *events.Member:
		return toRefMember(t, v)
	case *events.Summary:
		return (*plainSummary)(v)
	case *events.SessionEvent:
		return &refSessionEvent{V: v.V, ID: v.ID, Seq: v.Seq, Kind: v.Kind, SessionID: v.SessionID, RoomID: v.RoomID,
			Application: v.Application, CallID: v.CallID, At: v.At, Member: toRefMember(t, v.Member), Changed: v.Changed,
			Reason: v.Reason, Participants: v.Participants, Users: v.Users, Summary: (*plainSummary)(v.Summary)}
	case *events.LiveSession:
		r := &refLiveSession{V: v.V, SessionID: v.SessionID, RoomID: v.RoomID, Application: v.Application,
			CallID: v.CallID, StartedAt: v.StartedAt, Participants: v.Participants, Users: v.Users, Seq: v.Seq,
			UpdatedAt: v.UpdatedAt, MembersInKeys: v.MembersInKeys}
		if v.Members != nil {
			r.Members = []refMember{}
			for i := range v.Members {
				r.Members = append(r.Members, *toRefMember(t, &v.Members[i]))
			}
		}
		return r
	case *events.LiveMember:
		return &refLiveMember{V: v.V, Member: *toRefMember(t, &v.Member)}
	}
	t.Fatalf("no reference type for %T", v)
	return nil
}

// reflectiveEncode is the reference encoding of v (see refMember).
func reflectiveEncode(t *testing.T, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetCustomStructTag("json")
	enc.SetSortMapKeys(true)
	enc.UseCompactInts(true)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
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
	switch g.IntN(5) {
	case 0:
		return nil
	case 1:
		return json.RawMessage{}
	case 2:
		return json.RawMessage(`[{"type":"livekit","livekit_alias":"!r:x","n":[1,-2,3.5,1e300,18446744073709551615]},{"type":"x"}]`)
	case 3:
		return json.RawMessage(`{"z":{"b":null,"a":[true,false,"<&>"]},"focus_selection":"oldest_membership","type":"livekit"}`)
	}
	return json.RawMessage(`{"type":"livekit","livekit_service_url":"` + strings.Repeat("u", g.IntN(300)) + `"}`)
}

func (g gen) member() events.Member {
	return events.Member{UserID: id.UserID(g.str()), DeviceID: id.DeviceID(g.str()), MembershipID: g.str(),
		JoinedAt: g.i64(), ExpiresAt: g.i64(), FocusActive: g.raw(), FociPreferred: g.raw(),
		CallIntent: g.str(), Format: events.Format(g.str()), EventID: id.EventID(g.str())}
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

func (g gen) summary() *events.Summary {
	if g.IntN(3) == 0 {
		return nil
	}
	return &events.Summary{StartedAt: g.i64(), EndedAt: g.i64(), DurationMS: g.i64(), PeakParticipants: int(g.i64()),
		DistinctUsers: int(g.i64()), Joins: int(g.i64())}
}

func TestHandWrittenEncodersMatchReflection(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(3, 5))}
	check := func(name string, fast interface{ AppendMsgpack([]byte) []byte }) {
		t.Helper()
		got, err := wire.Marshal(fast)
		if err != nil {
			t.Fatal(err)
		}
		if want := reflectiveEncode(t, toRef(t, fast)); !bytes.Equal(got, want) {
			t.Fatalf("%s %+v:\n got % x\nwant % x", name, fast, got, want)
		}
		// Nested in a value the reflective encoder walks, the hand-written
		// encoder is used through EncodeMsgpack: same bytes again.
		nested, err := wire.MarshalReflective([]any{fast})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(nested[1:], got) {
			t.Fatalf("%s nested:\n got % x\nwant % x", name, nested[1:], got)
		}
	}
	for range 3000 {
		m := g.member()
		if g.IntN(10) == 0 {
			m = events.Member{}
		}
		check("member", &m)

		if s := g.summary(); s != nil {
			check("summary", s)
		}

		ev := events.SessionEvent{V: int(g.i64()), ID: g.str(), Seq: uint64(g.i64()), Kind: events.Kind(g.str()), SessionID: g.str(),
			RoomID: id.RoomID(g.str()), Application: g.str(), CallID: g.str(), At: g.i64(), Reason: events.Reason(g.str()),
			Participants: int(g.i64()), Users: int(g.i64()), Summary: g.summary(), Changed: g.changed()}
		if g.IntN(2) == 0 {
			mm := g.member()
			ev.Member = &mm
		}
		check("session event", &ev)

		ls := events.LiveSession{V: int(g.i64()), SessionID: g.str(), RoomID: id.RoomID(g.str()), Application: g.str(),
			CallID: g.str(), StartedAt: g.i64(), Participants: int(g.i64()), Users: int(g.i64()), Seq: uint64(g.i64()),
			UpdatedAt: g.i64(), MembersInKeys: g.IntN(2) == 0}
		switch g.IntN(3) {
		case 0:
			ls.Members = []events.Member{}
		case 1:
			for range g.IntN(20) {
				ls.Members = append(ls.Members, g.member())
			}
		}
		check("live session", &ls)

		lm := events.LiveMember{V: int(g.i64()), Member: g.member()}
		if g.IntN(4) == 0 {
			lm.Member = events.Member{}
		}
		check("live member", &lm)
	}
}

// The encoders the services use end to end: what EncodeSessionEvent and
// EncodeLiveSession write decodes back to the same value.
func TestHandWrittenEncodingsDecode(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(9, 9))}
	for range 500 {
		m := g.member()
		ev := events.SessionEvent{ID: g.str(), Seq: uint64(g.Int64N(1 << 40)), Kind: events.KindMemberJoined, RoomID: "!r:x",
			Member: &m, Summary: g.summary(), Changed: g.changed()}
		b, err := eventcodec.EncodeSessionEvent(&ev)
		if err != nil {
			t.Fatal(err)
		}
		back, err := events.DecodeSessionEvent(b)
		if err != nil {
			t.Fatal(err)
		}
		if b2, _ := eventcodec.EncodeSessionEvent(&back); !bytes.Equal(b, b2) {
			t.Fatalf("session event does not round-trip:\n% x\n% x", b, b2)
		}
		for _, f := range [][2]json.RawMessage{{m.FocusActive, back.Member.FocusActive}, {m.FociPreferred, back.Member.FociPreferred}} {
			// Compact JSON comes back byte for byte, except a number that
			// is not written as JSON.stringify or Go write it (1e300).
			exact := !bytes.Contains(f[0], []byte("1e300"))
			if !sameJSON(t, f[0], f[1]) || exact && !bytes.Equal(f[0], f[1]) {
				t.Fatalf("nested JSON %s came back as %s", f[0], f[1])
			}
		}
	}
}

func TestLiveSessionParticipants(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(4, 4))}
	for range 500 {
		ls := events.LiveSession{SessionID: g.str(), RoomID: "!r:x", Participants: int(g.Int64N(1 << 20)), Users: 3,
			MembersInKeys: g.IntN(2) == 0}
		for range g.IntN(5) {
			ls.Members = append(ls.Members, g.member())
		}
		b, err := eventcodec.EncodeLiveSession(&ls)
		if err != nil {
			t.Fatal(err)
		}
		n, err := eventcodec.LiveSessionParticipants(b)
		if err != nil || n != ls.Participants {
			t.Fatalf("participants of %+v: %d, %v; want %d", ls, n, err, ls.Participants)
		}
	}
	bad := events.LiveSession{V: 99, Participants: 2}
	b, _ := wire.Marshal(&bad)
	if _, err := eventcodec.LiveSessionParticipants(b); !errors.Is(err, events.ErrUnsupportedVersion) {
		t.Fatalf("version 99: %v, want ErrUnsupportedVersion", err)
	}
	if _, err := eventcodec.LiveSessionParticipants([]byte{0x81, 0xa1}); err == nil {
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
		Format        events.Format   `json:"format"`
		EventID       id.EventID      `json:"event_id"`
	}
	sessionEventV1 struct {
		V            int             `json:"v"`
		ID           string          `json:"id"`
		Seq          uint64          `json:"seq"`
		Kind         events.Kind     `json:"kind"`
		SessionID    string          `json:"session_id"`
		RoomID       id.RoomID       `json:"room_id"`
		Application  string          `json:"application"`
		CallID       string          `json:"call_id"`
		At           int64           `json:"at"`
		Member       *memberV1       `json:"member,omitempty"`
		Reason       events.Reason   `json:"reason,omitempty"`
		Participants int             `json:"participants"`
		Users        int             `json:"users"`
		Summary      *events.Summary `json:"summary,omitempty"`
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
		FocusActive: json.RawMessage(`{"type":"livekit"}`), Format: events.FormatSession, EventID: "$e"}
	want := events.Member{UserID: "@a:x", DeviceID: "D", MembershipID: "@a:x/D/5", JoinedAt: 5, ExpiresAt: 9,
		FocusActive: json.RawMessage(`{"type":"livekit"}`), Format: events.FormatSession, EventID: "$e"}
	same := func(a, b events.Member) bool {
		ab, _ := wire.Marshal(&a)
		bb, _ := wire.Marshal(&b)
		return bytes.Equal(ab, bb)
	}

	for _, v := range []int{1, 2, events.SchemaVersion, 99} {
		b, _ := wire.MarshalReflective(&sessionEventV1{V: v, ID: "i", Seq: 3, Kind: events.KindMemberUpdated, SessionID: "s",
			RoomID: "!r:x", Application: "m.call", At: 7, Member: &m1, Participants: 1, Users: 1})
		ev, err := events.DecodeSessionEvent(b)
		if v == 99 {
			if !errors.Is(err, events.ErrUnsupportedVersion) {
				t.Fatalf("session event version 99: %v, want ErrUnsupportedVersion", err)
			}
			continue
		}
		if err != nil || ev.Seq != 3 || ev.Member == nil || !same(*ev.Member, want) || ev.Changed != nil {
			t.Fatalf("session event version %d: %+v, %v", v, ev, err)
		}
	}
	for _, v := range []int{1, 2, events.LiveSessionVersion, events.LiveSessionVersion + 1} {
		b, _ := wire.MarshalReflective(&liveSessionV2{V: v, SessionID: "s", RoomID: "!r:x", Application: "m.call",
			Members: []memberV1{m1}, Participants: 1, Users: 1, Seq: 4})
		ls, err := events.DecodeLiveSession(b)
		n, perr := eventcodec.LiveSessionParticipants(b)
		if v > events.LiveSessionVersion {
			if !errors.Is(err, events.ErrUnsupportedVersion) || !errors.Is(perr, events.ErrUnsupportedVersion) {
				t.Fatalf("live session version %d: %v / %v, want ErrUnsupportedVersion", v, err, perr)
			}
			continue
		}
		if err != nil || perr != nil || n != 1 || len(ls.Members) != 1 || !same(ls.Members[0], want) {
			t.Fatalf("live session version %d: %+v, %v; participants %d, %v", v, ls, err, n, perr)
		}
	}
	for _, v := range []int{1, 2, events.LiveSessionVersion, events.LiveSessionVersion + 1} {
		b, _ := wire.MarshalReflective(&liveMemberV2{V: v, Member: m1})
		m, err := events.DecodeLiveMember(b)
		if v == 1 || v > events.LiveSessionVersion { // version 1 had no member keys
			if !errors.Is(err, events.ErrUnsupportedVersion) {
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
	b, _ := eventcodec.EncodeSessionEvent(&events.SessionEvent{Kind: events.KindMemberUpdated, RoomID: "!r:x", Member: &nm,
		Changed: []string{events.ChangeCallIntent, events.ChangeEventID}})
	ev, err := events.DecodeSessionEvent(b)
	if err != nil || ev.V != events.SchemaVersion || ev.Member.CallIntent != "audio" ||
		strings.Join(ev.Changed, ",") != "call_intent,event_id" {
		t.Fatalf("version %d: %+v, %v", events.SchemaVersion, ev, err)
	}
	lb, _ := eventcodec.EncodeLiveMember(&nm)
	if m, err := events.DecodeLiveMember(lb); err != nil || m.CallIntent != "audio" {
		t.Fatalf("live member: %+v, %v", m, err)
	}
}

// sameJSON reports whether a and b are the same JSON value (an empty text
// is no value).
func sameJSON(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}

// Every field is in the encoding of a session event of version 3, an empty
// one with its zero value, and a member's nested JSON is a msgpack map (or
// array), not bytes.
func TestEveryFieldIsEncoded(t *testing.T) {
	b, err := eventcodec.EncodeSessionEvent(&events.SessionEvent{Kind: events.KindMemberJoined, RoomID: "!r:x",
		Member: &events.Member{FocusActive: json.RawMessage(`{"type":"livekit"}`), FociPreferred: json.RawMessage(`[{"type":"livekit"}]`)}})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := msgpack.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := []string{"v", "id", "seq", "kind", "session_id", "room_id", "application", "call_id", "at", "member",
		"changed", "reason", "participants", "users", "summary"}
	if len(got) != len(want) {
		t.Errorf("%d fields, want %d: %v", len(got), len(want), got)
	}
	for _, k := range want {
		if _, ok := got[k]; !ok {
			t.Errorf("no %q in %v", k, got)
		}
	}
	if got["call_id"] != "" || got["participants"] != int8(0) || got["summary"] != nil || got["changed"] != nil {
		t.Errorf("zero values: call_id %#v participants %#v summary %#v changed %#v", got["call_id"], got["participants"], got["summary"], got["changed"])
	}
	m := got["member"].(map[string]any)
	if fa, ok := m["focus_active"].(map[string]any); !ok || fa["type"] != "livekit" {
		t.Errorf("focus_active %#v, want a map", m["focus_active"])
	}
	if fp, ok := m["foci_preferred"].([]any); !ok || len(fp) != 1 {
		t.Errorf("foci_preferred %#v, want an array", m["foci_preferred"])
	}
	if m["call_intent"] != "" || m["joined_at"] != int8(0) {
		t.Errorf("member zero values: %#v", m)
	}
}
