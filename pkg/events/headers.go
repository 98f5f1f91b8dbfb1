package events

import (
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// SessionEventMsg is the message that publishes a session event to
// RTC_EVENTS: data is the event's encoding (EncodeSessionEvent, possibly of
// an older version when it was stored before an upgrade), its Nats-Msg-Id
// the event's id and its HeaderSchemaVersion the version data was encoded
// in (ev.V, as EncodeSessionEvent or DecodeSessionEvent left it).
func SessionEventMsg(ev *SessionEvent, data []byte) *nats.Msg {
	m := nats.NewMsg(ev.Subject())
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, ev.ID)
	v := ev.V
	if v == 0 {
		v = SchemaVersion
	}
	m.Header.Set(HeaderSchemaVersion, strconv.Itoa(v))
	return m
}

// SetLiveSessionHeader stamps a write of a live session or live member
// value (EncodeLiveSession, EncodeLiveMember) to rtc_sessions with its
// HeaderSchemaVersion.
func SetLiveSessionHeader(m *nats.Msg) {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	m.Header.Set(HeaderSchemaVersion, strconv.Itoa(LiveSessionVersion))
}
