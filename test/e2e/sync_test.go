package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/e2etest"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

const (
	receivedSyncState = `rtc_ingest_events_received_total{homeserver="hs1",source="sync_state"}`
	receivedSync      = `rtc_ingest_events_received_total{homeserver="hs1",source="sync"}`
	duplicates        = `rtc_ingest_events_duplicate_total{homeserver="hs1",source="sync"}`
	duplicatesState   = `rtc_ingest_events_duplicate_total{homeserver="hs1",source="sync_state"}`
)

// TestSyncSourceCall: a call acted out by two Element Call clients, seen by
// the ingest only through a bot's /sync. Alice joins before the ingest
// starts (her membership reaches it in the initial sync's room state), Bob
// joins live, both hang up with {}: exactly session_started,
// member_joined ×2, member_left ×2 (leave) and session_ended (leave).
func TestSyncSourceCall(t *testing.T) {
	s := startSyncStack(t)
	alice := s.hs.NewUser(t, "alice", "ALICEDEV")
	bob := s.hs.NewUser(t, "bob", "BOBDEV")
	room := s.callRoom(alice, bob)

	aliceJoin := joinCall(t, alice, room)
	s.startIngest()
	e2etest.Check(t, s.waitSessionEvents(room, 2), []e2etest.Step{
		e2etest.Started(),
		e2etest.Joined(e2etest.Of(alice), 1, 1),
	})
	// The initial sync carries it in the timeline or the state block
	// (Dendrite: the timeline, as it is recent), never both.
	if got := countRaw(s.rawEvents(room), aliceJoin); got[rawevent.SourceSyncState]+got[rawevent.SourceSync] != 1 || len(got) != 1 {
		t.Errorf("alice's join (sent before the ingest started) stored as %v, want once from the initial sync", got)
	}

	bobJoin := joinCall(t, bob, room)
	s.waitSessionEvents(room, 3)
	hangUp(t, bob, room)
	s.waitSessionEvents(room, 4)
	hangUp(t, alice, room)
	evs := s.waitSessionEvents(room, 6)
	want := twoPersonCall(alice, bob)
	want[2] = want[2].Event(bobJoin)
	e2etest.Check(t, evs, want)
	if sum := evs[5].Summary; sum.EndedAt < sum.StartedAt {
		t.Errorf("session_ended summary %+v ends before it starts", sum)
	}
	if got := countRaw(s.rawEvents(room), bobJoin); got[rawevent.SourceSync] != 1 || len(got) != 1 {
		t.Errorf("bob's live join stored as %v, want once from the timeline", got)
	}
}

// TestSyncSourceRedaction: a membership redacted by the room's admin ends
// it with reason redacted. Dendrite never pushes redactions to
// appservices; /sync delivers them.
func TestSyncSourceRedaction(t *testing.T) {
	s := startSyncStack(t)
	alice := s.hs.NewUser(t, "alice", "ALICEDEV")
	bob := s.hs.NewUser(t, "bob", "BOBDEV")
	room := s.callRoom(alice, bob)
	s.startIngest()

	bobJoin := joinCall(t, bob, room)
	s.waitSessionEvents(room, 2)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	red, err := alice.RedactEvent(ctx, room, bobJoin)
	if err != nil {
		t.Fatalf("alice redacts bob's membership %s: %v", bobJoin, err)
	}
	e2etest.Check(t, s.waitSessionEvents(room, 4), []e2etest.Step{
		e2etest.Started(),
		e2etest.Joined(e2etest.Of(bob), 1, 1),
		e2etest.Left(e2etest.Of(bob), events.ReasonRedacted, 0, 0),
		e2etest.Ended(events.ReasonRedacted),
	})
	var redaction *rawevent.RawEvent
	raws := s.rawEvents(room)
	for i := range raws {
		if raws[i].EventID == red.EventID {
			redaction = &raws[i]
		}
	}
	if redaction == nil || redaction.Type != "m.room.redaction" || redaction.Redacts != bobJoin || redaction.Source != rawevent.SourceSync {
		t.Errorf("the redaction %s in RTC_RAW: %+v", red.EventID, redaction)
	}
}

