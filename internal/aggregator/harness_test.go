package aggregator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// testTopology uses short timings so that crash take-over happens within a
// few seconds.
func testTopology() topology.Config {
	c := topology.DefaultConfig()
	c.Partitions = 8
	c.AckWait = 2 * time.Second
	c.PinnedTTL = 2 * time.Second
	c.WorkerTTL = 2 * time.Second
	c.SessionMarkerTTL = 2 * time.Second
	return c
}

func testWorkerConfig() WorkerConfig {
	return WorkerConfig{CacheRooms: 1000, MaxDeliver: 3, RetryBackoff: 50 * time.Millisecond,
		OpTimeout: 3 * time.Second, StatsInterval: 0}
}

type env struct {
	t    testing.TB
	dir  string
	port int
	ns   *server.Server
	url  string
	nc   *nats.Conn // the test's own connection (publishing, reading)
	js   jetstream.JetStream
	topo topology.Config
	h    *topology.Handles
	log  *zap.Logger
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), port: -1, topo: testTopology(), log: testLogger(t)}
	e.startServer()
	nc, err := nats.Connect(e.url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	e.nc = nc
	e.js, _ = jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.h, err = topology.Ensure(ctx, e.js, e.topo, topology.ModeCreate)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nc.Close()
		if e.ns != nil {
			e.ns.Shutdown()
			e.ns.WaitForShutdown()
		}
	})
	return e
}

// attachEnv is an env on a server the test did not start (a standalone
// nats-server process), whose topology an aggregator process created.
func attachEnv(t testing.TB, url string, partitions int) *env {
	t.Helper()
	e := &env{t: t, url: url, topo: testTopology(), log: testLogger(t)}
	e.topo.Partitions = partitions
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	e.nc = nc
	e.js, _ = jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if e.h, err = topology.Ensure(ctx, e.js, e.topo, topology.ModeVerify); err != nil {
		t.Fatal(err)
	}
	return e
}

func testLogger(t testing.TB) *zap.Logger {
	if testing.Verbose() {
		return zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	}
	return zap.NewNop()
}

func (e *env) startServer() {
	ns, err := natsutil.StartEmbedded(natsutil.EmbeddedConfig{DataDir: e.dir, Port: e.port}, zap.NewNop())
	if err != nil {
		e.t.Fatal(err)
	}
	e.ns = ns
	e.url = ns.ClientURL()
	e.port = ns.Addr().(*net.TCPAddr).Port
}

// restartServer stops the server and starts it again on the same port and
// store: clients reconnect on their own.
func (e *env) restartServer(down time.Duration) {
	e.ns.Shutdown()
	e.ns.WaitForShutdown()
	time.Sleep(down)
	e.startServer()
}

// worker is one aggregator worker with its own connection.
type testWorker struct {
	w      *Worker
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
}

func (e *env) startWorker(id string, hk hooks) *testWorker {
	e.t.Helper()
	return e.startWorkerCfg(id, testWorkerConfig(), hk)
}

// startWorkerCfg starts a worker with its own settings.
func (e *env) startWorkerCfg(id string, cfg WorkerConfig, hk hooks) *testWorker {
	e.t.Helper()
	nc, err := nats.Connect(e.url, nats.Name(id), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		e.t.Fatal(err)
	}
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	h, err := topology.Ensure(ctx, js, e.topo, topology.ModeVerify)
	cancel()
	if err != nil {
		e.t.Fatal(err)
	}
	w := NewWorker(nc, js, h, WorkerOptions{ID: id, Topology: e.topo, Worker: cfg,
		Reducer: rtc.DefaultConfig(), Log: e.log.Named(id), Grace: 10 * time.Second, hooks: hk})
	rctx, rcancel := context.WithCancel(context.Background())
	tw := &testWorker{w: w, nc: nc, cancel: rcancel, done: make(chan error, 1)}
	go func() { tw.done <- w.Run(rctx) }()
	e.t.Cleanup(func() { tw.stop(); nc.Close() })
	return tw
}

