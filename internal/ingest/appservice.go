package ingest

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"maunium.net/go/mautrix"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// Homeserver is one homeserver the ingest serves, with its secrets resolved.
type Homeserver struct {
	Name    string // label in metrics, logs and RawEvent.Homeserver
	HSToken string // the homeserver authenticates its transactions with it
	ASToken string // we would authenticate to the homeserver with it (unused by the push path)
	URL     string // homeserver base URL
}

// AppserviceOptions tune the appservice endpoint.
type AppserviceOptions struct {
	MaxBodyBytes int64 // larger transactions get 413 M_TOO_LARGE
	TxnCacheSize int   // completed transaction ids remembered per homeserver
}

// Appservice serves the Matrix application service API for several
// homeservers at once; the hs_token of a request says which one sent it.
type Appservice struct {
	hss  []hsEntry
	pub  *Publisher
	m    *Metrics
	log  *zap.Logger
	opts AppserviceOptions
	now  func() time.Time
}

type hsEntry struct {
	name string
	tok  [sha256.Size]byte // hashed: equal-length constant-time comparison
	txns *txnCache
}

// NewAppservice builds the handler. Homeserver names and hs_tokens must be
// unique (the config validation checks it).
func NewAppservice(hss []Homeserver, pub *Publisher, m *Metrics, log *zap.Logger, opts AppserviceOptions) *Appservice {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 10 << 20
	}
	if opts.TxnCacheSize <= 0 {
		opts.TxnCacheSize = 256
	}
	a := &Appservice{pub: pub, m: m, log: log, opts: opts, now: time.Now}
	for _, h := range hss {
		a.hss = append(a.hss, hsEntry{name: h.Name, tok: sha256.Sum256([]byte(h.HSToken)), txns: newTxnCache(opts.TxnCacheSize)})
	}
	return a
}

// Handler routes the appservice API (current and legacy paths).
func (a *Appservice) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, prefix := range []string{"/_matrix/app/v1", ""} {
		mux.HandleFunc("PUT "+prefix+"/transactions/{txnId}", a.transaction)
		mux.HandleFunc("GET "+prefix+"/users/{userId}", a.notFound)
		mux.HandleFunc("GET "+prefix+"/rooms/{alias}", a.notFound)
	}
	mux.HandleFunc("POST /_matrix/app/v1/ping", a.ping)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, mautrix.MUnrecognized.ErrCode, "unrecognized endpoint")
	})
	return mux
}

