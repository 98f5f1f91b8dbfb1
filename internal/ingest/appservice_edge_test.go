package ingest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// edgeReq is a request with full control of what a client sends.
type edgeReq struct {
	method, path string
	header       map[string]string
	body         string
	chunked      bool // no Content-Length
}

type edgeResp struct {
	code   int
	header http.Header
	keys   []string // the JSON keys of the body, sorted
	fields map[string]any
}

func sendEdge(t *testing.T, base string, r edgeReq) edgeResp {
	t.Helper()
	var body io.Reader = strings.NewReader(r.body)
	if r.chunked {
		body = io.MultiReader(strings.NewReader(r.body)) // hides the length: sent chunked
	}
	req, err := http.NewRequest(r.method, base+r.path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := edgeResp{code: resp.StatusCode, header: resp.Header}
	if err := json.Unmarshal(b, &out.fields); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object: %v", r.method, r.path, b, err)
	}
	for k := range out.fields {
		out.keys = append(out.keys, k)
	}
	sort.Strings(out.keys)
	return out
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

// TestAppserviceErrorBodies: every error the ingest answers is a Matrix error
// body, {"errcode":"M_...","error":"..."} and nothing else (plus
// retry_after_ms on 429), with the status of the appservice spec.
func TestAppserviceErrorBodies(t *testing.T) {
	e := newEnv(t)
	as := NewAppservice([]Homeserver{{Name: "hs1", HSToken: tokHS1}, {Name: "hs2", HSToken: tokHS2}}, e.pub, e.m, e.log,
		AppserviceOptions{MaxBodyBytes: 64 << 10, BodyBudget: 256 << 10, RetryAfter: 1500 * time.Millisecond,
			Limits: TxnLimits{MaxEvents: 3, MaxDepth: 8, MaxArrayLen: 5}})
	srv := httptest.NewServer(as.Handler())
	t.Cleanup(srv.Close)
	okEvent := memberEvent("$ok", "!r:hs1.test", "@a:hs1.test", "A", 1700000000000)
	deep := strings.Repeat(`[`, 9) + strings.Repeat(`]`, 9)
	errKeys := []string{"errcode", "error"}
	tests := []struct {
		name    string
		req     edgeReq
		code    int
		errcode string
		keys    []string
		header  map[string]string // response headers that must be set
		setup   func() func()
	}{
		{name: "ok", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/ok", header: bearer(tokHS1), body: txn(okEvent)}, code: 200},
		{name: "missing token", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/1", body: txn()},
			code: 401, errcode: "M_MISSING_TOKEN", keys: errKeys},
		{name: "unknown token", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/1", header: bearer("nope"), body: txn()},
			code: 403, errcode: "M_FORBIDDEN", keys: errKeys},
		{name: "unknown token, legacy query", req: edgeReq{method: "PUT", path: "/transactions/1?access_token=nope", body: txn()},
			code: 403, errcode: "M_FORBIDDEN", keys: errKeys},
		{name: "not a bearer token", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/1",
			header: map[string]string{"Authorization": "Basic " + tokHS1}, body: txn()}, code: 403, errcode: "M_FORBIDDEN", keys: errKeys},
		{name: "header and query disagree", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/1?access_token=" + tokHS2,
			header: bearer(tokHS1), body: txn()}, code: 403, errcode: "M_FORBIDDEN", keys: errKeys},
		{name: "unknown path", req: edgeReq{method: "GET", path: "/_matrix/app/v1/thirdparty/protocol/irc", header: bearer(tokHS1)},
			code: 404, errcode: "M_UNRECOGNIZED", keys: errKeys},
		{name: "root", req: edgeReq{method: "GET", path: "/"}, code: 404, errcode: "M_UNRECOGNIZED", keys: errKeys},
		{name: "empty txn id", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/", header: bearer(tokHS1), body: txn()},
			code: 404, errcode: "M_UNRECOGNIZED", keys: errKeys},
		{name: "wrong method", req: edgeReq{method: "POST", path: "/_matrix/app/v1/transactions/1", header: bearer(tokHS1), body: txn()},
			code: 405, errcode: "M_UNRECOGNIZED", keys: errKeys, header: map[string]string{"Allow": "PUT"}},
		{name: "wrong method, legacy path", req: edgeReq{method: "DELETE", path: "/users/@a:hs1.test"},
			code: 405, errcode: "M_UNRECOGNIZED", keys: errKeys, header: map[string]string{"Allow": "GET"}},
		{name: "user query", req: edgeReq{method: "GET", path: "/_matrix/app/v1/users/@a:hs1.test", header: bearer(tokHS1)},
			code: 404, errcode: "M_NOT_FOUND", keys: errKeys},
		{name: "not json", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/2", header: bearer(tokHS1), body: `{"events":[`},
			code: 400, errcode: "M_NOT_JSON", keys: errKeys},
		{name: "trailing data", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/2", header: bearer(tokHS1), body: `{"events":[]} {}`},
			code: 400, errcode: "M_NOT_JSON", keys: errKeys},
		{name: "empty body", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/2", header: bearer(tokHS1)},
			code: 400, errcode: "M_NOT_JSON", keys: errKeys},
		{name: "not a transaction", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/3", header: bearer(tokHS1), body: `[1]`},
			code: 400, errcode: "M_BAD_JSON", keys: errKeys},
		{name: "events twice", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/3", header: bearer(tokHS1), body: `{"events":[],"events":[]}`},
			code: 400, errcode: "M_BAD_JSON", keys: errKeys},
		{name: "txn id too long", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/" + strings.Repeat("x", maxTxnIDBytes+1), header: bearer(tokHS1), body: txn()},
			code: 400, errcode: "M_INVALID_PARAM", keys: errKeys},
		{name: "body over max_body_bytes", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/4", header: bearer(tokHS1),
			body: `{"pad":"` + strings.Repeat("x", 65<<10) + `"}`}, code: 413, errcode: "M_TOO_LARGE", keys: errKeys},
		{name: "chunked body over max_body_bytes", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/4", header: bearer(tokHS1),
			body: `{"pad":"` + strings.Repeat("x", 65<<10) + `"}`, chunked: true}, code: 413, errcode: "M_TOO_LARGE", keys: errKeys},
		{name: "too many events", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/5", header: bearer(tokHS1), body: `{"events":[1,2,3,4]}`},
			code: 413, errcode: "M_TOO_LARGE", keys: errKeys},
		{name: "too deep outside events", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/6", header: bearer(tokHS1), body: `{"ephemeral":` + deep + `}`},
			code: 413, errcode: "M_TOO_LARGE", keys: errKeys},
		{name: "array too long outside events", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/7", header: bearer(tokHS1), body: `{"to_device":[1,2,3,4,5,6]}`},
			code: 413, errcode: "M_TOO_LARGE", keys: errKeys},
		{name: "over the body budget", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/8", header: bearer(tokHS1), body: txn(okEvent)},
			code: 429, errcode: "M_LIMIT_EXCEEDED", keys: []string{"errcode", "error", "retry_after_ms"}, header: map[string]string{"Retry-After": "2"},
			setup: func() func() {
				return fillBudget(t, as, 256<<10-100) // other homeservers' transactions in flight
			}},
		{name: "chunked, over the body budget", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/8", header: bearer(tokHS1), body: txn(okEvent), chunked: true},
			code: 429, errcode: "M_LIMIT_EXCEEDED", keys: []string{"errcode", "error", "retry_after_ms"}, header: map[string]string{"Retry-After": "2"},
			setup: func() func() {
				return fillBudget(t, as, 256<<10-100)
			}},
		{name: "NATS unavailable", req: edgeReq{method: "PUT", path: "/_matrix/app/v1/transactions/9", header: bearer(tokHS1), body: txn(okEvent)},
			code: 503, errcode: "M_UNKNOWN", keys: errKeys, header: map[string]string{"Retry-After": "2"},
			setup: func() func() { e.stop(); return func() { e.start(t) } }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				defer tt.setup()()
			}
			got := sendEdge(t, srv.URL, tt.req)
			if got.code != tt.code {
				t.Fatalf("status %d, want %d (%v)", got.code, tt.code, got.fields)
			}
			if ct := got.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if tt.code == 200 {
				if len(got.keys) != 0 {
					t.Errorf("200 body %v, want {}", got.fields)
				}
				return
			}
			if !slices.Equal(got.keys, tt.keys) {
				t.Errorf("body keys %v, want exactly %v", got.keys, tt.keys)
			}
			if got.fields["errcode"] != tt.errcode {
				t.Errorf("errcode %v, want %s", got.fields["errcode"], tt.errcode)
			}
			if msg, _ := got.fields["error"].(string); msg == "" {
				t.Errorf("empty error message")
			}
			if ms, ok := got.fields["retry_after_ms"]; ok && ms != float64(1500) {
				t.Errorf("retry_after_ms %v, want 1500", ms)
			}
			for k, v := range tt.header {
				if got.header.Get(k) != v {
					t.Errorf("header %s %q, want %q", k, got.header.Get(k), v)
				}
			}
		})
	}
	if n := as.budget.inUse(); n != 0 {
		t.Errorf("%d budget bytes still reserved after every answer", n)
	}
	checks := []struct {
		hs, reason string
		want       float64
	}{
		{unknownHomeserver, authMissingToken, 1},
		{unknownHomeserver, authUnknownToken, 3},
		{"hs1", authTokenMismatch, 1},
		{"hs2", authTokenMismatch, 0},
	}
	for _, c := range checks {
		if got := testutil.ToFloat64(e.m.AuthFailures.WithLabelValues(c.hs, c.reason)); got != c.want {
			t.Errorf("auth failures %s/%s = %v, want %v", c.hs, c.reason, got, c.want)
		}
	}
}

