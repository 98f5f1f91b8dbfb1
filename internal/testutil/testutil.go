// Package testutil holds what the integration tests of several packages
// share: a real embedded JetStream server and a free loopback port.
package testutil

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS starts an in-process nats-server with JetStream on 127.0.0.1 (port
// -1: any free port), storing under dir (t.TempDir() when empty), and shuts
// it down when the test ends. A test may also shut it down and start another
// on the same dir and port to simulate a restart.
func NATS(t testing.TB, dir string, port int) *server.Server {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir,
		NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready after 10s")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

// JetStream connects to ns and closes the connection when the test ends.
func JetStream(t testing.TB, ns *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// FreePort returns a loopback address nothing listens on right now.
func FreePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// PutTransaction sends an appservice transaction of the events (JSON
// objects) to the ingest at addr with the homeserver token, as a homeserver
// does, and fails the test unless it is answered 200.
func PutTransaction(t testing.TB, addr, hsToken, txnID string, evs ...string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://"+addr+"/_matrix/app/v1/transactions/"+txnID,
		strings.NewReader(`{"events":[`+strings.Join(evs, ",")+`]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+hsToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("transaction %s: HTTP %d", txnID, resp.StatusCode)
	}
}
