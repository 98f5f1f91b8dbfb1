package e2e

import (
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/dendritetest"
	"github.com/rtcsessions/rtc-sessions/internal/e2etest"
	"github.com/rtcsessions/rtc-sessions/internal/proctest"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// startAppserviceStack runs the ingest as an appservice registered with a
// Dendrite (rooms namespace .*, so every room's events are pushed), with
// an aggregator on a nats-server; no sync bot.
func startAppserviceStack(t *testing.T) *stack {
	dendritetest.Require(t)
	s := &stack{t: t}
	s.startPipeline()
	hsToken, asToken := dendritetest.RandomToken(t), dendritetest.RandomToken(t)
	var err error
	s.ingest, err = s.h.StartIngest(proctest.IngestConfig{Name: "as", NATSURL: s.nats.URL(), Partitions: partitions,
		HSTokens: map[string]string{hsName: hsToken}}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ingest.WaitReady(waitTimeout); err != nil {
		t.Fatal(err)
	}
	reg := dendritetest.WriteRegistration(t, hsName, s.ingest.URL(), asToken, hsToken)
	s.hs = dendritetest.Start(t, dendritetest.Options{Appservices: []string{reg}})
	return s
}

// TestAppserviceCall: Dendrite pushes a call to the ingest registered as
// its appservice: two Element Call clients join and hang up; the exact
// session events follow, and every membership reached RTC_RAW once, pushed
// (source appservice).
func TestAppserviceCall(t *testing.T) {
	s := startAppserviceStack(t)
	alice := s.hs.NewUser(t, "alice", "ALICEDEV")
	bob := s.hs.NewUser(t, "bob", "BOBDEV")
	room := s.callRoom(alice, bob)

	sent := []id.EventID{joinCall(t, alice, room)}
	s.waitSessionEvents(room, 2)
	sent = append(sent, joinCall(t, bob, room))
	s.waitSessionEvents(room, 3)
	sent = append(sent, hangUp(t, bob, room))
	s.waitSessionEvents(room, 4)
	sent = append(sent, hangUp(t, alice, room))
	evs := s.waitSessionEvents(room, 6)
	e2etest.Check(t, evs, twoPersonCall(alice, bob))
	raws := s.rawEvents(room)
	for _, eid := range sent {
		if got := countRaw(raws, eid); got[rawevent.SourceAppservice] != 1 || len(got) != 1 {
			t.Errorf("membership %s stored as %v, want once, pushed by the appservice API", eid, got)
		}
	}
}
