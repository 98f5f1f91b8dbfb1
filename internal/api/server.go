// Package api is rtcapi: a read-only HTTP API over rtc-sessions (live
// sessions from rtc_sessions, ended sessions from RTC_HISTORY, session
// events from RTC_EVENTS as Server-Sent Events) and a live-calls page. It is
// stateless: every replica reads NATS, so any number of them can run behind
// a load balancer, and an event stream resumes on any of them. docs/api.md
// documents the routes, authentication and configuration.
package api

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/api/history"
	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
	"github.com/rtcsessions/rtc-sessions/internal/telemetry"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

//go:embed web
var webFS embed.FS

//go:embed openapi.json
var openAPIDoc []byte

// Server serves the API. Create it with New.
type Server struct {
	cfg      Config
	log      *zap.Logger
	js       jetstream.JetStream
	nc       *nats.Conn
	auth     *Authenticator
	live     *liveMirror
	health   *telemetry.Health
	reg      *prometheus.Registry
	metrics  *metrics
	sseSlots *slots
	closing  chan struct{}
	routes   []route
	handler  http.Handler
}

type route struct {
	method, pattern string // pattern as in the OpenAPI document
	public          bool   // no token needed
	h               func(http.ResponseWriter, *http.Request, Scope)
}

// New builds a server on a NATS connection (which it does not close).
// Call Start to begin mirroring rtc_sessions.
func New(cfg Config, nc *nats.Conn, log *zap.Logger, reg *prometheus.Registry) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("rtcapi config: %w", err)
	}
	auth, err := NewAuthenticator(cfg.Auth)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Server{cfg: cfg, log: log, js: js, nc: nc, auth: auth, live: newLiveMirror(), health: telemetry.NewHealth(),
		reg: reg, sseSlots: newSlots(cfg.SSE.MaxClients), closing: make(chan struct{})}
	s.metrics = newMetrics(reg, s.live)
	s.health.AddCheck("nats", func() error {
		if !nc.IsConnected() {
			return errors.New("not connected")
		}
		return nil
	})
	s.health.AddCheck("sessions", s.live.ready)
	s.routes = []route{
		{"GET", "/v1/sessions", false, s.handleSessions},
		{"GET", "/v1/sessions/{session_id}", false, s.handleSession},
		{"GET", "/v1/rooms/{room}/history", false, s.handleRoomHistory},
		{"GET", "/v1/history", false, s.handleHistory},
		{"GET", "/v1/events", false, s.handleEvents},
		{"GET", "/v1/openapi.json", true, s.handleOpenAPI},
	}
	s.handler = s.buildHandler()
	return s, nil
}

// Start mirrors rtc_sessions until ctx ends.
func (s *Server) Start(ctx context.Context) {
	go s.live.run(ctx, s.js, s.log, nil)
}

// Ready reports whether the server can answer (NATS, the live sessions read).
func (s *Server) Ready() error { return s.health.Ready() }

// Handler is the HTTP handler of every route.
func (s *Server) Handler() http.Handler { return s.handler }

// Close ends the open event streams (their clients reconnect elsewhere).
func (s *Server) Close() {
	select {
	case <-s.closing:
	default:
		close(s.closing)
	}
}

// Routes lists the API routes (method and OpenAPI path), for the tests
// that hold them to the OpenAPI document.
func (s *Server) Routes() [][2]string {
	var out [][2]string
	for _, rt := range s.routes {
		out = append(out, [2]string{rt.method, rt.pattern})
	}
	return out
}

func (s *Server) buildHandler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes {
		mux.Handle(rt.method+" "+rt.pattern, s.instrument(rt.pattern, func(w http.ResponseWriter, r *http.Request) {
			scope := Scope{Name: "public", All: true}
			if !rt.public {
				var ok bool
				if scope, ok = s.auth.Authenticate(r); !ok {
					w.Header().Set("WWW-Authenticate", `Bearer realm="rtcapi"`)
					s.writeError(w, r, http.StatusUnauthorized, "unauthorized", "a valid bearer token is required (Authorization: Bearer TOKEN, or access_token=TOKEN)")
					return
				}
			}
			rt.h(w, r, scope)
		}))
	}
	s.addOps(mux, s.cfg.MetricsListen == "")
	sub, err := fs.Sub(webFS, "web")
	if err != nil {
		panic(err) // the embedded directory is part of the binary
	}
	static := http.FileServerFS(sub)
	mux.Handle("GET /", s.instrument("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" && !strings.HasPrefix(r.URL.Path, "/static/") {
			s.writeError(w, r, http.StatusNotFound, "not_found", "no such route")
			return
		}
		if r.URL.Path == "/" {
			// The page's own scripts only: no inline script, nothing from
			// another origin.
			w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'")
		}
		if strings.HasPrefix(r.URL.Path, "/static/") {
			r2 := r.Clone(r.Context())
			r2.URL.Path = strings.TrimPrefix(r.URL.Path, "/static")
			static.ServeHTTP(w, r2)
			return
		}
		static.ServeHTTP(w, r)
	}))
	return s.cors(mux)
}

