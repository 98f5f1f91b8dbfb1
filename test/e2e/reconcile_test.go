package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/rtcsessions/rtc-sessions/internal/ctlapi"
	"github.com/rtcsessions/rtc-sessions/internal/dendritetest"
	"github.com/rtcsessions/rtc-sessions/internal/e2etest"
	"github.com/rtcsessions/rtc-sessions/internal/proctest"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/testutil"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// reconcileStack is an appservice stack whose ingest also has the
// registration's as_token (reconciliation reads room state as the
// appservice's sender user, @rtcwatch:localhost, which joins the call
// rooms as the stack's bot) and a fixed appservice address, so that it can
// be stopped and started again where Dendrite pushes.
type reconcileStack struct {
	*stack
	listenAddr string
	cfgPath    string
}

// startReconcileStack registers the ingest as Dendrite's appservice (every
// room's events pushed) and starts it with reconciliation at start, on
// demand, and no periodic passes (so that a repair in the test is the one
// the test causes).
func startReconcileStack(t *testing.T) *reconcileStack {
	dendritetest.Require(t)
	s := &reconcileStack{stack: &stack{t: t}, listenAddr: testutil.FreePort(t)}
	s.startPipeline()
	hsToken, asToken := dendritetest.RandomToken(t), dendritetest.RandomToken(t)
	dir := t.TempDir()
	reg := dendritetest.WriteRegistration(t, hsName, "http://"+s.listenAddr, asToken, hsToken)
	s.hs = dendritetest.Start(t, dendritetest.Options{Appservices: []string{reg}})

	// The appservice's sender user acts through the as_token; it is the
	// stack's bot, so callRoom invites it and it joins.
	bot, err := mautrix.NewClient(s.hs.URL(), s.hs.UserID("rtcwatch"), asToken)
	if err != nil {
		t.Fatal(err)
	}
	s.bot = bot

	for name, tok := range map[string]string{"hs_token": hsToken, "as_token": asToken} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s.cfgPath = filepath.Join(dir, "ingest.yaml")
	cfg := fmt.Sprintf(`log: {format: json, level: info}
nats: {urls: [%q], name: ingest-reconcile}
topology: {partitions: %d, mode: create}
metrics_addr: %q
appservice: {listen_addr: %q}
publish: {ack_timeout: 2s}
reconcile:
  at_start: true
  interval: 0s
  on_demand: true
  requests_per_second: 50
  request_timeout: 10s
homeservers:
  - name: %s
    url: %q
    hs_token_file: %q
    as_token_file: %q
`, s.nats.URL(), partitions, testutil.FreePort(t), s.listenAddr, hsName, s.hs.URL(),
		filepath.Join(dir, "hs_token"), filepath.Join(dir, "as_token"))
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s.startReconcileIngest()
	return s
}

