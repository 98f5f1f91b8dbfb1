package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rtcsessions/rtc-sessions/internal/api"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// sseEvent is one event of a text/event-stream, or a comment.
type sseEvent struct {
	id, event, data string
	comment         string
}

// sseStream reads GET path as an event stream in the background.
type sseStream struct {
	resp   *http.Response
	events chan sseEvent
	cancel context.CancelFunc
}

func (p *pipeline) openSSE(t *testing.T, path, token string, hdr http.Header) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", p.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	s := &sseStream{resp: resp, events: make(chan sseEvent, 1000), cancel: cancel}
	t.Cleanup(s.close)
	if resp.StatusCode != 200 {
		return s
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("%s: content type %q", path, ct)
	}
	go func() {
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		var cur sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if cur != (sseEvent{}) {
					s.events <- cur
				}
				cur = sseEvent{}
			case strings.HasPrefix(line, ":"):
				s.events <- sseEvent{comment: strings.TrimSpace(line[1:])}
			case strings.HasPrefix(line, "id: "):
				cur.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				cur.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				cur.data = line[6:]
			}
		}
	}()
	return s
}

func (s *sseStream) close() { s.cancel(); s.resp.Body.Close() }

// next returns the next event (not a comment) within d.
func (s *sseStream) next(t *testing.T, d time.Duration) (sseEvent, events.SessionEvent) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case e, ok := <-s.events:
			if !ok {
				t.Fatal("event stream ended")
			}
			if e.comment != "" {
				continue
			}
			var ev events.SessionEvent
			if err := json.Unmarshal([]byte(e.data), &ev); err != nil {
				t.Fatalf("event data %q: %v", e.data, err)
			}
			if string(ev.Kind) != e.event {
				t.Fatalf("event: %s, data kind %s", e.event, ev.Kind)
			}
			return e, ev
		case <-timeout:
			t.Fatalf("no event within %s", d)
		}
	}
}

