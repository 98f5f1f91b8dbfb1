// Package nodeconsumer runs a Node.js consumer of session events and live
// sessions (consumer.mjs: nats.js and @msgpack/msgpack, written from
// docs/events.md alone) as the shipped read-only `subscriber` user against
// the real pipeline (nats-server with configs/nats/rtc-accounts.conf, the
// aggregator and the ingest), and checks that it decodes the same events as
// `rtcctl tail --json` and the same live sessions as `rtcctl sessions
// --json` (the real rtcctl binary).
package nodeconsumer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/aggregator"
	"github.com/rtcsessions/rtc-sessions/internal/authz"
	"github.com/rtcsessions/rtc-sessions/internal/authz/authztest"
	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/ingest"
	"github.com/rtcsessions/rtc-sessions/internal/nodemods"
	"github.com/rtcsessions/rtc-sessions/internal/proctest"
	"github.com/rtcsessions/rtc-sessions/internal/testutil"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// TestMain removes the binaries proctest builds.
func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }

// headerRequired says whether every session event must carry the
// Rtc-Schema-Version header. It is set by the aggregator's message
// construction (events.SessionEventMsg); until that is wired in, a header
// that is present must still equal the body's version.
const headerRequired = true

const hsToken = "hs-token-nodeconsumer-51ab"

// waitTimeout bounds every wait on the pipeline (a loaded 2-core machine
// under -race).
const waitTimeout = 60 * time.Second

