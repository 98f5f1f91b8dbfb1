package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/wire"
)

// Hand-written msgpack encoders of the public messages, which the
// aggregator writes per input. Every field is written, an empty one with its
// zero value (wire.BeginAll), so that a reader in any language finds every
// documented field; a nested JSON value (focus_active, foci_preferred) is
// written as the msgpack map or array it stands for. Each encoder writes
// exactly what a reflective msgpack encoder writes for the same value with
// no field left out and the nested JSON decoded to generic values
// (wire_test.go compares the two on random values); the services' codec
// (internal/wire's Marshal) uses them. Decoding stays reflective, except
// Member's nested JSON (Member.DecodeMsgpack): it is not on the hot path,
// and it accepts fields in any order.

// MsgpackSize is about the length of the member's encoding (at least it,
// for ASCII strings).
func (m *Member) MsgpackSize() int {
	return 176 + len(m.UserID) + len(m.DeviceID) + len(m.MembershipID) + len(m.FocusActive) +
		len(m.FociPreferred) + len(m.CallIntent) + len(m.Format) + len(m.EventID)
}

// MsgpackSize: see Member.MsgpackSize.
func (e *SessionEvent) MsgpackSize() int {
	n := 192 + len(e.ID) + len(e.Kind) + len(e.SessionID) + len(e.RoomID) + len(e.Application) + len(e.CallID) + len(e.Reason)
	for _, c := range e.Changed {
		n += 1 + len(c)
	}
	if e.Member != nil {
		n += e.Member.MsgpackSize()
	}
	return n
}

// MsgpackSize: see Member.MsgpackSize.
func (s *LiveSession) MsgpackSize() int {
	n := 192 + len(s.SessionID) + len(s.RoomID) + len(s.Application) + len(s.CallID)
	for i := range s.Members {
		n += s.Members[i].MsgpackSize()
	}
	return n
}

// MsgpackSize: see Member.MsgpackSize.
func (lm *LiveMember) MsgpackSize() int { return 16 + lm.Member.MsgpackSize() }

// AppendMsgpack appends the member as the services' codec encodes it.
func (m *Member) AppendMsgpack(b []byte) []byte {
	w := wire.BeginAll(b)
	w.Str("user_id", string(m.UserID))
	w.Str("device_id", string(m.DeviceID))
	w.Str("membership_id", m.MembershipID)
	w.Int("joined_at", m.JoinedAt)
	w.Int("expires_at", m.ExpiresAt)
	w.JSON("focus_active", m.FocusActive)
	w.JSON("foci_preferred", m.FociPreferred)
	w.Str("call_intent", m.CallIntent)
	w.Str("format", string(m.Format))
	w.Str("event_id", string(m.EventID))
	return w.End()
}

// EncodeMsgpack makes the reflective encoder use AppendMsgpack wherever a
// Member is nested in another value (a value receiver: it works for values
// that are not addressable too).
func (m Member) EncodeMsgpack(enc *msgpack.Encoder) error { return writeTo(enc, m.AppendMsgpack(nil)) }

// AppendMsgpack appends the summary as the services' codec encodes it.
func (s *Summary) AppendMsgpack(b []byte) []byte {
	w := wire.BeginAll(b)
	w.Int("started_at", s.StartedAt)
	w.Int("ended_at", s.EndedAt)
	w.Int("duration_ms", s.DurationMS)
	w.Int("peak_participants", int64(s.PeakParticipants))
	w.Int("distinct_users", int64(s.DistinctUsers))
	w.Int("joins", int64(s.Joins))
	return w.End()
}

// EncodeMsgpack: see Member.EncodeMsgpack.
func (s Summary) EncodeMsgpack(enc *msgpack.Encoder) error { return writeTo(enc, s.AppendMsgpack(nil)) }