// stop is the graceful shutdown (SIGTERM).
func (tw *testWorker) stop() {
	tw.cancel()
	select {
	case <-tw.done:
		tw.done <- nil
	case <-time.After(20 * time.Second):
		panic("worker did not stop")
	}
}

// waitOwned waits until the workers own exactly their rendezvous share of
// the partitions (so every partition once).
func (e *env) waitOwned(ws ...*testWorker) {
	e.t.Helper()
	ids := make([]string, len(ws))
	for i, w := range ws {
		ids[i] = w.w.ID()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok := true
		var have []string
		for _, w := range ws {
			var want []int
			for p := 0; p < e.topo.Partitions; p++ {
				if Owner(ids, p) == w.w.ID() {
					want = append(want, p)
				}
			}
			got := w.w.Owned()
			have = append(have, fmt.Sprintf("%s:%v/%v", w.w.ID(), got, want))
			ok = ok && fmt.Sprint(got) == fmt.Sprint(want)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("partitions not owned as assigned (got/want): %v", have)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---- inputs ----

const testHS = "hs.example.org"

var focus = `"focus_active":{"type":"livekit","focus_selection":"oldest_membership"},` +
	`"foci_preferred":[{"type":"livekit","livekit_service_url":"https://rtc.example.org","livekit_alias":"a"}]`

func callMember(room id.RoomID, user id.UserID, dev string, ts int64, evID string, content string) rawevent.RawEvent {
	sk := "_" + string(user) + "_" + dev + "_m.call"
	return rawevent.RawEvent{Kind: rawevent.InputEvent, Homeserver: testHS, Source: rawevent.SourceReplay, ReceivedAt: ts,
		RoomID: room, EventID: id.EventID(evID), Type: rawevent.TypeCallMember.Type, StateKey: &sk, Sender: user,
		OriginServerTS: ts, Content: json.RawMessage(content)}
}

func joinEv(room id.RoomID, user id.UserID, dev string, ts, expires int64, evID string) rawevent.RawEvent {
	exp := ""
	if expires > 0 {
		exp = fmt.Sprintf(`"expires":%d,`, expires)
	}
	return callMember(room, user, dev, ts, evID, fmt.Sprintf(
		`{"application":"m.call","call_id":"","scope":"m.room","device_id":%q,%s%s}`, dev, exp, focus))
}

func leaveEv(room id.RoomID, user id.UserID, dev string, ts int64, evID string) rawevent.RawEvent {
	return callMember(room, user, dev, ts, evID, `{}`)
}

// workload builds a deterministic mix for many rooms: joins, refreshes and
// leaves of several members, so that sessions start, change and end. Inputs
// of different rooms are interleaved; inputs of one room are in time order.
func workload(rooms, members int, base int64) []rawevent.RawEvent {
	var perRoom [][]rawevent.RawEvent
	for r := 0; r < rooms; r++ {
		room := id.RoomID(fmt.Sprintf("!room%03d:%s", r, testHS))
		ts := base + int64(r)
		var evs []rawevent.RawEvent
		for m := 0; m < members; m++ {
			u := id.UserID(fmt.Sprintf("@u%d:%s", m, testHS))
			ts += 10
			evs = append(evs, joinEv(room, u, "DEV"+fmt.Sprint(m), ts, 0, fmt.Sprintf("$j%d-%d", r, m)))
		}
		// A refresh of member 0 (an update with created_ts), then everyone
		// leaves; the room's session ends.
		ts += 10
		u0 := id.UserID("@u0:" + testHS)
		refresh := callMember(room, u0, "DEV0", ts, fmt.Sprintf("$r%d", r), fmt.Sprintf(
			`{"application":"m.call","call_id":"","scope":"m.room","device_id":"DEV0","expires":28800000,"created_ts":%d,%s}`,
			evs[0].OriginServerTS, focus))
		evs = append(evs, refresh)
		for m := 0; m < members; m++ {
			u := id.UserID(fmt.Sprintf("@u%d:%s", m, testHS))
			ts += 10
			evs = append(evs, leaveEv(room, u, "DEV"+fmt.Sprint(m), ts, fmt.Sprintf("$l%d-%d", r, m)))
		}
		perRoom = append(perRoom, evs)
	}
	var out []rawevent.RawEvent
	for i := 0; ; i++ {
		any := false
		for _, evs := range perRoom {
			if i < len(evs) {
				out = append(out, evs[i])
				any = true
			}
		}
		if !any {
			return out
		}
	}
}

func (e *env) publish(evs []rawevent.RawEvent) {
	e.t.Helper()
	// In slices, each awaited: a slow (race-enabled, loaded) machine would
	// otherwise stall the client's window of outstanding async publishes.
	for len(evs) > 1000 {
		e.publishSlice(evs[:1000])
		evs = evs[1000:]
	}
	e.publishSlice(evs)
}

func (e *env) publishSlice(evs []rawevent.RawEvent) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var futs []jetstream.PubAckFuture
	for i := range evs {
		data, err := rawevent.EncodeRaw(&evs[i])
		if err != nil {
			e.t.Fatal(err)
		}
		m := nats.NewMsg(rawevent.RawSubject(evs[i].RoomID))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, string(evs[i].EventID))
		f, err := e.js.PublishMsgAsync(m)
		if err != nil {
			e.t.Fatal(err)
		}
		futs = append(futs, f)
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			e.t.Fatalf("publish: %v", err)
		case <-ctx.Done():
			e.t.Fatal("publish timed out")
		}
	}
}

