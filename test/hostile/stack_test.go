package hostile

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/aggregator"
	"github.com/rtcsessions/rtc-sessions/internal/ingest"
	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/roomstore"
	"github.com/rtcsessions/rtc-sessions/internal/rtcctl"
	"github.com/rtcsessions/rtc-sessions/internal/testutil"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// The homeservers the ingest serves, each with its own hs_token.
const (
	hsA = "hs-a.test"
	hsB = "hs-b.test"
)

var hsTokens = map[string]string{hsA: "hs-token-a-7d41e0", hsB: "hs-token-b-93c2aa"}

// waitTimeout bounds every wait for something the pipeline does: generous
// for a loaded 2-core machine under -race, never a fixed sleep.
const waitTimeout = 30 * time.Second

// stack is one running pipeline: an embedded nats-server, the aggregator
// and the ingest, as an operator runs them (each with its own /metrics).
type stack struct {
	ns          *server.Server
	js          jetstream.JetStream
	ingestAddr  string // the appservice listener
	ingestHTTP  string // the ingest's /metrics
	aggHTTP     string // the aggregator's /metrics
	aggLogs     *observer.ObservedLogs
	sessions    *sessionLog
	maxExpires  int64 // the aggregator's reducer.max_expires_ms
	defaultSkew int64 // its reducer.clock_skew_ms
	// rejected holds, for each aggregator rejection a test caused, when
	// the test saw it applied (see paceRejection).
	rejected []time.Time
}

// Rejections the aggregator logs: at most this many within any second (its
// sampler keeps the first 5 per second and drops the rest).
const rejectionsPerSecond = 4

// paceRejection waits, when needed, before an input the aggregator will
// reject, so that no second holds more than rejectionsPerSecond of the
// rejections these tests cause: the aggregator logs rejections sampled
// (the first 5 each second), and under that rate each one must be logged.
// The wait is measured from when the earlier rejection was seen applied
// (after its log entry), so a slow machine only makes the gaps longer.
func (s *stack) paceRejection() {
	if n := len(s.rejected); n >= rejectionsPerSecond {
		time.Sleep(time.Until(s.rejected[n-rejectionsPerSecond].Add(1100 * time.Millisecond)))
	}
}

// rejectionApplied records that a paced rejection was seen applied.
func (s *stack) rejectionApplied() { s.rejected = append(s.rejected, time.Now()) }

// ingestOptions change the ingest's configuration from the defaults.
type ingestOptions func(*ingest.Config)

// startIngest runs the real ingest.Run against ns with the two homeservers
// and returns its appservice and metrics addresses. It stops when the test
// ends.
func startIngest(t *testing.T, ns *server.Server, opts ...ingestOptions) (appservice, metrics string) {
	t.Helper()
	dir := t.TempDir()
	cfg := ingest.DefaultConfig()
	cfg.NATS.URLs = []string{ns.ClientURL()}
	cfg.Topology.Partitions = 4
	cfg.MetricsAddr = testutil.FreePort(t)
	cfg.Appservice.ListenAddr = "127.0.0.1:0"
	for _, name := range []string{hsA, hsB} {
		f := filepath.Join(dir, name+".hs_token")
		if err := os.WriteFile(f, []byte(hsTokens[name]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.Homeservers = append(cfg.Homeservers, ingest.HomeserverConfig{Name: name, HSTokenFile: f})
	}
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("ingest config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	bound := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- ingest.Run(ctx, cfg, zap.NewNop(), prometheus.NewRegistry(), bound) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ingest: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("ingest did not stop")
		}
	})
	select {
	case appservice = <-bound:
	case err := <-done:
		t.Fatalf("ingest stopped: %v", err)
	case <-time.After(waitTimeout):
		t.Fatal("the ingest's appservice listener did not start")
	}
	waitReady(t, "http://"+cfg.MetricsAddr+"/readyz")
	return appservice, cfg.MetricsAddr
}

// startAggregator runs the real aggregator.Run connecting with conn, and
// returns its HTTP address (/metrics, /readyz) once it is ready, and its
// logs from level info. It stops when the test ends.
func startAggregator(t *testing.T, conn natsutil.ConnConfig) (string, *observer.ObservedLogs, aggregator.Config) {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	cfg := aggregator.DefaultConfig()
	cfg.NATS = conn
	cfg.Topology.Partitions = 4
	cfg.HTTP.Listen = testutil.FreePort(t)
	cfg.Worker.StatsInterval = 0
	cfg.ShutdownGrace = 5 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- aggregator.Run(ctx, cfg, zap.New(core), prometheus.NewRegistry()) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("aggregator: %v", err)
			}
		case <-time.After(cfg.ShutdownGrace + waitTimeout):
			t.Errorf("aggregator did not stop")
		}
	})
	waitReady(t, "http://"+cfg.HTTP.Listen+"/readyz")
	return cfg.HTTP.Listen, logs, cfg
}

