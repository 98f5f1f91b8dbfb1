package hostile

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/ingest"
	"github.com/rtcsessions/rtc-sessions/internal/testutil"
)

func httpRequest(method, url, body string) (*http.Request, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("request %s %s: %w", method, url, err)
	}
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// wantMatrixError: the answer is a Matrix standard error, exactly
// {"errcode":"M_…","error":"…"} (plus retry_after_ms when withRetry) with
// Content-Type application/json, and the errcode is errcode.
func wantMatrixError(t *testing.T, r txnResult, errcode string, withRetry bool) {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("HTTP %d body %q is not a JSON object: %v", r.status, r.body, err)
	}
	want := []string{"errcode", "error"}
	if withRetry {
		want = append(want, "retry_after_ms")
	}
	keys := make([]string, 0, len(body))
	for k := range body {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if strings.Join(keys, ",") != strings.Join(want, ",") {
		t.Errorf("HTTP %d body %s has keys %q, want exactly %q", r.status, r.body, keys, want)
	}
	var code, msg string
	if err := json.Unmarshal(body["errcode"], &code); err != nil || code != errcode {
		t.Errorf("errcode %s, want %q", body["errcode"], errcode)
	}
	if err := json.Unmarshal(body["error"], &msg); err != nil || msg == "" {
		t.Errorf("error %s, want a non-empty string", body["error"])
	}
	if withRetry {
		var ms int64
		if err := json.Unmarshal(body["retry_after_ms"], &ms); err != nil || ms <= 0 {
			t.Errorf("retry_after_ms %s, want a positive integer", body["retry_after_ms"])
		}
	}
}

