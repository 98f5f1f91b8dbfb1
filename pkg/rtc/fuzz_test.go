package rtc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// seedContents adds every example content and a few hand-made edge cases.
func seedContents(f *testing.F, add func(content []byte)) {
	files, _ := filepath.Glob("testdata/examples/*.jsonl")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for _, line := range splitLines(b) {
			var e struct {
				Content json.RawMessage `json:"content"`
			}
			if json.Unmarshal(line, &e) == nil {
				add(e.Content)
			}
		}
	}
	for _, c := range []string{`{}`, `[]`, `null`, `{"application":1}`, `{"memberships":[]}`,
		`{"memberships":["junk"]}`, `{"application":"m.call","call_id":"","device_id":"D","focus_active":{"type":"x"},"expires":1e400}`,
		`{"application":"m.call","call_id":"","device_id":"D","focus_active":{"type":"x"},"created_ts":-1}`,
		`{"application":"m.call","call_id":"","device_id":"D","focus_active":{"type":"x"},"m.call.intent":"audio"}`,
		`{"application":"m.call","call_id":"","device_id":"D","focus_active":{"type":"x"},"m.call.intent":"\u00e9"}`,
		`{"application":"m.call","call_id":"","device_id":"D","focus_active":{"type":"x"},"m.call.intent":7}`,
		`{"application":"m.call","call_id":"","device_id":"D","focus_active":{"type":"x"},"m.call.intent":"a","m.call.intent":"b"}`} {
		add([]byte(c))
	}
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	start := 0
	for i, c := range b {
		if c == '\n' {
			if i > start {
				out = append(out, b[start:i])
			}
			start = i + 1
		}
	}
	if start < len(b) {
		out = append(out, b[start:])
	}
	return out
}

// checkClaims: what a parser accepts is bounded and self-consistent.
func checkClaims(t *testing.T, p Parsed, ev *rawevent.RawEvent) {
	if p.Kind != RegisterJoin && len(p.Claims) > 0 {
		t.Fatalf("kind %d with %d claims", p.Kind, len(p.Claims))
	}
	if p.Kind == RegisterJoin && len(p.Claims) == 0 {
		t.Fatal("join without claims")
	}
	for _, c := range p.Claims {
		if c.User != ev.Sender {
			t.Fatalf("claim for %s from sender %s", c.User, ev.Sender)
		}
		if c.CreatedTS > ev.OriginServerTS || c.CreatedTS < 0 {
			t.Fatalf("created %d outside [0, %d]", c.CreatedTS, ev.OriginServerTS)
		}
		if c.CreatedTS > EffectiveTime(DefaultConfig(), ev) {
			t.Fatalf("created %d after the effective time", c.CreatedTS)
		}
		if c.Format != events.FormatSticky && c.Deadline > receivedAt(ev)+DefaultConfig().MaxExpiresMS {
			t.Fatalf("deadline %d beyond receipt %d + cap", c.Deadline, receivedAt(ev))
		}
		if c.MemberKey == "" || c.App == "" || c.MembershipID == "" {
			t.Fatalf("incomplete claim %+v", c)
		}
		if c.App == AppCall && c.CallID == "ROOM" {
			t.Fatal("m.call ROOM not normalised")
		}
	}
}

func FuzzParseStateMember(f *testing.F) {
	seedContents(f, func(c []byte) { f.Add(c, "_@alice:example.org_DEV_m.call", "@alice:example.org", int64(1767225601234)) })
	f.Fuzz(func(t *testing.T, content []byte, stateKey, sender string, ts int64) {
		for _, typ := range []string{rawevent.TypeCallMember.Type, rawevent.TypeRTCMember.Type} {
			ev := &rawevent.RawEvent{Type: typ, StateKey: &stateKey, Sender: id.UserID(sender), OriginServerTS: ts,
				Content: content, EventID: "$f"}
			p, err := ParseStateMember(DefaultConfig(), ev)
			if err != nil && p.Kind != RegisterInvalid {
				t.Fatalf("error %v with kind %d", err, p.Kind)
			}
			checkClaims(t, p, ev)
		}
	})
}