// startReconcileIngest starts `ingest serve` with the stack's configuration
// (same appservice address every time) and waits until it is ready.
func (s *reconcileStack) startReconcileIngest() {
	s.t.Helper()
	s.starts++
	metrics := ""
	for _, line := range strings.Split(mustRead(s.t, s.cfgPath), "\n") {
		if v, ok := strings.CutPrefix(line, "metrics_addr: "); ok {
			metrics = strings.Trim(v, `"`)
		}
	}
	p, err := s.h.Start(fmt.Sprintf("ingest reconcile#%d", s.starts), s.h.Bins.Ingest, []string{"serve", "-config", s.cfgPath})
	if err != nil {
		s.t.Fatal(err)
	}
	s.ingest = &proctest.Ingest{Proc: p, AppserviceAddr: s.listenAddr, MetricsAddr: metrics}
	if err := s.ingest.WaitReady(waitTimeout); err != nil {
		s.t.Fatal(err)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// rtcctl runs the rtcctl binary against the stack's NATS server and
// returns its output; it fails the test if rtcctl fails.
func (s *reconcileStack) rtcctl(args ...string) string { return runRTCCtl(s.stack, args...) }

func runRTCCtl(s *stack, args ...string) string {
	s.t.Helper()
	p, err := s.h.Start("rtcctl "+strings.Join(args, " "), s.h.Bins.RTCCtl, append([]string{"--server", s.nats.URL()}, args...))
	if err != nil {
		s.t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(waitTimeout):
		_ = p.Kill()
		s.t.Fatalf("rtcctl %v: still running after %s", args, waitTimeout)
	}
	if err := p.Err(); err != nil {
		s.t.Fatalf("rtcctl %v: %v\n%s", args, err, p.Output())
	}
	return p.Output()
}

// waitMetric waits until the ingest's series reaches at least want.
func (s *reconcileStack) waitMetric(series string, want float64) {
	s.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		got := s.ingestMetric(series)
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s = %g after %s, want at least %g", series, got, waitTimeout, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const (
	reconcileStartPasses = `rtc_ingest_reconcile_passes_total{trigger="start"}`
	reconcileRequests    = `rtc_ingest_reconcile_passes_total{trigger="request"}`
	reconcileRooms       = `rtc_ingest_reconcile_rooms_total{homeserver="hs1"}`
	reconcileStored      = `rtc_ingest_reconcile_events_stored_total{homeserver="hs1"}`
)

// TestReconcileRepairsMissedLeaveAndRedaction: the ingest is Dendrite's
// appservice. Alice and Bob join a call. While the ingest is down, Bob
// hangs up, and Dendrite is restarted: its appservice consumer starts from
// "new", so Bob's leave is never pushed. The ingest's start pass reads the
// room's state (the room has a live session) and repairs it: Bob leaves
// (reason leave). Then Alice's membership is redacted: Dendrite never
// pushes redactions to appservices, so nothing changes, until `rtcctl
// reconcile ROOM` re-reads the state, whose copy of Alice's event is
// redacted: Alice leaves (reason redacted) and the session ends.
func TestReconcileRepairsMissedLeaveAndRedaction(t *testing.T) {
	s := startReconcileStack(t)
	alice := s.hs.NewUser(t, "alice", "ALICEDEV")
	bob := s.hs.NewUser(t, "bob", "BOBDEV")
	room := s.callRoom(alice, bob)

	aliceJoin := joinCall(t, alice, room)
	s.waitSessionEvents(room, 2)
	bobJoin := joinCall(t, bob, room)
	a, b := e2etest.Of(alice), e2etest.Of(bob)
	want := []e2etest.Step{e2etest.Started(), e2etest.Joined(a, 1, 1), e2etest.Joined(b, 2, 2)}
	e2etest.Check(t, s.waitSessionEvents(room, 3), want)
	if got := s.ingestMetric(reconcileRooms); got != 0 {
		t.Fatalf("%s = %g before any live session existed at a start, want 0", reconcileRooms, got)
	}

	// The missed leave.
	s.stopIngest()
	bobLeave := hangUp(t, bob, room)
	if err := s.hs.Restart(); err != nil {
		t.Fatalf("restart dendrite: %v", err)
	}
	s.startReconcileIngest()
	s.waitMetric(reconcileStartPasses, 1)
	s.waitMetric(reconcileRooms, 1)
	evs := s.waitSessionEvents(room, 4)
	want = append(want, e2etest.Left(b, events.ReasonLeave, 1, 1))
	e2etest.Check(t, evs, want)
	if e := evs[3]; e.Member.EventID != bobJoin || e.At <= evs[2].At {
		t.Errorf("bob left as %s at %d, want his membership %s ending after it began", e.Member.EventID, e.At, bobJoin)
	}
	raws := s.rawEvents(room)
	if got := countRaw(raws, bobLeave); got[rawevent.SourceReconcile] != 1 || len(got) != 1 {
		t.Fatalf("bob's leave stored as %v, want once, by reconciliation (never pushed)", got)
	}
	if got := countRaw(raws, aliceJoin); got[rawevent.SourceAppservice] != 1 || len(got) != 1 {
		t.Errorf("alice's join stored as %v, want once (pushed; the reconcile copy is a duplicate)", got)
	}
	if got := s.ingestMetric(reconcileStored); got < 1 {
		t.Errorf("%s = %g, want at least 1", reconcileStored, got)
	}

	// The missed redaction. The push still works (a live event after the
	// restart reaches the ingest), but the redaction is never pushed.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	redaction, err := alice.RedactEvent(ctx, room, aliceJoin)
	if err != nil {
		t.Fatalf("redact alice's membership: %v", err)
	}
	probe := joinCall(t, bob, room) // bob rejoins: pushed live, after the redaction
	evs = s.waitSessionEvents(room, 5)
	want = append(want, e2etest.Joined(b, 2, 2).Event(probe))
	e2etest.Check(t, evs, want)
	raws = s.rawEvents(room)
	if got := countRaw(raws, probe); got[rawevent.SourceAppservice] != 1 {
		t.Fatalf("bob's rejoin stored as %v, want pushed", got)
	}
	if got := countRaw(raws, redaction.EventID); len(got) != 0 {
		t.Fatalf("the redaction %s reached RTC_RAW (%v): Dendrite was expected not to push it", redaction.EventID, got)
	}

	out := s.rtcctl("reconcile", string(room))
	if !strings.Contains(out, "reconciled from "+hsName) {
		t.Fatalf("rtcctl reconcile: %q", out)
	}
	s.waitMetric(reconcileRequests, 1)
	evs = s.waitSessionEvents(room, 6)
	// Alice leaves with her redacted membership.
	want = append(want, e2etest.Left(a, events.ReasonRedacted, 1, 1).Event(aliceJoin))
	e2etest.Check(t, evs, want)
	var redacted []rawevent.RawEvent
	for _, r := range s.rawEvents(room) {
		if r.EventID == aliceJoin && r.RedactedBy != "" {
			redacted = append(redacted, r)
		}
	}
	// Dendrite's unsigned.redacted_because is the redaction as a PDU,
	// without event_id (room versions 4+ derive it from the hash): the
	// copy names no redaction ("$unknown"), only its time.
	if len(redacted) != 1 || redacted[0].Source != rawevent.SourceReconcile || redacted[0].MsgID() != string(aliceJoin)+"#redacted" ||
		redacted[0].RedactedAt < redacted[0].OriginServerTS {
		t.Fatalf("alice's redacted copy (redaction %s) stored as %+v, want once, by reconciliation", redaction.EventID, redacted)
	}
	// A second request finds nothing new: every state event is already
	// in RTC_RAW.
	out = s.rtcctl("reconcile", string(room))
	if !strings.Contains(out, "0 new in RTC_RAW") {
		t.Errorf("second rtcctl reconcile: %q, want nothing new", out)
	}
	s.settled()
	if got := len(s.sessionEvents(room)); got != 6 {
		t.Errorf("%d session events after the second reconcile, want still 6:%s", got, e2etest.Describe(s.sessionEvents(room)))
	}
}

// TestReconcileSyncBot: with no appservice, the sync bot reads the room
// state for reconciliation with its own token: `rtcctl reconcile
// --homeserver hs1 --json ROOM` reads the call member and its sender's room
// membership through the bot, and everything is already in RTC_RAW (the
// bot's /sync delivered it): nothing new, no session event.
func TestReconcileSyncBot(t *testing.T) {
	s := startSyncStack(t)
	alice := s.hs.NewUser(t, "alice", "ALICEDEV")
	room := s.callRoom(alice)
	s.startIngest()
	aliceJoin := joinCall(t, alice, room)
	s.waitSessionEvents(room, 2)

	out := runRTCCtl(s, "reconcile", "--homeserver", hsName, "--json", string(room))
	var reply ctlapi.ReconcileReply
	if err := json.Unmarshal([]byte(out), &reply); err != nil {
		t.Fatalf("rtcctl reconcile --json: %v\n%s", err, out)
	}
	if reply.Error != "" || len(reply.Attempts) != 1 || reply.Attempts[0].Homeserver != hsName ||
		reply.Attempts[0].Events != 2 || reply.Attempts[0].Stored != 0 || reply.Attempts[0].Duplicates != 2 {
		t.Fatalf("reply %+v: want alice's call member and her room membership, both already stored", reply)
	}
	s.settled()
	e2etest.Check(t, s.sessionEvents(room), []e2etest.Step{
		e2etest.Started(),
		e2etest.Joined(e2etest.Of(alice), 1, 1),
	})
	if got := countRaw(s.rawEvents(room), aliceJoin); len(got) != 1 || got[rawevent.SourceReconcile] != 0 {
		t.Errorf("alice's join stored as %v, want once, not by the reconciliation", got)
	}
}
