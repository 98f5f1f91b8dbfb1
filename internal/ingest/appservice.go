package ingest

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"maunium.net/go/mautrix"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// Homeserver is one homeserver the ingest serves, with its secrets resolved.
type Homeserver struct {
	Name    string // label in metrics, logs and RawEvent.Homeserver
	HSToken string // the homeserver authenticates its transactions with it
	URL     string // homeserver base URL
	ASToken string // our token for the homeserver (reconciliation reads room state with it); may be empty
	// ServerName is the server name of its users; Relay when it may deliver
	// events of another listed homeserver's users (the relay rule).
	ServerName string
	Relay      RelayMode
}

// AppserviceOptions tune the appservice endpoint. Zero fields take the
// defaults of DefaultConfig.
type AppserviceOptions struct {
	MaxBodyBytes int64 // larger transactions get 413 M_TOO_LARGE
	// PublishChunkBytes: a new transaction is published in chunks of about
	// this much event content as it is decoded (0: 1 MiB).
	PublishChunkBytes int
	BodyBudget        int64         // bytes of transaction bodies in flight, all homeservers; over it: 429
	RetryAfter        time.Duration // what a 429 asks the homeserver to wait
	Limits            TxnLimits     // events per transaction, nesting, array lengths
	TxnCacheSize      int           // completed transaction ids remembered per homeserver
	LogSampleFirst    int           // warnings logged per message and second before sampling drops them
}

// Matrix error codes the appservice answers with.
const (
	errForbidden     = "M_FORBIDDEN"
	errMissingToken  = "M_MISSING_TOKEN"
	errUnrecognized  = "M_UNRECOGNIZED"
	errNotFound      = "M_NOT_FOUND"
	errNotJSON       = "M_NOT_JSON"
	errBadJSON       = "M_BAD_JSON"
	errTooLarge      = "M_TOO_LARGE"
	errLimitExceeded = "M_LIMIT_EXCEEDED"
	errUnknown       = "M_UNKNOWN"
	errInvalidParam  = "M_INVALID_PARAM"
)

// maxTxnIDBytes bounds a transaction id (the cache keeps them); homeservers
// use short counters.
const maxTxnIDBytes = 1024

// Appservice serves the Matrix application service API for several
// homeservers at once; the hs_token of a request says which one sent it.
type Appservice struct {
	hss    []hsEntry
	pub    *Publisher
	m      *Metrics
	log    *zap.Logger // sampled: a hostile body cannot flood the logs
	opts   AppserviceOptions
	budget *bodyBudget
	now    func() time.Time
	rooms  *RoomTracker // rooms seen with call state events, for reconciliation (nil: none)
}

// SetRoomTracker makes the appservice note the rooms of the call state
// events it stores (reconciliation candidates).
func (a *Appservice) SetRoomTracker(t *RoomTracker) { a.rooms = t }

type hsEntry struct {
	name string
	tok  [sha256.Size]byte // hashed: equal-length constant-time comparison
	txns *txnCache
}

// NewAppservice builds the handler. Homeserver names and hs_tokens must be
// unique (the config validation checks it).
func NewAppservice(hss []Homeserver, pub *Publisher, m *Metrics, log *zap.Logger, opts AppserviceOptions) *Appservice {
	d := DefaultConfig().Appservice
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = d.MaxBodyBytes
	}
	if opts.BodyBudget <= 0 {
		opts.BodyBudget = d.BodyBudgetBytes
	}
	opts.BodyBudget = max(opts.BodyBudget, opts.MaxBodyBytes) // else a largest body could never pass
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = d.RetryAfter
	}
	if opts.TxnCacheSize <= 0 {
		opts.TxnCacheSize = d.TxnCacheSize
	}
	if opts.PublishChunkBytes <= 0 {
		opts.PublishChunkBytes = 1 << 20
	}
	if opts.LogSampleFirst <= 0 {
		opts.LogSampleFirst = 10
	}
	opts.Limits = opts.Limits.withDefaults()
	a := &Appservice{pub: pub, m: m, log: sampledLogger(log, opts.LogSampleFirst, m), opts: opts,
		budget: newBodyBudget(opts.BodyBudget, m.BodyBytes), now: time.Now}
	if len(hss) > 1 { // no homeserver may hold more than half, nor less than one body
		a.budget.share = max(opts.BodyBudget/2, opts.MaxBodyBytes)
	}
	names := make([]string, 0, len(hss))
	for _, h := range hss {
		a.hss = append(a.hss, hsEntry{name: h.Name, tok: sha256.Sum256([]byte(h.HSToken)), txns: newTxnCache(opts.TxnCacheSize)})
		names = append(names, h.Name)
	}
	m.initAppservice(names)
	return a
}

