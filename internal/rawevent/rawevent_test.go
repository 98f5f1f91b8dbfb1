package rawevent

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/testutil"
	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

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
		if want := PartitionSubject(Partition(events.Token(string(r)), n), events.Token(string(r))); m.Subject != want {
			t.Fatalf("room %s stored under %s, Partition says %s", r, m.Subject, want)
		}
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
			if e.V != RawVersion {
				t.Fatalf("parsed input of version %d, want RawVersion %d", e.V, RawVersion)
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

func TestRawRoundTripAndVersion(t *testing.T) {
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
	b, _ = wire.Marshal(&raw)
	if _, err := DecodeRaw(b); !errors.Is(err, events.ErrUnsupportedVersion) {
		t.Fatalf("want ErrUnsupportedVersion, got %v", err)
	}
}

func TestSubjects(t *testing.T) {
	room := id.RoomID("!abc:example.org")
	if got := RawSubject(room); got != "rtc.raw.IWFiYzpleGFtcGxlLm9yZw" {
		t.Fatalf("raw subject %s", got)
	}
	if got := TimerSubject(room); got != "rtc.timer.IWFiYzpleGFtcGxlLm9yZw" {
		t.Fatalf("timer subject %s", got)
	}
	if got := PartitionFilter(3); got != "rtc.part.3.>" {
		t.Fatalf("partition filter %s", got)
	}
}

func embedded(t *testing.T) jetstream.JetStream {
	_, js := testutil.JetStream(t, testutil.NATS(t, "", -1))
	return js
}