// TestSyncSourceResumesAfterRestart: the ingest stops mid-call; while it is
// down Bob joins and Alice hangs up; the restarted ingest resumes from the
// persisted next_batch token (no initial sync again: no room state is
// re-read, nothing is published twice) and every event sent while it was
// down arrives exactly once.
func TestSyncSourceResumesAfterRestart(t *testing.T) {
	s, alice, bob, room := callThenIngestDown(t)
	tokenFile := filepath.Join(s.stateDir, hsName+".next_batch")
	token, err := os.ReadFile(tokenFile)
	if err != nil || len(token) == 0 {
		t.Fatalf("no sync token persisted after a clean stop: %q, %v", token, err)
	}

	bobJoin := joinCall(t, bob, room)
	aliceLeave := hangUp(t, alice, room)
	s.startIngest()
	a, b := e2etest.Of(alice), e2etest.Of(bob)
	want := []e2etest.Step{e2etest.Started(), e2etest.Joined(a, 1, 1), e2etest.Joined(b, 2, 2).Event(bobJoin),
		e2etest.Left(a, events.ReasonLeave, 1, 1)}
	e2etest.Check(t, s.waitSessionEvents(room, 4), want)
	raws := s.rawEvents(room)
	for _, eid := range []id.EventID{bobJoin, aliceLeave} {
		if got := countRaw(raws, eid); got[rawevent.SourceSync] != 1 || len(got) != 1 {
			t.Errorf("event %s, sent while the ingest was down, stored as %v: want once from the timeline", eid, got)
		}
	}
	// The restarted ingest resumed: it re-read no room state and published
	// nothing JetStream already had.
	for _, series := range []string{receivedSyncState, duplicates, duplicatesState} {
		if v := s.ingestMetric(series); v != 0 {
			t.Errorf("restarted ingest: %s = %v, want 0 (it resumed from the token)", series, v)
		}
	}
	if v := s.ingestMetric(receivedSync); v < 2 {
		t.Errorf("restarted ingest: %s = %v, want at least the 2 events sent while it was down", receivedSync, v)
	}

	hangUp(t, bob, room)
	e2etest.Check(t, s.waitSessionEvents(room, 6), append(want, e2etest.Left(b, events.ReasonLeave, 0, 0),
		e2etest.Ended(events.ReasonLeave)))
}

// fillerEvents is more than the sync filter's timeline limit (100): a sync
// across them is limited (gappy).
const fillerEvents = 110

// TestSyncSourceGappySync: while the ingest is down Bob joins, then more
// forwarded events than the timeline limit follow, so the resumed /sync is
// limited: Bob's join is only in its state block, which the ingest must
// forward (source sync_state) for Bob to count.
func TestSyncSourceGappySync(t *testing.T) {
	s, alice, bob, room := callThenIngestDown(t)

	bobJoin := joinCall(t, bob, room)
	// Forwarded events that change no call: leaves ({}) of devices alice
	// never joined with, each on a key of its own.
	for i := range fillerEvents {
		sendState(t, alice, room, fmt.Sprintf("_%s_FILLER%03d_m.call", alice.UserID, i), map[string]any{})
	}
	s.startIngest()
	e2etest.Check(t, s.waitSessionEvents(room, 3), []e2etest.Step{
		e2etest.Started(),
		e2etest.Joined(e2etest.Of(alice), 1, 1),
		e2etest.Joined(e2etest.Of(bob), 2, 2),
	})
	if got := countRaw(s.rawEvents(room), bobJoin); got[rawevent.SourceSyncState] != 1 || len(got) != 1 {
		t.Errorf("bob's join before the gap stored as %v, want once from the limited sync's state block", got)
	}

	hangUp(t, bob, room)
	hangUp(t, alice, room)
	e2etest.Check(t, s.waitSessionEvents(room, 6), twoPersonCall(alice, bob))
}

// withoutReconcile turns the ingest's reconciliation off (no pass at start,
// none periodic): a restarted ingest would otherwise re-read the room's
// state first and store what the resumed /sync is to deliver (as source
// reconcile), which is right but leaves the sync path these tests are about
// untested.
func withoutReconcile(s *stack) {
	s.ingestCfg.Env = append(s.ingestCfg.Env, "RTC_INGEST_RECONCILE_AT_START=false", "RTC_INGEST_RECONCILE_INTERVAL=0s")
}

// callThenIngestDown starts a sync-source stack without reconciliation:
// alice starts a call in a room with bob, the ingest stores it, and the
// ingest stops.
func callThenIngestDown(t *testing.T) (*stack, *mautrix.Client, *mautrix.Client, id.RoomID) {
	t.Helper()
	s := startSyncStack(t)
	withoutReconcile(s)
	alice := s.hs.NewUser(t, "alice", "ALICEDEV")
	bob := s.hs.NewUser(t, "bob", "BOBDEV")
	room := s.callRoom(alice, bob)
	s.startIngest()

	joinCall(t, alice, room)
	s.waitSessionEvents(room, 2)
	s.stopIngest()
	return s, alice, bob, room
}