// TestAPI runs the routes against the real pipeline: calls joined and left
// through RTC_RAW, processed by the aggregator, read by rtcapi as the
// shipped api user. Every JSON response is checked against the OpenAPI
// document.
func TestAPI(t *testing.T) {
	p := startPipeline(t, nil)
	alice, bob, carol := "@alice:hs.test", "@bob:hs.test", "@carol:hs.test"

	// The whole stream from the start, opened before anything happens.
	all := p.openSSE(t, "/v1/events?from=start", tokenAll, nil)
	onlyA := p.openSSE(t, "/v1/events", tokenRoomA, nil)
	joinsA := p.openSSE(t, "/v1/events?kind=member_joined&room="+urlQuery(string(roomA)), tokenAll, nil)

	if got := p.sessions(tokenAll, ""); len(got) != 0 {
		t.Fatalf("sessions before any call: %+v", got)
	}
	p.join(roomA, idU(alice), "A1")
	p.join(roomB, idU(bob), "B1")
	first := p.waitSessions(roomA, "alice's call", func(s []events.LiveSession) bool { return len(s) == 1 && s[0].Participants == 1 })
	p.waitSessions(roomB, "bob's call", func(s []events.LiveSession) bool { return len(s) == 1 })
	p.join(roomA, idU(carol), "C1")
	a := p.waitSessions(roomA, "carol joined", func(s []events.LiveSession) bool { return len(s) == 1 && s[0].Participants == 2 })
	if a[0].SessionID != first[0].SessionID {
		t.Errorf("carol's join started another session: %s, then %s", first[0].SessionID, a[0].SessionID)
	}
	if a[0].RoomID != roomA || a[0].Application != "m.call" || len(a[0].Members) != 2 || a[0].Members[0].UserID != idU(alice) {
		t.Fatalf("room A's session: %+v", a[0])
	}

	t.Run("sessions", func(t *testing.T) {
		tests := []struct {
			name, token, query string
			rooms              []string // the rooms of the sessions listed
		}{
			{"every room", tokenAll, "", []string{string(roomA), string(roomB)}},
			{"a room", tokenAll, "?room=" + urlQuery(string(roomB)), []string{string(roomB)}},
			{"an application", tokenAll, "?app=m.call", []string{string(roomA), string(roomB)}},
			{"another application", tokenAll, "?app=io.example.game", nil},
			{"a token of room A", tokenRoomA, "", []string{string(roomA)}},
			{"a token of room A, room A", tokenRoomA, "?room=" + urlQuery(string(roomA)), []string{string(roomA)}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				var rooms []string
				for _, s := range p.sessions(tc.token, tc.query) {
					rooms = append(rooms, string(s.RoomID))
				}
				if strings.Join(rooms, ",") != strings.Join(tc.rooms, ",") {
					t.Errorf("rooms %v, want %v", rooms, tc.rooms)
				}
			})
		}
		code, body := p.get("/v1/sessions/"+a[0].SessionID, tokenAll)
		validateResponse(t, "/v1/sessions/{session_id}", code, body)
		var one events.LiveSession
		if err := json.Unmarshal(body, &one); code != 200 || err != nil || one.SessionID != a[0].SessionID || one.Participants != 2 {
			t.Errorf("GET a session: %d %s", code, body)
		}
		b := p.sessions(tokenAll, "?room="+urlQuery(string(roomB)))[0]
		for _, tc := range []struct {
			path, route, token string
			code               int
			errCode            string
		}{
			{"/v1/sessions", "/v1/sessions", "", 401, "unauthorized"},
			{"/v1/sessions", "/v1/sessions", "wrong", 401, "unauthorized"},
			{"/v1/sessions?room=" + urlQuery(string(roomB)), "/v1/sessions", tokenRoomA, 403, "forbidden"},
			{"/v1/sessions/" + b.SessionID, "/v1/sessions/{session_id}", tokenRoomA, 404, "not_found"},
			{"/v1/sessions/nope", "/v1/sessions/{session_id}", tokenAll, 404, "not_found"},
			{"/v1/rooms/" + urlQuery(string(roomB)) + "/history", "/v1/rooms/{room}/history", tokenRoomA, 403, "forbidden"},
			{"/v1/rooms/" + urlQuery(string(roomA)) + "/history?limit=0", "/v1/rooms/{room}/history", tokenAll, 400, "bad_request"},
			{"/v1/rooms/" + urlQuery(string(roomA)) + "/history?cursor=x", "/v1/rooms/{room}/history", tokenAll, 400, "bad_request"},
			{"/v1/rooms/alpha/history", "/v1/rooms/{room}/history", tokenAll, 400, "bad_request"},
			{"/v1/history?limit=100000", "/v1/history", tokenAll, 400, "bad_request"},
			{"/v1/events?kind=exploded", "/v1/events", tokenAll, 400, "bad_request"},
			{"/v1/events?room=" + urlQuery(string(roomB)), "/v1/events", tokenRoomA, 403, "forbidden"},
			{"/v1/events", "/v1/events", "", 401, "unauthorized"},
		} {
			code, body := p.get(tc.path, tc.token)
			var e api.ErrorBody
			if err := json.Unmarshal(body, &e); code != tc.code || err != nil || e.Error.Code != tc.errCode || e.Error.Message == "" {
				t.Errorf("GET %s: %d %s, want %d %s", tc.path, code, body, tc.code, tc.errCode)
				continue
			}
			validateResponse(t, tc.route, code, body)
		}
		// The token as a query parameter (EventSource cannot set headers).
		if code, body := p.get("/v1/sessions?access_token="+tokenRoomA, ""); code != 200 || strings.Contains(string(body), string(roomB)) {
			t.Errorf("access_token: %d %s", code, body)
		}
	})

	// Bob and Alice leave: room B's session ends; room A goes on with Carol.
	p.leave(roomB, idU(bob), "B1")
	p.leave(roomA, idU(alice), "A1")
	p.waitSessions(roomB, "room B's call ended", func(s []events.LiveSession) bool { return len(s) == 0 })
	p.waitSessions(roomA, "alice left", func(s []events.LiveSession) bool { return len(s) == 1 && s[0].Participants == 1 })

	t.Run("events", func(t *testing.T) {
		// Everything so far, in stream order, ids the stream sequences.
		var seen []events.SessionEvent
		var ids []uint64
		// 2 sessions started, 3 joins, 2 leaves, 1 end; the rooms' events
		// interleave in any order (they are in different partitions).
		for len(seen) < 8 {
			e, ev := all.next(t, 10*time.Second)
			n, err := strconv.ParseUint(e.id, 10, 64)
			if err != nil || (len(ids) > 0 && n <= ids[len(ids)-1]) {
				t.Fatalf("id %q after %v", e.id, ids)
			}
			seen, ids = append(seen, ev), append(ids, n)
		}
		kinds := map[events.Kind]int{}
		for _, ev := range seen {
			kinds[ev.Kind]++
		}
		if kinds[events.KindSessionStarted] != 2 || kinds[events.KindMemberJoined] != 3 || kinds[events.KindMemberLeft] != 2 ||
			kinds[events.KindSessionEnded] != 1 {
			t.Errorf("kinds %v", kinds)
		}
		// Room A's token sees room A only, from when it connected.
		for i := 0; i < 4; i++ { // started, alice, carol joined, alice left
			_, ev := onlyA.next(t, 10*time.Second)
			if ev.RoomID != roomA {
				t.Fatalf("room A's token got an event of %s", ev.RoomID)
			}
		}
		for i := 0; i < 2; i++ {
			_, ev := joinsA.next(t, 10*time.Second)
			if ev.Kind != events.KindMemberJoined || ev.RoomID != roomA {
				t.Fatalf("kind and room filter: %s %s", ev.Kind, ev.RoomID)
			}
		}
		// Resume: after the third event, the fourth comes first (header or
		// query parameter), whichever replica answers.
		for _, resume := range []struct {
			path string
			hdr  http.Header
		}{
			{"/v1/events", http.Header{"Last-Event-Id": {strconv.FormatUint(ids[2], 10)}}},
			{"/v1/events?last_event_id=" + strconv.FormatUint(ids[2], 10), nil},
		} {
			r := p.openSSE(t, resume.path, tokenAll, resume.hdr)
			e, ev := r.next(t, 10*time.Second)
			if e.id != strconv.FormatUint(ids[3], 10) || ev.ID != seen[3].ID {
				t.Errorf("resumed with %s: id %s (%s), want %d (%s)", resume.path, e.id, ev.ID, ids[3], seen[3].ID)
			}
			r.close()
		}
		// Backfill by time: everything stored within the last hour, from
		// the first event on.
		since := p.openSSE(t, "/v1/events?since=1h", tokenAll, nil)
		if e, _ := since.next(t, 10*time.Second); e.id != strconv.FormatUint(ids[0], 10) {
			t.Errorf("since=1h starts at id %s, want %d", e.id, ids[0])
		}
		since.close()
		if code, _ := p.get("/v1/events?since=yesterday", tokenAll); code != 400 {
			t.Errorf("bad since: %d", code)
		}
		// Heartbeats (every second in this test) on an idle stream.
		deadline := time.After(5 * time.Second)
		for beat := false; !beat; {
			select {
			case e := <-joinsA.events:
				beat = e.comment == "heartbeat"
			case <-deadline:
				t.Fatal("no heartbeat within 5s")
			}
		}
		if code, _ := p.get("/v1/events?last_event_id=x", tokenAll); code != 400 {
			t.Errorf("bad Last-Event-ID: %d", code)
		}
	})

	// Room A: three more sessions, each started and ended, for the pages.
	p.leave(roomA, idU(carol), "C1")
	p.waitSessions(roomA, "room A's first call ended", func(s []events.LiveSession) bool { return len(s) == 0 })
	for i := 0; i < 3; i++ {
		p.join(roomA, idU(alice), "A1")
		p.waitSessions(roomA, "a call", func(s []events.LiveSession) bool { return len(s) == 1 })
		p.leave(roomA, idU(alice), "A1")
		p.waitSessions(roomA, "the call ended", func(s []events.LiveSession) bool { return len(s) == 0 })
	}

	t.Run("history", func(t *testing.T) {
		page := func(path, token string) api.HistoryPage {
			t.Helper()
			code, body := p.get(path, token)
			route := "/v1/history"
			if strings.HasPrefix(path, "/v1/rooms/") {
				route = "/v1/rooms/{room}/history"
			}
			if code != 200 {
				t.Fatalf("GET %s: %d %s", path, code, body)
			}
			validateResponse(t, route, code, body)
			var hp api.HistoryPage
			if err := json.Unmarshal(body, &hp); err != nil {
				t.Fatal(err)
			}
			return hp
		}
		var full api.HistoryPage
		roomPath := "/v1/rooms/" + urlQuery(string(roomA)) + "/history"
		waitFor(t, 10*time.Second, "room A's 4 ended sessions in RTC_HISTORY", func() error {
			if full = page(roomPath, tokenAll); len(full.Sessions) != 4 {
				return errorf("%d sessions", len(full.Sessions))
			}
			return nil
		})
		if full.NextCursor != "" {
			t.Errorf("one page holds all: next_cursor %q", full.NextCursor)
		}
		for i, e := range full.Sessions {
			ev := e.Event
			if ev.Kind != events.KindSessionEnded || ev.RoomID != roomA || ev.Summary == nil || ev.Summary.Joins < 1 {
				t.Fatalf("entry %d: %+v", i, ev)
			}
			if i > 0 && (e.Seq >= full.Sessions[i-1].Seq || ev.Summary.EndedAt > full.Sessions[i-1].Event.Summary.EndedAt) {
				t.Errorf("not newest first: %d after %d", e.Seq, full.Sessions[i-1].Seq)
			}
		}
		if s := full.Sessions[3].Event.Summary; s.PeakParticipants != 2 || s.DistinctUsers != 2 {
			t.Errorf("the first session's summary: %+v", s)
		}
		// Pages of 3 and 1, the same entries.
		p1 := page(roomPath+"?limit=3", tokenAll)
		if len(p1.Sessions) != 3 || p1.NextCursor == "" {
			t.Fatalf("first page: %d entries, cursor %q", len(p1.Sessions), p1.NextCursor)
		}
		p2 := page(roomPath+"?limit=3&cursor="+p1.NextCursor, tokenAll)
		if len(p2.Sessions) != 1 || p2.NextCursor != "" || p2.Sessions[0].Event.SessionID != full.Sessions[3].Event.SessionID {
			t.Fatalf("second page: %+v", p2)
		}
		for i, e := range p1.Sessions {
			if e.Event.SessionID != full.Sessions[i].Event.SessionID {
				t.Errorf("page 1 entry %d: %s, want %s", i, e.Event.SessionID, full.Sessions[i].Event.SessionID)
			}
		}
		if got := page(roomPath+"?app=io.example.game", tokenAll); len(got.Sessions) != 0 {
			t.Errorf("another application: %d", len(got.Sessions))
		}
		// Every room: 5 (room B's too), newest first; paged by 2.
		var ids []string
		cursor := ""
		for n := 0; n < 5; n++ {
			hp := page("/v1/history?limit=2"+cursor, tokenAll)
			for _, e := range hp.Sessions {
				ids = append(ids, string(e.Event.RoomID))
			}
			if hp.NextCursor == "" {
				break
			}
			cursor = "&cursor=" + hp.NextCursor
		}
		if strings.Join(ids, ",") != strings.Join([]string{string(roomA), string(roomA), string(roomA), string(roomA), string(roomB)}, ",") {
			t.Errorf("every room's history: %v", ids)
		}
		// Room A's token: room A's only.
		if got := page("/v1/history?limit=10", tokenRoomA); len(got.Sessions) != 4 {
			t.Errorf("room A's token: %d entries", len(got.Sessions))
		}
	})

	t.Run("operations", func(t *testing.T) {
		code, body := p.get("/v1/openapi.json", "")
		var doc map[string]any
		if err := json.Unmarshal(body, &doc); code != 200 || err != nil || doc["openapi"] != "3.0.3" {
			t.Errorf("openapi.json: %d %v", code, err)
		}
		if code, body := p.get("/healthz", ""); code != 200 || string(body) != "ok\n" {
			t.Errorf("healthz: %d %s", code, body)
		}
		code, body = p.get("/metrics", "")
		for _, want := range []string{`rtcapi_http_requests_total{code="401",route="/v1/sessions"}`, "rtcapi_sse_clients", "rtcapi_live_sessions 0", "rtc_build_info"} {
			if code != 200 || !strings.Contains(string(body), want) {
				t.Errorf("metrics lack %s", want)
			}
		}
		if code, body := p.get("/nope", ""); code != 404 || !strings.Contains(string(body), "not_found") {
			t.Errorf("unknown path: %d %s", code, body)
		}
		if code, body := p.get("/", ""); code != 200 || !strings.Contains(string(body), "/static/app.js") {
			t.Errorf("page: %d", code)
		}
		if code, body := p.get("/static/app.js", ""); code != 200 || !strings.Contains(string(body), "EventSource") {
			t.Errorf("app.js: %d", code)
		}
	})

	t.Run("cors", func(t *testing.T) {
		pre := func(origin string) (int, http.Header) {
			req, _ := http.NewRequest("OPTIONS", p.base+"/v1/sessions", nil)
			req.Header.Set("Origin", origin)
			req.Header.Set("Access-Control-Request-Method", "GET")
			req.Header.Set("Access-Control-Request-Headers", "authorization")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode, resp.Header
		}
		if code, h := pre("https://dash.example.org"); code != 204 || h.Get("Access-Control-Allow-Origin") != "https://dash.example.org" ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Errorf("allowed origin: %d %v", code, h)
		}
		if code, h := pre("https://evil.example.org"); code != 403 || h.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("other origin: %d %v", code, h)
		}
		req, _ := http.NewRequest("GET", p.base+"/v1/sessions", nil)
		req.Header.Set("Origin", "https://dash.example.org")
		req.Header.Set("Authorization", "Bearer "+tokenAll)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("Access-Control-Allow-Origin") != "https://dash.example.org" {
			t.Errorf("GET from an allowed origin: %v", resp.Header)
		}
	})
}