// startStack runs nats-server, the aggregator and the ingest, and follows
// RTC_EVENTS from the start.
func startStack(t *testing.T) *stack {
	t.Helper()
	ns := testutil.NATS(t, "", -1)
	_, js := testutil.JetStream(t, ns)
	aggHTTP, logs, acfg := startAggregator(t, natsutil.ConnConfig{URLs: []string{ns.ClientURL()}, Name: "rtc-aggregator"})
	s := &stack{ns: ns, js: js, aggHTTP: aggHTTP, aggLogs: logs,
		maxExpires: acfg.Reducer.MaxExpiresMS, defaultSkew: acfg.Reducer.ClockSkewMS}
	s.ingestAddr, s.ingestHTTP = startIngest(t, ns)
	s.sessions = followSessions(t, js)
	return s
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	waitFor(t, url+" answering 200", func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sessionLog is every session event of RTC_EVENTS, as a subscriber sees it.
type sessionLog struct {
	mu  sync.Mutex
	evs []events.SessionEvent
	err error
}

func followSessions(t *testing.T, js jetstream.JetStream) *sessionLog {
	l := &sessionLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := events.Subscribe(ctx, js, events.SubscribeOptions{FromStart: true}, func(d events.Delivery) error {
			l.mu.Lock()
			l.evs = append(l.evs, d.Event)
			l.mu.Unlock()
			return nil
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return l
}

// room returns the session events of room so far, in order.
func (l *sessionLog) room(t *testing.T, room id.RoomID) []events.SessionEvent {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		t.Fatalf("subscriber: %v", l.err)
	}
	var out []events.SessionEvent
	for _, e := range l.evs {
		if e.RoomID == room {
			out = append(out, e)
		}
	}
	return out
}

// waitJoined waits until user has a member_joined event in room and
// returns it.
func (l *sessionLog) waitJoined(t *testing.T, room id.RoomID, user id.UserID) events.SessionEvent {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		evs := l.room(t, room)
		for _, e := range evs {
			if e.Kind == events.KindMemberJoined && e.Member != nil && e.Member.UserID == user {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no member_joined of %s in %s within %s; the room's session events:%s", user, room, waitTimeout, describe(evs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// describe prints session events for failure messages.
func describe(evs []events.SessionEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "\n  #%d %s", e.Seq, e.Kind)
		if e.Member != nil {
			fmt.Fprintf(&b, " %s/%s (event %s, expires %d)", e.Member.UserID, e.Member.DeviceID, e.Member.EventID, e.Member.ExpiresAt)
		}
		if e.Reason != "" {
			fmt.Fprintf(&b, " reason %s", e.Reason)
		}
	}
	return b.String()
}

// txnResult is a homeserver's view of one answer of the ingest.
type txnResult struct {
	status int
	header http.Header
	body   []byte
}

// put sends one appservice transaction as homeserver token tok would.
func put(t *testing.T, addr, tok, txnID string, evs ...string) txnResult {
	t.Helper()
	return do(t, http.MethodPut, "http://"+addr+"/_matrix/app/v1/transactions/"+txnID, tok,
		`{"events":[`+strings.Join(evs, ",")+`]}`)
}

// putOK sends a transaction and fails unless it is stored (200 {}).
func putOK(t *testing.T, addr, tok, txnID string, evs ...string) {
	t.Helper()
	if r := put(t, addr, tok, txnID, evs...); r.status != http.StatusOK || string(r.body) != "{}" {
		t.Fatalf("transaction %s: HTTP %d %s, want 200 {}", txnID, r.status, r.body)
	}
}

func do(t *testing.T, method, url, tok, body string) txnResult {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set("Content-Type", "application/json")
	return send(t, req)
}

func send(t *testing.T, req *http.Request) txnResult {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", req.Method, req.URL.Path, err)
	}
	return txnResult{status: resp.StatusCode, header: resp.Header, body: b}
}

// --- events as a homeserver sends them -----------------------------------

// obj is a JSON object; json.RawMessage values are written as they are
// (1e30), int64 values exactly (2^63-100).
type obj = map[string]any

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// joinContent is an Element Call membership (MSC4143 per-device form)
// with expires 4 h.
func joinContent(device string) obj {
	return obj{"application": "m.call", "call_id": "", "scope": "m.room", "device_id": device, "expires": 14400000,
		"focus_active":   obj{"type": "livekit", "focus_selection": "oldest_membership"},
		"foci_preferred": []any{obj{"type": "livekit", "livekit_service_url": "https://sfu.example"}}}
}

// callMember is an org.matrix.msc3401.call.member state event by sender on
// the state key of keyUser (normally the sender) and device.
func callMember(eventID string, room id.RoomID, sender, keyUser id.UserID, device string, ts int64, content obj) obj {
	return obj{"type": "org.matrix.msc3401.call.member", "state_key": "_" + string(keyUser) + "_" + device + "_m.call",
		"sender": sender, "event_id": eventID, "room_id": room, "origin_server_ts": ts, "content": content}
}

// join is user's ordinary membership on their own key.
func join(t *testing.T, eventID string, room id.RoomID, user id.UserID, device string, ts int64) string {
	return mustJSON(t, callMember(eventID, room, user, user, device, ts, joinContent(device)))
}

// roomMember is an m.room.member join.
func roomMember(eventID string, room id.RoomID, user id.UserID, ts int64) obj {
	return obj{"type": "m.room.member", "state_key": string(user), "sender": user, "event_id": eventID,
		"room_id": room, "origin_server_ts": ts, "content": obj{"membership": "join"}}
}

// year2100 is 2100-01-01T00:00:00Z in ms.
const year2100 = int64(4102444800000)

// --- where an operator looks ---------------------------------------------

// metric scrapes http://addr/metrics and returns the value of the series
// name{labels} (labels as name, value pairs), 0 when it is absent.
func metric(t *testing.T, addr, name string, labels ...string) float64 {
	t.Helper()
	if len(labels)%2 != 0 {
		t.Fatalf("metric %s: odd label list %q", name, labels)
	}
	type pair struct{ k, v string }
	var ps []pair
	for i := 0; i < len(labels); i += 2 {
		ps = append(ps, pair{labels[i], labels[i+1]})
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].k < ps[j].k })
	want := name
	if len(ps) > 0 {
		parts := make([]string, len(ps))
		for i, p := range ps {
			parts[i] = fmt.Sprintf("%s=%q", p.k, p.v)
		}
		want += "{" + strings.Join(parts, ",") + "}"
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok || series != want {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			t.Fatalf("scrape %s: %s: %v", addr, line, err)
		}
		return v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return 0
}

// rawRecords returns every input of room stored in RTC_RAW.
func rawRecords(t *testing.T, js jetstream.JetStream, room id.RoomID) []rawevent.RawEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, rawevent.StreamRaw, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{rawevent.PartPrefix + ".*." + events.Token(string(room))}})
	if err != nil {
		t.Fatalf("read RTC_RAW: %v", err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("read RTC_RAW: %v", err)
	}
	var out []rawevent.RawEvent
	for pending := info.NumPending; pending > 0; {
		batch, err := c.Fetch(int(pending), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatalf("read RTC_RAW: %v", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			ev, err := rawevent.DecodeRaw(m.Data())
			if err != nil {
				t.Fatalf("RTC_RAW %s: %v", m.Subject(), err)
			}
			out = append(out, ev)
		}
		if err := batch.Error(); err != nil {
			t.Fatalf("read RTC_RAW: %v", err)
		}
		if n == 0 {
			t.Fatalf("read RTC_RAW: %d inputs announced, none delivered", pending)
		}
		pending -= uint64(n)
	}
	return out
}

// rawRecord returns the RTC_RAW input of event id (ok false: not stored).
func rawRecord(t *testing.T, js jetstream.JetStream, room id.RoomID, eventID string) (rawevent.RawEvent, bool) {
	t.Helper()
	for _, ev := range rawRecords(t, js, room) {
		if string(ev.EventID) == eventID {
			return ev, true
		}
	}
	return rawevent.RawEvent{}, false
}

// roomRecord waits until the aggregator's stored state of room includes
// the session event with sequence seq, and returns it (rtcctl's read path).
func roomRecord(t *testing.T, js jetstream.JetStream, room id.RoomID, seq uint64) *roomstore.Room {
	t.Helper()
	var rec *roomstore.Room
	waitFor(t, fmt.Sprintf("the stored state of %s at seq %d", room, seq), func() bool {
		r, err := rtcctl.RoomRecord(context.Background(), js, room)
		if err != nil {
			return false
		}
		rec = r
		return r.State.Seq >= seq
	})
	return rec
}

// rtcctlRoom runs `rtcctl room` as an operator would and returns its output.
func rtcctlRoom(t *testing.T, ns *server.Server, room id.RoomID) string {
	t.Helper()
	var stdout, stderr strings.Builder
	if rc := rtcctl.Main(context.Background(), []string{"room", "--nats", ns.ClientURL(), string(room)}, &stdout, &stderr); rc != 0 {
		t.Fatalf("rtcctl room %s: exit %d: %s", room, rc, stderr.String())
	}
	return stdout.String()
}
