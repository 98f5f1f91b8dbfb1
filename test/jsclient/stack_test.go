package jsclient

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/dendritetest"
	"github.com/rtcsessions/rtc-sessions/internal/e2etest"
	"github.com/rtcsessions/rtc-sessions/internal/proctest"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// waitTimeout bounds one wait for the pipeline or a client: generous for a
// loaded machine; a passing run needs a fraction of it.
const waitTimeout = 30 * time.Second

const partitions = 8

// stack is the federated deployment of test/e2e: two federating Dendrites,
// each with the ingest registered as its appservice (one ingest process
// for both), a nats-server and two aggregator processes.
type stack struct {
	t        *testing.T
	h        *proctest.Harness
	nats     *proctest.NATSServer
	js       jetstream.JetStream
	hs1, hs2 *dendritetest.Server
	users    int
}

func startStack(t *testing.T) *stack {
	t.Helper()
	s := &stack{t: t, h: proctest.New(t)}
	s.h.DumpLines = 60
	s.nats = s.h.StartNATS("")
	var aggs []*proctest.Aggregator
	for i := range 2 {
		a, err := s.h.StartAggregator(proctest.AggregatorConfig{ID: fmt.Sprintf("agg-%d", i+1),
			NATSURL: s.nats.URL(), Partitions: partitions})
		if err != nil {
			t.Fatal(err)
		}
		aggs = append(aggs, a)
	}
	for _, a := range aggs {
		if err := a.WaitReady(waitTimeout); err != nil {
			t.Fatal(err)
		}
	}
	_, s.js = s.nats.Connect()
	tokens := map[string]string{"hs1": dendritetest.RandomToken(t), "hs2": dendritetest.RandomToken(t)}
	in, err := s.h.StartIngest(proctest.IngestConfig{Name: "jsclient", NATSURL: s.nats.URL(), Partitions: partitions,
		HSTokens: tokens}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := in.WaitReady(waitTimeout); err != nil {
		t.Fatal(err)
	}
	reg := func(name string) []string {
		return []string{dendritetest.WriteRegistration(t, name, in.URL(), dendritetest.RandomToken(t), tokens[name])}
	}
	s.hs1 = dendritetest.Start(t, dendritetest.Options{Federation: true, Appservices: reg("hs1")})
	s.hs2 = dendritetest.Start(t, dendritetest.Options{Federation: true, Appservices: reg("hs2")})
	t.Logf("hs1 is %s (client API %s), hs2 is %s (client API %s)", s.hs1.Name, s.hs1.URL(), s.hs2.Name, s.hs2.URL())
	return s
}

// account is a registered user a node client logs in as.
type account struct {
	hs        *dendritetest.Server
	localpart string
	userID    id.UserID
}

// register creates a user on hs with the shared secret (a localpart no
// other scenario uses).
func (s *stack) register(t *testing.T, hs *dendritetest.Server, name string) account {
	t.Helper()
	s.users++
	lp := fmt.Sprintf("%s%d", name, s.users)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	uid, _, err := hs.Register(ctx, lp, dendritetest.Password(lp))
	if err != nil {
		t.Fatal(err)
	}
	return account{hs: hs, localpart: lp, userID: uid}
}

// host registers a user of hs who is in no call: it creates the scenario's
// room (on hs), invites the callers and re-invites after a leave.
func (s *stack) host(t *testing.T, hs *dendritetest.Server) *mautrix.Client {
	t.Helper()
	s.users++
	return hs.NewUser(t, fmt.Sprintf("host%d", s.users), "HOSTDEV")
}

// room creates a call room of host's homeserver inviting users.
func (s *stack) room(t *testing.T, host *mautrix.Client, users ...account) id.RoomID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var invite []id.UserID
	for _, u := range users {
		invite = append(invite, u.userID)
	}
	room, err := dendritetest.CreateCallRoom(ctx, host, invite...)
	if err != nil {
		t.Fatal(err)
	}
	return room
}

// client starts a node client for a on its homeserver, joining room
// through via (the room's homeserver), with extra settings in cfg.
func (s *stack) client(t *testing.T, a account, device string, room id.RoomID, via *dendritetest.Server, cfg clientConfig) *jsClient {
	t.Helper()
	cfg.HS, cfg.User, cfg.Password, cfg.Device = a.hs.URL(), a.localpart, dendritetest.Password(a.localpart), device
	cfg.Room, cfg.Via = string(room), via.Name
	c := startClient(t, a.localpart+"/"+device, cfg)
	if c.Ready.UserID != string(a.userID) || c.Ready.DeviceID != device || (c.Ready.EventID == "") != cfg.Observe {
		t.Fatalf("node client %s is ready as %+v", c.Name, c.Ready)
	}
	return c
}

// memberView is a member of a live session as `rtcctl sessions --json`
// prints it.
type memberView struct {
	UserID       string `json:"user_id"`
	DeviceID     string `json:"device_id"`
	MembershipID string `json:"membership_id"`
	JoinedAt     int64  `json:"joined_at"`
	ExpiresAt    int64  `json:"expires_at"`
	EventID      string `json:"event_id"`
	CallIntent   string `json:"call_intent"`
	Format       string `json:"format"`
}

// liveView is a live session as `rtcctl sessions --json` prints it.
type liveView struct {
	SessionID    string       `json:"session_id"`
	RoomID       string       `json:"room_id"`
	Application  string       `json:"application"`
	CallID       string       `json:"call_id"`
	StartedAt    int64        `json:"started_at"`
	Members      []memberView `json:"members"`
	Participants int          `json:"participants"`
	Users        int          `json:"users"`
	Seq          uint64       `json:"seq"`
}

// liveSessions runs `rtcctl sessions --json` (the binary operators use)
// and returns room's live sessions.
func (s *stack) liveSessions(t *testing.T, room id.RoomID) []liveView {
	t.Helper()
	var all []liveView
	s.rtcctlJSON(t, &all, "sessions", "--json")
	var mine []liveView
	for _, l := range all {
		if l.RoomID == string(room) {
			mine = append(mine, l)
		}
	}
	return mine
}

// rtcctlJSON runs rtcctl against the stack's nats-server with args and
// decodes its standard output into v.
func (s *stack) rtcctlJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := e2etest.RTCCtlJSON(ctx, s.h.Bins.RTCCtl, s.nats.URL(), v, args...); err != nil {
		t.Fatal(err)
	}
}

// sessionEvents reads every session event of room stored in RTC_EVENTS so
// far, in stream order.
func (s *stack) sessionEvents(t *testing.T, room id.RoomID) []events.SessionEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	evs, err := e2etest.SessionEvents(ctx, s.js, room)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}
