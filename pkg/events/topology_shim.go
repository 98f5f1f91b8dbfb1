package events

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/wire"
)

// Copies of names that moved to internal/rawevent, internal/eventcodec and
// internal/wire, for internal/topology only, which still names them here.
// Not part of the contract: delete this file (and topology_shim_test.go)
// once internal/topology imports the internal packages.

const (
	StreamRaw      = "RTC_RAW"     // rawevent.StreamRaw
	StreamDLQ      = "RTC_DLQ"     // rawevent.StreamDLQ
	StreamTimers   = "RTC_TIMERS"  // rawevent.StreamTimers
	BucketRooms    = "rtc_rooms"   // rawevent.BucketRooms
	BucketWorkers  = "rtc_workers" // rawevent.BucketWorkers
	RawPrefix      = "rtc.raw"     // rawevent.RawPrefix
	PartPrefix     = "rtc.part"    // rawevent.PartPrefix
	TimerPrefix    = "rtc.timer"   // rawevent.TimerPrefix
	FiredPrefix    = "rtc.fired"   // rawevent.FiredPrefix
	DLQPrefix      = "rtc.dlq"     // rawevent.DLQPrefix
	TimerPathToken = "timer"       // rawevent.TimerPathToken
)

// PartitionFilter is rawevent.PartitionFilter.
func PartitionFilter(partition int) string { return fmt.Sprintf("%s.%d.>", PartPrefix, partition) }

// PartitionSubject is rawevent.PartitionSubject.
func PartitionSubject(partition int, roomTok string) string {
	return fmt.Sprintf("%s.%d.%s", PartPrefix, partition, roomTok)
}

// Partition is rawevent.Partition.
func Partition(roomTok string, n int) int {
	const offset32, prime32 = 2166136261, 16777619
	h := uint32(offset32)
	for i := 0; i < len(roomTok); i++ {
		h ^= uint32(roomTok[i])
		h *= prime32
	}
	return int(h % uint32(n))
}

// EventID is eventcodec.EventID.
func EventID(room id.RoomID, seq uint64) string {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], seq)
	h := sha256.New()
	var l [4]byte
	for _, p := range []string{"rtc-sessions/event", string(room), string(n[:])} {
		binary.BigEndian.PutUint32(l[:], uint32(len(p)))
		h.Write(l[:])
		h.Write([]byte(p))
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:16])
}

// Marshal is wire.Marshal.
func Marshal(v any) ([]byte, error) { return wire.Marshal(v) }
