package rtcctl

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// TestToken: the subjects rtcctl token prints are where the server really
// keeps the room: an input published on its raw subject is stored by
// RTC_RAW's partition transform under its stored subject, and its session
// events match its events filter.
func TestToken(t *testing.T) {
	_, js := embedded(t) // 2 partitions
	room := roomA
	code, out, errs := run(t, "token", "--partitions", "2", "--json", string(room))
	var s RoomSubjects
	if code != 0 || json.Unmarshal([]byte(out), &s) != nil {
		t.Fatalf("token --json: exit %d %s%s", code, out, errs)
	}
	if s.Token != events.Token(string(room)) || s.Partitions != 2 || s.RoomKey != s.Token {
		t.Fatalf("token: %+v", s)
	}
	in, err := rawevent.EncodeRaw(rawEvent(string(room), 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(context.Background(), s.Raw, in); err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(context.Background(), rawevent.StreamRaw)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stream.GetLastMsgForSubject(context.Background(), s.Stored); err != nil || !bytes.Equal(m.Data, in) {
		t.Fatalf("RTC_RAW has nothing under %s: %v", s.Stored, err)
	}
	publish(t, js, sessionEvent(room, 1, events.KindSessionStarted, ""))
	evStream, _ := js.Stream(context.Background(), events.StreamEvents)
	if _, err := evStream.GetLastMsgForSubject(context.Background(), s.Events); err != nil {
		t.Fatalf("RTC_EVENTS has nothing under %s: %v", s.Events, err)
	}

	// The text: token, partition, and nats CLI commands; no server needed.
	code, out, errs = run(t, "token", string(room), "-s", "nats://127.0.0.1:1")
	for _, w := range []string{"token      " + s.Token, "of 32 (the default count", "nats sub '" + s.Raw + "' --translate 'rtcctl decode'",
		"nats stream view RTC_EVENTS --subject '" + s.Events + "' --translate 'rtcctl decode'", "nats kv get rtc_rooms '" + s.Token + "'", "nats kv ls rtc_sessions | grep -F '." + s.Token + ".'"} {
		if code != 0 || !strings.Contains(out, w) {
			t.Errorf("token: exit %d, lacks %q:\n%s%s", code, w, out, errs)
		}
	}
	if code, _, errs := run(t, "token", string(room), "--partitions", "0"); code != 0 {
		t.Errorf("--partitions 0 (the default): exit %d %s", code, errs)
	}
	if code, _, errs := run(t, "token", string(room), "--partitions", "2000"); code != 2 {
		t.Errorf("--partitions 2000: exit %d %s", code, errs)
	}
}

// TestDecode: the payloads the pipeline stores, as the nats CLI prints them
// (raw bytes, or base64), decode to JSON, their kind found or forced.
func TestDecode(t *testing.T) {
	_, js := embedded(t)
	ev := sessionEvent(roomA, 2, events.KindMemberJoined, "@alice:hs1.test")
	publish(t, js, ev)
	evMsg, err := mustStream(t, js, events.StreamEvents).GetLastMsgForSubject(context.Background(), ev.Subject())
	if err != nil {
		t.Fatal(err)
	}
	live := &events.LiveSession{SessionID: "s1", RoomID: roomA, Application: "m.call", StartedAt: 1700000000000, Participants: 1, Users: 1,
		Members: []events.Member{{UserID: "@alice:hs1.test", DeviceID: "AD"}}, Seq: 2}
	liveBytes, _ := eventcodec.EncodeLiveSession(live)
	kv, _ := js.KeyValue(context.Background(), events.BucketSessions)
	if _, err := kv.Put(context.Background(), live.Key(), liveBytes); err != nil {
		t.Fatal(err)
	}
	liveEntry, err := kv.Get(context.Background(), live.Key())
	if err != nil {
		t.Fatal(err)
	}
	member, _ := eventcodec.EncodeLiveMember(&live.Members[0])
	raw, _ := rawevent.EncodeRaw(rawEvent(string(roomA), 3))

	tests := []struct {
		name, kind string
		in         []byte
		want       string // kind found
		check      func(v json.RawMessage) bool
		code       int
		errs       string
	}{
		{"session event from RTC_EVENTS", "", evMsg.Data, kindEvent, func(v json.RawMessage) bool {
			var e events.SessionEvent
			return json.Unmarshal(v, &e) == nil && e.ID == ev.ID && e.Member.UserID == "@alice:hs1.test" && e.Kind == events.KindMemberJoined
		}, 0, ""},
		{"live session from rtc_sessions", "", liveEntry.Value(), kindLive, func(v json.RawMessage) bool {
			var s events.LiveSession
			return json.Unmarshal(v, &s) == nil && s.SessionID == "s1" && len(s.Members) == 1
		}, 0, ""},
		{"live member", "", member, kindMember, func(v json.RawMessage) bool {
			var m events.Member
			return json.Unmarshal(v, &m) == nil && m.DeviceID == "AD"
		}, 0, ""},
		{"raw input", "", raw, kindRaw, func(v json.RawMessage) bool {
			var r rawevent.RawEvent
			return json.Unmarshal(v, &r) == nil && r.RoomID == roomA && r.Type == "org.matrix.msc3401.call.member"
		}, 0, ""},
		{"base64 with a newline", "", []byte(base64.StdEncoding.EncodeToString(evMsg.Data) + "\n"), kindEvent, nil, 0, ""},
		{"forced kind", kindEvent, evMsg.Data, kindEvent, nil, 0, ""},
		{"forced wrong kind", kindRaw, evMsg.Data, "", nil, 1, "decode as raw"},
		{"not msgpack", "", []byte(`{"json":true}`), "", nil, 1, "not a msgpack map"},
		{"nothing", "", nil, "", nil, 1, "nothing on standard input"},
		{"an unknown map", "", []byte{0x81, 0xa1, 'x', 0x01}, "", nil, 1, "cannot tell what this is (fields x): give --kind"},
		{"bad --kind", "nope", evMsg.Data, "", nil, 2, "--kind"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"decode"}
			if tc.kind != "" {
				args = append(args, "--kind", tc.kind)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var out, errb bytes.Buffer
			code := mainIO(ctx, args, bytes.NewReader(tc.in), &out, &errb)
			if code != tc.code || !strings.Contains(errb.String(), tc.errs) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)\n%s", code, tc.code, errb.String(), tc.errs, out.String())
			}
			if tc.code != 0 {
				return
			}
			var d struct {
				Kind  string          `json:"kind"`
				Value json.RawMessage `json:"value"`
			}
			if err := json.Unmarshal(out.Bytes(), &d); err != nil || d.Kind != tc.want || tc.check != nil && !tc.check(d.Value) {
				t.Fatalf("kind %q (want %q) %v:\n%s", d.Kind, tc.want, err, out.String())
			}
		})
	}
}

func mustStream(t *testing.T, js jetstream.JetStream, name string) jetstream.Stream {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
