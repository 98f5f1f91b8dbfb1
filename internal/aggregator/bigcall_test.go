package aggregator

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/proctest"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/roomstore"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// maxStoredValue is the documented bound of any value the aggregator
// stores (docs/aggregator.md): a room header with an inline redo record, a
// redo chunk, or one part; far below the server's 1 MiB max_payload.
const maxStoredValue = roomstore.DefaultRedoInlineMax + 64<<10

// TestTenThousandDeviceCall runs a call of 10,000 devices, next to a second
// call of 1,000 in the same room, through the real pipeline: every device
// joins, a thousand refresh, then everyone hangs up. The output equals the
// offline reduction event for event, the live session is whole while it
// lasts (10,000 member keys, assembled by ListLiveSessions), and no value
// stored in rtc_rooms, rtc_sessions or RTC_EVENTS exceeds the bound.
func TestTenThousandDeviceCall(t *testing.T) {
	if testing.Short() {
		t.Skip("a 23,000-input call; run without -short")
	}
	// The aggregator is the real binary (built without the race detector,
	// which would make 23,000 inputs through it take many minutes), on a
	// standalone nats-server; the test publishes and reads through it.
	h := proctest.New(t)
	ns := h.StartNATS("")
	agg, err := h.StartAggregator(proctest.AggregatorConfig{ID: "big", NATSURL: ns.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if err := agg.WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	e := attachEnv(t, ns.URL(), agg.Cfg.Partitions)
	room := id.RoomID("!bigcall:" + testHS)
	now := time.Now().UnixMilli()
	const big, small, refreshes = 10_000, 1_000, 1_000
	var joins, refresh, leaves []rawevent.RawEvent
	member := func(i int) (id.UserID, string, string) {
		call := ""
		if i >= big {
			call = "side"
		}
		return id.UserID(fmt.Sprintf("@u%d:%s", i, testHS)), fmt.Sprintf("D%d", i), call
	}
	ts := now
	for i := range big + small {
		u, dev, call := member(i)
		ts++
		joins = append(joins, callMember(room, u, dev, ts, fmt.Sprintf("$j%d", i), fmt.Sprintf(
			`{"application":"m.call","call_id":%q,"scope":"m.room","device_id":%q,"expires":3600000,%s}`, call, dev, focus)))
	}
	for i := range refreshes {
		u, dev, call := member(i * 10)
		ts++
		refresh = append(refresh, callMember(room, u, dev, ts, fmt.Sprintf("$r%d", i), fmt.Sprintf(
			`{"application":"m.call","call_id":%q,"scope":"m.room","device_id":%q,"expires":7200000,"created_ts":%d,%s}`,
			call, dev, joins[i*10].OriginServerTS, focus)))
	}
	for i := range big + small {
		u, dev, _ := member(i)
		ts++
		leaves = append(leaves, leaveEv(room, u, dev, ts, fmt.Sprintf("$l%d", i)))
	}
	e.publish(joins)
	e.publish(refresh)
	want := offline(append(joins[:len(joins):len(joins)], refresh...))
	e.waitIdle(countEvents(want), 10*time.Minute)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	live, err := events.ListLiveSessions(ctx, e.js)
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[string]int{}
	for _, s := range live {
		sizes[s.CallID] = len(s.Members)
		if s.Participants != len(s.Members) {
			t.Errorf("call %q: %d participants, %d members assembled", s.CallID, s.Participants, len(s.Members))
		}
	}
	if sizes[""] != big || sizes["side"] != small || len(live) != 2 {
		t.Fatalf("live sessions: %v, want %d and %d members", sizes, big, small)
	}

	largest := map[string]int{}
	measure := func() {
		for _, src := range []struct{ stream, prefix string }{
			{"KV_" + rawevent.BucketRooms, "$KV." + rawevent.BucketRooms + "."},
			{"KV_" + events.BucketSessions, "$KV." + events.BucketSessions + "."},
			{events.StreamEvents, events.SessionPrefix + "."},
		} {
			for _, m := range e.readStream(src.stream, src.prefix) {
				largest[src.stream] = max(largest[src.stream], len(m.data))
			}
		}
	}
	measure() // while the calls are live: every member's key exists

	e.publish(leaves)
	all := append(append(joins[:len(joins):len(joins)], refresh...), leaves...)
	want = offline(all)
	e.waitIdle(countEvents(want), 10*time.Minute)
	assertMatches(t, e.sessionEvents(), want)
	if n := liveKeys(t, e); n != 0 {
		t.Errorf("%d sessions still live after everyone left", n)
	}

	measure()
	if len(largest) != 3 || largest["KV_"+events.BucketSessions] == 0 {
		t.Errorf("measured %v: a bucket or stream was empty", largest)
	}
	for stream, n := range largest {
		if n > maxStoredValue {
			t.Errorf("%s holds a %d-byte value, above the documented bound of %d", stream, n, maxStoredValue)
		}
	}
	t.Logf("largest values: %v (bound %d)", largest, maxStoredValue)
}

// TestMain removes the binaries internal/proctest built for this package.
func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }
