package events

import (
	"bytes"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/rtcsessions/rtc-sessions/internal/wire"
)

// Hand-written msgpack encoders of the values the aggregator writes per
// input. Each writes exactly what the reflective encoder of Marshal writes
// for the same value (internal/wire; wire_test.go compares the two on random
// values), so stored bytes and deterministic ids do not change. Decoding
// stays reflective: it is not on the hot path, and it accepts fields in any
// order.

// msgpackAppender is a value with a hand-written encoder: Marshal uses it
// instead of reflection.
type msgpackAppender interface {
	AppendMsgpack(b []byte) []byte
}

// msgpackSizer is an appender that knows about how many bytes it writes:
// Marshal allocates that much at once instead of growing the buffer.
type msgpackSizer interface {
	MsgpackSize() int
}

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

// AppendMsgpack appends the member as Marshal encodes it.
func (m *Member) AppendMsgpack(b []byte) []byte {
	w := wire.Begin(b)
	w.Str("user_id", string(m.UserID))
	w.Str("device_id", string(m.DeviceID))
	w.Str("membership_id", m.MembershipID)
	w.Int("joined_at", m.JoinedAt)
	w.Int("expires_at", m.ExpiresAt)
	w.Bytes("focus_active", m.FocusActive)
	w.Bytes("foci_preferred", m.FociPreferred)
	w.Str("call_intent", m.CallIntent)
	w.Str("format", string(m.Format))
	w.Str("event_id", string(m.EventID))
	return w.End()
}

// isEmpty reports whether every field is empty: such a member, held by
// value in a struct, is left out as the reflective encoder leaves it out.
func (m *Member) isEmpty() bool {
	return m.UserID == "" && m.DeviceID == "" && m.MembershipID == "" && m.JoinedAt == 0 && m.ExpiresAt == 0 &&
		len(m.FocusActive) == 0 && len(m.FociPreferred) == 0 && m.CallIntent == "" && m.Format == "" && m.EventID == ""
}

// EncodeMsgpack makes the reflective encoder use AppendMsgpack wherever a
// Member is nested in another value (a value receiver: it works for values
// that are not addressable too).
func (m Member) EncodeMsgpack(enc *msgpack.Encoder) error { return writeTo(enc, m.AppendMsgpack(nil)) }

// AppendMsgpack appends the summary as Marshal encodes it.
func (s *Summary) AppendMsgpack(b []byte) []byte {
	w := wire.Begin(b)
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

// AppendMsgpack appends the session event as Marshal encodes it.
func (e *SessionEvent) AppendMsgpack(b []byte) []byte {
	w := wire.Begin(b)
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
	}
	w.Strs("changed", e.Changed)
	w.Str("reason", string(e.Reason))
	w.Int("participants", int64(e.Participants))
	w.Int("users", int64(e.Users))
	if e.Summary != nil {
		w.Key("summary")
		w.B = e.Summary.AppendMsgpack(w.B)
	}
	return w.End()
}

// EncodeMsgpack: see Member.EncodeMsgpack.
func (e SessionEvent) EncodeMsgpack(enc *msgpack.Encoder) error {
	return writeTo(enc, e.AppendMsgpack(nil))
}

// AppendMsgpack appends the live session as Marshal encodes it.
func (s *LiveSession) AppendMsgpack(b []byte) []byte {
	w := wire.Begin(b)
	w.Int("v", int64(s.V))
	w.Str("session_id", s.SessionID)
	w.Str("room_id", string(s.RoomID))
	w.Str("application", s.Application)
	w.Str("call_id", s.CallID)
	w.Int("started_at", s.StartedAt)
	if len(s.Members) > 0 {
		w.Key("members")
		w.B = wire.AppendArrayLen(w.B, len(s.Members))
		for i := range s.Members {
			w.B = s.Members[i].AppendMsgpack(w.B)
		}
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

// AppendMsgpack appends the live member as Marshal encodes it.
func (lm *LiveMember) AppendMsgpack(b []byte) []byte {
	w := wire.Begin(b)
	w.Int("v", int64(lm.V))
	if !lm.Member.isEmpty() {
		w.Key("member")
		w.B = lm.Member.AppendMsgpack(w.B)
	}
	return w.End()
}

// EncodeMsgpack: see Member.EncodeMsgpack.
func (lm LiveMember) EncodeMsgpack(enc *msgpack.Encoder) error {
	return writeTo(enc, lm.AppendMsgpack(nil))
}

func writeTo(enc *msgpack.Encoder, b []byte) error {
	_, err := enc.Writer().Write(b)
	return err
}

// LiveSessionParticipants reads only the participant count of a live
// session's value (EncodeLiveSession), skipping every other field without
// decoding it: what a gauge of live members needs, for every write of the
// bucket.
func LiveSessionParticipants(data []byte) (int, error) {
	dec := msgpack.NewDecoder(bytes.NewReader(data))
	n, err := dec.DecodeMapLen()
	if err != nil {
		return 0, fmt.Errorf("decode live session: %w", err)
	}
	participants, version := 0, 0
	for range n {
		k, err := dec.DecodeString()
		if err != nil {
			return 0, fmt.Errorf("decode live session: %w", err)
		}
		switch k {
		case "participants":
			participants, err = dec.DecodeInt()
		case "v":
			version, err = dec.DecodeInt()
		default:
			err = dec.Skip()
		}
		if err != nil {
			return 0, fmt.Errorf("decode live session field %s: %w", k, err)
		}
	}
	if !liveSessionVersionKnown(version) {
		return 0, fmt.Errorf("decode live session: %w %d", ErrUnsupportedVersion, version)
	}
	return participants, nil
}
