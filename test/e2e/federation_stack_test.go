package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/dendritetest"
	"github.com/rtcsessions/rtc-sessions/internal/e2etest"
	"github.com/rtcsessions/rtc-sessions/internal/proctest"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// The names the ingest knows the two homeservers by (RawEvent.Homeserver,
// the homeserver label of its metrics).
const (
	fedHS1 = "hs1"
	fedHS2 = "hs2"
)

var rtcMemberType = event.Type{Type: "m.rtc.member", Class: event.StateEventType}

// fedStack is two federating Dendrites (hs1, hs2), each with the ingest
// registered as its appservice (a registration and an hs_token of its own,
// the same ingest URL: one ingest process serves both), a nats-server, the
// ingest and two aggregator processes. The scenarios of one test share it,
// each in rooms of its own; they run as subtests and use on(t), a view of
// the stack whose helpers fail the subtest.
type fedStack struct {
	base      *stack // its t is the test that started the stack
	hs1, hs2  *dendritetest.Server
	ingestCfg proctest.IngestConfig
	aggs      []*proctest.Aggregator // the running aggregators
	aggStarts int
	users     int // users registered so far (unique localparts)
}

func startFederatedStack(t *testing.T) *fedStack {
	dendritetest.Require(t)
	f := &fedStack{base: &stack{t: t}}
	s := f.base
	s.h = proctest.New(t)
	s.h.DumpLines = 60
	s.nats = s.h.StartNATS("")
	var started []*proctest.Aggregator
	for range 2 {
		started = append(started, f.startAggregator(t))
	}
	for _, a := range started {
		if err := a.WaitReady(waitTimeout); err != nil {
			t.Fatal(err)
		}
	}
	_, s.js = s.nats.Connect()

	tokens := map[string]string{fedHS1: dendritetest.RandomToken(t), fedHS2: dendritetest.RandomToken(t)}
	f.ingestCfg = proctest.IngestConfig{Name: "fed", NATSURL: s.nats.URL(), Partitions: partitions, HSTokens: tokens}
	in, err := s.h.StartIngest(f.ingestCfg, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := in.WaitReady(waitTimeout); err != nil {
		t.Fatal(err)
	}
	s.ingest = in
	f.hs1 = dendritetest.Start(t, dendritetest.Options{Federation: true,
		Appservices: []string{dendritetest.WriteRegistration(t, fedHS1, in.URL(), dendritetest.RandomToken(t), tokens[fedHS1])}})
	f.hs2 = dendritetest.Start(t, dendritetest.Options{Federation: true,
		Appservices: []string{dendritetest.WriteRegistration(t, fedHS2, in.URL(), dendritetest.RandomToken(t), tokens[fedHS2])}})
	s.hs = f.hs1
	t.Logf("hs1 is %s (client API %s), hs2 is %s (client API %s); the ingest's appservice listens on %s",
		f.hs1.Name, f.hs1.URL(), f.hs2.Name, f.hs2.URL(), in.URL())
	return f
}

// startAggregator starts one more aggregator process (worker id agg-N) on
// the stack's nats-server; it does not wait for readiness.
func (f *fedStack) startAggregator(t *testing.T) *proctest.Aggregator {
	t.Helper()
	f.aggStarts++
	a, err := f.base.h.StartAggregator(proctest.AggregatorConfig{ID: fmt.Sprintf("agg-%d", f.aggStarts),
		NATSURL: f.base.nats.URL(), Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	f.aggs = append(f.aggs, a)
	return a
}

// on returns a view of the stack whose helpers report to t (a subtest).
func (f *fedStack) on(t *testing.T) *stack {
	cp := *f.base
	cp.t = t
	return &cp
}

// user registers a new user on hs (a localpart no other scenario uses)
// logged in with device.
func (f *fedStack) user(t *testing.T, hs *dendritetest.Server, name string, device id.DeviceID) *mautrix.Client {
	t.Helper()
	f.users++
	return hs.NewUser(t, fmt.Sprintf("%s%d", name, f.users), device)
}

// room creates a call room on owner's homeserver (hs) and lets members of
// either homeserver join it (over federation for hs2's users).
func (f *fedStack) room(t *testing.T, hs *dendritetest.Server, owner *mautrix.Client, members ...*mautrix.Client) id.RoomID {
	t.Helper()
	return f.roomVersion(t, "10", hs, owner, members...)
}

// roomVersion is room with a chosen room version.
func (f *fedStack) roomVersion(t *testing.T, version string, hs *dendritetest.Server, owner *mautrix.Client, members ...*mautrix.Client) id.RoomID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var invite []id.UserID
	for _, m := range members {
		invite = append(invite, m.UserID)
	}
	room, err := dendritetest.CreateCallRoomVersion(ctx, owner, version, invite...)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		f.join(t, hs, m, room)
	}
	return room
}

// join lets c join room through hs (the room's homeserver).
func (f *fedStack) join(t *testing.T, hs *dendritetest.Server, c *mautrix.Client, room id.RoomID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := c.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{hs.Name}}); err != nil {
		t.Fatalf("%s joins %s via %s: %v", c.UserID, room, hs.Name, err)
	}
}

