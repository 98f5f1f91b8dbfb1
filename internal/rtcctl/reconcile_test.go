package rtcctl

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap/zaptest"

	"github.com/rtcsessions/rtc-sessions/internal/ctlapi"
	"github.com/rtcsessions/rtc-sessions/internal/ingest"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// TestReconcile: `rtcctl reconcile ROOM` asks a running reconciler (the
// ingest's, on a real NATS server, reading a stand-in homeserver's state
// endpoint), prints what it did and fails when no homeserver could read
// the room or no ingest answers.
func TestReconcile(t *testing.T) {
	url, js := embedded(t)
	state := `[{"type":"org.matrix.msc3401.call.member","state_key":"_@a:hs1.test_A_m.call","sender":"@a:hs1.test",` +
		`"event_id":"$j","origin_server_ts":1700000000000,"content":{"application":"m.call","call_id":"","device_id":"A"}},` +
		`{"type":"m.room.member","state_key":"@a:hs1.test","sender":"@a:hs1.test","event_id":"$m","origin_server_ts":1699999999000,"content":{"membership":"join"}}]`
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_matrix/client/v3/rooms/"+string(roomA)+"/state" || r.Header.Get("Authorization") != "Bearer as" {
			http.Error(w, `{"errcode":"M_FORBIDDEN"}`, http.StatusForbidden)
			return
		}
		_, _ = w.Write([]byte(state))
	}))
	defer hs.Close()

	if code, _, errOut := run(t, "--server", url, "reconcile", string(roomA)); code != 1 || !strings.Contains(errOut, "no ingest serves") {
		t.Fatalf("without an ingest: status %d, stderr %q", code, errOut)
	}

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	log := zaptest.NewLogger(t)
	m := ingest.NewMetrics(nil)
	pub, err := ingest.NewPublisher(nc, ingest.PublisherConfig{MaxInFlight: 16, AckTimeout: 2 * time.Second}, m, log)
	if err != nil {
		t.Fatal(err)
	}
	rd := &ingest.StateReader{Homeserver: "hs1", URL: hs.URL, Kind: "appservice", Token: func() string { return "as" }, MaxBytes: 1 << 20}
	rec := ingest.NewReconciler([]*ingest.StateReader{rd}, pub, js, ingest.NewRoomTracker(time.Hour, 10), m, log,
		ingest.ReconcileOptions{MaxRoomsPerPass: 10, RequestsPerSecond: 100, OnDemand: true})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rec.Run(ctx, nc) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for { // until the reconciler's subscription is there
		if _, err := nc.Request(ctlapi.ReconcileSubject, []byte(`{}`), time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the reconciler does not answer")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// An ingest that cannot reconcile (no homeserver it can read state
	// from) answers too, in a queue group of its own: the one that can
	// still gets the request, and its answer wins.
	offSub, err := ingest.SubscribeReconcileOff(nc, "no homeserver has as_token_file (with url) or a sync bot to read room state with", log)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, "--server", url, "reconcile", string(roomA))
	if want := string(roomA) + ": reconciled from hs1: 2 state events, 2 new in RTC_RAW, 0 already there\n"; code != 0 || out != want {
		t.Fatalf("status %d, stdout %q (want %q), stderr %q", code, out, want, errOut)
	}
	code, out, _ = run(t, "--server", url, "reconcile", "--json", string(roomA))
	var reply ctlapi.ReconcileReply
	if err := json.Unmarshal([]byte(out), &reply); code != 0 || err != nil || len(reply.Attempts) != 1 ||
		reply.Attempts[0].Stored != 0 || reply.Attempts[0].Duplicates != 2 {
		t.Fatalf("again, as JSON: status %d, %q (%v)", code, out, err)
	}
	raw, err := js.Stream(context.Background(), rawevent.StreamRaw)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := raw.Info(context.Background()); err != nil || info.State.Msgs != 2 {
		t.Fatalf("RTC_RAW: %+v %v, want the 2 state events once", info.State, err)
	}
	code, out, errOut = run(t, "--server", url, "reconcile", string(roomB))
	if code != 1 || !strings.Contains(out, "hs1 could not read it: forbidden") || !strings.Contains(errOut, "no homeserver could read the room") {
		t.Fatalf("unreadable room: status %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, errOut := run(t, "--server", url, "reconcile", "--homeserver", "hs9", string(roomA)); code != 1 || !strings.Contains(errOut, `homeserver "hs9"`) {
		t.Fatalf("unknown homeserver: status %d, stderr %q", code, errOut)
	}
	if code, _, _ := run(t, "--server", url, "reconcile", "not-a-room"); code != 2 {
		t.Fatalf("bad room id: status %d, want 2", code)
	}

	// Only ingests that do not reconcile on demand: their reason, at once.
	cancel()
	<-done
	done <- nil
	start := time.Now()
	code, out, errOut = run(t, "--server", url, "reconcile", string(roomA))
	if code != 1 || out != "" || !strings.Contains(errOut, "the ingest does not reconcile on demand: no homeserver has as_token_file") ||
		strings.Contains(errOut, "no ingest serves") || time.Since(start) > 5*time.Second {
		t.Fatalf("no reader: status %d after %s, stdout %q, stderr %q", code, time.Since(start), out, errOut)
	}
	_ = offSub.Unsubscribe()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	off := ingest.NewReconciler([]*ingest.StateReader{rd}, pub, js, ingest.NewRoomTracker(time.Hour, 10), ingest.NewMetrics(nil), log,
		ingest.ReconcileOptions{MaxRoomsPerPass: 10, RequestsPerSecond: 100, OnDemand: false})
	go func() { _ = off.Run(ctx2, nc) }()
	deadline = time.Now().Add(10 * time.Second)
	for {
		code, out, errOut = run(t, "--server", url, "reconcile", "--json", string(roomA))
		if !strings.Contains(errOut, "no ingest serves") || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	reply = ctlapi.ReconcileReply{}
	if err := json.Unmarshal([]byte(out), &reply); code != 1 || err != nil || reply.Off != "reconcile.on_demand is false" ||
		!strings.Contains(errOut, "reconcile.on_demand is false") {
		t.Fatalf("on_demand false: status %d, stdout %q, stderr %q", code, out, errOut)
	}
}
