package eventcodec

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// EncodeSessionEvent encodes a session event for RTC_EVENTS.
func EncodeSessionEvent(e *events.SessionEvent) ([]byte, error) {
	e.V = events.SchemaVersion
	b, err := wire.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode session event %s: %w", e.ID, err)
	}
	return b, nil
}

// EncodeLiveSession encodes the value of a session's own key in the
// rtc_sessions bucket (see events.LiveSessionVersion: its members are in keys of
// their own, so s.Members is normally empty here).
func EncodeLiveSession(s *events.LiveSession) ([]byte, error) {
	s.V = events.LiveSessionVersion
	b, err := wire.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode live session %s: %w", s.SessionID, err)
	}
	return b, nil
}

// InlineMembersMax is the largest session (devices at its peak) whose
// members are kept in the session's own value.
const InlineMembersMax = 16

// MemberToken is the last token of a member's key: a hash of the user,
// device and membership id (printable, fixed length). A rejoin is a new
// membership, hence a new key.
func MemberToken(m *events.Member) string {
	h := sha256.Sum256([]byte(string(m.UserID) + "\x00" + string(m.DeviceID) + "\x00" + m.MembershipID))
	return base64.RawURLEncoding.EncodeToString(h[:16])
}

// SessionMemberKey is the key of member m of the session whose key is sessionKey.
func SessionMemberKey(sessionKey string, m *events.Member) string {
	return sessionKey + "." + MemberToken(m)
}

// EncodeLiveMember encodes the value of a member's key.
func EncodeLiveMember(m *events.Member) ([]byte, error) {
	b, err := wire.Marshal(&events.LiveMember{V: events.LiveSessionVersion, Member: *m})
	if err != nil {
		return nil, fmt.Errorf("encode live member %s/%s: %w", m.UserID, m.DeviceID, err)
	}
	return b, nil
}

// SetLiveSessionHeader stamps a write of a live session or live member
// value (EncodeLiveSession, EncodeLiveMember) to rtc_sessions with its
// HeaderSchemaVersion.
func SetLiveSessionHeader(m *nats.Msg) {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	m.Header.Set(events.HeaderSchemaVersion, strconv.Itoa(events.LiveSessionVersion))
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
	if version < 1 || version > events.LiveSessionVersion { // what DecodeLiveSession reads
		return 0, fmt.Errorf("decode live session: %w %d", events.ErrUnsupportedVersion, version)
	}
	return participants, nil
}