func TestNodeConsumerDecodesWhatRtcctlDecodes(t *testing.T) {
	node, mods := nodeAndModules(t)
	srv := authztest.Start(t)
	addr := startPipeline(t, srv)

	// Three rooms: a call that ends, a call that stays live with an
	// update and a leave, and a large call (more than
	// eventcodec.InlineMembersMax devices: its members are in keys of their
	// own) on a named call id.
	now := time.Now().UnixMilli()
	small, ended, large := "!small:hs.test", "!ended:hs.test", "!large:hs.test"
	putTxn(t, addr, "1",
		member("$s1", small, "@alice:hs.test", "A1", "", now, ""),
		member("$s2", small, "@bob:hs.test", "B1", "", now+10, ""),
		member("$e1", ended, "@carol:hs.test", "C1", "", now, ""))
	putTxn(t, addr, "2",
		member("$s3", small, "@alice:hs.test", "A1", "", now, "audio"), // same membership, new event
		leave("$s4", small, "@bob:hs.test", "B1", "", now+30),
		leave("$e2", ended, "@carol:hs.test", "C1", "", now+40))
	var big []string
	for i := range eventcodec.InlineMembersMax + 2 {
		big = append(big, member(fmt.Sprintf("$l%d", i), large, fmt.Sprintf("@u%02d:hs.test", i), "D", "conf", now+int64(i), ""))
	}
	putTxn(t, addr, "3", big...)
	// session_started + 2 joins + 1 update + 1 left (small); started, joined,
	// left, ended (ended); started + the joins (large).
	want := 5 + 4 + 1 + len(big)
	sub := srv.Connect(t, authz.UserSubscriber)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	waitFor(t, fmt.Sprintf("%d session events", want), func() bool {
		st, err := sub.JS.Stream(ctx, events.StreamEvents)
		return err == nil && st.CachedInfo().State.Msgs >= uint64(want)
	})
	waitFor(t, "the large session's last member in rtc_sessions", func() bool {
		live, err := events.ListLiveSessions(ctx, sub.JS)
		if err != nil {
			return false
		}
		for _, s := range live {
			if string(s.RoomID) == large && len(s.Members) == len(big) && s.Participants == len(big) {
				return true
			}
		}
		return false
	})

	tailOut := rtcctl(t, srv, "tail", "--all", "--max", fmt.Sprint(want), "--json")
	var fromRtcctl []events.SessionEvent
	for _, line := range strings.Split(strings.TrimSpace(tailOut), "\n") {
		var ev events.SessionEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("rtcctl tail line %q: %v", line, err)
		}
		fromRtcctl = append(fromRtcctl, ev)
	}
	var liveFromRtcctl []events.LiveSession
	if err := json.Unmarshal([]byte(rtcctl(t, srv, "sessions", "--json")), &liveFromRtcctl); err != nil {
		t.Fatalf("rtcctl sessions --json: %v", err)
	}

	// The same consumer with nats.js 3 (@nats-io/*) and 2 (nats).
	for _, major := range []string{"3", "2"} {
		t.Run("nats.js "+major, func(t *testing.T) {
			out := runConsumer(t, node, mods, srv, want, major)
			if len(out.Problems) > 0 {
				t.Errorf("the node consumer found problems:\n%s", strings.Join(out.Problems, "\n"))
			}
			if len(out.Events) != len(fromRtcctl) || len(out.Events) != want {
				t.Fatalf("node decoded %d events, rtcctl %d, want %d", len(out.Events), len(fromRtcctl), want)
			}
			withHeader := 0
			for i, d := range out.Events {
				var ev events.SessionEvent
				if err := json.Unmarshal(d.Event, &ev); err != nil {
					t.Fatalf("node event %d: %v", i, err)
				}
				normalizeEvent(&ev)
				normalizeEvent(&fromRtcctl[i])
				if !reflect.DeepEqual(ev, fromRtcctl[i]) {
					t.Errorf("event %d (stream %d):\nnode   %+v\nrtcctl %+v", i, d.StreamSeq, describe(ev), describe(fromRtcctl[i]))
				}
				if d.Header != "" {
					withHeader++
					if d.Header != fmt.Sprint(ev.V) {
						t.Errorf("event %d: Rtc-Schema-Version %q, v %d", i, d.Header, ev.V)
					}
				}
				if ev.V != events.SchemaVersion {
					t.Errorf("event %d: version %d, want %d", i, ev.V, events.SchemaVersion)
				}
			}
			if headerRequired && withHeader != len(out.Events) {
				t.Errorf("%d of %d events carry Rtc-Schema-Version", withHeader, len(out.Events))
			}
			// The nested JSON of a member arrives as the event's JSON, key order
			// included.
			joins := 0
			for _, ev := range fromRtcctl {
				if ev.Kind == events.KindMemberJoined {
					joins++
					if string(ev.Member.FocusActive) != focusActive {
						t.Errorf("focus_active of a join: %s, want %s", describe(ev), focusActive)
					}
				}
			}
			if joins != 3+len(big) {
				t.Errorf("%d joins, want %d", joins, 3+len(big))
			}

			if len(out.Sessions) != len(liveFromRtcctl) || len(out.Sessions) != 2 {
				t.Fatalf("node read %d live sessions, rtcctl %d, want 2", len(out.Sessions), len(liveFromRtcctl))
			}
			sawLarge := false
			for i, ks := range out.Sessions {
				var s events.LiveSession
				if err := json.Unmarshal(ks.Session, &s); err != nil {
					t.Fatalf("node session %s: %v", ks.Key, err)
				}
				normalizeSession(&s)
				normalizeSession(&liveFromRtcctl[i])
				if ks.Key != liveFromRtcctl[i].Key() || !reflect.DeepEqual(s, liveFromRtcctl[i]) {
					a, _ := json.Marshal(s)
					b, _ := json.Marshal(liveFromRtcctl[i])
					t.Errorf("session %d:\nnode   %s %s\nrtcctl %s %s", i, ks.Key, a, liveFromRtcctl[i].Key(), b)
				}
				sawLarge = sawLarge || s.MembersInKeys
			}
			if !sawLarge {
				t.Error("no session with its members in keys: the large call did not test the member keys")
			}

		})
	}
}

// focusActive is the focus of the memberships this test sends, as the
// homeserver has it.
const focusActive = `{"type":"livekit","focus_selection":"oldest_membership"}`