// AppendMsgpack appends the session event as the services' codec encodes it.
func (e *SessionEvent) AppendMsgpack(b []byte) []byte {
	w := wire.BeginAll(b)
	w.Int("v", int64(e.V))
	w.Str("id", e.ID)
	w.Uint("seq", e.Seq)
	w.Str("kind", string(e.Kind))
	w.Str("session_id", e.SessionID)
	w.Str("room_id", string(e.RoomID))
	w.Str("application", e.Application)
	w.Str("call_id", e.CallID)
	w.Int("at", e.At)
	if e.Member != nil {
		w.Key("member")
		w.B = e.Member.AppendMsgpack(w.B)
	} else {
		w.Nil("member")
	}
	w.Strs("changed", e.Changed)
	w.Str("reason", string(e.Reason))
	w.Int("participants", int64(e.Participants))
	w.Int("users", int64(e.Users))
	if e.Summary != nil {
		w.Key("summary")
		w.B = e.Summary.AppendMsgpack(w.B)
	} else {
		w.Nil("summary")
	}
	return w.End()
}

// EncodeMsgpack: see Member.EncodeMsgpack.
func (e SessionEvent) EncodeMsgpack(enc *msgpack.Encoder) error {
	return writeTo(enc, e.AppendMsgpack(nil))
}

// AppendMsgpack appends the live session as the services' codec encodes it.
func (s *LiveSession) AppendMsgpack(b []byte) []byte {
	w := wire.BeginAll(b)
	w.Int("v", int64(s.V))
	w.Str("session_id", s.SessionID)
	w.Str("room_id", string(s.RoomID))
	w.Str("application", s.Application)
	w.Str("call_id", s.CallID)
	w.Int("started_at", s.StartedAt)
	if s.Members != nil {
		w.Key("members")
		w.B = wire.AppendArrayLen(w.B, len(s.Members))
		for i := range s.Members {
			w.B = s.Members[i].AppendMsgpack(w.B)
		}
	} else {
		w.Nil("members")
	}
	w.Int("participants", int64(s.Participants))
	w.Int("users", int64(s.Users))
	w.Uint("seq", s.Seq)
	w.Int("updated_at", s.UpdatedAt)
	w.Bool("members_in_keys", s.MembersInKeys)
	return w.End()
}

// EncodeMsgpack: see Member.EncodeMsgpack.
func (s LiveSession) EncodeMsgpack(enc *msgpack.Encoder) error {
	return writeTo(enc, s.AppendMsgpack(nil))
}

// AppendMsgpack appends the live member as the services' codec encodes it.
func (lm *LiveMember) AppendMsgpack(b []byte) []byte {
	w := wire.BeginAll(b)
	w.Int("v", int64(lm.V))
	w.Key("member")
	w.B = lm.Member.AppendMsgpack(w.B)
	return w.End()
}

// EncodeMsgpack: see Member.EncodeMsgpack.
func (lm LiveMember) EncodeMsgpack(enc *msgpack.Encoder) error {
	return writeTo(enc, lm.AppendMsgpack(nil))
}

// memberFields is Member as it is decoded: the nested JSON as the msgpack
// value it was written as (a map or array since schema version 3, bytes
// holding the JSON text before), which DecodeMsgpack turns into JSON text.
type memberFields struct {
	UserID        id.UserID          `json:"user_id" msgpack:"user_id"`
	DeviceID      id.DeviceID        `json:"device_id" msgpack:"device_id"`
	MembershipID  string             `json:"membership_id" msgpack:"membership_id"`
	JoinedAt      int64              `json:"joined_at" msgpack:"joined_at"`
	ExpiresAt     int64              `json:"expires_at" msgpack:"expires_at"`
	FocusActive   msgpack.RawMessage `json:"focus_active" msgpack:"focus_active"`
	FociPreferred msgpack.RawMessage `json:"foci_preferred" msgpack:"foci_preferred"`
	CallIntent    string             `json:"call_intent" msgpack:"call_intent"`
	Format        Format             `json:"format" msgpack:"format"`
	EventID       id.EventID         `json:"event_id" msgpack:"event_id"`
}

