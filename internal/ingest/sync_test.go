package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// fakeSync is NOT a homeserver: it speaks just enough of the client-server
// API (/login, /sync) to drive the sync source. The test against a real
// homeserver (Dendrite) is a separate end-to-end test.
type fakeSync struct {
	mu       sync.Mutex
	sinces   []string
	filters  []string
	auths    []string
	failOnce map[string]bool
}

func (f *fakeSync) handler(t *testing.T) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /_matrix/client/v3/login", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Password string `json:"password"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		if req.Password != "bot-password" {
			w.WriteHeader(403)
			_, _ = w.Write([]byte(`{"errcode":"M_FORBIDDEN","error":"bad password"}`))
			return
		}
		_, _ = w.Write([]byte(`{"user_id":"@bot:hs3.test","access_token":"logged-in-token","device_id":"RTCBOT"}`))
	})
	mux.HandleFunc("GET /_matrix/client/v3/sync", func(w http.ResponseWriter, r *http.Request) {
		since := r.URL.Query().Get("since")
		f.mu.Lock()
		f.sinces = append(f.sinces, since)
		f.filters = append(f.filters, r.URL.Query().Get("filter"))
		f.auths = append(f.auths, r.Header.Get("Authorization"))
		fail := f.failOnce[since]
		delete(f.failOnce, since)
		f.mu.Unlock()
		if fail {
			w.WriteHeader(502)
			_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN","error":"try again"}`))
			return
		}
		const room = "!sync:hs3.test"
		ev := func(id, typ, stateKey, body string) string {
			sk := ""
			if stateKey != "-" {
				sk = fmt.Sprintf(`"state_key":%q,`, stateKey)
			}
			return fmt.Sprintf(`{"type":%q,%s"sender":"@alice:hs3.test","event_id":%q,"origin_server_ts":1700000000000,"content":%s}`,
				typ, sk, id, body)
		}
		switch since {
		case "":
			fmt.Fprintf(w, `{"next_batch":"b1","rooms":{"join":{%q:{"state":{"events":[%s,%s,%s]},"timeline":{"events":[%s,%s],"limited":true}}}},"presence":{"events":[]}}`,
				room,
				memberState("$s1"), ev("$name", "m.room.name", "", `{"name":"x"}`), ev("$m1", "m.room.member", "@alice:hs3.test", `{"membership":"join"}`),
				ev("$t1", "org.matrix.msc3401.call.member", "_@alice:hs3.test_AD_m.call", `{}`), ev("$msg", "m.room.message", "-", `{"body":"hi"}`))
		case "b1":
			fmt.Fprintf(w, `{"next_batch":"b2","rooms":{"join":{%q:{"timeline":{"events":[%s,%s]},"msc4354_sticky":{"events":[%s]}}},"leave":{}}}`,
				room, ev("$t2", "m.room.redaction", "-", `{"redacts":"$t1"}`), `{"type":"org.matrix.msc3401.call.member","broken":true}`,
				ev("$st", "org.matrix.msc4143.rtc.member", "-", `{"slot_id":"m.call#ROOM"}`))
		default:
			select {
			case <-r.Context().Done():
			case <-time.After(50 * time.Millisecond):
			}
			fmt.Fprintf(w, `{"next_batch":%q}`, since)
		}
	})
	return mux
}

func memberState(id string) string {
	return fmt.Sprintf(`{"type":"org.matrix.msc3401.call.member","state_key":"_@alice:hs3.test_AD_m.call","sender":"@alice:hs3.test","event_id":%q,"origin_server_ts":1699999999000,"content":{"application":"m.call","call_id":"","device_id":"AD","expires":14400000}}`, id)
}