// sampledLogger logs the first `first` entries of each message per second
// and drops the rest, counting what it drops: one body with millions of
// bad entries must not write millions of lines (the metrics count each).
func sampledLogger(log *zap.Logger, first int, m *Metrics) *zap.Logger {
	return log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Second, first, 0,
			zapcore.SamplerHook(func(_ zapcore.Entry, dec zapcore.SamplingDecision) {
				if dec&zapcore.LogDropped != 0 {
					m.LogDropped.Inc()
				}
			}))
	}))
}

// Handler is the appservice API (current and legacy paths).
func (a *Appservice) Handler() http.Handler { return a }

// route is one endpoint of the appservice API.
type route int

const (
	routeNone route = iota
	routeTransaction
	routeUser
	routeRoom
	routePing
)

var routeMethod = map[route]string{
	routeTransaction: http.MethodPut, routeUser: http.MethodGet, routeRoom: http.MethodGet, routePing: http.MethodPost,
}

// matchRoute parses an escaped request path: /_matrix/app/v1/<name>[/<arg>]
// and the legacy /<name>/<arg> (spec "Legacy routes"; ping has none).
func matchRoute(escaped string) (route, string) {
	rest, v1 := strings.CutPrefix(escaped, "/_matrix/app/v1/")
	if !v1 {
		rest = strings.TrimPrefix(escaped, "/")
		if rest == escaped {
			return routeNone, ""
		}
	}
	if v1 && rest == "ping" {
		return routePing, ""
	}
	name, arg, ok := strings.Cut(rest, "/")
	if !ok || arg == "" || strings.Contains(arg, "/") {
		return routeNone, ""
	}
	arg, err := url.PathUnescape(arg)
	if err != nil || arg == "" {
		return routeNone, ""
	}
	switch name {
	case "transactions":
		return routeTransaction, arg
	case "users":
		return routeUser, arg
	case "rooms":
		return routeRoom, arg
	}
	return routeNone, ""
}

// ServeHTTP routes a request. Every answer but a 200 is a Matrix error body;
// an unknown path is 404 M_UNRECOGNIZED and a known one with another method
// 405 M_UNRECOGNIZED (spec "Unknown routes").
func (a *Appservice) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt, arg := matchRoute(r.URL.EscapedPath())
	if rt == routeNone {
		writeError(w, http.StatusNotFound, errUnrecognized, "unrecognized endpoint")
		return
	}
	if want := routeMethod[rt]; r.Method != want {
		w.Header().Set("Allow", want)
		writeError(w, http.StatusMethodNotAllowed, errUnrecognized, "method not allowed, use "+want)
		return
	}
	hs, ok := a.authenticate(w, r)
	if !ok {
		return
	}
	switch rt {
	case routeTransaction:
		log := a.log.With(zap.String("homeserver", hs.name), zap.String("txn_id", clip(arg)))
		code := a.handleTransaction(r.Context(), w, r, hs, arg, log)
		a.m.Transactions.WithLabelValues(hs.name, strconv.Itoa(code)).Inc()
	case routePing:
		a.ping(w, r, hs)
	default:
		writeError(w, http.StatusNotFound, errNotFound, "this application service provides no users or room aliases")
	}
}