func FuzzParseStickyMember(f *testing.F) {
	seedContents(f, func(c []byte) { f.Add(c, "@erin:example.org", int64(1767230400000), int64(3600000)) })
	f.Fuzz(func(t *testing.T, content []byte, sender string, ts, duration int64) {
		ev := &rawevent.RawEvent{Type: rawevent.TypeRTCMember.Type, Sender: id.UserID(sender), OriginServerTS: ts,
			ReceivedAt: ts, Content: content, EventID: "$f", StickyDurationMS: &duration}
		p, err := ParseStickyMember(DefaultConfig(), ev)
		if err != nil && p.Kind != RegisterInvalid {
			t.Fatalf("error %v with kind %d", err, p.Kind)
		}
		checkClaims(t, p, ev)
		for _, c := range p.Claims {
			if c.Deadline > ts+MaxStickyMS {
				t.Fatalf("sticky deadline %d beyond %d + 1h", c.Deadline, ts)
			}
		}
	})
}

func FuzzParseSlot(f *testing.F) {
	f.Add("m.call#ROOM", []byte(`{"status":"open","application":{"type":"m.call"}}`))
	f.Add("m.call#ROOM", []byte(`{"status":"closed"}`))
	f.Fuzz(func(t *testing.T, slotID string, content []byte) {
		open, err := ParseSlot(slotID, content)
		if err != nil && open {
			t.Fatal("an invalid slot must count as closed")
		}
	})
}

func FuzzParseStateKeyUser(f *testing.F) {
	for _, k := range []string{"_@alice:example.org_DEV_m.call", "@alice:example.org_DEV", "@alice:example.org",
		"_@a_b:c_d.org_DEV", "DEVICEONLY", "_@", "@:", "@a:"} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		u := ParseStateKeyUser(key)
		if u == "" {
			return
		}
		s := string(u)
		if s[0] != '@' || len(s) > len(key) {
			t.Fatalf("%q -> %q", key, u)
		}
	})
}

// FuzzReducer drives a room with a byte-coded sequence of inputs and checks
// the invariants after each one, then that a replay gives the same events.
func FuzzReducer(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
	f.Add([]byte{0, 0, 0, 9, 9, 1, 200, 3, 3, 3, 7, 250})
	f.Fuzz(func(t *testing.T, program []byte) {
		if len(program) > 400 {
			program = program[:400]
		}
		in := decodeProgram(program)
		_, a, _ := run(t, in...)
		_, b, _ := run(t, in...)
		if len(a) != len(b) {
			t.Fatal("replay differs")
		}
		checkSessionGrammar(t, a)
	})
}