// DecodeMsgpack implements msgpack.CustomDecoder: a member of any version.
func (m *Member) DecodeMsgpack(dec *msgpack.Decoder) error {
	var f memberFields
	if err := dec.Decode(&f); err != nil {
		return err
	}
	fa, err := nestedJSON(f.FocusActive)
	if err != nil {
		return fmt.Errorf("focus_active: %w", err)
	}
	fp, err := nestedJSON(f.FociPreferred)
	if err != nil {
		return fmt.Errorf("foci_preferred: %w", err)
	}
	*m = Member{UserID: f.UserID, DeviceID: f.DeviceID, MembershipID: f.MembershipID, JoinedAt: f.JoinedAt,
		ExpiresAt: f.ExpiresAt, FocusActive: fa, FociPreferred: fp, CallIntent: f.CallIntent, Format: f.Format,
		EventID: f.EventID}
	return nil
}

// nestedJSON turns the msgpack encoding of a nested JSON value back into
// compact JSON text: bytes or a string (schema versions 1 and 2) hold the
// text itself; nil is no value; anything else is the value, written with
// its maps' keys in their order (wire.AppendJSON keeps the text's order, so
// the text comes back as it was).
func nestedJSON(raw msgpack.RawMessage) (json.RawMessage, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	switch c := raw[0]; {
	case c == msgpcode.Nil:
		return nil, nil
	case msgpcode.IsBin(c) || msgpcode.IsString(c):
		var b []byte
		if err := msgpack.Unmarshal(raw, &b); err != nil {
			return nil, err
		}
		if len(b) == 0 {
			return nil, nil
		}
		return json.RawMessage(b), nil
	}
	dec := msgpack.NewDecoder(bytes.NewReader(raw))
	var buf bytes.Buffer
	if err := msgpackToJSON(&buf, dec, 0); err != nil {
		return nil, err
	}
	return json.RawMessage(buf.Bytes()), nil
}

// maxNesting bounds the depth msgpackToJSON follows: deeper is not JSON a
// membership carries, and a bound keeps a hostile value from exhausting the
// stack.
const maxNesting = 64

// msgpackToJSON writes the next msgpack value of dec as JSON to w, maps
// with their keys in their order.
func msgpackToJSON(w *bytes.Buffer, dec *msgpack.Decoder, depth int) error {
	if depth > maxNesting {
		return errors.New("nested JSON too deep")
	}
	c, err := dec.PeekCode()
	if err != nil {
		return err
	}
	switch {
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		n, err := dec.DecodeMapLen()
		if err != nil {
			return err
		}
		w.WriteByte('{')
		for i := range n {
			if i > 0 {
				w.WriteByte(',')
			}
			k, err := dec.DecodeString()
			if err != nil {
				return err
			}
			if err := writeJSONScalar(w, k); err != nil {
				return err
			}
			w.WriteByte(':')
			if err := msgpackToJSON(w, dec, depth+1); err != nil {
				return err
			}
		}
		w.WriteByte('}')
		return nil
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		n, err := dec.DecodeArrayLen()
		if err != nil {
			return err
		}
		w.WriteByte('[')
		for i := range n {
			if i > 0 {
				w.WriteByte(',')
			}
			if err := msgpackToJSON(w, dec, depth+1); err != nil {
				return err
			}
		}
		w.WriteByte(']')
		return nil
	}
	v, err := dec.DecodeInterfaceLoose()
	if err != nil {
		return err
	}
	return writeJSONScalar(w, v)
}

// writeJSONScalar writes v as JSON without HTML escapes (a JSON text from
// a Matrix event has none of its own).
func writeJSONScalar(w *bytes.Buffer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	w.Truncate(w.Len() - 1) // Encode's newline
	return nil
}

func writeTo(enc *msgpack.Encoder, b []byte) error {
	_, err := enc.Writer().Write(b)
	return err
}
