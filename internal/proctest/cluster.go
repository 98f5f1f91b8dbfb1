package proctest

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/testutil"
)

// NATSCluster is a JetStream cluster of nats-server processes on loopback,
// each with its own file store, connected by routes: what production runs
// (three servers, streams with three replicas). A node can be SIGKILLed and
// started again on its port and store.
type NATSCluster struct {
	h     *Harness
	Nodes []*NATSServer
}

// StartNATSCluster starts n nats-server processes named n1, n2, ... that
// form the cluster "proctest" (every node routes to every other), and waits
// until each answers JetStream requests (a meta leader is elected).
func (h *Harness) StartNATSCluster(n int) *NATSCluster {
	h.t.Helper()
	c := &NATSCluster{h: h}
	routes := make([]string, n)
	clusterAddrs := make([]string, n)
	for i := range n {
		clusterAddrs[i] = testutil.FreePort(h.t)
		routes[i] = "nats-route://" + clusterAddrs[i]
	}
	for i := range n {
		c.Nodes = append(c.Nodes, &NATSServer{h: h, Addr: testutil.FreePort(h.t), StoreDir: h.t.TempDir(),
			name: fmt.Sprintf("n%d", i+1),
			extra: []string{"--cluster_name", "proctest", "--cluster", "nats://" + clusterAddrs[i],
				"--routes", strings.Join(routes, ",")}})
	}
	// Together: no node is ready before a quorum of them runs.
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, node := range c.Nodes {
		wg.Go(func() { errs[i] = node.Start() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		h.t.Fatalf("nats cluster: %v", err)
	}
	return c
}

// URLs are the nodes' client URLs.
func (c *NATSCluster) URLs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.URL()
	}
	return out
}

// Node returns the node with the server name (as stream info's
// Cluster.Leader names it), or nil.
func (c *NATSCluster) Node(name string) *NATSServer {
	for _, n := range c.Nodes {
		if n.Name() == name {
			return n
		}
	}
	return nil
}

// Name is the server name (-n).
func (n *NATSServer) Name() string {
	if n.name == "" {
		return "proctest"
	}
	return n.name
}

// Connect opens a client connection to every node that reconnects forever
// (it survives the loss of any node); it is closed when the test ends.
func (c *NATSCluster) Connect() (*nats.Conn, jetstream.JetStream) {
	c.h.t.Helper()
	nc, err := nats.Connect(strings.Join(c.URLs(), ","), nats.Name("proctest"), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		c.h.t.Fatalf("connect to the cluster: %v", err)
	}
	c.h.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		c.h.t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}