// TestAppserviceAuthFailureSeries: the auth failure counter has a series per
// configured homeserver and "unknown" from the start (so that rate() alerts
// see it), and counts refused requests by homeserver through the registry.
func TestAppserviceAuthFailureSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	as := NewAppservice([]Homeserver{{Name: "hs1", HSToken: tokHS1}, {Name: "hs2", HSToken: tokHS2}}, nil, m, zap.NewNop(), AppserviceOptions{})
	srv := httptest.NewServer(as.Handler())
	t.Cleanup(srv.Close)

	series := func() map[string]float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() != "rtc_ingest_appservice_auth_failures_total" {
				continue
			}
			for _, mt := range mf.GetMetric() {
				var hs, reason string
				for _, l := range mt.GetLabel() {
					switch l.GetName() {
					case "homeserver":
						hs = l.GetValue()
					case "reason":
						reason = l.GetValue()
					}
				}
				out[hs+"/"+reason] = mt.GetCounter().GetValue()
			}
		}
		return out
	}
	before := series()
	for _, hs := range []string{"hs1", "hs2", "unknown"} {
		for _, reason := range []string{authMissingToken, authUnknownToken, authTokenMismatch} {
			if v, ok := before[hs+"/"+reason]; !ok || v != 0 {
				t.Errorf("series %s/%s: present %v value %v, want present at 0", hs, reason, ok, v)
			}
		}
	}
	if len(before) != 9 {
		t.Errorf("%d series, want 9 (bounded: configured homeservers + unknown)", len(before))
	}
	for _, r := range []edgeReq{
		{method: "PUT", path: "/_matrix/app/v1/transactions/1", header: bearer("guess-1"), body: txn()},
		{method: "PUT", path: "/_matrix/app/v1/transactions/1", header: bearer("guess-2"), body: txn()},
		{method: "POST", path: "/_matrix/app/v1/ping", body: `{}`},
		{method: "GET", path: "/_matrix/app/v1/users/@x:y?access_token=" + tokHS1, header: bearer(tokHS2)},
	} {
		if got := sendEdge(t, srv.URL, r); got.code != 401 && got.code != 403 {
			t.Fatalf("%s %s: %d", r.method, r.path, got.code)
		}
	}
	after := series()
	want := map[string]float64{"unknown/unknown_token": 2, "unknown/missing_token": 1, "hs2/token_mismatch": 1}
	for k, v := range after {
		if v != want[k] {
			t.Errorf("%s = %v, want %v", k, v, want[k])
		}
	}
}

