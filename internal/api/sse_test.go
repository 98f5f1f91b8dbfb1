package api

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// TestEventsGap: a Last-Event-ID older than what RTC_EVENTS still keeps
// gets an `event: gap` first (then the events it keeps), so that a client
// knows it missed events instead of resuming silently past them.
func TestEventsGap(t *testing.T) {
	ns, err := natsutil.StartEmbedded(natsutil.EmbeddedConfig{DataDir: t.TempDir(), Port: -1}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// RTC_EVENTS keeping only 2 events stands for retention having removed
	// the older ones.
	sc := topology.EventsStream(topology.DefaultConfig())
	sc.MaxMsgs = 2
	if _, err := js.CreateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 5; seq++ {
		ev := events.SessionEvent{V: events.SchemaVersion, ID: eventcodec.EventID("!r:hs", seq), Seq: seq, Kind: events.KindMemberUpdated,
			SessionID: "s", RoomID: "!r:hs", Application: "m.call"}
		b, err := wire.Marshal(&ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, ev.Subject(), b); err != nil {
			t.Fatal(err)
		}
	}
	cfg := DefaultConfig()
	cfg.Auth.AllowAnonymous = true
	s, err := New(cfg, nc, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	defer s.Close()

	for _, tc := range []struct {
		last    string
		wantGap bool
		firstID string
	}{{"1", true, "4"}, {"3", false, "4"}, {"4", false, "5"}} {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/events", nil)
		req.Header.Set("Last-Event-ID", tc.last)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		gap, id := false, ""
		for id == "" && sc.Scan() {
			line := sc.Text()
			if line == "event: gap" {
				gap = true
				if !sc.Scan() || sc.Text() != `data: {"after":`+tc.last+`,"first":4}` {
					t.Errorf("Last-Event-ID %s: gap data %q", tc.last, sc.Text())
				}
			}
			if strings.HasPrefix(line, "id: ") {
				id = line[4:]
			}
		}
		resp.Body.Close()
		if gap != tc.wantGap || id != tc.firstID {
			t.Errorf("Last-Event-ID %s: gap %v, first id %s; want %v, %s", tc.last, gap, id, tc.wantGap, tc.firstID)
		}
	}
}