// deviceKey is Element Call's state key for c's device.
func deviceKey(c *mautrix.Client, device id.DeviceID) string {
	return "_" + string(c.UserID) + "_" + string(device) + "_m.call"
}

// callContent is an Element Call membership of device (session form):
// expiresMS after created_ts(); createdTS 0 leaves created_ts out (a join).
// nonce varies the content where it would otherwise repeat (Dendrite
// returns the existing event for identical state).
func callContent(device id.DeviceID, expiresMS, createdTS int64, nonce string) map[string]any {
	c := map[string]any{"application": "m.call", "call_id": "", "scope": "m.room", "device_id": device,
		"expires": expiresMS, "membershipID": nonce,
		"focus_active":   map[string]any{"type": "livekit", "focus_selection": "oldest_membership"},
		"foci_preferred": []any{map[string]any{"type": "livekit", "livekit_service_url": "https://sfu.example"}}}
	if createdTS != 0 {
		c["created_ts"] = createdTS
	}
	return c
}

const fourHours = 4 * 3_600_000

// sendTyped sends a state event of type typ; it fails t when the homeserver
// refuses it.
func sendTyped(t *testing.T, c *mautrix.Client, room id.RoomID, typ event.Type, key string, content any) id.EventID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := c.SendStateEvent(ctx, room, typ, key, content)
	if err != nil {
		t.Fatalf("%s sends %s %q in %s: %v", c.UserID, typ.Type, key, room, err)
	}
	return resp.EventID
}

// rawOf is the input of RTC_RAW holding event eid of room; it fails t
// unless there is exactly one.
func rawOf(t *testing.T, raws []rawevent.RawEvent, eid id.EventID) rawevent.RawEvent {
	t.Helper()
	var found []rawevent.RawEvent
	for _, r := range raws {
		if r.EventID == eid {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Fatalf("event %s is %d times in RTC_RAW, want once", eid, len(found))
	}
	return found[0]
}

// liveDevice is a member a live session is expected to list.
type liveDevice struct {
	user   *mautrix.Client
	device id.DeviceID // "" means user.DeviceID
}

// checkLive checks the room's live sessions in the rtc_sessions bucket
// (events.ListLiveSessions, as subscribers read them): none when want is
// empty, else one m.call session listing exactly want, with its counts.
func checkLive(t *testing.T, st *stack, room id.RoomID, users int, want ...liveDevice) *events.LiveSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	all, err := events.ListLiveSessions(ctx, st.js)
	if err != nil {
		t.Fatal(err)
	}
	var mine []events.LiveSession
	for _, s := range all {
		if s.RoomID == room {
			mine = append(mine, s)
		}
	}
	if len(want) == 0 {
		if len(mine) != 0 {
			t.Fatalf("room %s: live sessions %+v, want none", room, mine)
		}
		return nil
	}
	if len(mine) != 1 {
		t.Fatalf("room %s: %d live sessions %+v, want 1", room, len(mine), mine)
	}
	s := mine[0]
	var got, exp []string
	for _, m := range s.Members {
		got = append(got, string(m.UserID)+"/"+string(m.DeviceID))
	}
	for _, w := range want {
		d := w.device
		if d == "" {
			d = w.user.DeviceID
		}
		exp = append(exp, string(w.user.UserID)+"/"+string(d))
	}
	slices.Sort(got)
	slices.Sort(exp)
	if !slices.Equal(got, exp) || s.Participants != len(want) || s.Users != users || s.Application != "m.call" || s.CallID != "" {
		t.Fatalf("room %s: live session %s has members %v (participants %d, users %d), want %v (users %d)",
			room, s.SessionID, got, s.Participants, s.Users, exp, users)
	}
	return &s
}

// registerView is a register as `rtcctl room --json` prints it.
type registerView struct {
	EventID id.EventID `json:"event_id"`
	Sender  id.UserID  `json:"sender"`
	Kind    int        `json:"kind"`
	WhyCode string     `json:"why_code"`
	Why     string     `json:"why"`
}