// TestAppserviceForgedClock: a homeserver cannot choose received_at. An
// appservice transaction whose events say received_at 2100 (top level and in
// unsigned) is stored with the ingest's clock.
func TestAppserviceForgedClock(t *testing.T) {
	e := newEnv(t)
	srv := newAppserviceServer(t, e, e.pub, 64<<10)
	const room = "!clock:hs1.test"
	forged := func(id, field string) string {
		ev := memberEvent(id, room, "@mallory:hs1.test", id[1:], 1700000000000)
		return strings.TrimSuffix(ev, "}") + "," + field + "}"
	}
	before := time.Now().UnixMilli()
	code, errcode := do(t, srv.URL, asReq{"PUT", "/_matrix/app/v1/transactions/c1", tokHS1, false, txn(
		forged("$top", `"received_at":4102444800000`),
		forged("$uns", `"unsigned":{"received_at":4102444800000,"age":1}`),
		forged("$neg", `"received_at":-1`))})
	after := time.Now().UnixMilli()
	if code != 200 {
		t.Fatalf("%d %s", code, errcode)
	}
	got := rawContents(t, e.url)
	if len(got) != 3 {
		t.Fatalf("stored %d events, want 3", len(got))
	}
	for _, ev := range got {
		if ev.ReceivedAt < before || ev.ReceivedAt > after {
			t.Errorf("%s: received_at %d, want the ingest clock in [%d, %d]", ev.EventID, ev.ReceivedAt, before, after)
		}
	}
}