// authenticate finds the homeserver of the request's hs_token. It compares
// against every registration in constant time and never logs the token. Per
// the spec a missing token is 401 and a wrong one 403 M_FORBIDDEN; when both
// the Authorization header and the legacy access_token query parameter are
// given they must agree. Every failure is counted by homeserver ("unknown"
// when no token matches) and reason.
func (a *Appservice) authenticate(w http.ResponseWriter, r *http.Request) (*hsEntry, bool) {
	header, hasHeader := "", false
	if h := r.Header.Get("Authorization"); h != "" {
		after, ok := strings.CutPrefix(h, "Bearer ")
		header, hasHeader = strings.TrimSpace(after), ok
		if !ok {
			header, hasHeader = "", true // a scheme we do not accept: a wrong token
		}
	}
	query := r.URL.Query().Get("access_token")
	hasQuery := query != ""
	if !hasHeader && !hasQuery {
		a.authFailed(w, r, nil, authMissingToken, http.StatusUnauthorized, errMissingToken, "missing homeserver token")
		return nil, false
	}
	tok := header
	if !hasHeader {
		tok = query
	}
	hs := a.lookup(tok)
	switch {
	case hs == nil:
		a.authFailed(w, r, nil, authUnknownToken, http.StatusForbidden, errForbidden, "invalid homeserver token")
		return nil, false
	case hasHeader && hasQuery && subtle.ConstantTimeCompare([]byte(query), []byte(header)) != 1:
		a.authFailed(w, r, hs, authTokenMismatch, http.StatusForbidden, errForbidden,
			"the Authorization header and access_token disagree")
		return nil, false
	}
	return hs, true
}

