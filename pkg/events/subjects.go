package events

import (
	"fmt"
	"strings"

	"maunium.net/go/mautrix/id"
)

// Names of the JetStream streams and KV buckets. The topology itself (limits,
// transforms, consumers) is declared in internal/topology; these names are
// part of the public contract because subscribers address them.
const (
	StreamRaw    = "RTC_RAW"    // raw membership changes and fired timers, partitioned by room
	StreamEvents = "RTC_EVENTS" // session events
	StreamDLQ    = "RTC_DLQ"    // inputs that could not be decoded or applied
	StreamTimers = "RTC_TIMERS" // the rooms' durable timers (message schedules); only the aggregator writes it

	BucketRooms    = "rtc_rooms"    // per-room aggregator state
	BucketSessions = "rtc_sessions" // live sessions, one key per session
	BucketWorkers  = "rtc_workers"  // aggregator worker heartbeats
)

// Subject prefixes.
const (
	RawPrefix     = "rtc.raw"     // rtc.raw.<roomTok>: ingest publishes here
	PartPrefix    = "rtc.part"    // rtc.part.<N>.<roomTok>: RTC_RAW stores inputs here (subject transform)
	TimerPrefix   = "rtc.timer"   // rtc.timer.<roomTok>: one message schedule per room (RTC_TIMERS)
	FiredPrefix   = "rtc.fired"   // rtc.fired.<roomTok>: where a room's schedule fires (RTC_TIMERS)
	SessionPrefix = "rtc.session" // rtc.session.<appTok>.<roomTok>.<callTok>.<kind>
	LivePrefix    = "rtc.live"    // RePublish of RTC_EVENTS: exactly the stored events
	DLQPrefix     = "rtc.dlq"     // rtc.dlq.<partition>
)

// TimerPathToken ends the subject under which RTC_RAW stores a fired timer,
// sourced from RTC_TIMERS' rtc.fired.<roomTok>: rtc.part.<N>.<roomTok>.timer.
// No client can publish there: RTC_RAW captures only rtc.raw.<roomTok>
// from publishers, and that becomes the 4-token rtc.part.<N>.<roomTok>.
const TimerPathToken = "timer"

// RawSubject is where the ingest publishes an event of a room.
func RawSubject(room id.RoomID) string { return RawPrefix + "." + Token(string(room)) }

// PartitionSubject is the subject under which RTC_RAW stores an input of the
// room token after its subject transform.
func PartitionSubject(partition int, roomTok string) string {
	return fmt.Sprintf("%s.%d.%s", PartPrefix, partition, roomTok)
}

// PartitionFilter is the consumer filter of one partition.
func PartitionFilter(partition int) string { return fmt.Sprintf("%s.%d.>", PartPrefix, partition) }

// TimerSubject is the subject of a room's durable expiry timer.
func TimerSubject(room id.RoomID) string { return TimerPrefix + "." + Token(string(room)) }

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

// RoomKey is the key of a room's state in the rtc_rooms bucket.
func RoomKey(room id.RoomID) string { return Token(string(room)) }

// Partition computes the partition of a room token exactly as the server's
// {{partition(n,1)}} subject transform does (FNV-1a 32 over the token, mod n),
// so that tools can find a room's partition without asking the server.
func Partition(roomTok string, n int) int {
	const offset32, prime32 = 2166136261, 16777619
	h := uint32(offset32)
	for i := 0; i < len(roomTok); i++ {
		h ^= uint32(roomTok[i])
		h *= prime32
	}
	return int(h % uint32(n))
}