// TestSyncForgedClock: the same for events of a /sync response.
func TestSyncForgedClock(t *testing.T) {
	e := newEnv(t)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("since") != "" {
			<-r.Context().Done()
			return
		}
		ev := `{"type":"org.matrix.msc3401.call.member","state_key":"_@m:hs3.test_M_m.call","sender":"@m:hs3.test",` +
			`"event_id":"%s","origin_server_ts":1700000000000,"received_at":4102444800000,` +
			`"unsigned":{"received_at":4102444800000},"content":{}}`
		fmt.Fprintf(w, `{"next_batch":"b1","rooms":{"join":{"!s:hs3.test":{"state":{"events":[`+ev+`]},"timeline":{"events":[`+ev+`]}}}}}`,
			"$state", "$timeline")
	}))
	t.Cleanup(hs.Close)
	src, err := NewSyncSource(SyncOptions{Homeserver: "hs3", URL: hs.URL, UserID: "@bot:hs3.test", Token: "t"},
		e.pub, NewFileTokenStore(t.TempDir(), "hs3"), e.m, e.log)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().UnixMilli()
	if err := src.Once(t.Context()); err != nil {
		t.Fatal(err)
	}
	after := time.Now().UnixMilli()
	got := rawContents(t, e.url)
	if len(got) != 2 {
		t.Fatalf("stored %d events, want 2", len(got))
	}
	for _, ev := range got {
		if ev.ReceivedAt < before || ev.ReceivedAt > after {
			t.Errorf("%s: received_at %d, want the ingest clock in [%d, %d]", ev.EventID, ev.ReceivedAt, before, after)
		}
	}
}