func (a *Appservice) lookup(tok string) *hsEntry {
	if tok == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(tok))
	found := -1
	for i := range a.hss {
		if subtle.ConstantTimeCompare(sum[:], a.hss[i].tok[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return nil
	}
	return &a.hss[found]
}

func (a *Appservice) authFailed(w http.ResponseWriter, r *http.Request, hs *hsEntry, reason string, status int, errcode, msg string) {
	name := unknownHomeserver
	if hs != nil {
		name = hs.name
	}
	a.m.AuthFailures.WithLabelValues(name, reason).Inc()
	a.log.Warn("appservice request refused", zap.String("homeserver", name), zap.String("reason", reason),
		zap.String("path", clip(r.URL.Path)), zap.String("remote", r.RemoteAddr))
	writeError(w, status, errcode, msg)
}

// handleTransaction reads, checks and stores one transaction and returns the
// status it answered. The body is streamed: within the body budget, hashed
// as it is read, and decoded event by event (StreamTransaction).
func (a *Appservice) handleTransaction(ctx context.Context, w http.ResponseWriter, r *http.Request, hs *hsEntry, txnID string, log *zap.Logger) int {
	if len(txnID) > maxTxnIDBytes {
		return writeError(w, http.StatusBadRequest, errInvalidParam, fmt.Sprintf("transaction id longer than %d bytes", maxTxnIDBytes))
	}
	maxBody := a.opts.MaxBodyBytes
	if r.ContentLength > maxBody {
		log.Warn("transaction too large", zap.Int64("bytes", r.ContentLength))
		return writeError(w, http.StatusRequestEntityTooLarge, errTooLarge, fmt.Sprintf("transaction larger than %d bytes", maxBody))
	}
	br := &budgetReader{r: http.MaxBytesReader(w, r.Body, maxBody), b: a.budget, hs: hs.name, chunk: 64 << 10, max: maxBody}
	defer br.Close()
	if r.ContentLength >= 0 { // reserve the whole body before reading a byte of it
		if !a.budget.tryReserve(hs.name, r.ContentLength) {
			return a.overBudget(w, log)
		}
		br.reserved, br.max = r.ContentLength, r.ContentLength
	}
	var st Stats
	publish := func(evs []rawevent.RawEvent) error {
		s, err := a.pub.Publish(ctx, hs.name, rawevent.SourceAppservice, evs)
		// Only what the relay rule let through: refused events must not
		// make their rooms reconciliation candidates.
		a.rooms.Note(hs.name, evs[:len(evs)-s.Refused], a.now())
		st.Stored += s.Stored
		st.Duplicates += s.Duplicates
		return err
	}
	sum := sha256.New()
	receivedAt := a.now().UnixMilli()
	batch := newBatch(hs.name, rawevent.SourceAppservice, receivedAt, a.m, log)
	// A new transaction id is published as it is decoded, a chunk at a
	// time, so that a transaction holds one chunk of prepared events rather
	// than all of them. A known id is held until its digest says whether it
	// is a retry (nothing to publish) or new content: retries are rare, and
	// bounded by the body budget like everything else.
	_, known := hs.txns.get(txnID)
	if !known {
		batch.flush, batch.flushBytes = publish, a.opts.PublishChunkBytes
	}
	err := StreamTransaction(io.TeeReader(br, sum), a.opts.Limits, batch.add)
	batch.count()
	if errors.Is(err, ErrUnavailable) {
		return a.unavailable(w, batch, err, log)
	}
	if err != nil {
		return a.badTransaction(w, err, log)
	}
	digest := digestOf(sum)
	if prev, ok := hs.txns.get(txnID); known && ok {
		if prev == digest {
			a.m.TxnReused.WithLabelValues(hs.name, txnSameContent).Inc()
			log.Debug("transaction already stored")
			return writeOK(w)
		}
		// A homeserver that restarted its counter: new events under an old
		// id. Storing them is safe (JetStream de-duplicates by event id);
		// dropping them would lose them.
		a.m.TxnReused.WithLabelValues(hs.name, txnDifferentContent).Inc()
		log.Warn("transaction id reused with different content, storing it")
	}
	if err := publish(batch.evs); err != nil {
		return a.unavailable(w, batch, err, log)
	}
	hs.txns.put(txnID, digest)
	log.Debug("transaction stored", zap.Int("events", batch.n), zap.Int("forwarded", batch.forwarded),
		zap.Int("stored", st.Stored), zap.Int("duplicates", st.Duplicates))
	return writeOK(w)
}

// unavailable answers 503: some event of the transaction has no PubAck.
// The homeserver retries it; what was stored is de-duplicated then.
func (a *Appservice) unavailable(w http.ResponseWriter, b *batch, err error, log *zap.Logger) int {
	log.Warn("transaction not stored, the homeserver will retry", zap.Int("events", b.n), zap.Error(err))
	w.Header().Set("Retry-After", "2")
	return writeError(w, http.StatusServiceUnavailable, errUnknown, "event store unavailable, retry later")
}

func digestOf(h hash.Hash) [sha256.Size]byte {
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// overBudget answers 429 M_LIMIT_EXCEEDED: the homeserver keeps the
// transaction and retries it, so nothing is lost.
func (a *Appservice) overBudget(w http.ResponseWriter, log *zap.Logger) int {
	log.Warn("transaction body budget exhausted, asking the homeserver to retry", zap.Int64("budget_bytes", a.opts.BodyBudget))
	ms := a.opts.RetryAfter.Milliseconds()
	w.Header().Set("Retry-After", strconv.FormatInt((ms+999)/1000, 10))
	return writeMatrixError(w, http.StatusTooManyRequests, mautrix.RespError{ErrCode: errLimitExceeded,
		Err: "too many transaction bytes in flight, retry later", ExtraData: map[string]any{"retry_after_ms": ms}})
}

// badTransaction answers a transaction that could not be read or decoded.
func (a *Appservice) badTransaction(w http.ResponseWriter, err error, log *zap.Logger) int {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, errOverBudget):
		return a.overBudget(w, log)
	case errors.As(err, &mbe):
		log.Warn("transaction too large", zap.Int64("limit", mbe.Limit))
		return writeError(w, http.StatusRequestEntityTooLarge, errTooLarge, fmt.Sprintf("transaction larger than %d bytes", mbe.Limit))
	case errors.Is(err, ErrTooManyEvents), errors.Is(err, ErrTooComplex):
		log.Warn("transaction too large", zap.Error(err))
		return writeError(w, http.StatusRequestEntityTooLarge, errTooLarge, err.Error())
	case errors.Is(err, ErrNotJSON):
		log.Warn("malformed transaction", zap.Error(err))
		return writeError(w, http.StatusBadRequest, errNotJSON, err.Error())
	case errors.Is(err, ErrBadJSON):
		log.Warn("malformed transaction", zap.Error(err))
		return writeError(w, http.StatusBadRequest, errBadJSON, err.Error())
	default: // the connection failed while reading
		log.Warn("reading transaction", zap.Error(err))
		return writeError(w, http.StatusBadRequest, errBadJSON, "could not read body")
	}
}

// batch prepares the events of one transaction or sync section as they are
// decoded, keeping only the ones to publish, and counts the rest. With a
// flush function it hands its events over every flushBytes of content.
type batch struct {
	hs         string
	src        rawevent.Source
	receivedAt int64
	room       string
	m          *Metrics
	log        *zap.Logger
	n          int
	filtered   int
	forwarded  int
	evs        []rawevent.RawEvent
	held       int // content bytes in evs

	flush      func([]rawevent.RawEvent) error
	flushBytes int
}