func TestSyncSourceFiltersAndPersistsToken(t *testing.T) {
	e := newEnv(t)
	fake := &fakeSync{failOnce: map[string]bool{"b1": true}}
	hs := httptest.NewServer(fake.handler(t))
	t.Cleanup(hs.Close)
	store := NewFileTokenStore(filepath.Join(t.TempDir(), "state"), "hs3")

	opts := SyncOptions{Homeserver: "hs3", URL: hs.URL, UserID: "@bot:hs3.test", Password: "bot-password",
		DeviceID: "RTCBOT", Timeout: time.Second, BackoffMin: 10 * time.Millisecond, BackoffMax: 40 * time.Millisecond}
	src, err := NewSyncSource(opts, e.pub, store, e.m, e.log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	waitFor(t, func() bool { tok, _ := store.Load(); return tok == "b2" })
	cancel()
	<-done

	got := rawContents(t, e.url)
	want := map[string]string{"$s1": "hs3", "$m1": "hs3", "$t1": "hs3", "$t2": "hs3", "$st": "hs3"}
	assertStored(t, got, want)
	sources := map[string]rawevent.Source{"$s1": rawevent.SourceSyncState, "$m1": rawevent.SourceSyncState,
		"$t1": rawevent.SourceSync, "$t2": rawevent.SourceSync, "$st": rawevent.SourceSync}
	for _, ev := range got {
		if ev.Source != sources[string(ev.EventID)] || ev.RoomID != "!sync:hs3.test" {
			t.Errorf("%s: source %q room %q", ev.EventID, ev.Source, ev.RoomID)
		}
		if ev.EventID == "$t2" && ev.Redacts != "$t1" {
			t.Errorf("redaction lost its target: %+v", ev)
		}
	}

	fake.mu.Lock()
	sinces, filters, auths := append([]string(nil), fake.sinces...), fake.filters[0], fake.auths[0]
	fake.mu.Unlock()
	if len(sinces) < 3 || sinces[0] != "" || sinces[1] != "b1" || sinces[2] != "b1" {
		t.Errorf("since sequence %v: want initial, b1 (fails), b1 again", sinces)
	}
	if auths != "Bearer logged-in-token" {
		t.Errorf("authorization %q: want the token of the password login", auths)
	}
	var f struct {
		Presence struct {
			NotTypes []string `json:"not_types"`
		} `json:"presence"`
		Room struct {
			State, Timeline struct {
				Types []string `json:"types"`
			}
		} `json:"room"`
	}
	if err := json.Unmarshal([]byte(filters), &f); err != nil {
		t.Fatalf("filter %q: %v", filters, err)
	}
	for _, typ := range rawevent.ForwardedTypes {
		if !strings.Contains(strings.Join(f.Room.Timeline.Types, ","), typ.Type) ||
			!strings.Contains(strings.Join(f.Room.State.Types, ","), typ.Type) {
			t.Errorf("filter does not ask for %s: %s", typ.Type, filters)
		}
	}
	if len(f.Presence.NotTypes) != 1 || f.Presence.NotTypes[0] != "*" {
		t.Errorf("filter does not exclude presence: %s", filters)
	}

	// A restart resumes from the saved token: no initial sync again.
	src2, err := NewSyncSource(SyncOptions{Homeserver: "hs3", URL: hs.URL, Token: "static-token", Timeout: time.Second}, e.pub, store, e.m, e.log)
	if err != nil {
		t.Fatal(err)
	}
	if err := src2.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	fake.mu.Lock()
	last, lastAuth := fake.sinces[len(fake.sinces)-1], fake.auths[len(fake.auths)-1]
	fake.mu.Unlock()
	if last != "b2" || lastAuth != "Bearer static-token" {
		t.Errorf("after restart: since %q auth %q, want b2 with the configured token", last, lastAuth)
	}
}

// TestSyncTokenNotSavedWhenNATSIsDown: the token only moves once the events
// are stored, so nothing is skipped across an outage.
func TestSyncTokenNotSavedWhenNATSIsDown(t *testing.T) {
	e := newEnv(t)
	fake := &fakeSync{}
	hs := httptest.NewServer(fake.handler(t))
	t.Cleanup(hs.Close)
	store := NewFileTokenStore(t.TempDir(), "hs3")
	src, err := NewSyncSource(SyncOptions{Homeserver: "hs3", URL: hs.URL, Token: "tok", Timeout: time.Second}, e.pub, store, e.m, e.log)
	if err != nil {
		t.Fatal(err)
	}
	e.stop()
	if err := src.Once(context.Background()); err == nil {
		t.Fatal("sync stored with NATS down")
	}
	if tok, _ := store.Load(); tok != "" {
		t.Fatalf("token %q saved although nothing was stored", tok)
	}
	e.start(t)
	if err := src.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if tok, _ := store.Load(); tok != "b1" {
		t.Fatalf("token %q, want b1", tok)
	}
	assertStored(t, rawContents(t, e.url), map[string]string{"$s1": "hs3", "$m1": "hs3", "$t1": "hs3"})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