// TestAppserviceReusedTxnID: a homeserver that restarts its transaction
// counter sends new events under an old id; they are stored, and a plain
// retry (same id, same body) is answered without publishing again.
func TestAppserviceReusedTxnID(t *testing.T) {
	e := newEnv(t)
	srv := newAppserviceServer(t, e, e.pub, 64<<10)
	const room = "!reuse:hs1.test"
	first := txn(memberEvent("$r1", room, "@a:hs1.test", "A", 1700000000000), memberEvent("$r2", room, "@b:hs1.test", "B", 1700000000001))
	second := txn(memberEvent("$r3", room, "@c:hs1.test", "C", 1700000000002))
	for i, body := range []string{first, first, second, second} {
		if code, errcode := do(t, srv.URL, asReq{"PUT", "/_matrix/app/v1/transactions/1", tokHS1, false, body}); code != 200 {
			t.Fatalf("put %d: %d %s", i, code, errcode)
		}
	}
	// hs2 may use the same id for its own transactions.
	if code, _ := do(t, srv.URL, asReq{"PUT", "/_matrix/app/v1/transactions/1", tokHS2, false,
		txn(memberEvent("$r4", room, "@d:hs2.test", "D", 1700000000003))}); code != 200 {
		t.Fatalf("hs2: %d", code)
	}
	assertStored(t, rawContents(t, e.url), map[string]string{"$r1": "hs1", "$r2": "hs1", "$r3": "hs1", "$r4": "hs2"})
	for _, c := range []struct {
		hs, result string
		want       float64
	}{{"hs1", txnSameContent, 2}, {"hs1", txnDifferentContent, 1}, {"hs2", txnSameContent, 0}, {"hs2", txnDifferentContent, 0}} {
		if got := testutil.ToFloat64(e.m.TxnReused.WithLabelValues(c.hs, c.result)); got != c.want {
			t.Errorf("txn_reused{%s,%s} = %v, want %v", c.hs, c.result, got, c.want)
		}
	}
	// Nothing was published twice: the retries never reached JetStream.
	if d := testutil.ToFloat64(e.m.Duplicates.WithLabelValues("hs1", "appservice")); d != 0 {
		t.Errorf("%v duplicates published", d)
	}
}

// TestAppserviceRejectLogsSampled: a transaction of thousands of bad
// entries writes a handful of log lines, and the metrics count every entry.
func TestAppserviceRejectLogsSampled(t *testing.T) {
	e := newEnv(t)
	core, logs := observer.New(zapcore.DebugLevel)
	as := NewAppservice([]Homeserver{{Name: "hs1", HSToken: tokHS1}}, e.pub, e.m, zap.New(core), AppserviceOptions{})
	srv := httptest.NewServer(as.Handler())
	t.Cleanup(srv.Close)
	const bad = 5000
	entries := make([]string, 0, bad+1)
	for i := range bad {
		if i%2 == 0 {
			entries = append(entries, `"not an event"`)
		} else {
			entries = append(entries, `{"type":"m.rtc.member","event_id":"nope"}`)
		}
	}
	entries = append(entries, memberEvent("$good", "!s:hs1.test", "@a:hs1.test", "A", 1700000000000))
	if code, errcode := do(t, srv.URL, asReq{"PUT", "/_matrix/app/v1/transactions/s1", tokHS1, false, txn(entries...)}); code != 200 {
		t.Fatalf("%d %s", code, errcode)
	}
	notObject := testutil.ToFloat64(e.m.Rejected.WithLabelValues("hs1", "appservice", RejectNotObject))
	malformed := testutil.ToFloat64(e.m.Rejected.WithLabelValues("hs1", "appservice", RejectMalformed))
	if notObject != bad/2 || malformed != bad/2 {
		t.Errorf("rejected not_object %v malformed %v, want %d each", notObject, malformed, bad/2)
	}
	lines := logs.FilterMessageSnippet("event rejected").Len()
	// 10 per reason (2 here) and second; the transaction may straddle a second.
	if lines == 0 || lines > 2*2*10 {
		t.Errorf("%d log lines for %d rejected entries, want 1..40", lines, bad)
	}
	if dropped := testutil.ToFloat64(e.m.LogDropped); dropped < bad-40 {
		t.Errorf("sampler dropped %v lines, want at least %d", dropped, bad-40)
	}
	assertStored(t, rawContents(t, e.url), map[string]string{"$good": "hs1"})
}

