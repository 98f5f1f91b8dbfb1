package simulate

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/rtcctl/safetext"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// jsonNames lists the JSON names of a struct's fields, with their options.
func jsonNames(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		out = append(out, t.Field(i).Type.String()+" "+t.Field(i).Tag.Get("json"))
	}
	return out
}

// TestAppendEventFields: appendEvent writes the fields of these structs as
// they are declared; a change to them must be made there too.
func TestAppendEventFields(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want []string
	}{
		{events.SessionEvent{}, []string{"int v", "string id", "uint64 seq", "events.Kind kind", "string session_id",
			"id.RoomID room_id", "string application", "string call_id", "int64 at", "*events.Member member,omitempty",
			"[]string changed,omitempty", "events.Reason reason,omitempty", "int participants", "int users",
			"*events.Summary summary,omitempty"}},
		{events.Member{}, []string{"id.UserID user_id", "id.DeviceID device_id", "string membership_id", "int64 joined_at",
			"int64 expires_at", "json.RawMessage focus_active,omitempty", "json.RawMessage foci_preferred,omitempty",
			"string call_intent,omitempty", "events.Format format", "id.EventID event_id"}},
		{events.Summary{}, []string{"int64 started_at", "int64 ended_at", "int64 duration_ms", "int peak_participants",
			"int distinct_users", "int joins"}},
	} {
		if got := jsonNames(reflect.TypeOf(tc.v)); !slices.Equal(got, tc.want) {
			t.Errorf("%T has fields\n%q\nappendEvent writes\n%q", tc.v, got, tc.want)
		}
	}
}

// encodeJSON is what simulate wrote before appendEvent.
func encodeJSON(t *testing.T, e *events.SessionEvent) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := safetext.NewJSONEncoder(&b).Encode(e); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestAppendEventAsEncodingJSON: appendEvent writes what encoding/json
// writes, for every event of a generated trace, for events with every field
// set, and leaves events with strings encoding/json escapes to it.
func TestAppendEventAsEncodingJSON(t *testing.T) {
	var evs []events.SessionEvent
	eng := NewEngine(rtc.DefaultConfig())
	eng.Emit = func(e events.SessionEvent) { evs = append(evs, e) }
	var trace bytes.Buffer
	if err := WriteTrace(&trace, 5_000, 5); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(&trace, DefaultMaxLineBytes, func(_ int, ev *rawevent.RawEvent) { eng.Apply(ev) }, func(int, error) {}); err != nil {
		t.Fatal(err)
	}
	eng.Advance(TraceStart + 10*3_600_000)
	full := events.SessionEvent{V: 2, ID: "i", Seq: 7, Kind: events.KindSessionEnded, SessionID: "s", RoomID: "!r:x",
		Application: "m.call", CallID: "c", At: -5, Changed: []string{"event_id", "expires_at"}, Reason: "expired",
		Participants: 3, Users: 2, Summary: &events.Summary{StartedAt: 1, EndedAt: 2, DurationMS: 1, PeakParticipants: 4, DistinctUsers: 5, Joins: 6},
		Member: &events.Member{UserID: "@u:x", DeviceID: "D", MembershipID: "m", JoinedAt: 1, ExpiresAt: 2,
			FocusActive: json.RawMessage(`{"type":"livekit","a":[1,null,true,"\"q\""]}`), FociPreferred: json.RawMessage(`[]`),
			CallIntent: "video", Format: "session", EventID: "$e"}}
	evs = append(evs, full, events.SessionEvent{})
	fast := 0
	for i := range evs {
		got, ok := appendEvent(nil, &evs[i])
		if !ok {
			continue
		}
		fast++
		if want := encodeJSON(t, &evs[i]); !bytes.Equal(got, want) {
			t.Fatalf("event %d:\nappendEvent %s\nencoding/json %s", i, got, want)
		}
	}
	if fast < len(evs)*9/10 || len(evs) < 1000 {
		t.Fatalf("%d of %d events written by appendEvent", fast, len(evs))
	}
	for _, s := range []string{"<", ">", "&", `"`, `\`, "\x7f", "\u2028", "é", "\x00", "\xff"} {
		for _, set := range []func(e *events.SessionEvent){
			func(e *events.SessionEvent) { e.ID += s },
			func(e *events.SessionEvent) { e.Member.CallIntent += s },
			func(e *events.SessionEvent) { e.Changed = append(e.Changed, s) },
			func(e *events.SessionEvent) { e.Member.FocusActive = json.RawMessage(`{"type":"` + s + `"}`) },
		} {
			e := full
			m := *full.Member
			e.Member, e.Changed = &m, slices.Clone(full.Changed)
			set(&e)
			if got, ok := appendEvent(nil, &e); ok && !bytes.Equal(got, encodeJSON(t, &e)) {
				t.Fatalf("%q: appendEvent %s, encoding/json %s", s, got, encodeJSON(t, &e))
			}
		}
	}
	e := full
	m := *full.Member
	m.FocusActive = json.RawMessage(`{"type": "x"}`)
	e.Member = &m
	if got, ok := appendEvent(nil, &e); ok && !strings.Contains(string(got), `{"type":"x"}`) {
		t.Fatalf("white space in a raw value written as it is: %s", got)
	}
}