// TestMatrixErrorBodies: every answer of the real appservice listener
// other than 200 is a Matrix error body (they were
// {"ErrCode","Err"}), with the status and errcode a homeserver expects:
// a token problem, an unknown path or method, a malformed or oversized
// transaction, a full body budget (429, retried: nothing lost) and NATS
// down (503, retried once NATS is back: nothing lost).
func TestMatrixErrorBodies(t *testing.T) {
	natsDir := t.TempDir()
	ns := testutil.NATS(t, natsDir, -1)
	port := ns.Addr().(*net.TCPAddr).Port
	const maxBody = 4096
	addr, metrics := startIngest(t, ns, func(c *ingest.Config) {
		c.Appservice.MaxBodyBytes = maxBody
		c.Appservice.BodyBudgetBytes = maxBody // one transaction at a time
		c.Appservice.RetryAfter = 1500 * time.Millisecond
		c.Appservice.MaxEvents = 3
		c.Publish.AckTimeout = 500 * time.Millisecond
	})
	base := "http://" + addr
	tok := hsTokens[hsA]
	nested := strings.Repeat("[", 40) + strings.Repeat("]", 40)

	cases := []struct {
		name       string
		method     string
		path       string
		token      string
		body       string
		chunked    bool // no Content-Length
		wantStatus int
		wantCode   string
		wantHeader map[string]string
	}{
		{name: "no token", method: "PUT", path: "/_matrix/app/v1/transactions/e1", body: `{"events":[]}`,
			wantStatus: 401, wantCode: "M_MISSING_TOKEN"},
		{name: "wrong token", method: "PUT", path: "/_matrix/app/v1/transactions/e2", token: "wrong", body: `{"events":[]}`,
			wantStatus: 403, wantCode: "M_FORBIDDEN"},
		{name: "wrong token on the legacy path", method: "PUT", path: "/transactions/e2", token: "wrong", body: `{"events":[]}`,
			wantStatus: 403, wantCode: "M_FORBIDDEN"},
		{name: "unknown path", method: "GET", path: "/_matrix/app/v1/thirdparty/protocol/irc", token: tok,
			wantStatus: 404, wantCode: "M_UNRECOGNIZED"},
		{name: "unknown path outside the API", method: "GET", path: "/", wantStatus: 404, wantCode: "M_UNRECOGNIZED"},
		{name: "user query", method: "GET", path: "/_matrix/app/v1/users/@bot:hs-a.test", token: tok,
			wantStatus: 404, wantCode: "M_NOT_FOUND"},
		{name: "wrong method", method: "GET", path: "/_matrix/app/v1/transactions/e3", token: tok,
			wantStatus: 405, wantCode: "M_UNRECOGNIZED", wantHeader: map[string]string{"Allow": "PUT"}},
		{name: "wrong method on ping", method: "PUT", path: "/_matrix/app/v1/ping", token: tok, body: `{}`,
			wantStatus: 405, wantCode: "M_UNRECOGNIZED", wantHeader: map[string]string{"Allow": "POST"}},
		{name: "truncated JSON", method: "PUT", path: "/_matrix/app/v1/transactions/e4", token: tok, body: `{"events":[`,
			wantStatus: 400, wantCode: "M_NOT_JSON"},
		{name: "not JSON", method: "PUT", path: "/_matrix/app/v1/transactions/e5", token: tok, body: `hello`,
			wantStatus: 400, wantCode: "M_NOT_JSON"},
		{name: "events not an array", method: "PUT", path: "/_matrix/app/v1/transactions/e6", token: tok, body: `{"events":{}}`,
			wantStatus: 400, wantCode: "M_BAD_JSON"},
		{name: "transaction id too long", method: "PUT", path: "/_matrix/app/v1/transactions/" + strings.Repeat("x", 1100), token: tok,
			body: `{"events":[]}`, wantStatus: 400, wantCode: "M_INVALID_PARAM"},
		{name: "oversized body", method: "PUT", path: "/_matrix/app/v1/transactions/e7", token: tok,
			body: `{"events":[],"pad":"` + strings.Repeat("x", maxBody) + `"}`, wantStatus: 413, wantCode: "M_TOO_LARGE"},
		{name: "oversized chunked body", method: "PUT", path: "/_matrix/app/v1/transactions/e8", token: tok, chunked: true,
			body: `{"events":[],"pad":"` + strings.Repeat("x", maxBody) + `"}`, wantStatus: 413, wantCode: "M_TOO_LARGE"},
		{name: "too many events", method: "PUT", path: "/_matrix/app/v1/transactions/e9", token: tok,
			body: `{"events":[{},{},{},{}]}`, wantStatus: 413, wantCode: "M_TOO_LARGE"},
		{name: "another member nested too deep", method: "PUT", path: "/_matrix/app/v1/transactions/e10", token: tok,
			body: `{"events":[],"ephemeral":` + nested + `}`, wantStatus: 413, wantCode: "M_TOO_LARGE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(body) // hides the length: sent chunked
			}
			req, err := http.NewRequest(tc.method, base+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			r := send(t, req)
			if r.status != tc.wantStatus {
				t.Fatalf("HTTP %d %s, want %d", r.status, r.body, tc.wantStatus)
			}
			wantMatrixError(t, r, tc.wantCode, false)
			for k, v := range tc.wantHeader {
				if got := r.header.Get(k); got != v {
					t.Errorf("header %s %q, want %q", k, got, v)
				}
			}
		})
	}

	room := id.RoomID("!errors:" + hsA)
	t.Run("over budget: 429 with retry_after_ms, then stored on retry", func(t *testing.T) {
		// A transaction whose body is still arriving holds the whole
		// budget: its Content-Length is reserved before a byte is read.
		finish := slowTxn(t, addr, tok, "slow", maxBody)
		waitFor(t, "the slow transaction's reservation", func() bool {
			return metric(t, metrics, "rtc_ingest_appservice_body_bytes_in_flight") == maxBody
		})
		count429 := metric(t, metrics, "rtc_ingest_appservice_transactions_total", "homeserver", hsA, "code", "429")

		ev := join(t, "$budget", room, "@alice:"+hsA, "ALICE", time.Now().UnixMilli())
		r := put(t, addr, tok, "budget", ev)
		if r.status != http.StatusTooManyRequests {
			t.Fatalf("HTTP %d %s while the budget is full, want 429", r.status, r.body)
		}
		wantMatrixError(t, r, "M_LIMIT_EXCEEDED", true)
		var body struct {
			RetryAfterMS int64 `json:"retry_after_ms"`
		}
		if err := json.Unmarshal(r.body, &body); err != nil || body.RetryAfterMS != 1500 {
			t.Errorf("retry_after_ms %d, want 1500 (appservice.retry_after)", body.RetryAfterMS)
		}
		if ra := r.header.Get("Retry-After"); ra != "2" {
			t.Errorf("Retry-After %q, want 2 (1.5 s rounded up)", ra)
		}
		if d := metric(t, metrics, "rtc_ingest_appservice_transactions_total", "homeserver", hsA, "code", "429") - count429; d != 1 {
			t.Errorf("transactions_total{code=429} +%v, want +1", d)
		}

		// The slow body completes; the budget is free again.
		if sr := finish(); sr.status != http.StatusOK {
			t.Fatalf("slow transaction: HTTP %d %s, want 200", sr.status, sr.body)
		}
		// The homeserver retries the refused transaction: stored once.
		putOK(t, addr, tok, "budget", ev)
		if n := countEvent(t, ns, room, "$budget"); n != 1 {
			t.Errorf("$budget stored %d times, want once", n)
		}
	})

	t.Run("NATS down: 503 with Retry-After, then stored on retry", func(t *testing.T) {
		ns.Shutdown()
		ns.WaitForShutdown()
		ev := join(t, "$outage", room, "@bob:"+hsA, "BOB", time.Now().UnixMilli())
		r := put(t, addr, tok, "outage", ev)
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("HTTP %d %s with NATS down, want 503", r.status, r.body)
		}
		wantMatrixError(t, r, "M_UNKNOWN", false)
		if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra <= 0 {
			t.Errorf("Retry-After %q, want a positive number of seconds", r.header.Get("Retry-After"))
		}

		// NATS comes back (same store, same port); the homeserver retries
		// until the transaction is stored.
		ns = testutil.NATS(t, natsDir, port)
		waitFor(t, "the retried transaction stored", func() bool {
			r := put(t, addr, tok, "outage", ev)
			if r.status != http.StatusOK {
				wantMatrixError(t, r, "M_UNKNOWN", false)
			}
			return r.status == http.StatusOK
		})
		if n := countEvent(t, ns, room, "$outage"); n != 1 {
			t.Errorf("$outage stored %d times, want once", n)
		}
	})
}

