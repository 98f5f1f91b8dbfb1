package events

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"
)

func TestTokenRoundTrip(t *testing.T) {
	for _, s := range []string{"", "!call:example.org", "m.call", "@u_x:hs.org", "ROOM", "a", "ü.*>  \t", "_"} {
		tok := Token(s)
		if strings.ContainsAny(tok, ".*> \t") || tok == "" {
			t.Fatalf("Token(%q) = %q is not a subject token", s, tok)
		}
		back, err := ParseToken(tok)
		if err != nil || back != s {
			t.Fatalf("ParseToken(Token(%q)) = %q, %v", s, back, err)
		}
	}
	if Token("") != "_" {
		t.Fatal(`the empty string must be "_"`)
	}
	for _, bad := range []string{"", "!!", "a"} {
		if _, err := ParseToken(bad); !errors.Is(err, ErrBadToken) {
			t.Fatalf("ParseToken(%q): want ErrBadToken, got %v", bad, err)
		}
	}
}

func FuzzToken(f *testing.F) {
	f.Add("!call:example.org")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		back, err := ParseToken(Token(s))
		if err != nil || back != s {
			t.Fatalf("round trip of %q: %q, %v", s, back, err)
		}
	})
}

func TestSubjectsAndKeys(t *testing.T) {
	room := id.RoomID("!abc:example.org")
	if got := RawSubject(room); got != "rtc.raw.IWFiYzpleGFtcGxlLm9yZw" {
		t.Fatalf("raw subject %s", got)
	}
	subj := SessionSubject("m.call", "", room, KindMemberJoined)
	if subj != "rtc.session.bS5jYWxs.IWFiYzpleGFtcGxlLm9yZw._.member_joined" {
		t.Fatalf("session subject %s", subj)
	}
	if live := LiveSubject("m.call", "", room, KindMemberJoined); live != "rtc.live.bS5jYWxs.IWFiYzpleGFtcGxlLm9yZw._.member_joined" {
		t.Fatalf("live subject %s", live)
	}
	app, r, call, err := ParseSessionKey(SessionKey("m.call", room, "x.y"))
	if err != nil || app != "m.call" || r != room || call != "x.y" {
		t.Fatalf("session key round trip: %s %s %s %v", app, r, call, err)
	}
	if f := SessionFilter(LivePrefix, "", room, ""); f != "rtc.live.*.IWFiYzpleGFtcGxlLm9yZw.*.*" {
		t.Fatalf("filter %s", f)
	}
}

// TestPartitionMatchesServer: Partition computes what the server's
// {{partition(n,1)}} transform does, so tools can find a room's partition.
func TestPartitionMatchesServer(t *testing.T) {
	js := embedded(t)
	ctx := t.Context()
	const n = 7
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "P", Subjects: []string{"rtc.raw.*"},
		SubjectTransform: &jetstream.SubjectTransformConfig{Source: "rtc.raw.*", Destination: "rtc.part.{{partition(7,1)}}.{{wildcard(1)}}"}})
	if err != nil {
		t.Fatal(err)
	}
	rooms := []id.RoomID{"!a:x", "!call:example.org", "!IWFiYzpleGFtcGxl", "!zzz:matrix.org", "!q"}
	for i, r := range rooms {
		if _, err := js.Publish(ctx, RawSubject(r), []byte("x")); err != nil {
			t.Fatal(err)
		}
		m, err := s.GetMsg(ctx, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		if want := PartitionSubject(Partition(Token(string(r)), n), Token(string(r))); m.Subject != want {
			t.Fatalf("room %s stored under %s, Partition says %s", r, m.Subject, want)
		}
	}
}

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

