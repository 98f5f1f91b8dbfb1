package aggregator

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// TestPipelineMatchesOffline feeds many rooms through one worker: the
// session events on RTC_EVENTS are exactly what rtc.Apply computes offline
// over the same inputs (same bytes, same ids, same order per room). The
// same events published again (within and beyond the duplicate window) add
// nothing, and a poison input lands in RTC_DLQ while the rest flows.
func TestPipelineMatchesOffline(t *testing.T) {
	e := newEnv(t)
	w := e.startWorker("w1", hooks{})
	e.waitOwned(w)

	evs := workload(60, 3, time.Now().UnixMilli())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Poison first, in a room of its own partition mix: it must not block.
	if _, err := e.js.Publish(ctx, rawevent.RawSubject("!poison:"+testHS), []byte("\xc1 not msgpack")); err != nil {
		t.Fatal(err)
	}
	e.publish(evs)
	e.publish(evs[:50]) // the same ids: dropped by RTC_RAW's duplicate window
	// The same events again without an id, as if they arrived after the
	// window: they reach the reducer, which must ignore them.
	for i := range evs[:40] {
		data, _ := rawevent.EncodeRaw(&evs[i])
		if _, err := e.js.Publish(ctx, rawevent.RawSubject(evs[i].RoomID), data); err != nil {
			t.Fatal(err)
		}
	}

	want := offline(evs)
	e.waitIdle(countEvents(want), 60*time.Second)
	got := e.sessionEvents()
	assertMatches(t, got, want)

	kc := kindCounts(got)
	if kc[events.KindSessionStarted] != 60 || kc[events.KindSessionEnded] != 60 ||
		kc[events.KindMemberJoined] != 180 || kc[events.KindMemberLeft] != 180 {
		t.Errorf("transitions by kind: %v", kc)
	}
	// The offline reduction over what RTC_RAW holds (with the duplicates)
	// gives the same: duplicates are no-ops in the reducer too.
	assertMatches(t, got, offline(e.rawInputs()))

	dlq := e.readStream(rawevent.StreamDLQ, rawevent.DLQPrefix+".")
	if len(dlq) != 1 {
		t.Fatalf("RTC_DLQ holds %d messages, want 1", len(dlq))
	}
	if string(dlq[0].data) != "\xc1 not msgpack" || dlq[0].hdr.Get(HeaderDLQReason) != "decode" ||
		dlq[0].hdr.Get(HeaderDLQSeq) != "1" || dlq[0].hdr.Get(HeaderDLQSubject) == "" {
		t.Errorf("dead letter: data %q headers %v", dlq[0].data, dlq[0].hdr)
	}
	// Every session ended: rtc_sessions is empty.
	if n := liveKeys(t, e); n != 0 {
		t.Errorf("rtc_sessions holds %d keys after every session ended", n)
	}
}

func liveKeys(t *testing.T, e *env) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	keys, err := e.h.Sessions.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		keys = nil
	} else if err != nil {
		t.Fatal(err)
	}
	// Every key is a session or a member of one: the assembled sessions
	// account for all of them.
	sessions, err := events.ListLiveSessions(ctx, e.js)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range sessions {
		if len(s.Members) != s.Participants {
			t.Errorf("session %s: %d member keys, %d participants", s.Key(), len(s.Members), s.Participants)
		}
		n++
		if s.MembersInKeys {
			n += len(s.Members)
		}
	}
	if n != len(keys) {
		t.Errorf("rtc_sessions holds %d keys, its %d sessions account for %d", len(keys), len(sessions), n)
	}
	return len(sessions)
}

// TestExpiryByDurableTimer: a member whose membership expires in two
// seconds leaves with reason expired and the session ends, with no further
// input: only the room's message schedule drives it. In the restart case the
// worker is stopped between the join and the deadline, and a new one
// processes the fired timer.
func TestExpiryByDurableTimer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		restart bool
	}{{"running", false}, {"restarted", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			w := e.startWorker("w1", hooks{})
			e.waitOwned(w)
			room := id.RoomID("!expiry:" + testHS)
			now := time.Now().UnixMilli()
			e.publish([]rawevent.RawEvent{joinEv(room, "@alice:"+testHS, "ALICE", now, 2000, "$join")})
			e.waitIdle(2, 10*time.Second)
			if n := liveKeys(t, e); n != 1 {
				t.Fatalf("rtc_sessions holds %d sessions while the session is live, want 1", n)
			}
			if tc.restart {
				w.stop()
				time.Sleep(time.Until(time.UnixMilli(now + 2500)))
				e.startWorker("w2", hooks{})
			}
			e.waitIdle(4, 20*time.Second)
			evs := e.sessionEvents()[room]
			var kinds []events.Kind
			for _, b := range evs {
				ev, _ := events.DecodeSessionEvent(b)
				kinds = append(kinds, ev.Kind)
			}
			if len(evs) != 4 {
				t.Fatalf("events %v", kinds)
			}
			left, _ := events.DecodeSessionEvent(evs[2])
			ended, _ := events.DecodeSessionEvent(evs[3])
			if left.Kind != events.KindMemberLeft || left.Reason != events.ReasonExpired || left.At != now+2000 {
				t.Errorf("third event: %+v", left)
			}
			// DESIGN §4 puts a reason on session_ended too; the reducer may
			// leave it empty (reported), so only a wrong reason fails here.
			if ended.Kind != events.KindSessionEnded || (ended.Reason != "" && ended.Reason != events.ReasonExpired) ||
				ended.Summary == nil || ended.Summary.DurationMS != 2000 {
				t.Errorf("fourth event: %+v", ended)
			}
			if n := liveKeys(t, e); n != 0 {
				t.Errorf("rtc_sessions holds %d keys after the session ended", n)
			}
			// The pipeline matches the offline reduction over RTC_RAW, which
			// holds the fired timer input.
			assertMatches(t, e.sessionEvents(), offline(e.rawInputs()))
		})
	}
}