// member is an Element Call membership (per-device form) as a homeserver
// pushes it, with a call intent when intent is not empty.
func member(eventID, room, user, device, callID string, ts int64, intent string) string {
	extra := ""
	if intent != "" {
		extra = fmt.Sprintf(`,"m.call.intent":%q`, intent)
	}
	content := fmt.Sprintf(`{"application":"m.call","call_id":%q,"scope":"m.room","device_id":%q,"expires":14400000,`+
		`"focus_active":%s,"foci_preferred":[{"type":"livekit","livekit_service_url":"https://sfu.example"}]%s}`,
		callID, device, focusActive, extra)
	return stateEvent(eventID, room, user, device, callID, ts, content)
}

func leave(eventID, room, user, device, callID string, ts int64) string {
	return stateEvent(eventID, room, user, device, callID, ts, `{}`)
}

func stateEvent(eventID, room, user, device, callID string, ts int64, content string) string {
	stateKey := fmt.Sprintf("_%s_%s_m.call", user, device)
	if callID != "" {
		stateKey += "_" + callID
	}
	return fmt.Sprintf(`{"type":"org.matrix.msc3401.call.member","state_key":%q,"sender":%q,`+
		`"event_id":%q,"room_id":%q,"origin_server_ts":%d,"content":%s}`, stateKey, user, eventID, room, ts, content)
}

// normalizeEvent makes the JSON forms comparable: rtcctl leaves empty
// fields out, the node consumer prints them (null for nested JSON).
func normalizeEvent(ev *events.SessionEvent) {
	if ev.Member != nil {
		normalizeMember(ev.Member)
	}
	if len(ev.Changed) == 0 {
		ev.Changed = nil
	}
}

func normalizeMember(m *events.Member) {
	m.FocusActive, m.FociPreferred = compact(m.FocusActive), compact(m.FociPreferred)
}

// compact removes the indentation `rtcctl sessions --json` gives nested
// JSON (keeping its key order), and makes null no value.
func compact(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	return b.Bytes()
}

func normalizeSession(s *events.LiveSession) {
	if len(s.Members) == 0 {
		s.Members = nil
	}
	for i := range s.Members {
		normalizeMember(&s.Members[i])
	}
}

func describe(ev events.SessionEvent) string {
	b, _ := json.Marshal(ev)
	return string(b)
}

// consumerOutput is what consumer.mjs prints.
type consumerOutput struct {
	Events []struct {
		StreamSeq uint64          `json:"stream_seq"`
		Subject   string          `json:"subject"`
		Header    string          `json:"header_version"`
		Event     json.RawMessage `json:"event"`
	} `json:"events"`
	Sessions []struct {
		Key     string          `json:"key"`
		Session json.RawMessage `json:"session"`
	} `json:"sessions"`
	Problems []string `json:"problems"`
}