// publishSync publishes one by one, retrying through server restarts.
func (e *env) publishSync(evs []rawevent.RawEvent, every func(i int)) {
	e.t.Helper()
	for i := range evs {
		if every != nil {
			every(i)
		}
		data, _ := rawevent.EncodeRaw(&evs[i])
		for attempt := 0; ; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := e.js.Publish(ctx, rawevent.RawSubject(evs[i].RoomID), data, jetstream.WithMsgID(string(evs[i].EventID)))
			cancel()
			if err == nil {
				break
			}
			if attempt > 100 {
				e.t.Fatalf("publish %d: %v", i, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// ---- outputs ----

type stored struct {
	seq     uint64
	subject string
	data    []byte
	hdr     nats.Header
}

// readStream returns every message of a stream (in sequence order) whose
// subject starts with prefix.
func (e *env) readStream(name, prefix string) []stored {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []stored
	if info.State.Msgs == 0 {
		return nil
	}
	oc, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{prefix + ">"}})
	if err != nil {
		e.t.Fatal(err)
	}
	for {
		batch, err := oc.FetchNoWait(500)
		if err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, _ := m.Metadata()
			out = append(out, stored{seq: md.Sequence.Stream, subject: m.Subject(), data: m.Data(), hdr: m.Headers()})
			if md.NumPending == 0 {
				return out
			}
		}
		if n == 0 {
			return out
		}
	}
}

// sessionEvents decodes RTC_EVENTS grouped by room, in stream order.
func (e *env) sessionEvents() map[id.RoomID][][]byte {
	out := map[id.RoomID][][]byte{}
	for _, m := range e.readStream(events.StreamEvents, events.SessionPrefix+".") {
		ev, err := events.DecodeSessionEvent(m.data)
		if err != nil {
			e.t.Fatalf("event seq %d: %v", m.seq, err)
		}
		out[ev.RoomID] = append(out[ev.RoomID], m.data)
	}
	return out
}

// offline applies the reducer to inputs in order and returns the encoded
// session events per room: what the pipeline must produce.
func offline(inputs []rawevent.RawEvent) map[id.RoomID][][]byte {
	states := map[id.RoomID]*rtc.RoomState{}
	out := map[id.RoomID][][]byte{}
	for i := range inputs {
		in := inputs[i]
		st := states[in.RoomID]
		if st == nil {
			st = rtc.NewRoomState(in.RoomID)
			states[in.RoomID] = st
		}
		for _, ev := range rtc.Apply(rtc.DefaultConfig(), st, &in).Events {
			b, err := eventcodec.EncodeSessionEvent(&ev)
			if err != nil {
				panic(err)
			}
			out[in.RoomID] = append(out[in.RoomID], b)
		}
	}
	return out
}

// rawInputs reads RTC_RAW's partitioned inputs (events and fired timers) in
// stream order, skipping what does not decode (poison tests).
func (e *env) rawInputs() []rawevent.RawEvent {
	var out []rawevent.RawEvent
	for _, m := range e.readStream(rawevent.StreamRaw, rawevent.PartPrefix+".") {
		in, err := rawevent.DecodeRaw(m.data)
		if err == nil {
			out = append(out, in)
		}
	}
	return out
}

func countEvents(m map[id.RoomID][][]byte) int {
	n := 0
	for _, v := range m {
		n += len(v)
	}
	return n
}

// waitIdle waits until every partition consumer has nothing pending or in
// flight, and RTC_EVENTS holds want messages (want < 0: any number), stable
// for a moment.
func (e *env) waitIdle(want int, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	stableSince := time.Time{}
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		state, err := e.progress(ctx)
		cancel()
		if err == nil {
			if state != last {
				last, stableSince = state, time.Now()
			}
			idle := strings.HasPrefix(state, "idle ")
			count := 0
			fmt.Sscanf(state[strings.LastIndex(state, " ")+1:], "%d", &count)
			if idle && (want < 0 || count == want) && time.Since(stableSince) > 300*time.Millisecond {
				return
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("not idle after %s: %s (err %v), want %d events", timeout, last, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) progress(ctx context.Context) (string, error) {
	raw, err := e.js.Stream(ctx, rawevent.StreamRaw)
	if err != nil {
		return "", err
	}
	busy := 0
	for p := 0; p < e.topo.Partitions; p++ {
		c, err := raw.Consumer(ctx, topology.ConsumerName(p))
		if err != nil {
			return "", err
		}
		ci, err := c.Info(ctx)
		if err != nil {
			return "", err
		}
		busy += int(ci.NumPending) + ci.NumAckPending
	}
	ev, err := e.js.Stream(ctx, events.StreamEvents)
	if err != nil {
		return "", err
	}
	info, err := ev.Info(ctx)
	if err != nil {
		return "", err
	}
	if busy > 0 {
		return fmt.Sprintf("busy %d %d", busy, info.State.Msgs), nil
	}
	return fmt.Sprintf("idle %d", info.State.Msgs), nil
}

// assertMatches compares the pipeline's output with the offline reduction,
// byte for byte per room, and checks the per-room seq has no gap and no
// duplicate.
func assertMatches(t *testing.T, got, want map[id.RoomID][][]byte) {
	t.Helper()
	rooms := map[id.RoomID]bool{}
	for r := range got {
		rooms[r] = true
	}
	for r := range want {
		rooms[r] = true
	}
	keys := make([]string, 0, len(rooms))
	for r := range rooms {
		keys = append(keys, string(r))
	}
	sort.Strings(keys)
	bad := 0
	for _, r := range keys {
		g, w := got[id.RoomID(r)], want[id.RoomID(r)]
		for i := 0; i < len(g); i++ {
			ev, _ := events.DecodeSessionEvent(g[i])
			if ev.Seq != uint64(i+1) {
				t.Errorf("room %s: event %d has seq %d (gap or duplicate)", r, i, ev.Seq)
				bad++
				break
			}
		}
		if len(g) != len(w) {
			t.Errorf("room %s: %d events, offline reduction gives %d", r, len(g), len(w))
			bad++
		} else {
			for i := range g {
				if !bytes.Equal(g[i], w[i]) {
					t.Errorf("room %s: event %d differs from the offline reduction", r, i)
					bad++
					break
				}
			}
		}
		if bad > 5 {
			t.Fatal("too many differences")
		}
	}
}

func kindCounts(m map[id.RoomID][][]byte) map[events.Kind]int {
	out := map[events.Kind]int{}
	for _, evs := range m {
		for _, b := range evs {
			ev, _ := events.DecodeSessionEvent(b)
			out[ev.Kind]++
		}
	}
	return out
}

// once runs f the first time it is called.
type onceHook struct {
	mu   sync.Mutex
	done bool
}

func (o *onceHook) do(f func()) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.done {
		o.done = true
		f()
	}
}