// countEvent is how many inputs of RTC_RAW carry eventID.
func countEvent(t *testing.T, ns *server.Server, room id.RoomID, eventID string) int {
	t.Helper()
	_, js := testutil.JetStream(t, ns)
	n := 0
	for _, ev := range rawRecords(t, js, room) {
		if string(ev.EventID) == eventID {
			n++
		}
	}
	return n
}

// slowTxn starts a transaction of n bytes whose body does not arrive until
// finish is called: meanwhile it holds n bytes of the body budget (the
// ingest reserves a Content-Length before reading a byte). finish sends an
// empty transaction padded to n bytes and returns the answer.
func slowTxn(t *testing.T, addr, tok, txnID string, n int) (finish func() txnResult) {
	t.Helper()
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	req, err := http.NewRequest(http.MethodPut, "http://"+addr+"/_matrix/app/v1/transactions/"+txnID, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(n)
	req.Header.Set("Authorization", "Bearer "+tok)
	done := make(chan txnResult, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- txnResult{status: -1, body: []byte(err.Error())}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- txnResult{status: resp.StatusCode, header: resp.Header, body: b}
	}()
	return func() txnResult {
		t.Helper()
		pad := `{"events":[]}`
		if _, err := io.WriteString(pw, pad+strings.Repeat(" ", n-len(pad))); err != nil {
			return txnResult{status: -1, body: []byte(err.Error())}
		}
		pw.Close()
		select {
		case r := <-done:
			return r
		case <-time.After(waitTimeout):
			return txnResult{status: -1, body: []byte("no answer")}
		}
	}
}