// addOps adds /healthz, /readyz and, with metrics, /metrics.
func (s *Server) addOps(mux *http.ServeMux, metrics bool) {
	if metrics {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Ready(); err != nil {
			s.writeError(w, r, http.StatusServiceUnavailable, "not_ready", err.Error())
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
}

// OpsHandler serves /metrics, /healthz and /readyz (for metrics_listen).
func (s *Server) OpsHandler() http.Handler {
	mux := http.NewServeMux()
	s.addOps(mux, true)
	return mux
}

// cors answers preflight requests and marks responses for the configured
// origins; other origins get no CORS headers (the browser then refuses).
func (s *Server) cors(next http.Handler) http.Handler {
	anyOrigin := slices.Contains(s.cfg.CORS.AllowedOrigins, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		allowed := origin != "" && (anyOrigin || slices.Contains(s.cfg.CORS.AllowedOrigins, strings.TrimSuffix(origin, "/")))
		if origin != "" {
			w.Header().Add("Vary", "Origin")
		}
		if allowed {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			w.Header().Set("Access-Control-Expose-Headers", "Content-Type")
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if !allowed {
				s.writeError(w, r, http.StatusForbidden, "forbidden", "origin not allowed")
				return
			}
			w.Header().Set("Access-Control-Allow-Methods", "GET, OPTIONS")
			w.Header().Set("Access-Control-Allow-Headers", "Authorization, Last-Event-ID")
			w.Header().Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ErrorBody is every error's JSON body.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (s *Server) writeError(w http.ResponseWriter, _ *http.Request, status int, code, msg string) {
	var b ErrorBody
	b.Error.Code, b.Error.Message = code, msg
	writeJSON(w, status, &b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// SessionList is the body of GET /v1/sessions.
type SessionList struct {
	Sessions []events.LiveSession `json:"sessions"`
}

func (s *Server) handleSessions(w http.ResponseWriter, r *http.Request, scope Scope) {
	if err := s.live.ready(); err != nil {
		s.writeError(w, r, http.StatusServiceUnavailable, "not_ready", "live sessions not read yet: "+err.Error())
		return
	}
	room, app := id.RoomID(r.URL.Query().Get("room")), r.URL.Query().Get("app")
	if room != "" && !scope.Allows(room) {
		s.writeError(w, r, http.StatusForbidden, "forbidden", "the token may not read this room")
		return
	}
	writeJSON(w, http.StatusOK, SessionList{Sessions: s.live.list(scope, room, app)})
}

func (s *Server) handleSession(w http.ResponseWriter, r *http.Request, scope Scope) {
	if err := s.live.ready(); err != nil {
		s.writeError(w, r, http.StatusServiceUnavailable, "not_ready", "live sessions not read yet: "+err.Error())
		return
	}
	ls, ok := s.live.get(scope, r.PathValue("session_id"))
	if !ok {
		// Also for a session of a room out of scope: no telling it exists.
		s.writeError(w, r, http.StatusNotFound, "not_found", "no live session with this id (an ended session is in its room's history)")
		return
	}
	writeJSON(w, http.StatusOK, &ls)
}

// HistoryEntry is one ended session in a history page.
type HistoryEntry struct {
	Seq   uint64              `json:"seq"` // RTC_HISTORY stream sequence
	Event events.SessionEvent `json:"event"`
}

// HistoryPage is the body of the history routes.
type HistoryPage struct {
	Sessions   []HistoryEntry `json:"sessions"`
	NextCursor string         `json:"next_cursor,omitempty"`
}

func (s *Server) handleRoomHistory(w http.ResponseWriter, r *http.Request, scope Scope) {
	room := id.RoomID(r.PathValue("room"))
	if !strings.HasPrefix(string(room), "!") {
		s.writeError(w, r, http.StatusBadRequest, "bad_request", fmt.Sprintf("room %q is not a room id (!opaque:server, URL-encoded)", room))
		return
	}
	if !scope.Allows(room) {
		s.writeError(w, r, http.StatusForbidden, "forbidden", "the token may not read this room")
		return
	}
	s.serveHistory(w, r, []id.RoomID{room})
}

func (s *Server) handleHistory(w http.ResponseWriter, r *http.Request, scope Scope) {
	var rooms []id.RoomID
	if !scope.All {
		rooms = scope.Rooms
	}
	s.serveHistory(w, r, rooms)
}

func (s *Server) serveHistory(w http.ResponseWriter, r *http.Request, rooms []id.RoomID) {
	q := r.URL.Query()
	hq := history.Query{Rooms: rooms, App: q.Get("app"), Limit: s.cfg.History.DefaultLimit}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > s.cfg.History.MaxLimit {
			s.writeError(w, r, http.StatusBadRequest, "bad_request", fmt.Sprintf("limit %q: want 1 to %d", v, s.cfg.History.MaxLimit))
			return
		}
		hq.Limit = n
	}
	if v := q.Get("cursor"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			s.writeError(w, r, http.StatusBadRequest, "bad_request", fmt.Sprintf("cursor %q: want the next_cursor of a previous page", v))
			return
		}
		hq.Before = n
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.History.ReadTimeout)
	defer cancel()
	page, err := history.Read(ctx, s.js, hq)
	switch {
	case errors.Is(err, history.ErrNoIndex):
		s.writeError(w, r, http.StatusServiceUnavailable, "history_unavailable", "the history index does not exist yet (an aggregator creates it at start)")
		return
	case err != nil:
		s.log.Warn("history read", zap.Error(err))
		s.writeError(w, r, http.StatusServiceUnavailable, "unavailable", "cannot read the history index")
		return
	}
	out := HistoryPage{Sessions: make([]HistoryEntry, 0, len(page.Entries))}
	for _, e := range page.Entries {
		out.Sessions = append(out.Sessions, HistoryEntry{Seq: e.Seq, Event: e.Event})
	}
	if page.Next != 0 {
		out.NextCursor = strconv.FormatUint(page.Next, 10)
	}
	writeJSON(w, http.StatusOK, &out)
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, _ *http.Request, _ Scope) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPIDoc)
}

// Run is rtcapi: it connects to NATS (retrying until it can), mirrors
// rtc_sessions and serves HTTP on cfg.Listen until ctx ends. bound, when
// not nil, receives the listening address.
func Run(ctx context.Context, cfg Config, log *zap.Logger, reg *prometheus.Registry, bound chan<- string) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("rtcapi config: %w", err)
	}
	if _, err := NewAuthenticator(cfg.Auth); err != nil { // before waiting for NATS: a missing token file is a config error
		return err
	}
	if reg == nil {
		reg = telemetry.NewRegistry()
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	defer ln.Close()
	if bound != nil {
		bound <- ln.Addr().String()
	}
	var handler atomic.Pointer[http.Handler]
	notReady := http.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			_, _ = w.Write([]byte("ok\n"))
			return
		}
		writeJSON(w, http.StatusServiceUnavailable, errorBody("not_ready", "connecting to NATS"))
	}))
	handler.Store(&notReady)
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*handler.Load()).ServeHTTP(w, r) }),
		ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("rtcapi listening", zap.String("addr", ln.Addr().String()))

	var s *Server
	nc, err := connectRetrying(ctx, cfg.NATS, log)
	if err == nil {
		defer nc.Close()
		s, err = New(cfg, nc, log, reg)
	}
	if err != nil {
		_ = srv.Close()
		return err
	}
	s.Start(ctx)
	h := s.Handler()
	handler.Store(&h)
	if cfg.MetricsListen != "" {
		opsCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
		defer stopOps()
		opsDone := make(chan error, 1)
		go func() {
			err := telemetry.Serve(opsCtx, cfg.MetricsListen, s.OpsHandler(), log, nil)
			if err != nil && opsCtx.Err() == nil {
				log.Error("metrics listener failed", zap.String("addr", cfg.MetricsListen), zap.Error(err))
			}
			opsDone <- err
		}()
		defer func() { stopOps(); <-opsDone }()
	}

	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", cfg.Listen, err)
	case <-ctx.Done():
	}
	s.Close()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	log.Info("rtcapi stopped")
	return nil
}

func errorBody(code, msg string) *ErrorBody {
	var b ErrorBody
	b.Error.Code, b.Error.Message = code, msg
	return &b
}

// connectRetrying connects with a capped back-off until it succeeds or ctx
// ends: NATS may start after rtcapi (it is not ready meanwhile).
func connectRetrying(ctx context.Context, c natsutil.ConnConfig, log *zap.Logger) (*nats.Conn, error) {
	delay := 500 * time.Millisecond
	for {
		nc, err := natsutil.Connect(ctx, c, log)
		if err == nil {
			return nc, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect to nats: %w", err)
		}
		log.Warn("connect to nats failed; retrying", zap.Error(err), zap.Duration("in", delay))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to nats: %w", ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 10*time.Second)
	}
}
