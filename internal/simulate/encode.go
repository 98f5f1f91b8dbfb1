package simulate

import (
	"encoding/json"
	"strconv"

	"github.com/rtcsessions/rtc-sessions/internal/jsonscan"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// appendEvent appends e as encoding/json's Encoder writes it (the fields in
// their order, omitempty, HTML-safe escaping, a newline), when every string
// and raw value of e is plain: printable ASCII that encoding/json writes as
// it is. ok is false otherwise, and the caller encodes e with
// encoding/json. TestAppendEventAsEncodingJSON holds the two equal and
// fails when events.SessionEvent's fields change.
func appendEvent(b []byte, e *events.SessionEvent) (_ []byte, ok bool) {
	start := len(b)
	fail := func() ([]byte, bool) { return b[:start], false }
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(e.V), 10)
	if b, ok = appendField(b, `,"id":`, e.ID); !ok {
		return fail()
	}
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, e.Seq, 10)
	for _, f := range [...]struct{ name, v string }{{`,"kind":`, string(e.Kind)}, {`,"session_id":`, e.SessionID},
		{`,"room_id":`, string(e.RoomID)}, {`,"application":`, e.Application}, {`,"call_id":`, e.CallID}} {
		if b, ok = appendField(b, f.name, f.v); !ok {
			return fail()
		}
	}
	b = append(b, `,"at":`...)
	b = strconv.AppendInt(b, e.At, 10)
	if m := e.Member; m != nil {
		b = append(b, `,"member":`...)
		if b, ok = appendMember(b, m); !ok {
			return fail()
		}
	}
	if len(e.Changed) > 0 {
		b = append(b, `,"changed":[`...)
		for i, c := range e.Changed {
			if i > 0 {
				b = append(b, ',')
			}
			if b, ok = appendField(b, "", c); !ok {
				return fail()
			}
		}
		b = append(b, ']')
	}
	if e.Reason != "" {
		if b, ok = appendField(b, `,"reason":`, string(e.Reason)); !ok {
			return fail()
		}
	}
	b = append(b, `,"participants":`...)
	b = strconv.AppendInt(b, int64(e.Participants), 10)
	b = append(b, `,"users":`...)
	b = strconv.AppendInt(b, int64(e.Users), 10)
	if s := e.Summary; s != nil {
		b = append(b, `,"summary":{"started_at":`...)
		b = strconv.AppendInt(b, s.StartedAt, 10)
		b = append(b, `,"ended_at":`...)
		b = strconv.AppendInt(b, s.EndedAt, 10)
		b = append(b, `,"duration_ms":`...)
		b = strconv.AppendInt(b, s.DurationMS, 10)
		b = append(b, `,"peak_participants":`...)
		b = strconv.AppendInt(b, int64(s.PeakParticipants), 10)
		b = append(b, `,"distinct_users":`...)
		b = strconv.AppendInt(b, int64(s.DistinctUsers), 10)
		b = append(b, `,"joins":`...)
		b = strconv.AppendInt(b, int64(s.Joins), 10)
		b = append(b, '}')
	}
	return append(b, "}\n"...), true
}

func appendMember(b []byte, m *events.Member) (_ []byte, ok bool) {
	if b, ok = appendField(b, `{"user_id":`, string(m.UserID)); !ok {
		return b, false
	}
	for _, f := range [...]struct{ name, v string }{{`,"device_id":`, string(m.DeviceID)}, {`,"membership_id":`, m.MembershipID}} {
		if b, ok = appendField(b, f.name, f.v); !ok {
			return b, false
		}
	}
	b = append(b, `,"joined_at":`...)
	b = strconv.AppendInt(b, m.JoinedAt, 10)
	b = append(b, `,"expires_at":`...)
	b = strconv.AppendInt(b, m.ExpiresAt, 10)
	for _, f := range [...]struct {
		name string
		v    json.RawMessage
	}{{`,"focus_active":`, m.FocusActive}, {`,"foci_preferred":`, m.FociPreferred}} {
		if len(f.v) == 0 {
			continue
		}
		if !plainRaw(f.v) {
			return b, false
		}
		b = append(b, f.name...)
		b = append(b, f.v...)
	}
	if m.CallIntent != "" {
		if b, ok = appendField(b, `,"call_intent":`, m.CallIntent); !ok {
			return b, false
		}
	}
	if b, ok = appendField(b, `,"format":`, string(m.Format)); !ok {
		return b, false
	}
	if b, ok = appendField(b, `,"event_id":`, string(m.EventID)); !ok {
		return b, false
	}
	return append(b, '}'), true
}

// appendField appends name and the JSON string of v, when v is plain.
func appendField(b []byte, name, v string) ([]byte, bool) {
	for i := 0; i < len(v); i++ {
		if !plainByte(v[i]) || v[i] == '"' {
			return b, false
		}
	}
	b = append(b, name...)
	b = append(b, '"')
	b = append(b, v...)
	return append(b, '"'), true
}

// plainByte: a byte encoding/json writes as it is in a string (with HTML
// escaping, as its Encoder does by default), quotes aside.
func plainByte(c byte) bool {
	return c >= 0x20 && c < 0x7f && c != '\\' && c != '<' && c != '>' && c != '&'
}

// plainRaw: a raw value encoding/json writes as it is: valid compact JSON
// of plain bytes.
func plainRaw(v []byte) bool {
	for _, c := range v {
		if !plainByte(c) && c != '\\' || c == ' ' {
			return false
		}
	}
	s := jsonscan.Scanner{B: v}
	return s.Value(1) && s.EOF() && !s.Spaced
}