func newBatch(hs string, src rawevent.Source, receivedAt int64, m *Metrics, log *zap.Logger) *batch {
	return &batch{hs: hs, src: src, receivedAt: receivedAt, m: m, log: log}
}

// add prepares one event; shapeErr says it broke the transaction limits.
// Its error is flush's (the event store is unavailable).
func (b *batch) add(raw json.RawMessage, shapeErr error) error {
	i := b.n
	b.n++
	var ev rawevent.RawEvent
	err := shapeErr
	if err != nil {
		err = &RejectError{Reason: RejectTooComplex, Err: err}
	} else {
		ev, err = Prepare(raw, roomID(b.room), b.receivedAt, b.hs, b.src)
	}
	switch {
	case err == nil:
		b.evs = append(b.evs, ev)
		b.forwarded++
		b.held += len(ev.Content)
		if b.flush != nil && b.held >= b.flushBytes {
			err := b.flush(b.evs)
			clear(b.evs) // the events are encoded and sent: let their content go
			b.evs, b.held = b.evs[:0], 0
			return err
		}
	case errors.Is(err, ErrFiltered):
		b.filtered++
	default:
		reason := RejectReason(err)
		b.m.rejected(b.hs, b.src, reason)
		// Sampled per reason (the message carries it): counted exactly above.
		b.log.Warn("event rejected: "+reason, zap.Int("index", i), zap.String("reason", reason), zap.Error(err))
	}
	return nil
}

// count adds the batch's received and filtered events to the metrics.
func (b *batch) count() {
	b.m.received(b.hs, b.src, b.n)
	if b.filtered > 0 {
		b.m.Filtered.WithLabelValues(b.hs, string(b.src)).Add(float64(b.filtered))
	}
}

// prepareBatch turns the events of a batch held in memory (a /sync section)
// into RawEvents, counting and logging what is filtered or rejected.
func prepareBatch(raws []json.RawMessage, room string, receivedAt int64, hs string, src rawevent.Source, m *Metrics, log *zap.Logger) []rawevent.RawEvent {
	b := newBatch(hs, src, receivedAt, m, log)
	b.room = room
	for _, raw := range raws {
		_ = b.add(raw, nil) // no flush: cannot fail
	}
	b.count()
	return b.evs
}

func (a *Appservice) ping(w http.ResponseWriter, r *http.Request, hs *hsEntry) {
	var body struct {
		TransactionID string `json:"transaction_id"`
	}
	_ = json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body)
	a.log.Info("appservice ping", zap.String("homeserver", hs.name), zap.String("transaction_id", clip(body.TransactionID)))
	writeOK(w)
}

func writeOK(w http.ResponseWriter) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("{}"))
	return http.StatusOK
}

func writeError(w http.ResponseWriter, status int, errcode, msg string) int {
	return writeMatrixError(w, status, mautrix.RespError{ErrCode: errcode, Err: msg})
}

// writeMatrixError writes the Matrix standard error body,
// {"errcode":...,"error":...} and e's extra fields. (RespError.Write would
// also add CORS headers when mautrix's exhttp is configured so, and a
// newline.)
func writeMatrixError(w http.ResponseWriter, status int, e mautrix.RespError) int {
	b, _ := e.MarshalJSON() // cannot fail: strings and integers
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return status
}

// txnCache remembers, per homeserver, the digest of the body of each of the
// last completed transaction ids: a retry (same id, same body) is answered
// without publishing again, and a reused id with another body is stored.
type txnCache struct {
	mu      sync.Mutex
	digests map[string][sha256.Size]byte
	ring    []string
	next    int
}

func newTxnCache(n int) *txnCache {
	return &txnCache{digests: make(map[string][sha256.Size]byte, n), ring: make([]string, n)}
}

func (c *txnCache) get(id string) ([sha256.Size]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.digests[id]
	return d, ok
}

func (c *txnCache) put(id string, d [sha256.Size]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.digests[id]; ok {
		c.digests[id] = d
		return
	}
	if old := c.ring[c.next]; old != "" {
		delete(c.digests, old)
	}
	c.ring[c.next] = id
	c.digests[id] = d
	c.next = (c.next + 1) % len(c.ring)
}
