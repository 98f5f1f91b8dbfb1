package events

import (
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// SessionEventMsg is the message that publishes a session event to
// RTC_EVENTS: data is the event's encoding (the services' encoder, or the
// stored bytes of an older version when it was stored before an upgrade),
// its Nats-Msg-Id the event's id and its HeaderSchemaVersion the version
// data was encoded in (ev.V, as the encoder or DecodeSessionEvent left it).
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
