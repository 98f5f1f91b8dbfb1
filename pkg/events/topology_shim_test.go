package events_test

import (
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// The copies in topology_shim.go equal what they copy.
func TestTopologyShimMatches(t *testing.T) {
	for _, c := range [][2]string{
		{events.StreamRaw, rawevent.StreamRaw}, {events.StreamDLQ, rawevent.StreamDLQ},
		{events.StreamTimers, rawevent.StreamTimers}, {events.BucketRooms, rawevent.BucketRooms},
		{events.BucketWorkers, rawevent.BucketWorkers}, {events.RawPrefix, rawevent.RawPrefix},
		{events.PartPrefix, rawevent.PartPrefix}, {events.TimerPrefix, rawevent.TimerPrefix},
		{events.FiredPrefix, rawevent.FiredPrefix}, {events.DLQPrefix, rawevent.DLQPrefix},
		{events.TimerPathToken, rawevent.TimerPathToken},
		{events.PartitionFilter(3), rawevent.PartitionFilter(3)},
		{events.PartitionSubject(2, "tok"), rawevent.PartitionSubject(2, "tok")},
		{events.EventID("!r:x", 7), eventcodec.EventID("!r:x", 7)},
	} {
		if c[0] != c[1] {
			t.Errorf("copy %q, original %q", c[0], c[1])
		}
	}
	for _, tok := range []string{"", "a", events.Token("!call:example.org")} {
		if a, b := events.Partition(tok, 7), rawevent.Partition(tok, 7); a != b {
			t.Errorf("Partition(%q): copy %d, original %d", tok, a, b)
		}
	}
	ev := events.SessionEvent{ID: "x", RoomID: id.RoomID("!r:x")}
	a, errA := events.Marshal(&ev)
	b, errB := wire.Marshal(&ev)
	if errA != nil || errB != nil || string(a) != string(b) {
		t.Errorf("Marshal: copy % x %v, original % x %v", a, errA, b, errB)
	}
}