func runConsumer(t *testing.T, node, mods string, srv *authztest.Server, want int, major string) consumerOutput {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	// ES modules resolve packages from the script's directory upwards:
	// run a copy of the script next to the installed modules.
	script := filepath.Join(mods, "consumer.mjs")
	src, err := os.ReadFile(filepath.Join(sourceDir(t), "consumer.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, src, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Env = append(natsEnv(t, srv), "EXPECT_EVENTS="+fmt.Sprint(want), "TIMEOUT_MS=20000",
		"NATSJS="+major, "PATH="+os.Getenv("PATH"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node consumer: %v\nstderr:\n%s", err, stderr.String())
	}
	var out consumerOutput
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("node consumer output: %v\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	return out
}

// natsEnv is how the subscriber logs in, for rtcctl and the node consumer.
func natsEnv(t *testing.T, srv *authztest.Server) []string {
	t.Helper()
	pw, err := os.ReadFile(srv.PasswordFiles[authz.UserSubscriber])
	if err != nil {
		t.Fatal(err)
	}
	return []string{"NATS_URL=" + srv.NS.ClientURL(), "NATS_USER=" + authz.UserSubscriber,
		"NATS_PASSWORD=" + strings.TrimSpace(string(pw))}
}

// rtcctl runs the real rtcctl binary as the subscriber and returns its
// standard output.
func rtcctl(t *testing.T, srv *authztest.Server, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, proctest.Build(t).RTCCtl, args...)
	cmd.Env = append(natsEnv(t, srv), "HOME="+t.TempDir(), "PATH="+os.Getenv("PATH"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("rtcctl %q: %v\nstderr:\n%s", args, err, stderr.String())
	}
	return stdout.String()
}

// startPipeline runs the real aggregator and ingest as their shipped users
// and returns the ingest's appservice address. They stop when the test
// ends.
func startPipeline(t *testing.T, srv *authztest.Server) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	acfg := aggregator.DefaultConfig()
	acfg.NATS = srv.ConnConfig(authz.UserAggregator)
	acfg.Topology.Partitions = 4
	acfg.HTTP.Listen = testutil.FreePort(t)
	acfg.ShutdownGrace = 5 * time.Second
	aggDone := make(chan error, 1)
	wg.Add(1)
	go func() { defer wg.Done(); aggDone <- aggregator.Run(ctx, acfg, zap.NewNop(), prometheus.NewRegistry()) }()

	tokFile := filepath.Join(t.TempDir(), "hs.token")
	if err := os.WriteFile(tokFile, []byte(hsToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	icfg := ingest.DefaultConfig()
	icfg.NATS = srv.ConnConfig(authz.UserIngest)
	icfg.Topology.Partitions = 4
	icfg.MetricsAddr = testutil.FreePort(t)
	icfg.Appservice.ListenAddr = "127.0.0.1:0"
	icfg.Homeservers = []ingest.HomeserverConfig{{Name: "hs.test", HSTokenFile: tokFile}}
	bound := make(chan string, 1)
	ingDone := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		ingDone <- ingest.Run(ctx, icfg, zap.NewNop(), prometheus.NewRegistry(), bound)
	}()

	var addr string
	select {
	case addr = <-bound:
	case err := <-ingDone:
		t.Fatalf("ingest stopped: %v", err)
	case err := <-aggDone:
		t.Fatalf("aggregator stopped: %v", err)
	case <-time.After(waitTimeout):
		t.Fatal("the ingest's appservice listener did not start")
	}
	waitFor(t, "the aggregator ready", func() bool {
		resp, err := http.Get("http://" + acfg.HTTP.Listen + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return addr
}

func putTxn(t *testing.T, addr, txnID string, evs ...string) {
	t.Helper()
	testutil.PutTransaction(t, addr, hsToken, txnID, evs...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sourceDir is this package's directory (consumer.mjs, package.json,
// package-lock.json).
func sourceDir(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the source tree")
	}
	return filepath.Dir(file)
}

// nodeAndModules returns the node binary and the directory holding the
// pinned node_modules (npm ci from the committed package-lock.json, into a
// cache directory keyed by package.json and package-lock.json). Without
// node or npm the test is skipped on a developer's machine and fails in CI
// (.ci/run installs Debian's nodejs and npm).
func nodeAndModules(t *testing.T) (node, dir string) {
	t.Helper()
	node, errNode := exec.LookPath("node")
	_, errNPM := exec.LookPath("npm")
	if err := errors.Join(errNode, errNPM); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node and npm are needed (.ci/run installs them): %v", err)
		}
		t.Skipf("node or npm not installed: %v", err)
	}
	dir, err := installModules(sourceDir(t))
	if err != nil {
		t.Fatal(err)
	}
	return node, dir
}

// installModules installs the consumer's pinned packages into the cache
// ($NODECONSUMER_CACHE_DIR, else ~/.cache/rtc-sessions/nodeconsumer).
func installModules(src string) (string, error) {
	root, err := nodemods.CacheRoot("nodeconsumer", "NODECONSUMER_CACHE_DIR")
	if err != nil {
		return "", err
	}
	return nodemods.Install(src, root)
}
