package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

const (
	tokHS1 = "hs1-secret-token"
	tokHS2 = "hs2-secret-token"
)

// memberEvent is an Element Call per-device membership (join).
func memberEvent(eventID, room, user, device string, ts int64) string {
	return fmt.Sprintf(`{"type":"org.matrix.msc3401.call.member","state_key":"_%s_%s_m.call","sender":%q,`+
		`"event_id":%q,"room_id":%q,"origin_server_ts":%d,"content":{"application":"m.call","call_id":"",`+
		`"scope":"m.room","device_id":%q,"expires":14400000,"focus_active":{"type":"livekit","focus_selection":"oldest_membership"},`+
		`"foci_preferred":[{"type":"livekit","livekit_service_url":"https://sfu.example"}]}}`,
		user, device, user, eventID, room, ts, device)
}

func messageEvent(eventID, room, user string) string {
	return fmt.Sprintf(`{"type":"m.room.message","sender":%q,"event_id":%q,"room_id":%q,"origin_server_ts":1700000000000,"content":{"msgtype":"m.text","body":"hi"}}`,
		user, eventID, room)
}

func txn(evs ...string) string { return `{"events":[` + strings.Join(evs, ",") + `]}` }

type asReq struct {
	method, path, token string
	query               bool // send the token as ?access_token= (legacy)
	body                string
}