func TestCodecRoundTripAndVersion(t *testing.T) {
	sk := "k"
	d := int64(3600000)
	raw := RawEvent{Kind: InputEvent, RoomID: "!r:x", EventID: "$e", Type: "m.rtc.member", StateKey: &sk,
		Sender: "@a:x", OriginServerTS: 5, ReceivedAt: 6, Content: []byte(`{"a":1}`), StickyDurationMS: &d}
	b, err := EncodeRaw(&raw)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRaw(b)
	if err != nil || *got.StateKey != "k" || string(got.Content) != `{"a":1}` || *got.StickyDurationMS != d || got.V != RawVersion {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	raw.V = 99
	b, _ = Marshal(&raw)
	if _, err := DecodeRaw(b); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("want ErrUnsupportedVersion, got %v", err)
	}
	ev := SessionEvent{ID: "x", Kind: KindSessionEnded, RoomID: "!r:x", Summary: &Summary{Joins: 2}}
	b, _ = EncodeSessionEvent(&ev)
	b2, _ := EncodeSessionEvent(&ev)
	if string(b) != string(b2) {
		t.Fatal("encoding is not deterministic")
	}
	back, err := DecodeSessionEvent(b)
	if err != nil || back.Summary.Joins != 2 || back.Kind != KindSessionEnded {
		t.Fatalf("%+v %v", back, err)
	}
	if _, err := DecodeSessionEvent([]byte{0xc1}); err == nil {
		t.Fatal("garbage must not decode")
	}
}

func FuzzDecodeRaw(f *testing.F) {
	sk := ""
	b, _ := EncodeRaw(&RawEvent{Kind: InputEvent, RoomID: "!r:x", EventID: "$e", StateKey: &sk, Content: []byte(`{}`)})
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := DecodeRaw(data)
		if err == nil && (ev.RoomID == "" || ev.V != RawVersion) {
			t.Fatalf("accepted %+v", ev)
		}
	})
}

func TestParseClientEvent(t *testing.T) {
	good := `{"type":"org.matrix.msc3401.call.member","state_key":"_@a:x_D","sender":"@a:x","event_id":"$e","room_id":"!r:x","origin_server_ts":10,"content":{ "application" : "m.call" }}`
	tests := []struct {
		name, in, wantErr string
		check             func(t *testing.T, e RawEvent)
	}{
		{name: "good", in: good, check: func(t *testing.T, e RawEvent) {
			if e.ReceivedAt != 10 || string(e.Content) != `{"application":"m.call"}` || *e.StateKey != "_@a:x_D" {
				t.Fatalf("%+v", e)
			}
		}},
		{name: "received_at line field", in: strings.Replace(good, `"content"`, `"received_at":99,"content"`, 1), check: func(t *testing.T, e RawEvent) {
			if e.ReceivedAt != 99 {
				t.Fatalf("received_at %d", e.ReceivedAt)
			}
		}},
		{name: "sticky unstable", in: strings.Replace(good, `"content"`, `"msc4354_sticky":{"duration_ms":5},"content"`, 1), check: func(t *testing.T, e RawEvent) {
			if e.StickyDurationMS == nil || *e.StickyDurationMS != 5 {
				t.Fatal("sticky duration lost")
			}
		}},
		{name: "redaction v11 content", in: `{"type":"m.room.redaction","sender":"@a:x","event_id":"$r","room_id":"!r:x","origin_server_ts":10,"content":{"redacts":"$e"}}`,
			check: func(t *testing.T, e RawEvent) {
				if e.Redacts != "$e" {
					t.Fatalf("redacts %q", e.Redacts)
				}
			}},
		{name: "already redacted", in: strings.Replace(good, `"content"`, `"unsigned":{"redacted_because":{"event_id":"$r","origin_server_ts":50}},"content"`, 1),
			check: func(t *testing.T, e RawEvent) {
				if e.RedactedBy != "$r" || e.RedactedAt != 50 || e.MsgID() != "$e#redacted" {
					t.Fatalf("%+v", e)
				}
			}},
		{name: "not json", in: `{`, wantErr: "malformed event"},
		{name: "no sender", in: strings.Replace(good, `"sender":"@a:x",`, "", 1), wantErr: "sender"},
		{name: "bad room", in: strings.Replace(good, `"!r:x"`, `"r"`, 1), wantErr: "room_id"},
		{name: "content array", in: strings.Replace(good, `{ "application" : "m.call" }`, `[]`, 1), wantErr: "content is not a JSON object"},
		{name: "huge state key", in: strings.Replace(good, `"_@a:x_D"`, `"`+strings.Repeat("k", 300)+`"`, 1), wantErr: "state_key longer"},
		{name: "too big", in: `{"type":"` + strings.Repeat("x", MaxEventBytes) + `"}`, wantErr: "limit"},
		{name: "every problem at once", in: `{"content":{}}`, wantErr: "no type; room_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := ParseClientEvent([]byte(tt.in), "", 0)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrMalformedEvent) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("want error containing %q, got %v", tt.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, e)
		})
	}
}