// TestAppserviceChunkedPublish: a new transaction is stored a chunk at a
// time while it is decoded. A body that turns out malformed after some
// chunks is refused (400) and keeps what was stored; the homeserver's
// corrected transaction then stores everything once.
func TestAppserviceChunkedPublish(t *testing.T) {
	e := newEnv(t)
	as := NewAppservice([]Homeserver{{Name: "hs1", HSToken: tokHS1}}, e.pub, e.m, e.log,
		AppserviceOptions{PublishChunkBytes: 1000})
	srv := httptest.NewServer(as.Handler())
	t.Cleanup(srv.Close)
	const room = "!chunk:hs1.test"
	var evs []string
	want := map[string]string{}
	for i := range 40 { // about 400 bytes of content each: 10 chunks
		id := fmt.Sprintf("$c%d", i)
		evs = append(evs, memberEvent(id, room, fmt.Sprintf("@u%d:hs1.test", i), "D", 1700000000000+int64(i)))
		want[id] = "hs1"
	}
	good := txn(evs...)
	broken := strings.TrimSuffix(good, "]}") + `,{"type":`
	if code, errcode := do(t, srv.URL, asReq{"PUT", "/_matrix/app/v1/transactions/c", tokHS1, false, broken}); code != 400 || errcode != "M_NOT_JSON" {
		t.Fatalf("broken body: %d %s", code, errcode)
	}
	stored := rawContents(t, e.url)
	if len(stored) < 30 { // every complete chunk of ~1000 bytes (2-3 events) before the break
		t.Fatalf("%d events stored before the body broke, want the complete chunks (at least 30 of 40)", len(stored))
	}
	if code, errcode := do(t, srv.URL, asReq{"PUT", "/_matrix/app/v1/transactions/c", tokHS1, false, good}); code != 200 {
		t.Fatalf("corrected body: %d %s", code, errcode)
	}
	assertStored(t, rawContents(t, e.url), want)
	if d := testutil.ToFloat64(e.m.Duplicates.WithLabelValues("hs1", "appservice")); int(d) != len(stored) {
		t.Errorf("%v duplicates, want the %d events stored before", d, len(stored))
	}
}

// fillBudget reserves n bytes of the body budget as other homeservers'
// transactions would (each within its share) and returns the release.
func fillBudget(t *testing.T, as *Appservice, n int64) func() {
	t.Helper()
	var held []int64
	for i := 0; n > 0; i++ {
		step := min(n, 4<<10)
		if !as.budget.tryReserve(fmt.Sprintf("other%d", i), step) {
			t.Fatalf("could not fill the budget: %d bytes left", n)
		}
		held = append(held, step)
		n -= step
	}
	return func() {
		for i, step := range held {
			as.budget.release(fmt.Sprintf("other%d", i), step)
		}
	}
}

// TestAppserviceSeriesFromTheStart: the labelled counters an alert rates
// (events, rejections by reason, publish failures, transactions by status,
// sync errors) exist at 0 for every configured homeserver before anything
// happens.
func TestAppserviceSeriesFromTheStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	NewAppservice([]Homeserver{{Name: "hs1", HSToken: tokHS1}, {Name: "hs2", HSToken: tokHS2}}, nil, m, zap.NewNop(), AppserviceOptions{})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]map[string]bool{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "homeserver" {
					if have[mf.GetName()] == nil {
						have[mf.GetName()] = map[string]bool{}
					}
					have[mf.GetName()][l.GetValue()] = true
				}
			}
		}
	}
	for _, name := range []string{"rtc_ingest_events_received_total", "rtc_ingest_events_rejected_total",
		"rtc_ingest_publish_failures_total", "rtc_ingest_appservice_transactions_total", "rtc_ingest_sync_errors_total",
		"rtc_ingest_appservice_auth_failures_total", "rtc_ingest_appservice_txn_reused_total"} {
		for _, hs := range []string{"hs1", "hs2"} {
			if !have[name][hs] {
				t.Errorf("%s has no series for %s before the first event", name, hs)
			}
		}
	}
}
