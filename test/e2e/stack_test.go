package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/dendritetest"
	"github.com/rtcsessions/rtc-sessions/internal/e2etest"
	"github.com/rtcsessions/rtc-sessions/internal/proctest"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// waitTimeout bounds every wait for the pipeline: generous, because the
// machine may be loaded; a passing run takes a fraction of it.
const waitTimeout = 60 * time.Second

const partitions = 8

var callMemberType = event.Type{Type: "org.matrix.msc3401.call.member", Class: event.StateEventType}

// stack is one Dendrite, a standalone nats-server, an aggregator and an
// ingest: startSyncStack gives the ingest a bot account's /sync as its only
// source (no appservice; the test starts the ingest with startIngest, so
// that it can prepare room state before the initial sync),
// startAppserviceStack registers the ingest as Dendrite's appservice.
type stack struct {
	t      *testing.T
	hs     *dendritetest.Server
	h      *proctest.Harness
	nats   *proctest.NATSServer
	js     jetstream.JetStream
	bot    *mautrix.Client
	ingest *proctest.Ingest
	// ingestCfg is the ingest's configuration (one sync homeserver: the
	// bot); stateDir holds its sync token file, kept across restarts.
	ingestCfg proctest.IngestConfig
	stateDir  string
	starts    int
}

const hsName = "hs1"

func startSyncStack(t *testing.T) *stack {
	dendritetest.Require(t)
	s := &stack{t: t, hs: dendritetest.Start(t, dendritetest.Options{})}
	s.bot = s.hs.NewUser(t, "rtcbot", "RTCBOT")
	s.startPipeline()
	s.writeIngestConfig()
	return s
}

// startPipeline starts a nats-server and an aggregator on it, and connects.
func (s *stack) startPipeline() {
	s.t.Helper()
	s.h = proctest.New(s.t)
	s.nats = s.h.StartNATS("")
	agg, err := s.h.StartAggregator(proctest.AggregatorConfig{ID: "agg-1", NATSURL: s.nats.URL(), Partitions: partitions})
	if err != nil {
		s.t.Fatal(err)
	}
	if err := agg.WaitReady(waitTimeout); err != nil {
		s.t.Fatal(err)
	}
	_, s.js = s.nats.Connect()
}

// writeIngestConfig sets the ingest's configuration: no appservice
// homeserver, one sync homeserver (the bot), short long-polls so that a
// stop is quick (proctest writes it).
func (s *stack) writeIngestConfig() {
	s.stateDir = filepath.Join(s.t.TempDir(), "sync-state")
	s.ingestCfg = proctest.IngestConfig{Name: "e2e", NATSURL: s.nats.URL(), Partitions: partitions,
		SyncStateDir: s.stateDir, Sync: []proctest.SyncHomeserver{{Name: hsName, URL: s.hs.URL(),
			UserID: string(s.bot.UserID), AccessToken: s.bot.AccessToken, DeviceID: "RTCBOT"}}}
}

// startIngest starts `ingest serve` with the stack's configuration and
// waits until it is ready.
func (s *stack) startIngest() {
	s.t.Helper()
	s.starts++
	cfg := s.ingestCfg
	cfg.Name = fmt.Sprintf("e2e#%d", s.starts)
	in, err := s.h.StartIngest(cfg, "")
	if err != nil {
		s.t.Fatal(err)
	}
	s.ingest = in
	if err := s.ingest.WaitReady(waitTimeout); err != nil {
		s.t.Fatal(err)
	}
}

// stopIngest stops the ingest gracefully (SIGTERM).
func (s *stack) stopIngest() {
	s.t.Helper()
	if err := s.ingest.Stop(30 * time.Second); err != nil {
		s.t.Fatalf("stop the ingest: %v", err)
	}
}

// ingestMetric reads one series of the running ingest's /metrics (0 when
// absent).
func (s *stack) ingestMetric(series string) float64 {
	s.t.Helper()
	resp, err := http.Get("http://" + s.ingest.MetricsAddr + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if name, v, ok := strings.Cut(line, " "); ok && name == series {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				s.t.Fatalf("metric %s: %v", line, err)
			}
			return f
		}
	}
	if err := sc.Err(); err != nil {
		s.t.Fatal(err)
	}
	return 0
}

// callRoom creates a room by owner in which the bot (if any) and the
// members are invited; they join it.
func (s *stack) callRoom(owner *mautrix.Client, members ...*mautrix.Client) id.RoomID {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var invite []id.UserID
	joiners := members
	if s.bot != nil {
		invite = append(invite, s.bot.UserID)
		joiners = append([]*mautrix.Client{s.bot}, members...)
	}
	for _, m := range members {
		invite = append(invite, m.UserID)
	}
	room, err := dendritetest.CreateCallRoom(ctx, owner, invite...)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, c := range joiners {
		if _, err := c.JoinRoomByID(ctx, room); err != nil {
			s.t.Fatalf("%s joins %s: %v", c.UserID, room, err)
		}
	}
	return room
}

// callKey is Element Call's per-device state key.
func callKey(c *mautrix.Client) string {
	return "_" + string(c.UserID) + "_" + string(c.DeviceID) + "_m.call"
}

