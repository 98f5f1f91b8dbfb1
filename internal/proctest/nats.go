package proctest

import (
	"fmt"
	"net"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/proctest/childproc"
	"github.com/rtcsessions/rtc-sessions/internal/testutil"
)

// NATSServer is a standalone nats-server process with JetStream and file
// storage, listening on 127.0.0.1. It can be stopped and started again on
// the same port and store directory (a restart, as in a rolling upgrade).
type NATSServer struct {
	h        *Harness
	Addr     string // host:port
	StoreDir string
	Proc     *Proc // the current process
	starts   int
	// name is the server name (-n); extra are more arguments (a cluster
	// node's routes).
	name  string
	extra []string
}

// StartNATS starts nats-server with JetStream storing under storeDir
// (t.TempDir() when empty) on a free loopback port, and waits until
// JetStream answers.
func (h *Harness) StartNATS(storeDir string) *NATSServer {
	h.t.Helper()
	if storeDir == "" {
		storeDir = h.t.TempDir()
	}
	n := &NATSServer{h: h, Addr: testutil.FreePort(h.t), StoreDir: storeDir}
	if err := n.Start(); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// URL is the client URL.
func (n *NATSServer) URL() string { return "nats://" + n.Addr }

// Start starts the server process (after Stop) and waits until it is ready.
func (n *NATSServer) Start() error {
	host, port, err := net.SplitHostPort(n.Addr)
	if err != nil {
		return fmt.Errorf("nats-server address %q: %w", n.Addr, err)
	}
	n.starts++
	name, label := n.name, "nats-server"
	if name == "" {
		name = "proctest"
	} else {
		label += " " + name
	}
	p, err := n.h.Start(fmt.Sprintf("%s#%d", label, n.starts), n.h.Bins.NATSServer,
		append([]string{"-a", host, "-p", port, "-js", "-sd", n.StoreDir, "-n", name}, n.extra...))
	if err != nil {
		return err
	}
	n.Proc = p
	return p.WaitFor(30*time.Second, n.ping)
}

// ping is nil once JetStream answers.
func (n *NATSServer) ping() error { return childproc.JetStreamReady(n.URL()) }

// Stop sends SIGTERM (a graceful shutdown: JetStream flushes its store) and
// waits for the process to exit.
func (n *NATSServer) Stop() error {
	if err := n.Proc.Stop(30 * time.Second); err != nil {
		return fmt.Errorf("stop nats-server: %w", err)
	}
	return nil
}

// Restart stops the server, waits down, and starts it again on the same
// port and store directory.
func (n *NATSServer) Restart(down time.Duration) error {
	if err := n.Stop(); err != nil {
		return err
	}
	time.Sleep(down)
	return n.Start()
}

// Connect opens a client connection that reconnects forever (it survives
// restarts); it is closed when the test ends.
func (n *NATSServer) Connect() (*nats.Conn, jetstream.JetStream) {
	n.h.t.Helper()
	nc, err := nats.Connect(n.URL(), nats.Name("proctest"), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		n.h.t.Fatalf("connect to %s: %v", n.URL(), err)
	}
	n.h.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		n.h.t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}
