package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/aggregator"
	"github.com/rtcsessions/rtc-sessions/internal/api"
	"github.com/rtcsessions/rtc-sessions/internal/authz"
	"github.com/rtcsessions/rtc-sessions/internal/authz/authztest"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

const (
	roomA = id.RoomID("!alpha:hs.test")
	roomB = id.RoomID("!beta:hs.test")

	tokenAll   = "secret-all-rooms"
	tokenRoomA = "secret-room-a"
)

// pipeline is the real thing on loopback: an embedded nats-server with the
// shipped users and permissions, the aggregator (in-process, as the
// aggregator user), the ingest's publishes (as the ingest user) and rtcapi
// (api.Run, as the api user) on a free port.
type pipeline struct {
	t      testing.TB
	srv    *authztest.Server
	ingest *authztest.Client
	base   string // http://127.0.0.1:port
	evSeq  atomic.Int64
}

func startPipeline(t testing.TB, tune func(*api.Config)) *pipeline {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	p := &pipeline{t: t, srv: authztest.Start(t)}

	acfg := aggregator.DefaultConfig()
	acfg.NATS = p.srv.ConnConfig(authz.UserAggregator)
	acfg.Topology.Partitions = 4
	acfg.HTTP.Listen = ""
	acfg.Worker.ID = "agg-apitest"
	acfg.Worker.JoinDelay = 0
	acfg.Worker.StatsInterval = 0
	acfg.ShutdownGrace = 2 * time.Second
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := aggregator.Run(ctx, acfg, zap.NewNop(), prometheus.NewRegistry()); err != nil && ctx.Err() == nil {
			t.Errorf("aggregator: %v", err)
		}
	}()
	// The topology the aggregator creates, as the api user sees it.
	probe := p.srv.Connect(t, authz.UserAPI)
	waitFor(t, 30*time.Second, "the aggregator's topology", func() error {
		if _, err := probe.JS.Stream(ctx, topology.StreamHistory); err != nil {
			return err
		}
		_, err := probe.JS.KeyValue(ctx, events.BucketSessions)
		return err
	})
	p.ingest = p.srv.Connect(t, authz.UserIngest)

	dir := t.TempDir()
	cfg := api.DefaultConfig()
	cfg.Log.Level = "debug"
	cfg.NATS = p.srv.ConnConfig(authz.UserAPI)
	cfg.Listen = "127.0.0.1:0"
	cfg.SSE.Heartbeat = time.Second
	cfg.CORS.AllowedOrigins = []string{"https://dash.example.org"}
	cfg.Auth.Tokens = []api.TokenConfig{
		{Name: "all", File: writeFile(t, dir, "all", tokenAll+"\n")},
		{Name: "room-a", File: writeFile(t, dir, "room-a", tokenRoomA), Rooms: []string{string(roomA)}},
	}
	if tune != nil {
		tune(&cfg)
	}
	bound := make(chan string, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := api.Run(ctx, cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), nil, bound); err != nil {
			t.Errorf("rtcapi: %v", err)
		}
	}()
	select {
	case addr := <-bound:
		p.base = "http://" + addr
	case <-time.After(10 * time.Second):
		t.Fatal("rtcapi did not listen")
	}
	// Stop rtcapi and the aggregator before the server (cleanups run last
	// first), so that they do not log a lost server.
	t.Cleanup(func() { cancel(); wg.Wait() })
	waitFor(t, 20*time.Second, "rtcapi ready", func() error {
		code, body := p.get("/readyz", "")
		if code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	return p
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func waitFor(t testing.TB, within time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %v after %s", what, err, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// get does a GET with a bearer token ("" for none).
func (p *pipeline) get(path, token string) (int, []byte) {
	p.t.Helper()
	return p.do("GET", path, token, nil)
}

func (p *pipeline) do(method, path, token string, hdr http.Header) (int, []byte) {
	p.t.Helper()
	req, err := http.NewRequest(method, p.base+path, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatal(err)
	}
	return resp.StatusCode, b
}

// ---- inputs, as the ingest publishes them ----

const focus = `"focus_active":{"type":"livekit","focus_selection":"oldest_membership"},` +
	`"foci_preferred":[{"type":"livekit","livekit_service_url":"https://rtc.example.org","livekit_alias":"a"}]`

func (p *pipeline) member(room id.RoomID, user id.UserID, dev string, content string) {
	p.t.Helper()
	sk := "_" + string(user) + "_" + dev + "_m.call"
	ts := time.Now().UnixMilli()
	ev := rawevent.RawEvent{Kind: rawevent.InputEvent, Homeserver: "hs.test", Source: rawevent.SourceAppservice, ReceivedAt: ts,
		RoomID: room, EventID: id.EventID(fmt.Sprintf("$ev%d-%d", ts, p.evSeq.Add(1))), Type: rawevent.TypeCallMember.Type,
		StateKey: &sk, Sender: user, OriginServerTS: ts, Content: json.RawMessage(content)}
	data, err := rawevent.EncodeRaw(&ev)
	if err != nil {
		p.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.ingest.JS.Publish(ctx, rawevent.RawSubject(room), data, jetstream.WithMsgID(ev.MsgID())); err != nil {
		p.t.Fatal(err)
	}
}

func (p *pipeline) join(room id.RoomID, user id.UserID, dev string) {
	p.t.Helper()
	p.member(room, user, dev, fmt.Sprintf(`{"application":"m.call","call_id":"","scope":"m.room","device_id":%q,%s}`, dev, focus))
}

func (p *pipeline) leave(room id.RoomID, user id.UserID, dev string) {
	p.t.Helper()
	p.member(room, user, dev, `{}`)
}

// sessions reads GET /v1/sessions (validated against the OpenAPI document).
func (p *pipeline) sessions(token, query string) []events.LiveSession {
	p.t.Helper()
	code, body := p.get("/v1/sessions"+query, token)
	if code != 200 {
		p.t.Fatalf("GET /v1/sessions%s: %d %s", query, code, body)
	}
	validateResponse(p.t, "/v1/sessions", code, body)
	var l api.SessionList
	if err := json.Unmarshal(body, &l); err != nil {
		p.t.Fatal(err)
	}
	return l.Sessions
}

// waitSessions waits until the live sessions of room satisfy ok.
func (p *pipeline) waitSessions(room id.RoomID, what string, ok func([]events.LiveSession) bool) []events.LiveSession {
	p.t.Helper()
	var got []events.LiveSession
	waitFor(p.t, 15*time.Second, what, func() error {
		got = p.sessions(tokenAll, "?room="+urlQuery(string(room)))
		if !ok(got) {
			return errors.New("not yet")
		}
		return nil
	})
	return got
}

func urlQuery(s string) string {
	r := strings.NewReplacer("!", "%21", ":", "%3A", "#", "%23", "&", "%26", "+", "%2B", " ", "%20")
	return r.Replace(s)
}

func idU(s string) id.UserID { return id.UserID(s) }

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