// joinCall sends c's Element Call membership (per-device session form,
// expires 4 h) and returns its event id.
func joinCall(t *testing.T, c *mautrix.Client, room id.RoomID) id.EventID {
	t.Helper()
	content := map[string]any{"application": "m.call", "call_id": "", "scope": "m.room", "device_id": c.DeviceID,
		"expires": 14400000, "focus_active": map[string]any{"type": "livekit", "focus_selection": "oldest_membership"},
		"foci_preferred": []any{map[string]any{"type": "livekit", "livekit_service_url": "https://sfu.example"}}}
	return sendState(t, c, room, callKey(c), content)
}

// hangUp sends c's leave: {} on its key.
func hangUp(t *testing.T, c *mautrix.Client, room id.RoomID) id.EventID {
	t.Helper()
	return sendState(t, c, room, callKey(c), map[string]any{})
}

// sendState sends a call member state event.
func sendState(t *testing.T, c *mautrix.Client, room id.RoomID, key string, content any) id.EventID {
	t.Helper()
	return sendTyped(t, c, room, callMemberType, key, content)
}

// sessionEvents reads every session event of room stored in RTC_EVENTS so
// far, in stream order.
func (s *stack) sessionEvents(room id.RoomID) []events.SessionEvent {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	evs, err := e2etest.SessionEvents(ctx, s.js, room)
	if err != nil {
		s.t.Fatal(err)
	}
	return evs
}

// rawEvents reads every input of room stored in RTC_RAW so far.
func (s *stack) rawEvents(room id.RoomID) []rawevent.RawEvent {
	s.t.Helper()
	var out []rawevent.RawEvent
	for _, m := range s.storedMessages(rawevent.StreamRaw, rawevent.PartPrefix+".*."+rawevent.RoomKey(room)) {
		ev, err := rawevent.DecodeRaw(m.Data())
		if err != nil {
			s.t.Fatalf("%s: %v", m.Subject(), err)
		}
		out = append(out, ev)
	}
	return out
}

// storedMessages reads the messages of stream matching filter stored so
// far.
func (s *stack) storedMessages(stream, filter string) []jetstream.Msg {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	msgs, err := e2etest.Stored(ctx, s.js, stream, filter)
	if err != nil {
		s.t.Fatal(err)
	}
	return msgs
}

// settled waits until the aggregator has applied every input stored in
// RTC_RAW (no durable consumer of RTC_RAW has pending or unacknowledged
// messages):
// the outbox of an input is published before the input is acknowledged,
// so RTC_EVENTS then holds every transition of what reached RTC_RAW.
func (s *stack) settled() {
	s.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		busy, err := s.rawBacklog()
		if err == nil && busy == "" {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("RTC_RAW not drained within %s: %s %v", waitTimeout, busy, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *stack) rawBacklog() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := s.js.Stream(ctx, rawevent.StreamRaw)
	if err != nil {
		return "", fmt.Errorf("stream %s: %w", rawevent.StreamRaw, err)
	}
	lister := st.ListConsumers(ctx)
	var busy []string
	for ci := range lister.Info() {
		// Only the aggregator's durable partition consumers: the ordered
		// consumers this test reads with are ephemeral and never ack.
		if ci.Config.Durable == "" {
			continue
		}
		if ci.NumPending > 0 || ci.NumAckPending > 0 {
			busy = append(busy, fmt.Sprintf("%s: %d pending, %d unacked", ci.Name, ci.NumPending, ci.NumAckPending))
		}
	}
	if err := lister.Err(); err != nil {
		return "", fmt.Errorf("consumers of %s: %w", rawevent.StreamRaw, err)
	}
	return strings.Join(busy, "; "), nil
}

// waitSessionEvents waits until room has at least n session events, lets
// the aggregator apply everything already in RTC_RAW, and returns them
// all (so that an extra event shows up as a mismatch).
func (s *stack) waitSessionEvents(room id.RoomID, n int) []events.SessionEvent {
	s.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		evs := s.sessionEvents(room)
		if len(evs) >= n {
			s.settled()
			return s.sessionEvents(room)
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%d of %d session events of %s within %s:%s", len(evs), n, room, waitTimeout, e2etest.Describe(evs))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countRaw counts the inputs of evs with event id eid, by source.
func countRaw(evs []rawevent.RawEvent, eid id.EventID) map[rawevent.Source]int {
	out := map[rawevent.Source]int{}
	for _, e := range evs {
		if e.EventID == eid {
			out[e.Source]++
		}
	}
	return out
}

// twoPersonCall is the session events of a call that alice starts, bob
// joins, then bob and alice hang up, in that order.
func twoPersonCall(alice, bob *mautrix.Client) []e2etest.Step {
	a, b := e2etest.Of(alice), e2etest.Of(bob)
	return []e2etest.Step{e2etest.Started(), e2etest.Joined(a, 1, 1), e2etest.Joined(b, 2, 2),
		e2etest.Left(b, events.ReasonLeave, 1, 1), e2etest.Left(a, events.ReasonLeave, 0, 0), e2etest.Ended(events.ReasonLeave)}
}
