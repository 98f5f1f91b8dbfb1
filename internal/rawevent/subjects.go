package rawevent

import (
	"fmt"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// Names of the JetStream streams and KV buckets only the services and
// rtcctl use (a subscriber's are in pkg/events). The topology itself
// (limits, transforms, consumers) is declared in internal/topology.
const (
	StreamRaw    = "RTC_RAW"    // raw membership changes and fired timers, partitioned by room
	StreamDLQ    = "RTC_DLQ"    // inputs that could not be decoded or applied
	StreamTimers = "RTC_TIMERS" // the rooms' durable timers (message schedules); only the aggregator writes it

	BucketRooms   = "rtc_rooms"   // per-room aggregator state
	BucketWorkers = "rtc_workers" // aggregator worker heartbeats
)

// Subject prefixes of the inputs.
const (
	RawPrefix   = "rtc.raw"   // rtc.raw.<roomTok>: ingest publishes here
	PartPrefix  = "rtc.part"  // rtc.part.<N>.<roomTok>: RTC_RAW stores inputs here (subject transform)
	TimerPrefix = "rtc.timer" // rtc.timer.<roomTok>: one message schedule per room (RTC_TIMERS)
	FiredPrefix = "rtc.fired" // rtc.fired.<roomTok>: where a room's schedule fires (RTC_TIMERS)
	DLQPrefix   = "rtc.dlq"   // rtc.dlq.<partition>
)

// TimerPathToken ends the subject under which RTC_RAW stores a fired timer,
// sourced from RTC_TIMERS' rtc.fired.<roomTok>: rtc.part.<N>.<roomTok>.timer.
// No client can publish there: RTC_RAW captures only rtc.raw.<roomTok>
// from publishers, and that becomes the 4-token rtc.part.<N>.<roomTok>.
const TimerPathToken = "timer"

// RawSubject is where the ingest publishes an event of a room.
func RawSubject(room id.RoomID) string { return RawPrefix + "." + events.Token(string(room)) }

// PartitionSubject is the subject under which RTC_RAW stores an input of the
// room token after its subject transform.
func PartitionSubject(partition int, roomTok string) string {
	return fmt.Sprintf("%s.%d.%s", PartPrefix, partition, roomTok)
}

// PartitionFilter is the consumer filter of one partition.
func PartitionFilter(partition int) string { return fmt.Sprintf("%s.%d.>", PartPrefix, partition) }

// TimerSubject is the subject of a room's durable expiry timer.
func TimerSubject(room id.RoomID) string { return TimerPrefix + "." + events.Token(string(room)) }

// RoomKey is the key of a room's state in the rtc_rooms bucket.
func RoomKey(room id.RoomID) string { return events.Token(string(room)) }

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