// registerInvalid is rtc.RegisterInvalid as rtcctl prints it.
const registerInvalid = 3

// roomRegisters runs `rtcctl room ROOM --json` (the binary operators use)
// and returns the room's registers by the event id they hold.
func roomRegisters(t *testing.T, st *stack, room id.RoomID) map[id.EventID]registerView {
	t.Helper()
	var view struct {
		State struct {
			Registers map[string]registerView `json:"registers"`
		} `json:"state"`
	}
	rtcctlJSON(t, st, &view, "room", string(room), "--json")
	out := map[id.EventID]registerView{}
	for _, r := range view.State.Registers {
		out[r.EventID] = r
	}
	return out
}

// checkRejected checks that room's register holding eid records it as
// invalid, with code (waiting until the aggregator has applied eid).
func checkRejected(t *testing.T, st *stack, room id.RoomID, eid id.EventID, code string) {
	t.Helper()
	waitFor(t, "rejection of "+string(eid)+" recorded", func() (bool, string) {
		r, ok := roomRegisters(t, st, room)[eid]
		return ok && r.Kind == registerInvalid && r.WhyCode == code,
			fmt.Sprintf("room %s: register of %s is %+v (found %v), want invalid with code %s", room, eid, r, ok, code)
	})
}

// owner is the running aggregator that consumes room's partition, as
// `rtcctl workers --json` shows it (the worker pinned to the partition's
// consumer, else the rendezvous owner), and its index in f.aggs.
func (f *fedStack) owner(t *testing.T, st *stack, room id.RoomID) (*proctest.Aggregator, int) {
	t.Helper()
	p := rawevent.Partition(rawevent.RoomKey(room), partitions)
	var view struct {
		Partitions []struct {
			Partition int    `json:"partition"`
			Owner     string `json:"owner"`
			PinnedBy  string `json:"pinned_by"`
		} `json:"partitions"`
	}
	rtcctlJSON(t, st, &view, "workers", "--json")
	for _, pv := range view.Partitions {
		if pv.Partition != p {
			continue
		}
		who := pv.PinnedBy
		if who == "" {
			who = pv.Owner
		}
		for i, a := range f.aggs {
			if a.Cfg.ID == who {
				return a, i
			}
		}
		t.Fatalf("partition %d of room %s is consumed by %q (owner %q), not a running aggregator", p, room, who, pv.Owner)
	}
	t.Fatalf("rtcctl workers lists no partition %d (room %s)", p, room)
	return nil, -1
}

// rtcctlJSON runs rtcctl (the binary operators use) against the stack's
// nats-server with args and decodes its standard output into v.
func rtcctlJSON(t *testing.T, st *stack, v any, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := e2etest.RTCCtlJSON(ctx, st.h.Bins.RTCCtl, st.nats.URL(), v, args...); err != nil {
		t.Fatal(err)
	}
}

// ingestSum sums the ingest's series whose name and labels start with
// prefix and contain every one of labels.
func ingestSum(t *testing.T, st *stack, prefix string, labels ...string) float64 {
	t.Helper()
	m, err := scrapeIngest(st)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
next:
	for series, v := range m {
		if !strings.HasPrefix(series, prefix) {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(series, l) {
				continue next
			}
		}
		sum += v
	}
	return sum
}

// dlqCount is the number of messages in RTC_DLQ (0 when the stream does
// not exist).
func dlqCount(t *testing.T, st *stack) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	s, err := st.js.Stream(ctx, rawevent.StreamDLQ)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s: %v", rawevent.StreamDLQ, err)
	}
	return info.State.Msgs
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %s", what, waitTimeout, detail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ftoa(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func scrapeIngest(st *stack) (map[string]float64, error) {
	m, err := st.ingest.Metrics()
	if err != nil {
		return nil, fmt.Errorf("ingest metrics: %w", err)
	}
	return m, nil
}

// originTS reads event eid's origin_server_ts from c's homeserver (without
// waiting for the pipeline).
func originTS(t *testing.T, c *mautrix.Client, room id.RoomID, eid id.EventID) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var ev struct {
		OriginServerTS int64 `json:"origin_server_ts"`
	}
	if _, err := c.MakeRequest(ctx, "GET", c.BuildClientURL("v3", "rooms", room, "event", eid), nil, &ev); err != nil {
		t.Fatalf("read event %s: %v", eid, err)
	}
	if ev.OriginServerTS == 0 {
		t.Fatalf("event %s: no origin_server_ts", eid)
	}
	return ev.OriginServerTS
}
