package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// FuzzDecodeTransaction checks that no body makes the transaction decoder or
// the per-event preparation panic, that every failure is one of the
// documented errors, and that what is accepted is a valid forwarded event.
func FuzzDecodeTransaction(f *testing.F) {
	f.Add([]byte(txn(memberEvent("$a", "!r:hs", "@u:hs", "D", 1700000000000))))
	f.Add([]byte(`{"events":[{"type":"m.room.message","content":{}}],"ephemeral":[]}`))
	f.Add([]byte(`{"events":null}`))
	f.Add([]byte(`{"events":{}}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"events":[1,"x",null,{"type":"m.rtc.member","state_key":"","sender":"@a:b","event_id":"$e","room_id":"!r:b","origin_server_ts":5,"content":{}}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		raws, err := DecodeTransaction(body)
		if err != nil {
			if !errors.Is(err, ErrNotJSON) && !errors.Is(err, ErrBadJSON) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		for _, raw := range raws {
			ev, err := Prepare(raw, "", 1, "hs", rawevent.SourceAppservice)
			if err != nil {
				if !errors.Is(err, ErrFiltered) && !errors.Is(err, ErrRejected) {
					t.Fatalf("undocumented error %v", err)
				}
				if errors.Is(err, ErrRejected) && RejectReason(err) == "" {
					t.Fatalf("rejection without reason: %v", err)
				}
				continue
			}
			if !rawevent.IsForwarded(ev.Type) || ev.EventID == "" || ev.RoomID == "" || !json.Valid(ev.Content) {
				t.Fatalf("accepted a bad event: %+v", ev)
			}
			if _, err := rawevent.EncodeRaw(&ev); err != nil {
				t.Fatalf("accepted event does not encode: %v", err)
			}
		}
	})
}

// fuzzMethods are the methods FuzzAppserviceHTTP picks from.
var fuzzMethods = []string{http.MethodPut, http.MethodGet, http.MethodPost, http.MethodDelete}

// clBody behaves like a server-side request body with a Content-Length:
// it ends after n bytes, or fails with io.ErrUnexpectedEOF when the client
// sent fewer.
type clBody struct {
	r *bytes.Reader
	n int64
}

func (b *clBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	if err == io.EOF {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *clBody) Close() error { return nil }

// FuzzAppserviceHTTP drives the appservice handler with arbitrary bodies,
// Authorization headers, Content-Lengths, paths, methods and transaction ids,
// storing into a real embedded JetStream. It checks that nothing panics, that
// no answer is a 5xx while NATS is up, that every non-200 answer is a Matrix
// error body, that a 200 for a transaction is given only to a well-formed
// transaction with a valid token, and that the body budget is released
// after every request (bounded memory).
func FuzzAppserviceHTTP(f *testing.F) {
	e := newEnv(f)
	const maxBody = 64 << 10
	lim := TxnLimits{MaxEvents: 100, MaxDepth: 16, MaxArrayLen: 100}
	as := NewAppservice([]Homeserver{{Name: "hs1", HSToken: tokHS1}, {Name: "hs2", HSToken: tokHS2}}, e.pub, e.m, zap.NewNop(),
		AppserviceOptions{MaxBodyBytes: maxBody, BodyBudget: maxBody, Limits: lim})
	h := as.Handler()

	valid := txn(memberEvent("$f1", "!r:hs1.test", "@a:hs1.test", "A", 1700000000000))
	f.Add([]byte(valid), "valid", int64(len(valid)), "", "1", uint8(0))
	f.Add([]byte(valid), "valid", int64(-1), "", "chunked", uint8(0))
	f.Add([]byte(valid), "valid", int64(len(valid)-5), "", "short", uint8(0))
	f.Add([]byte(valid), "valid", int64(len(valid)+5), "", "long", uint8(0))
	f.Add([]byte(valid), "Bearer nope", int64(len(valid)), "", "1", uint8(0))
	f.Add([]byte(valid), "", int64(len(valid)), "/transactions/legacy?access_token="+tokHS2, "", uint8(0))
	f.Add([]byte(valid), "valid", int64(len(valid)), "/_matrix/app/v1/transactions/a%2Fb", "", uint8(0))
	f.Add([]byte(`{}`), "valid", int64(2), "/_matrix/app/v1/ping", "", uint8(2))
	f.Add([]byte(``), "valid", int64(0), "/_matrix/app/v1/users/@x:y", "", uint8(1))
	f.Add([]byte(`{"events":[{},{}]}`), "valid", int64(-1), "", "2", uint8(3))
	f.Add([]byte(`{"events":[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}`), "valid", int64(-1), "", "deep", uint8(0))
	f.Add([]byte(`{"events":`+strings.Repeat(`{"a":`, 20)+`1`+strings.Repeat(`}`, 20)+`}`), "valid", int64(-1), "", "deep2", uint8(0))
	f.Add([]byte(`{"events":[`+strings.Repeat(`1,`, 200)+`1]}`), "valid", int64(-1), "", "many", uint8(0))
	f.Add([]byte(`{"events":[{"type":"m.rtc.member","sender":"@a:b","event_id":"$e","room_id":"!r:b","origin_server_ts":9223372036854775807,"content":{}}]}`),
		"valid", int64(-1), "", "range", uint8(0))

	f.Fuzz(func(t *testing.T, body []byte, auth string, contentLength int64, path, txnID string, method uint8) {
		target := path
		isTxnPath := false
		if target == "" {
			target = "/_matrix/app/v1/transactions/" + url.PathEscape(txnID)
			isTxnPath = txnID != ""
		} else if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
		m := fuzzMethods[int(method)%len(fuzzMethods)]
		req, err := http.NewRequest(m, "http://ingest.test"+target, nil)
		if err != nil {
			return // the server would refuse the request line before the handler
		}
		if contentLength >= 0 {
			req.ContentLength = contentLength
			req.Body = &clBody{r: bytes.NewReader(body), n: contentLength}
		} else {
			req.ContentLength = -1
			req.Body = io.NopCloser(bytes.NewReader(body))
		}
		validAuth := false
		switch auth {
		case "":
		case "valid":
			req.Header.Set("Authorization", "Bearer "+tokHS1)
			validAuth = true
		default:
			if !validHeaderValue(auth) {
				return // net/http refuses such a header before the handler
			}
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		if n := as.budget.inUse(); n != 0 {
			t.Fatalf("%d budget bytes still reserved after the answer", n)
		}
		if rec.Code >= 500 {
			t.Fatalf("%d with NATS up: %s", rec.Code, rec.Body)
		}
		if rec.Body.Len() > 4096 {
			t.Fatalf("answer of %d bytes", rec.Body.Len())
		}
		if rec.Code != http.StatusOK {
			var fields map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &fields); err != nil {
				t.Fatalf("%d answer %q is not JSON", rec.Code, rec.Body)
			}
			code, _ := fields["errcode"].(string)
			msg, _ := fields["error"].(string)
			_, retry := fields["retry_after_ms"]
			if !strings.HasPrefix(code, "M_") || msg == "" || len(fields) != 2+btoi(retry) {
				t.Fatalf("%d answer %q is not a Matrix error body", rec.Code, rec.Body)
			}
			if rec.Code < 400 {
				t.Fatalf("status %d", rec.Code)
			}
			return
		}
		// A 200 for a transaction: a valid token and a well-formed body, as
		// delivered within its Content-Length.
		rt, _ := matchRoute(req.URL.EscapedPath())
		if rt != routeTransaction {
			return
		}
		if isTxnPath && m != http.MethodPut {
			t.Fatalf("200 for %s", m)
		}
		delivered := body
		if contentLength >= 0 {
			if contentLength > int64(len(body)) {
				t.Fatalf("200 for a body shorter than its Content-Length")
			}
			delivered = body[:contentLength]
		}
		tok := strings.TrimSpace(strings.TrimPrefix(auth, "Bearer "))
		if auth == "" || !strings.HasPrefix(auth, "Bearer ") {
			tok = req.URL.Query().Get("access_token")
		}
		if !validAuth && tok != tokHS1 && tok != tokHS2 {
			t.Fatalf("200 without a valid token (Authorization %q, query %q)", auth, req.URL.RawQuery)
		}
		if len(delivered) > maxBody {
			t.Fatalf("200 for a %d-byte body", len(delivered))
		}
		if err := StreamTransaction(bytes.NewReader(delivered), lim, func(json.RawMessage, error) error { return nil }); err != nil {
			t.Fatalf("200 for a malformed transaction: %v", err)
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// validHeaderValue is what net/http lets through as a header value (RFC
// 7230 field-value: no control characters but tab).
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
