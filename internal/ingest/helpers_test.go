package ingest

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/testutil"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
)

// startNATS starts a real embedded JetStream server on loopback (port -1:
// any free port) storing under dir.
func startNATS(t testing.TB, dir string, port int) *server.Server { return testutil.NATS(t, dir, port) }

type env struct {
	ns   *server.Server
	dir  string
	port int
	url  string
	nc   *nats.Conn
	pub  *Publisher
	m    *Metrics
	log  *zap.Logger
}

// newEnv starts NATS, connects the way the ingest does and creates RTC_RAW.
func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), log: zaptest.NewLogger(t)}
	e.ns = startNATS(t, e.dir, -1)
	e.port = e.ns.Addr().(*net.TCPAddr).Port
	e.url = e.ns.ClientURL()
	t.Cleanup(func() { e.ns.Shutdown() })
	ctx := context.Background()
	nc, err := natsutil.Connect(ctx, natsutil.ConnConfig{URLs: []string{e.url}, Name: "ingest-test"}, e.log,
		nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	e.nc = nc
	e.m = NewMetrics(nil)
	e.pub, err = NewPublisher(nc, PublisherConfig{MaxInFlight: 64, AckTimeout: 2 * time.Second}, e.m, e.log)
	if err != nil {
		t.Fatal(err)
	}
	tc := topology.DefaultConfig()
	tc.Partitions = 4
	if _, err := topology.EnsureRaw(ctx, e.pub.JetStream(), tc, topology.ModeCreate); err != nil {
		t.Fatal(err)
	}
	return e
}

// restart stops the server and starts it again on the same port and store.
func (e *env) stop() { e.ns.Shutdown(); e.ns.WaitForShutdown() }

func (e *env) start(t *testing.T) {
	e.ns = startNATS(t, e.dir, e.port)
	t.Cleanup(func() { e.ns.Shutdown() })
	deadline := time.Now().Add(10 * time.Second)
	for e.nc.Status() != nats.CONNECTED {
		if time.Now().After(deadline) {
			t.Fatal("client did not reconnect")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rawContents reads every message of RTC_RAW with a separate connection.
func rawContents(t *testing.T, url string) []rawevent.RawEvent {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, rawevent.StreamRaw)
	if err != nil {
		t.Fatal(err)
	}
	var out []rawevent.RawEvent
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		ev, err := rawevent.DecodeRaw(m.Data)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		if got := m.Header.Get(jetstream.MsgIDHeader); got != ev.MsgID() {
			t.Errorf("seq %d: Nats-Msg-Id %q, event id %q", seq, got, ev.EventID)
		}
		out = append(out, ev)
	}
	return out
}
