package aggregator

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rtcsessions/rtc-sessions/internal/config"
	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
	"github.com/rtcsessions/rtc-sessions/internal/roomstore"
	"github.com/rtcsessions/rtc-sessions/internal/testutil"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
)

// TestRunEmbedded runs the whole service the way `go run ./cmd/aggregator`
// does (embedded server, HTTP endpoints), checks readiness and metrics, and
// stops it like SIGTERM does.
func TestRunEmbedded(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Embedded.DataDir = filepath.Join(t.TempDir(), "nats")
	cfg.Embedded.Port = -1
	cfg.Topology.Partitions = 4
	cfg.Worker.StatsInterval = 200 * time.Millisecond
	cfg.HTTP.Listen = testutil.FreePort(t)
	cfg.ShutdownGrace = 5 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, testLogger(t), nil) }()

	get := func(path string) (int, string) { return httpGet(cfg.HTTP.Listen, path) }
	if code, body := waitReadyz(cfg.HTTP.Listen, http.StatusOK, 20*time.Second); code != http.StatusOK {
		t.Fatalf("not ready: %d %s", code, body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	_, metrics := get("/metrics")
	for _, name := range []string{"rtc_aggregator_owned_partitions 4", "rtc_aggregator_live_workers 1"} {
		if !strings.Contains(metrics, name) {
			t.Errorf("/metrics lacks %q", name)
		}
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(cfg.ShutdownGrace + 5*time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if d := time.Since(start); d > cfg.ShutdownGrace {
		t.Errorf("shutdown took %s", d)
	}
}

func TestDefaultConfigValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestExampleConfig loads configs/aggregator.yaml: it must be valid and
// state the defaults.
func TestExampleConfig(t *testing.T) {
	path := filepath.Join("..", "..", "configs", "aggregator.yaml")
	if _, err := os.Stat(path); err != nil {
		t.Skip("no example config")
	}
	cfg := DefaultConfig()
	if err := config.Load(path, "RTC_AGG_TEST_UNSET", &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	def := DefaultConfig()
	if cfg.Topology != def.Topology || cfg.Worker != def.Worker || cfg.Embedded != def.Embedded ||
		cfg.HTTP != def.HTTP || cfg.ShutdownGrace != def.ShutdownGrace || cfg.Reducer != def.Reducer || cfg.Log != def.Log {
		t.Errorf("configs/aggregator.yaml differs from the defaults:\n%+v\n%+v", cfg, def)
	}
}

func TestConfigEnvAndValidation(t *testing.T) {
	cfg := DefaultConfig()
	env := map[string]string{
		"RTC_AGG_NATS_URLS":              "nats://a:4222,nats://b:4222",
		"RTC_AGG_TOPOLOGY_MODE":          "verify",
		"RTC_AGG_TOPOLOGY_REPLICAS":      "3",
		"RTC_AGG_WORKER_ID":              "pod-1",
		"RTC_AGG_TOPOLOGY_WORKER_TTL":    "5s",
		"RTC_AGG_REDUCER_MAX_EXPIRES_MS": "86400000",
	}
	if err := config.ApplyEnv(EnvPrefix, &cfg, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if len(cfg.NATS.URLs) != 2 || cfg.Topology.Mode != topology.ModeVerify || cfg.Topology.Replicas != 3 ||
		cfg.Worker.ID != "pod-1" || cfg.Topology.WorkerTTL != 5*time.Second || cfg.Reducer.MaxExpiresMS != 86400000 {
		t.Fatalf("env not applied: %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}

	bad := DefaultConfig()
	bad.Topology.Mode = "maybe"
	bad.Topology.Partitions = 0
	bad.Worker.ID = "has space"
	bad.Worker.MaxDeliver = 0
	bad.Log.Level = "loud"
	bad.ShutdownGrace = 0
	err := bad.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"topology.mode", "partitions", "worker.id", "worker.max_deliver", "log level", "shutdown_grace"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("validation does not report %s: %v", want, err)
		}
	}
}

func TestScheduleTimeRoundsUp(t *testing.T) {
	for _, tc := range []struct {
		ms   int64
		want string
	}{
		{1767225600000, "2026-01-01T00:00:00Z"},
		{1767225600001, "2026-01-01T00:00:01Z"},
		{1767225600999, "2026-01-01T00:00:01Z"},
	} {
		if got := ScheduleTime(tc.ms).Format(time.RFC3339); got != tc.want {
			t.Errorf("ScheduleTime(%d) = %s, want %s", tc.ms, got, tc.want)
		}
	}
	m, err := TimerMsg("!r:x", 1767225600001)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("Nats-Schedule") != "@at 2026-01-01T00:00:01Z" || m.Header.Get("Nats-TTL") != "never" ||
		m.Header.Get("Nats-Schedule-Target") == "" {
		t.Errorf("timer headers: %v", m.Header)
	}
}

func TestRoomCacheLRU(t *testing.T) {
	c := newRoomCache(2)
	c.put("a", 0, &roomstore.Room{LastIn: 1})
	c.put("b", 1, &roomstore.Room{LastIn: 2})
	c.get("a")
	c.put("c", 1, &roomstore.Room{LastIn: 3}) // evicts b, the least recently used
	if _, ok := c.get("b"); ok {
		t.Error("b not evicted")
	}
	if rm, ok := c.get("a"); !ok || rm.LastIn != 1 {
		t.Errorf("a: %v %v", rm, ok)
	}
	c.dropPartition(1)
	if _, ok := c.get("c"); ok || c.len() != 1 {
		t.Errorf("dropPartition left %d entries", c.len())
	}
}

// TestRunWaitsForNATS: started while NATS is unreachable, the aggregator
// neither exits nor reports ready; it serves /readyz (503, saying why) and
// becomes ready once a server appears on its URL.
func TestRunWaitsForNATS(t *testing.T) {
	natsAddr := testutil.FreePort(t)
	_, portStr, _ := net.SplitHostPort(natsAddr)
	port, _ := strconv.Atoi(portStr)
	cfg := DefaultConfig()
	cfg.NATS.URLs = []string{"nats://" + natsAddr}
	cfg.Topology.Partitions = 4
	cfg.HTTP.Listen = testutil.FreePort(t)
	cfg.ShutdownGrace = 5 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, testLogger(t), nil) }()
	get := func(path string) (int, string) { return httpGet(cfg.HTTP.Listen, path) }
	waitFor := func(want int, what string) string {
		deadline := time.Now().Add(20 * time.Second)
		for {
			code, body := get("/readyz")
			if code == want {
				return body
			}
			select {
			case err := <-done:
				t.Fatalf("Run returned while %s: %v", what, err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /readyz %d %s", what, code, body)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	body := waitFor(http.StatusServiceUnavailable, "NATS is down")
	if !strings.Contains(body, "connecting to NATS") {
		t.Errorf("/readyz while NATS is down: %q", body)
	}
	time.Sleep(1500 * time.Millisecond) // several connection attempts
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while NATS is down: %d", code)
	}
	testutil.NATS(t, "", port)
	waitFor(http.StatusOK, "NATS is up")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(cfg.ShutdownGrace + 5*time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestRunEmbeddedWithUsers: the embedded server loads embedded.config_file
// (users and permissions) and the aggregator logs in as its user; without
// such a file, a non-loopback embedded host is refused at start.
func TestRunEmbeddedWithUsers(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("s3cret-aggregator"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(`authorization { users: [ {user: aggregator, password: "s3cret-aggregator"} ] }`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Embedded.DataDir = filepath.Join(dir, "nats")
	cfg.Embedded.Port = -1
	cfg.Embedded.Host = "0.0.0.0" // allowed: the config has users
	cfg.Embedded.ConfigFile = conf
	cfg.NATS.User, cfg.NATS.PasswordFile = "aggregator", pw
	cfg.Topology.Partitions = 2
	cfg.HTTP.Listen = testutil.FreePort(t)
	cfg.ShutdownGrace = 5 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, testLogger(t), nil) }()
	if code, body := waitReadyz(cfg.HTTP.Listen, http.StatusOK, 20*time.Second); code != http.StatusOK {
		t.Fatalf("not ready with the embedded server's users: %d %s", code, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

	cfg.Embedded.ConfigFile, cfg.NATS.User, cfg.NATS.PasswordFile = "", "", ""
	cfg.Embedded.DataDir = filepath.Join(dir, "nats2")
	err := Run(context.Background(), cfg, testLogger(t), nil)
	if !errors.Is(err, natsutil.ErrEmbeddedExposed) {
		t.Fatalf("embedded host 0.0.0.0 without users: %v, want ErrEmbeddedExposed", err)
	}
}

func TestMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		configured, container int64
		env                   string
		want                  int64
	}{
		{256 * mib, 0, "", 256 * mib},
		{256 * mib, 1024 * mib, "", 256 * mib},
		{256 * mib, 200 * mib, "", 160 * mib}, // 80% of a smaller container
		{256 * mib, 0, "300MiB", 0},           // GOMEMLIMIT wins: the runtime applied it
		{0, 200 * mib, "", 0},                 // disabled
	} {
		if got := memoryLimit(tc.configured, tc.env, tc.container); got != tc.want {
			t.Errorf("memoryLimit(%d, %q, %d) = %d, want %d", tc.configured, tc.env, tc.container, got, tc.want)
		}
	}
}

// waitReadyz polls /readyz on addr until it answers want or timeout passes,
// and returns the last answer.
func waitReadyz(addr string, want int, timeout time.Duration) (int, string) {
	deadline := time.Now().Add(timeout)
	for {
		code, body := httpGet(addr, "/readyz")
		if code == want || time.Now().After(deadline) {
			return code, body
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// httpGet returns the status and body of GET http://addr+path (0 and the
// error when there is no answer).
func httpGet(addr, path string) (int, string) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
