package events

import (
	"fmt"
	"strings"

	"maunium.net/go/mautrix/id"
)

// Names of the JetStream stream and KV bucket subscribers read. The
// topology itself (limits, transforms, consumers, the services' own streams
// and buckets) is declared in internal/topology.
const (
	StreamEvents   = "RTC_EVENTS"   // session events
	BucketSessions = "rtc_sessions" // live sessions, one key per session
)

// Subject prefixes.
const (
	SessionPrefix = "rtc.session" // rtc.session.<appTok>.<roomTok>.<callTok>.<kind>
	LivePrefix    = "rtc.live"    // RePublish of RTC_EVENTS: exactly the stored events
)

// SessionSubject is the subject of a session event.
func SessionSubject(app, callID string, room id.RoomID, kind Kind) string {
	return SessionPrefix + "." + SessionKey(app, room, callID) + "." + string(kind)
}

// LiveSubject is SessionSubject as re-published by the stream for plain NATS
// subscribers (each stored event exactly once).
func LiveSubject(app, callID string, room id.RoomID, kind Kind) string {
	return LivePrefix + strings.TrimPrefix(SessionSubject(app, callID, room, kind), SessionPrefix)
}

// SessionFilter builds a subject filter over RTC_EVENTS (prefix SessionPrefix)
// or its live re-publish (prefix LivePrefix). Empty arguments are wildcards;
// pass a non-empty kind to select one kind.
func SessionFilter(prefix, app string, room id.RoomID, kind Kind) string {
	parts := []string{prefix, "*", "*", "*", "*"}
	if app != "" {
		parts[1] = Token(app)
	}
	if room != "" {
		parts[2] = Token(string(room))
	}
	if kind != "" {
		parts[4] = string(kind)
	}
	return strings.Join(parts, ".")
}

// SessionKey is the key of a live session in the rtc_sessions bucket, and the
// middle of its event subjects: <appTok>.<roomTok>.<callTok>.
func SessionKey(app string, room id.RoomID, callID string) string {
	return Token(app) + "." + Token(string(room)) + "." + Token(callID)
}

// ParseSessionKey splits a session key into its parts.
func ParseSessionKey(key string) (app string, room id.RoomID, callID string, err error) {
	parts := strings.Split(key, ".")
	if len(parts) != 3 {
		return "", "", "", fmt.Errorf("session key %q: want 3 tokens, have %d", key, len(parts))
	}
	vals := make([]string, 3)
	for i, p := range parts {
		if vals[i], err = ParseToken(p); err != nil {
			return "", "", "", fmt.Errorf("session key %q: %w", key, err)
		}
	}
	return vals[0], id.RoomID(vals[1]), vals[2], nil
}