// decodeProgram turns bytes into inputs: each 3 bytes pick an operation, a
// user/device and a time step.
func decodeProgram(p []byte) []rawevent.RawEvent {
	users := []string{alice, bob, carol}
	var out []rawevent.RawEvent
	ts := T0
	for i := 0; i+2 < len(p); i += 3 {
		op, who, step := p[i], p[i+1], p[i+2]
		ts += int64(step) * 997
		u := users[int(who)%3]
		d := string(rune('A' + int(who/3)%3))
		var e rawevent.RawEvent
		switch op % 10 {
		case 0, 1:
			e = callJoin(u, d, []string{"", "ROOM", "x"}[int(op/10)%3], ts, `,"expires":60000`)
		case 2:
			e = callJoin(u, d, "", ts, ",\"created_ts\":"+itoa(ts-int64(op)*100)+`,"expires":120000`)
		case 3:
			e = callLeave(u, d, ts)
		case 4:
			e = roomMember(u, []string{"join", "leave"}[int(op/10)%2], ts)
		case 5:
			e = sticky(u, d, "m"+d, ts, "")
		case 6:
			e = stickyLeave(u, "m"+d, ts)
		case 7:
			e = slot([]string{"open", "closed"}[int(op/10)%2], ts)
		case 8:
			e = tick(ts)
		default:
			e = ev{typ: "m.room.redaction", sender: u, id: "$r" + itoa(int64(i)), ts: ts, noState: true,
				redacts: string(callJoin(u, d, "", ts-int64(step)*997, "").EventID), content: `{}`}.raw()
		}
		if e.Kind == rawevent.InputEvent {
			e.EventID += id.EventID("#" + itoa(int64(i)))
			e.ReceivedAt = ts
			if op >= 240 { // the sender's clock ahead: by up to ~16 years, or within the skew allowance
				e.OriginServerTS = ts + int64(op-240)*365*24*hour + int64(step)*1000
			}
		}
		out = append(out, e)
	}
	return out
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// FuzzFastStateMember: ParseStateMember reads a content as encoding/json
// does (it is the parser's own JSON reading, checked here against
// encoding/json): it rejects as not a JSON object exactly what encoding/json
// does not decode into a map, and a claim holds the values encoding/json
// decodes (the last of duplicate keys, strings unescaped, foci compacted).
// With a previous register holding the same claim (whose strings and bytes
// it reuses) it says the same.
func FuzzFastStateMember(f *testing.F) {
	seedContents(f, func(c []byte) {
		f.Add(c, "_@alice:example.org_DEV_m.call", "@alice:example.org", int64(1767225601234), int64(1767225601300))
	})
	for _, c := range []string{
		`{"application":"m.call","call_id":"","device_id":"D","focus_active":{"type":"livekit"},"expires":1000,"created_ts":5}`,
		`{"application":"m.call","call_id":"ROOM","device_id":"D","focus_active":{"type":"livekit","x":[1,{"a":null}]},"foci_preferred":[],"scope":"m.room"}`,
		`{"application":"m.call","call_id":"","device_id":"D","focus_active":{"type":"livekit"},"application":"x"}`,
		`{"application":"m.call","call_id":"","device_id":"D","focus_active":{"type":"livekit"},"expires":0}`,
		`{"application":"m.call","call_id":"","device_id":"D","focus_active":{"type":"l\u0069vekit"},"k\u0065y":"\u00e9"}`,
		`{"application":"m.call","call_id":"","device_id":"D","focus_active":{"type":"livekit"},"created_ts":99999999999999999}`,
		` { "application" : "m.call" , "call_id":"","devic\u0065_id":"D\u0041","focus_active":{ "type" : "livekit" } }`,
	} {
		f.Add([]byte(c), "_@alice:example.org_D_m.call", "@alice:example.org", int64(1767225601234), int64(0))
	}
	f.Fuzz(func(t *testing.T, content []byte, stateKey, sender string, ts, recv int64) {
		var m map[string]json.RawMessage
		isObject := json.Unmarshal(content, &m) == nil && m != nil
		for _, typ := range []string{rawevent.TypeCallMember.Type, rawevent.TypeRTCMember.Type} {
			ev := &rawevent.RawEvent{Type: typ, StateKey: &stateKey, Sender: id.UserID(sender), OriginServerTS: ts,
				ReceivedAt: recv, Content: content, EventID: "$f"}
			p, err := ParseStateMember(DefaultConfig(), ev)
			checkClaims(t, p, ev)
			if notObject := err != nil && strings.HasSuffix(err.Error(), "content is not a JSON object"); notObject == isObject && checkTimes(ev) == nil && len(content) <= MaxContentBytes {
				t.Fatalf("encoding/json decodes a map: %v; the parser: %v", isObject, err)
			}
			if p.Kind == RegisterJoin && len(p.Claims) == 1 && p.Claims[0].Format != events.FormatLegacy {
				checkDecoded(t, p.Claims[0], m)
			}
			if len(p.Claims) == 1 {
				again, err2 := parseStateMember(DefaultConfig(), ev, &Register{Kind: RegisterJoin, Claims: p.Claims})
				if !reflect.DeepEqual(again, p) || fmt.Sprint(err2) != fmt.Sprint(err) {
					t.Fatalf("with a previous register: %+v %v\nwithout: %+v %v", again, err2, p, err)
				}
			}
		}
	})
}

// checkDecoded: a session-form claim holds what encoding/json decodes from
// the content.
func checkDecoded(t *testing.T, c Claim, m map[string]json.RawMessage) {
	t.Helper()
	str := func(k string) string {
		var s string
		if err := json.Unmarshal(m[k], &s); err != nil {
			t.Fatalf("%s of a claim is not a string to encoding/json: %s", k, m[k])
		}
		return s
	}
	if app := str("application"); c.App != app || c.CallID != NormalizeCallID(app, str("call_id")) || c.MemberKey != str("device_id") {
		t.Fatalf("claim %+v from %v", c, m)
	}
	if _, ok := m[callIntentField]; ok && string(m[callIntentField]) != "null" && c.CallIntent != str(callIntentField) {
		t.Fatalf("intent %q from %s", c.CallIntent, m[callIntentField])
	}
	if !bytes.Equal(c.FocusActive, compact(m["focus_active"])) {
		t.Fatalf("focus %s from %s", c.FocusActive, m["focus_active"])
	}
	if raw, ok := m["foci_preferred"]; ok && string(raw) != "null" && !bytes.Equal(c.FociPref, compact(raw)) {
		t.Fatalf("foci %s from %s", c.FociPref, raw)
	}
}