// authenticate finds the homeserver of the request's hs_token. It compares
// against every registration in constant time and never logs the token.
func (a *Appservice) authenticate(w http.ResponseWriter, r *http.Request) (*hsEntry, bool) {
	tok := ""
	if h := r.Header.Get("Authorization"); h != "" {
		if after, ok := strings.CutPrefix(h, "Bearer "); ok {
			tok = strings.TrimSpace(after)
		}
	} else {
		tok = r.URL.Query().Get("access_token") // legacy_auth homeservers
	}
	if tok == "" {
		writeError(w, http.StatusUnauthorized, "M_UNAUTHORIZED", "missing homeserver token")
		return nil, false
	}
	sum := sha256.Sum256([]byte(tok))
	found := -1
	for i := range a.hss {
		if subtle.ConstantTimeCompare(sum[:], a.hss[i].tok[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		a.log.Warn("appservice request with an unknown token", zap.String("path", r.URL.Path),
			zap.String("remote", r.RemoteAddr))
		writeError(w, http.StatusForbidden, mautrix.MForbidden.ErrCode, "invalid homeserver token")
		return nil, false
	}
	return &a.hss[found], true
}

func (a *Appservice) transaction(w http.ResponseWriter, r *http.Request) {
	hs, ok := a.authenticate(w, r)
	if !ok {
		return
	}
	txnID := r.PathValue("txnId")
	log := a.log.With(zap.String("homeserver", hs.name), zap.String("txn_id", txnID))
	code := a.handleTransaction(r.Context(), w, r, hs, txnID, log)
	a.m.Transactions.WithLabelValues(hs.name, strconv.Itoa(code)).Inc()
}

func (a *Appservice) handleTransaction(ctx context.Context, w http.ResponseWriter, r *http.Request, hs *hsEntry, txnID string, log *zap.Logger) int {
	if r.ContentLength > a.opts.MaxBodyBytes {
		log.Warn("transaction too large", zap.Int64("bytes", r.ContentLength))
		return writeError(w, http.StatusRequestEntityTooLarge, mautrix.MTooLarge.ErrCode,
			fmt.Sprintf("transaction larger than %d bytes", a.opts.MaxBodyBytes))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.opts.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			log.Warn("transaction too large", zap.Int64("limit", mbe.Limit))
			return writeError(w, http.StatusRequestEntityTooLarge, mautrix.MTooLarge.ErrCode,
				fmt.Sprintf("transaction larger than %d bytes", a.opts.MaxBodyBytes))
		}
		log.Warn("reading transaction", zap.Error(err))
		return writeError(w, http.StatusBadRequest, mautrix.MBadJSON.ErrCode, "could not read body")
	}
	if hs.txns.seen(txnID) {
		log.Debug("transaction already processed")
		return writeOK(w)
	}
	raws, err := DecodeTransaction(body)
	if err != nil {
		log.Warn("malformed transaction", zap.Error(err))
		errcode := mautrix.MBadJSON.ErrCode
		if errors.Is(err, ErrNotJSON) {
			errcode = mautrix.MNotJSON.ErrCode
		}
		return writeError(w, http.StatusBadRequest, errcode, err.Error())
	}
	evs := a.prepareAll(raws, hs.name, events.SourceAppservice, log)
	st, err := a.pub.Publish(ctx, hs.name, events.SourceAppservice, evs)
	if err != nil {
		log.Warn("transaction not stored, the homeserver will retry", zap.Int("events", len(evs)), zap.Error(err))
		w.Header().Set("Retry-After", "2")
		return writeError(w, http.StatusServiceUnavailable, mautrix.MUnknown.ErrCode,
			"event store unavailable, retry later")
	}
	hs.txns.add(txnID)
	log.Debug("transaction stored", zap.Int("events", len(raws)), zap.Int("forwarded", len(evs)),
		zap.Int("stored", st.Stored), zap.Int("duplicates", st.Duplicates))
	return writeOK(w)
}

// prepareAll turns the events of a batch into RawEvents, counting and
// logging what is filtered or rejected.
func (a *Appservice) prepareAll(raws []json.RawMessage, hs string, src events.Source, log *zap.Logger) []events.RawEvent {
	return prepareBatch(raws, "", a.now().UnixMilli(), hs, src, a.m, log)
}

func prepareBatch(raws []json.RawMessage, room string, receivedAt int64, hs string, src events.Source, m *Metrics, log *zap.Logger) []events.RawEvent {
	m.received(hs, src, len(raws))
	evs := make([]events.RawEvent, 0, len(raws))
	for i, raw := range raws {
		ev, err := Prepare(raw, roomID(room), receivedAt, hs, src)
		switch {
		case err == nil:
			evs = append(evs, ev)
		case errors.Is(err, ErrFiltered):
			m.filtered(hs, src)
		default:
			reason := RejectReason(err)
			m.rejected(hs, src, reason)
			log.Warn("event rejected", zap.Int("index", i), zap.String("reason", reason), zap.Error(err))
		}
	}
	return evs
}

func (a *Appservice) ping(w http.ResponseWriter, r *http.Request) {
	hs, ok := a.authenticate(w, r)
	if !ok {
		return
	}
	var body struct {
		TransactionID string `json:"transaction_id"`
	}
	_ = json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body)
	a.log.Info("appservice ping", zap.String("homeserver", hs.name), zap.String("transaction_id", body.TransactionID))
	writeOK(w)
}

// notFound answers the user and room alias queries: this appservice provides
// neither users nor aliases (spec: 404 M_NOT_FOUND).
func (a *Appservice) notFound(w http.ResponseWriter, r *http.Request) {
	if _, ok := a.authenticate(w, r); !ok {
		return
	}
	writeError(w, http.StatusNotFound, mautrix.MNotFound.ErrCode, "this application service provides no users or room aliases")
}

func writeOK(w http.ResponseWriter) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("{}"))
	return http.StatusOK
}

func writeError(w http.ResponseWriter, status int, errcode, msg string) int {
	b, _ := json.Marshal(mautrix.RespError{ErrCode: errcode, Err: msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return status
}

// txnCache remembers the last completed transaction ids of a homeserver, so
// that a retry of a transaction we answered is not published again (it would
// be de-duplicated by JetStream anyway).
type txnCache struct {
	mu   sync.Mutex
	ids  map[string]struct{}
	ring []string
	next int
}

func newTxnCache(n int) *txnCache {
	return &txnCache{ids: make(map[string]struct{}, n), ring: make([]string, n)}
}

func (c *txnCache) seen(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.ids[id]
	return ok
}

func (c *txnCache) add(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.ids[id]; ok {
		return
	}
	if old := c.ring[c.next]; old != "" {
		delete(c.ids, old)
	}
	c.ring[c.next] = id
	c.ids[id] = struct{}{}
	c.next = (c.next + 1) % len(c.ring)
}
