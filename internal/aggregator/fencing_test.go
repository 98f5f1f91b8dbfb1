package aggregator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// TestStalledOwnerIsFenced stalls a real aggregator process (SIGSTOP) right
// after it committed a room and before it carried out the commit's effects.
// A second process takes the room over, carries the commit out and then
// ends the session. When the stalled process resumes (SIGCONT) and carries
// out its old commit, nothing of it may become visible: rtc_sessions must
// not show the ended session live again, and RTC_EVENTS must hold the
// room's events once each, in seq order.
func TestStalledOwnerIsFenced(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	e := newEnv(t)
	bin := buildAggregator(t)
	room := id.RoomID("!stall:example.org")
	a := e.startProc(bin, "stalled", EnvStopAfterCommit+"="+string(room))
	e.waitProcsOwn(30*time.Second, a)

	now := time.Now().UnixMilli()
	e.publish([]rawevent.RawEvent{joinEv(room, "@alice:example.org", "PHONE", now, 3_600_000, "$join")})
	waitStopped(t, a, 20*time.Second)

	// The stalled process has committed the join and published nothing.
	if got := e.sessionEvents()[room]; len(got) != 0 {
		t.Fatalf("the stalled owner published %d events before its effects", len(got))
	}
	b := e.startProc(bin, "next")
	// b takes the room over once a's heartbeat and pin have expired, and
	// carries out a's commit (the redo).
	e.waitRoomEvents(room, 2, 30*time.Second)
	e.publish([]rawevent.RawEvent{leaveEv(room, "@alice:example.org", "PHONE", now+1000, "$leave")})
	e.waitRoomEvents(room, 4, 30*time.Second)
	sessKey := events.SessionKey("m.call", room, "")
	if live := e.liveSession(sessKey); live {
		t.Fatalf("session %s still live after session_ended", sessKey)
	}

	// Every write of the key from now on, also one undone at once.
	wctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	watch, err := e.h.Sessions.Watch(wctx, sessKey, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	// Resume the stalled owner: it carries out its old commit.
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// For as long as the issue was measured (10 s), the session never shows
	// live again; meanwhile the resumed owner finds out it was fenced.
	fenced := false
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if e.liveSession(sessKey) {
			t.Fatalf("rtc_sessions shows %s live again after the stalled owner resumed", sessKey)
		}
		select {
		case ent := <-watch.Updates():
			if ent != nil && ent.Operation() == jetstream.KeyValuePut {
				t.Fatalf("rtc_sessions: %s written live again (revision %d) after the stalled owner resumed", sessKey, ent.Revision())
			}
		default:
		}
		if m := a.metrics(); m[`rtc_aggregator_effect_conflicts_total{kind="fenced"}`] >= 1 {
			fenced = true
		}
	}
	if !fenced {
		t.Fatalf("the resumed owner reported no fenced write; its log:\n%s", tail(a.stderr.String(), 8<<10))
	}
	evs := e.sessionEvents()[room]
	var kinds []string
	for i, b := range evs {
		ev, err := events.DecodeSessionEvent(b)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Seq != uint64(i+1) {
			t.Fatalf("event %d of the room has seq %d (stream order must be seq order)", i, ev.Seq)
		}
		kinds = append(kinds, string(ev.Kind))
	}
	want := "session_started member_joined member_left session_ended"
	if got := strings.Join(kinds, " "); got != want {
		t.Fatalf("room events %q, want %q", got, want)
	}
	_ = b
}

// waitStopped waits until the process is stopped by a signal (state T).
func waitStopped(t *testing.T, p *aggProc, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
		if err != nil {
			t.Skipf("no /proc here: %v", err)
		}
		// pid (comm) STATE ...: comm may hold spaces; the state follows
		// the last ')'.
		s := string(stat)
		if i := strings.LastIndexByte(s, ')'); i >= 0 && len(s) > i+2 && s[i+2] == 'T' {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not stop itself after the commit; its log:\n%s", p.id, tail(p.stderr.String(), 8<<10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitRoomEvents waits until RTC_EVENTS holds at least n events of room.
func (e *env) waitRoomEvents(room id.RoomID, n int, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for len(e.sessionEvents()[room]) < n {
		if time.Now().After(deadline) {
			e.t.Fatalf("room %s: %d events after %s, want %d", room, len(e.sessionEvents()[room]), timeout, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// liveSession reports whether rtc_sessions holds key as a live session.
func (e *env) liveSession(key string) bool {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.h.Sessions.Get(ctx, key)
	switch {
	case err == nil:
		return true
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return false
	default:
		e.t.Fatalf("get %s: %v", key, err)
		return false
	}
}