func FuzzParseClientEvent(f *testing.F) {
	f.Add([]byte(`{"type":"m.rtc.member","sender":"@a:x","event_id":"$e","room_id":"!r:x","origin_server_ts":10,"content":{},"sticky":{"duration_ms":1}}`))
	f.Add([]byte(`{"type":"m.room.redaction","sender":"@a:x","event_id":"$r","room_id":"!r:x","origin_server_ts":10,"content":{"redacts":"$e"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ParseClientEvent(data, "", 0)
		if err != nil {
			return
		}
		if e.RoomID == "" || e.EventID == "" || e.Sender == "" || e.OriginServerTS <= 0 || e.ReceivedAt <= 0 ||
			len(e.Content) == 0 || e.Content[0] != '{' {
			t.Fatalf("accepted an incomplete event: %+v", e)
		}
		if _, err := EncodeRaw(&e); err != nil {
			t.Fatal(err)
		}
	})
}

func TestSortedMapRoundTrip(t *testing.T) {
	type holder struct {
		M SortedMap[id.UserID, int]   `json:"m,omitempty"`
		N SortedMap[string, *Summary] `json:"n"`
	}
	in := holder{M: SortedMap[id.UserID, int]{"@b:x": 2, "@a:x": 1, "@c:x": 3}, N: SortedMap[string, *Summary]{"k": {Joins: 4}}}
	first, err := Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if again, _ := Marshal(in); string(again) != string(first) {
			t.Fatal("encoding is not deterministic")
		}
	}
	var out holder
	if err := Unmarshal(first, &out); err != nil || len(out.M) != 3 || out.M["@b:x"] != 2 || out.N["k"].Joins != 4 {
		t.Fatalf("%+v %v", out, err)
	}
	b, _ := Marshal(holder{})
	var empty holder
	if err := Unmarshal(b, &empty); err != nil || empty.M != nil || empty.N != nil {
		t.Fatalf("nil maps: %+v %v", empty, err)
	}
}

func TestSessionEventMsg(t *testing.T) {
	for _, c := range []struct{ v, want int }{{0, SchemaVersion}, {1, 1}, {SchemaVersion, SchemaVersion}} {
		ev := SessionEvent{V: c.v, ID: "i1", Kind: KindSessionEnded, RoomID: "!r:x", Application: "m.call"}
		m := SessionEventMsg(&ev, []byte{1})
		if m.Subject != ev.Subject() || m.Header.Get("Nats-Msg-Id") != "i1" ||
			m.Header.Get(HeaderSchemaVersion) != strconv.Itoa(c.want) || string(m.Data) != "\x01" {
			t.Errorf("v %d: %s %v % x", c.v, m.Subject, m.Header, m.Data)
		}
	}
	var m nats.Msg
	SetLiveSessionHeader(&m)
	if m.Header.Get(HeaderSchemaVersion) != strconv.Itoa(LiveSessionVersion) {
		t.Errorf("live session header %v", m.Header)
	}
}