func do(t *testing.T, base string, r asReq) (int, string) {
	t.Helper()
	url := base + r.path
	if r.query && r.token != "" {
		url += "?access_token=" + r.token
	}
	req, err := http.NewRequest(r.method, url, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if !r.query && r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, e.ErrCode
}

func newAppserviceServer(t *testing.T, e *env, pub *Publisher, maxBody int64) *httptest.Server {
	as := NewAppservice([]Homeserver{{Name: "hs1", HSToken: tokHS1}, {Name: "hs2", HSToken: tokHS2}},
		pub, e.m, e.log, AppserviceOptions{MaxBodyBytes: maxBody})
	srv := httptest.NewServer(as.Handler())
	t.Cleanup(srv.Close)
	return srv
}

func TestAppserviceTransactions(t *testing.T) {
	e := newEnv(t)
	srv := newAppserviceServer(t, e, e.pub, 64<<10)
	const roomA, roomB = "!a:hs1.test", "!b:hs2.test"

	bad := `{"type":"org.matrix.msc3401.call.member","state_key":"x","event_id":"$bad","room_id":"!a:hs1.test","origin_server_ts":1,"content":{}}`
	huge := txn(memberEvent("$huge", roomA, "@h:hs1.test", "H", 1700000000000), `{"type":"m.room.message","content":{"body":"`+strings.Repeat("x", 70<<10)+`"}}`)
	steps := []struct {
		name    string
		req     asReq
		code    int
		errcode string
	}{
		{"hs1 transaction with a filtered type", asReq{"PUT", "/_matrix/app/v1/transactions/1", tokHS1, false,
			txn(memberEvent("$a1", roomA, "@alice:hs1.test", "AD", 1700000000000),
				messageEvent("$msg", roomA, "@alice:hs1.test"),
				memberEvent("$a2", roomA, "@bob:hs1.test", "BD", 1700000001000))}, 200, ""},
		{"hs2 sends one new event and one hs1 already sent", asReq{"PUT", "/_matrix/app/v1/transactions/1", tokHS2, false,
			txn(memberEvent("$b1", roomB, "@carol:hs2.test", "CD", 1700000002000),
				memberEvent("$a1", roomA, "@alice:hs1.test", "AD", 1700000000000))}, 200, ""},
		{"legacy path and access_token query", asReq{"PUT", "/transactions/2", tokHS2, true,
			txn(memberEvent("$b2", roomB, "@dave:hs2.test", "DD", 1700000003000))}, 200, ""},
		{"missing token", asReq{"PUT", "/_matrix/app/v1/transactions/3", "", false,
			txn(memberEvent("$x1", roomA, "@eve:hs1.test", "ED", 1700000000000))}, 401, "M_MISSING_TOKEN"},
		{"wrong token", asReq{"PUT", "/_matrix/app/v1/transactions/3", "hs1-secret-tokex", false,
			txn(memberEvent("$x2", roomA, "@eve:hs1.test", "ED", 1700000000000))}, 403, "M_FORBIDDEN"},
		{"wrong token, legacy query", asReq{"PUT", "/transactions/3", "nope", true,
			txn(memberEvent("$x3", roomA, "@eve:hs1.test", "ED", 1700000000000))}, 403, "M_FORBIDDEN"},
		{"not json", asReq{"PUT", "/_matrix/app/v1/transactions/4", tokHS1, false, `{"events":[{"type":`}, 400, "M_NOT_JSON"},
		{"events not an array", asReq{"PUT", "/_matrix/app/v1/transactions/5", tokHS1, false, `{"events":{"type":"m.rtc.member"}}`}, 400, "M_BAD_JSON"},
		{"body not an object", asReq{"PUT", "/_matrix/app/v1/transactions/6", tokHS1, false, `[1,2]`}, 400, "M_BAD_JSON"},
		{"oversized body", asReq{"PUT", "/_matrix/app/v1/transactions/7", tokHS1, false, huge}, 413, "M_TOO_LARGE"},
		{"malformed events inside a good transaction", asReq{"PUT", "/_matrix/app/v1/transactions/8", tokHS1, false,
			txn(bad, `"just a string"`, memberEvent("$a3", roomA, "@alice:hs1.test", "AD2", 1700000004000))}, 200, ""},
		{"empty transaction", asReq{"PUT", "/_matrix/app/v1/transactions/9", tokHS1, false, `{"events":[],"ephemeral":[]}`}, 200, ""},
		{"retried transaction", asReq{"PUT", "/_matrix/app/v1/transactions/1", tokHS1, false,
			txn(memberEvent("$a1", roomA, "@alice:hs1.test", "AD", 1700000000000))}, 200, ""},
		{"ping", asReq{"POST", "/_matrix/app/v1/ping", tokHS1, false, `{"transaction_id":"p1"}`}, 200, ""},
		{"ping without token", asReq{"POST", "/_matrix/app/v1/ping", "", false, `{}`}, 401, "M_MISSING_TOKEN"},
		{"user query", asReq{"GET", "/_matrix/app/v1/users/@x:hs1.test", tokHS1, false, ""}, 404, "M_NOT_FOUND"},
		{"room alias query", asReq{"GET", "/_matrix/app/v1/rooms/%23call:hs1.test", tokHS2, false, ""}, 404, "M_NOT_FOUND"},
		{"user query, wrong token", asReq{"GET", "/_matrix/app/v1/users/@x:hs1.test", "bad", false, ""}, 403, "M_FORBIDDEN"},
		{"wrong method", asReq{"POST", "/_matrix/app/v1/transactions/10", tokHS1, false, txn()}, 405, "M_UNRECOGNIZED"},
	}
	for _, s := range steps {
		code, errcode := do(t, srv.URL, s.req)
		if code != s.code || errcode != s.errcode {
			t.Errorf("%s: got %d %q, want %d %q", s.name, code, errcode, s.code, s.errcode)
		}
	}

	got := rawContents(t, e.url)
	want := map[string]string{"$a1": "hs1", "$a2": "hs1", "$b1": "hs2", "$b2": "hs2", "$a3": "hs1"}
	assertStored(t, got, want)
	for _, ev := range got {
		if ev.Source != rawevent.SourceAppservice || ev.ReceivedAt <= 0 || !json.Valid(ev.Content) {
			t.Errorf("%s: source %q received_at %d content %s", ev.EventID, ev.Source, ev.ReceivedAt, ev.Content)
		}
	}
	// The content is the original JSON (compacted), unparsed.
	if !bytes.Contains(got[0].Content, []byte(`"focus_selection":"oldest_membership"`)) {
		t.Errorf("content changed: %s", got[0].Content)
	}

	checks := []struct {
		name string
		got  float64
		want float64
	}{
		// 7: the retried transaction 1 is decoded (and hashed) again, then not published.
		{"hs1 received", testutil.ToFloat64(e.m.Received.WithLabelValues("hs1", "appservice")), 7},
		{"hs1 retried", testutil.ToFloat64(e.m.TxnReused.WithLabelValues("hs1", txnSameContent)), 0},
		{"hs1 reused", testutil.ToFloat64(e.m.TxnReused.WithLabelValues("hs1", txnDifferentContent)), 1},
		{"hs1 filtered", testutil.ToFloat64(e.m.Filtered.WithLabelValues("hs1", "appservice")), 1},
		{"hs1 malformed", testutil.ToFloat64(e.m.Rejected.WithLabelValues("hs1", "appservice", RejectMalformed)), 1},
		{"hs1 not object", testutil.ToFloat64(e.m.Rejected.WithLabelValues("hs1", "appservice", RejectNotObject)), 1},
		{"hs2 duplicates", testutil.ToFloat64(e.m.Duplicates.WithLabelValues("hs2", "appservice")), 1},
		{"hs1 forwarded", testutil.ToFloat64(e.m.Forwarded.WithLabelValues("hs1", "appservice", "org.matrix.msc3401.call.member")), 3},
		{"hs1 413s", testutil.ToFloat64(e.m.Transactions.WithLabelValues("hs1", "413")), 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("metric %s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func assertStored(t *testing.T, got []rawevent.RawEvent, want map[string]string) {
	t.Helper()
	seen := map[string]int{}
	for _, ev := range got {
		seen[string(ev.EventID)]++
		hs, ok := want[string(ev.EventID)]
		if !ok {
			t.Errorf("unexpected event %s in RTC_RAW", ev.EventID)
		} else if ev.Homeserver != hs {
			t.Errorf("%s: homeserver %q, want %q", ev.EventID, ev.Homeserver, hs)
		}
	}
	var ids []string
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("%s stored %d times, want once", id, seen[id])
		}
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if t.Failed() {
		t.Logf("want %v, stream holds %d messages", ids, len(got))
	}
}

// TestAppserviceNATSOutage stops NATS in the middle of a homeserver's
// transactions: the ingest answers 503 while it is down, and the retried
// transactions succeed once it is back, with nothing lost or doubled.
func TestAppserviceNATSOutage(t *testing.T) {
	e := newEnv(t)
	// Two publishes in flight at a time: a big transaction takes long
	// enough for the server to go away in the middle of it.
	slow, err := NewPublisher(e.nc, PublisherConfig{MaxInFlight: 1, AckTimeout: 2 * time.Second}, e.m, e.log)
	if err != nil {
		t.Fatal(err)
	}
	srv := newAppserviceServer(t, e, slow, 10<<20)
	const room = "!outage:hs1.test"
	ev := func(i int) string {
		return memberEvent(fmt.Sprintf("$o%d", i), room, fmt.Sprintf("@u%d:hs1.test", i), "D", 1700000000000+int64(i))
	}
	put := func(txnID string, evs ...string) int {
		code, _ := do(t, srv.URL, asReq{"PUT", "/_matrix/app/v1/transactions/" + txnID, tokHS1, false, txn(evs...)})
		return code
	}
	if c := put("t1", ev(1), ev(2), ev(3)); c != 200 {
		t.Fatalf("t1: %d", c)
	}

	// A transaction in flight while the server goes away: it must not be
	// answered 200 unless it was stored.
	var wg sync.WaitGroup
	wg.Add(1)
	var inflight int
	go func() {
		defer wg.Done()
		many := make([]string, 0, 3000)
		for i := 100; i < 3100; i++ {
			many = append(many, ev(i))
		}
		inflight = put("t-mid", many...)
	}()
	// Stop the server once part of the transaction is stored.
	forwarded := e.m.Forwarded.WithLabelValues("hs1", "appservice", "org.matrix.msc3401.call.member")
	for testutil.ToFloat64(forwarded) < 50 {
		time.Sleep(time.Millisecond)
	}
	e.stop()
	t.Logf("stopped NATS after %v events of the big transaction were stored", testutil.ToFloat64(forwarded)-3)
	wg.Wait()

	// While down: 503 with a Matrix error body, every time.
	for i := 0; i < 3; i++ {
		code, errcode := do(t, srv.URL, asReq{"PUT", "/_matrix/app/v1/transactions/t2", tokHS1, false, txn(ev(3), ev(4), ev(5))})
		if code != http.StatusServiceUnavailable || errcode != "M_UNKNOWN" {
			t.Fatalf("while NATS is down: %d %q, want 503 M_UNKNOWN", code, errcode)
		}
	}
	if err := e.pub.Ready(); err == nil {
		t.Fatal("publisher says ready while NATS is down")
	}

	e.start(t)
	// The homeserver retries both transactions with the same ids.
	deadline := time.Now().Add(15 * time.Second)
	for _, tx := range []struct {
		id  string
		evs []string
	}{{"t2", []string{ev(3), ev(4), ev(5)}}, {"t-mid", nil}} {
		evs := tx.evs
		if tx.id == "t-mid" {
			for i := 100; i < 3100; i++ {
				evs = append(evs, ev(i))
			}
		}
		for {
			c := put(tx.id, evs...)
			if c == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: still %d after the restart", tx.id, c)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if inflight == 200 {
		t.Log("the transaction in flight completed before the stop: the outage hit only later transactions")
	} else {
		t.Logf("the transaction in flight during the stop was answered %d", inflight)
	}

	want := map[string]string{}
	for _, i := range append([]int{1, 2, 3, 4, 5}, seq(100, 3100)...) {
		want[fmt.Sprintf("$o%d", i)] = "hs1"
	}
	assertStored(t, rawContents(t, e.url), want)
}

func seq(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// TestAppserviceRedactedCopyIsANewInput: a homeserver may deliver an event
// again after it was redacted (same event id, content {} and
// unsigned.redacted_because). That copy is a different input from the
// original and must not be dropped as its duplicate; a second copy of it is.
func TestAppserviceRedactedCopyIsANewInput(t *testing.T) {
	e := newEnv(t)
	srv := newAppserviceServer(t, e, e.pub, 64<<10)
	const room = "!r:hs1.test"
	orig := memberEvent("$m1", room, "@alice:hs1.test", "AD", 1700000000000)
	redacted := `{"type":"org.matrix.msc3401.call.member","state_key":"_@alice:hs1.test_AD_m.call","sender":"@alice:hs1.test",` +
		`"event_id":"$m1","room_id":"!r:hs1.test","origin_server_ts":1700000000000,"content":{},` +
		`"unsigned":{"redacted_because":{"type":"m.room.redaction","event_id":"$red","origin_server_ts":1700000005000,"content":{}}}}`
	for i, body := range []string{txn(orig), txn(redacted), txn(redacted, orig)} {
		if code, errcode := do(t, srv.URL, asReq{"PUT", fmt.Sprintf("/_matrix/app/v1/transactions/r%d", i), tokHS1, false, body}); code != 200 {
			t.Fatalf("transaction %d: %d %s", i, code, errcode)
		}
	}
	got := rawContents(t, e.url)
	if len(got) != 2 || got[0].RedactedBy != "" || got[1].RedactedBy != "$red" || got[1].RedactedAt != 1700000005000 {
		t.Fatalf("RTC_RAW holds %+v", got)
	}
}