// TestWorkersShareAndFailover: three workers share the partitions; one is
// killed (connection closed, no unpin, no deregistration) right after it
// stored a room record and before it published the outbox; another stops
// gracefully later. No transition is lost or duplicated.
func TestWorkersShareAndFailover(t *testing.T) {
	e := newEnv(t)
	var stores atomic.Int32
	var kill onceHook
	killed := make(chan struct{})
	w1 := e.startWorker("w1", hooks{})
	var w2w atomic.Pointer[Worker]
	w2 := e.startWorker("w2", hooks{afterCommit: func(int, id.RoomID, uint64) {
		if stores.Add(1) == 40 {
			kill.do(func() { w2w.Load().kill(); close(killed) })
		}
	}})
	w2w.Store(w2.w)
	w3 := e.startWorker("w3", hooks{})
	e.waitOwned(w1, w2, w3)
	for _, w := range []*testWorker{w1, w2, w3} {
		if len(w.w.Owned()) == 0 {
			t.Errorf("worker %s owns no partition of %d", w.w.ID(), e.topo.Partitions)
		}
	}

	evs := workload(120, 3, time.Now().UnixMilli())
	want := offline(evs)
	e.publish(evs[:len(evs)/2])
	select {
	case <-killed:
	case <-time.After(30 * time.Second):
		t.Fatal("w2 never reached its kill point")
	}
	w2.stop() // reap the killed worker's goroutines
	start := time.Now()
	e.publish(evs[len(evs)/2 : 3*len(evs)/4])
	e.waitOwned(w1, w3)
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("take-over after the kill took %s", d)
	}
	// A graceful stop under load: w3 hands its partitions to w1.
	e.publish(evs[3*len(evs)/4:])
	w3.stop()
	e.waitOwned(w1)
	e.waitIdle(countEvents(want), 90*time.Second)
	assertMatches(t, e.sessionEvents(), want)
	// The room w2 committed but whose effects it never published was loaded
	// by its new owner, which carried out the commit's redo record.
	redos := testutil.ToFloat64(w1.w.m.Redos) + testutil.ToFloat64(w3.w.m.Redos)
	if redos < 1 {
		t.Errorf("no committed room was redone by its new owner")
	}
}

// TestServerRestart restarts the nats-server (same store) while inputs flow:
// nothing is lost and the workers recover by themselves.
func TestServerRestart(t *testing.T) {
	e := newEnv(t)
	w1 := e.startWorker("w1", hooks{})
	w2 := e.startWorker("w2", hooks{})
	e.waitOwned(w1, w2)
	evs := workload(40, 3, time.Now().UnixMilli())
	want := offline(evs)
	e.publishSync(evs, func(i int) {
		if i == len(evs)/2 {
			e.restartServer(300 * time.Millisecond)
		}
	})
	e.waitIdle(countEvents(want), 90*time.Second)
	assertMatches(t, e.sessionEvents(), want)
	e.waitOwned(w1, w2)
}

// TestReplayReproducesEvents reprocesses RTC_RAW from the start into empty
// state (rooms, sessions and events wiped, consumers recreated): RTC_EVENTS
// comes out byte for byte the same.
func TestReplayReproducesEvents(t *testing.T) {
	e := newEnv(t)
	w := e.startWorker("w1", hooks{})
	e.waitOwned(w)
	now := time.Now().UnixMilli()
	evs := workload(30, 2, now)
	for r := 0; r < 3; r++ { // sessions that end by expiry: fired timers are inputs too
		room := id.RoomID("!short" + string(rune('a'+r)) + ":" + testHS)
		evs = append(evs, joinEv(room, "@bob:"+testHS, "BOB", now+int64(r), 1500, "$short"+string(rune('a'+r))))
	}
	e.publish(evs)
	e.waitIdle(countEvents(offline(evs))+6, 30*time.Second)
	first := e.sessionEvents()
	w.stop()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, b := range []string{rawevent.BucketRooms, events.BucketSessions} {
		if err := e.js.DeleteKeyValue(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.js.DeleteStream(ctx, events.StreamEvents); err != nil {
		t.Fatal(err)
	}
	raw, _ := e.js.Stream(ctx, rawevent.StreamRaw)
	for p := 0; p < e.topo.Partitions; p++ {
		if err := raw.DeleteConsumer(ctx, topology.ConsumerName(p)); err != nil {
			t.Fatal(err)
		}
	}
	timers, _ := e.js.Stream(ctx, rawevent.StreamTimers)
	if err := timers.Purge(ctx, jetstream.WithPurgeSubject(rawevent.TimerPrefix+".>")); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.h, err = topology.Ensure(ctx, e.js, e.topo, topology.ModeCreate); err != nil {
		t.Fatal(err)
	}
	w = e.startWorker("w2", hooks{})
	e.waitOwned(w)
	e.waitIdle(countEvents(first), 60*time.Second)
	assertMatches(t, e.sessionEvents(), first)
}
