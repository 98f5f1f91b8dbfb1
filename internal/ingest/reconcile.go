package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/ctlapi"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// Reconciliation (docs/ingest.md "Reconciliation"): the ingest re-reads the
// current call-member state of rooms from the homeservers and publishes it
// as inputs of source rawevent.SourceReconcile, so that what a push or a sync
// missed (a leave sent while the ingest was down and never re-pushed, a
// redaction Dendrite never pushes to appservices, a gap) is repaired. Each
// event keeps its Nats-Msg-Id (event id; "#redacted" for a redacted copy),
// so a state event already in RTC_RAW is de-duplicated, and one older than
// the duplicate window is applied again as a stale input: idempotent.

// Triggers of a reconciliation (the "trigger" label of
// rtc_ingest_reconcile_passes_total).
const (
	TriggerStart    = "start"
	TriggerPeriodic = "periodic"
	TriggerRequest  = "request"
)

// ReconcileOptions configure the reconciler (ReconcileConfig documents
// each).
type ReconcileOptions struct {
	AtStart           bool
	Interval          time.Duration // 0: no periodic passes
	MaxRoomsPerPass   int
	RequestsPerSecond float64
	OnDemand          bool
}

// Reconciler runs reconciliation passes and answers on-demand requests.
type Reconciler struct {
	readers []*StateReader
	pub     *Publisher
	js      jetstream.JetStream
	rooms   *RoomTracker
	m       *Metrics
	log     *zap.Logger
	opts    ReconcileOptions
	limit   *rate.Limiter
	now     func() time.Time
	cursor  int // rotation of capped passes
}

// NewReconciler builds a reconciler over the readers (in configuration
// order). js reads the rooms with live sessions (rtc_sessions); rooms is
// fed by the sources with the rooms they see call events in.
func NewReconciler(readers []*StateReader, pub *Publisher, js jetstream.JetStream, rooms *RoomTracker,
	m *Metrics, log *zap.Logger, opts ReconcileOptions) *Reconciler {
	if opts.MaxRoomsPerPass < 1 {
		opts.MaxRoomsPerPass = 1
	}
	names := make([]string, len(readers))
	for i, r := range readers {
		names[i] = r.Homeserver
	}
	m.initReconcile(names)
	return &Reconciler{readers: readers, pub: pub, js: js, rooms: rooms, m: m, log: log, opts: opts,
		limit: newRateLimiter(opts.RequestsPerSecond), now: time.Now}
}

// Run does the start pass (if configured), serves on-demand requests on nc
// (if configured) and does a pass every Interval (if not 0), until ctx ends.
func (r *Reconciler) Run(ctx context.Context, nc *nats.Conn) error {
	switch {
	case r.opts.OnDemand && nc != nil:
		sub, err := nc.QueueSubscribe(ctlapi.ReconcileSubject, ctlapi.ReconcileQueue, func(msg *nats.Msg) { r.serve(ctx, msg) })
		if err != nil {
			return fmt.Errorf("reconcile: subscribe %s: %w", ctlapi.ReconcileSubject, err)
		}
		defer func() { _ = sub.Unsubscribe() }()
	case nc != nil:
		sub, err := SubscribeReconcileOff(nc, "reconcile.on_demand is false", r.log)
		if err != nil {
			return err
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	if r.opts.AtStart {
		r.Pass(ctx, TriggerStart)
	}
	if r.opts.Interval <= 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.Pass(ctx, TriggerPeriodic)
		}
	}
}

// PassStats is what one pass did.
type PassStats struct {
	Candidates int // rooms eligible for the pass
	Rooms      int // rooms reconciled (read and published)
	Failed     int // rooms no homeserver could read or publish
	Skipped    int // rooms over max_rooms_per_pass, left to later passes
	Stored     int // events new in RTC_RAW
}

// roomRef is a room to reconcile and the homeservers known to carry it.
type roomRef struct {
	room id.RoomID
	hs   []string
}

// Pass reconciles the rooms with live sessions and the rooms recently seen
// with call events, at most MaxRoomsPerPass of them (the rest in later
// passes: the selection rotates), each at the request rate limit.
func (r *Reconciler) Pass(ctx context.Context, trigger string) PassStats {
	start := r.now()
	var st PassStats
	r.m.ReconcilePasses.WithLabelValues(trigger).Inc()
	defer func() {
		r.m.ReconcilePassTime.Observe(r.now().Sub(start).Seconds())
		r.m.ReconcileRoomsPass.Set(float64(st.Rooms + st.Failed))
		r.log.Info("reconciliation pass", zap.String("trigger", trigger), zap.Int("candidates", st.Candidates),
			zap.Int("rooms", st.Rooms), zap.Int("failed", st.Failed), zap.Int("skipped", st.Skipped),
			zap.Int("stored", st.Stored), zap.Duration("took", r.now().Sub(start)))
	}()
	if len(r.readers) == 0 {
		return st
	}
	live, err := r.liveRooms(ctx)
	if err != nil {
		r.m.ReconcileFailures.WithLabelValues(allHomeservers, ReconcileLiveRooms).Inc()
		r.log.Warn("reconcile: cannot list the rooms with live sessions; reconciling recent rooms only", zap.Error(err))
	}
	cands := mergeRooms(live, r.rooms.Recent(r.now()))
	st.Candidates = len(cands)
	if n := len(cands); n > r.opts.MaxRoomsPerPass {
		off := r.cursor % n
		cands = slices.Concat(cands[off:], cands[:off])[:r.opts.MaxRoomsPerPass]
		r.cursor = off + r.opts.MaxRoomsPerPass
		st.Skipped = n - r.opts.MaxRoomsPerPass
		r.m.ReconcileSkipped.Add(float64(st.Skipped))
	}
	for _, c := range cands {
		if ctx.Err() != nil {
			break
		}
		res, ok := r.reconcileRoom(ctx, c, "")
		if ok {
			st.Rooms++
			st.Stored += res[len(res)-1].Stored
		} else {
			st.Failed++
		}
	}
	return st
}

// mergeRooms lists the live rooms (sorted) and then the recent ones not
// live, each once, with what is known of their homeservers.
func mergeRooms(live []id.RoomID, recent []roomRef) []roomRef {
	hs := map[id.RoomID][]string{}
	for _, r := range recent {
		hs[r.room] = r.hs
	}
	out := make([]roomRef, 0, len(live)+len(recent))
	seen := map[id.RoomID]bool{}
	for _, room := range live {
		if !seen[room] {
			seen[room] = true
			out = append(out, roomRef{room: room, hs: hs[room]})
		}
	}
	for _, r := range recent {
		if !seen[r.room] {
			seen[r.room] = true
			out = append(out, r)
		}
	}
	return out
}

// liveRooms lists the rooms of the sessions in rtc_sessions (their own
// keys only: <appTok>.<roomTok>.<callTok>), from the subjects of the
// bucket's stream: a stream info request, not a key listing, because a
// listing's watcher deletes its consumer when it stops, which the ingest
// may not do (internal/authz). A session that ended keeps its subject,
// with a purge marker, for topology.session_marker_ttl: such rooms are
// reconciled too, which is harmless. No bucket yet (no aggregator has run):
// none.
func (r *Reconciler) liveRooms(ctx context.Context) ([]id.RoomID, error) {
	if r.js == nil {
		return nil, nil
	}
	stream := "KV_" + events.BucketSessions
	s, err := r.js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("$KV."+events.BucketSessions+".*.*.*"))
	if err != nil {
		return nil, fmt.Errorf("list the sessions of %s: %w", stream, err)
	}
	set := map[id.RoomID]bool{}
	for subj := range info.State.Subjects {
		parts := strings.Split(subj, ".")
		if len(parts) != 5 {
			continue
		}
		room, err := events.ParseToken(parts[3])
		if err != nil {
			continue // not a key of ours
		}
		set[id.RoomID(room)] = true
	}
	out := make([]id.RoomID, 0, len(set))
	for room := range set {
		out = append(out, room)
	}
	slices.Sort(out)
	return out, nil
}

// readersFor orders the readers to try for a room: the named one only, or
// the room's known homeservers first, then the others in configuration
// order.
func (r *Reconciler) readersFor(c roomRef, only string) []*StateReader {
	if only != "" {
		for _, rd := range r.readers {
			if rd.Homeserver == only {
				return []*StateReader{rd}
			}
		}
		return nil
	}
	out := make([]*StateReader, 0, len(r.readers))
	for _, h := range c.hs {
		for _, rd := range r.readers {
			if rd.Homeserver == h && !slices.Contains(out, rd) {
				out = append(out, rd)
			}
		}
	}
	for _, rd := range r.readers {
		if !slices.Contains(out, rd) {
			out = append(out, rd)
		}
	}
	return out
}

// reconcileRoom reads the room from its homeservers in turn until one
// answers, and publishes what it read. It returns every attempt and whether
// one succeeded. A failure is counted once per room, for the last
// homeserver tried: a homeserver whose reader is not in the room is no
// failure when another one could read it.
func (r *Reconciler) reconcileRoom(ctx context.Context, c roomRef, only string) ([]ctlapi.ReconcileResult, bool) {
	var out []ctlapi.ReconcileResult
	for _, rd := range r.readersFor(c, only) {
		res, err := r.readAndPublish(ctx, rd, c.room)
		if err == nil {
			r.m.ReconcileRooms.WithLabelValues(rd.Homeserver).Inc()
			r.m.ReconcileStored.WithLabelValues(rd.Homeserver).Add(float64(res.Stored))
			if res.Stored > 0 {
				r.log.Info("reconciled room", zap.String("room_id", string(c.room)), zap.String("homeserver", rd.Homeserver),
					zap.Int("events", res.Events), zap.Int("stored", res.Stored))
			}
			return append(out, res), true
		}
		res.Reason, res.Error = reconcileReason(err), err.Error()
		out = append(out, res)
		if ctx.Err() != nil {
			break
		}
	}
	if len(out) == 0 {
		return []ctlapi.ReconcileResult{{Homeserver: only, Reason: ReconcileNoReader, Error: "no homeserver can read rooms"}}, false
	}
	last := out[len(out)-1]
	r.m.ReconcileFailures.WithLabelValues(last.Homeserver, last.Reason).Inc()
	r.log.Warn("reconcile: no homeserver could read the room", zap.String("room_id", string(c.room)),
		zap.String("reason", last.Reason), zap.String("error", last.Error), zap.Int("tried", len(out)))
	return out, false
}

// readAndPublish reads one room's state from one homeserver and publishes it.
func (r *Reconciler) readAndPublish(ctx context.Context, rd *StateReader, room id.RoomID) (ctlapi.ReconcileResult, error) {
	res := ctlapi.ReconcileResult{Homeserver: rd.Homeserver}
	if err := r.limit.Wait(ctx); err != nil {
		return res, &ReconcileError{Reason: ReconcileUnreachable, Err: fmt.Errorf("rate limit wait: %w", err)}
	}
	raws, err := rd.RoomState(ctx, room)
	if err != nil {
		return res, err
	}
	log := r.log.With(zap.String("room_id", string(room)), zap.String("homeserver", rd.Homeserver))
	evs := prepareBatch(raws, string(room), r.now().UnixMilli(), rd.Homeserver, rawevent.SourceReconcile, r.m, log)
	n := len(evs)
	st, err := r.pub.Publish(ctx, rd.Homeserver, rawevent.SourceReconcile, evs)
	res.Events, res.Stored, res.Duplicates = n-st.Refused, st.Stored, st.Duplicates
	if err != nil {
		return res, &ReconcileError{Reason: ReconcilePublish, Err: fmt.Errorf("publish the state of %s: %w", room, err)}
	}
	return res, nil
}

// Reconcile reconciles one room now (on demand).
func (r *Reconciler) Reconcile(ctx context.Context, req ctlapi.ReconcileRequest) ctlapi.ReconcileReply {
	reply := ctlapi.ReconcileReply{RoomID: req.RoomID}
	if !strings.HasPrefix(string(req.RoomID), "!") || len(req.RoomID) > rawevent.MaxIDBytes {
		reply.Error = fmt.Sprintf("room_id %q is not a room id", clip(string(req.RoomID)))
		return reply
	}
	r.m.ReconcilePasses.WithLabelValues(TriggerRequest).Inc()
	start := r.now()
	defer func() { r.m.ReconcilePassTime.Observe(r.now().Sub(start).Seconds()) }()
	if req.Homeserver != "" && len(r.readersFor(roomRef{}, req.Homeserver)) == 0 {
		reply.Error = fmt.Sprintf("homeserver %q cannot read rooms here (not configured, or neither as_token_file nor a sync bot)", clip(req.Homeserver))
		return reply
	}
	var hs []string
	for _, rr := range r.rooms.Recent(r.now()) {
		if rr.room == req.RoomID {
			hs = rr.hs
		}
	}
	res, ok := r.reconcileRoom(ctx, roomRef{room: req.RoomID, hs: hs}, req.Homeserver)
	reply.Attempts = res
	if !ok {
		reply.Error = "no homeserver could read the room"
	}
	return reply
}

// serve answers one NATS request.
func (r *Reconciler) serve(ctx context.Context, msg *nats.Msg) {
	var req ctlapi.ReconcileRequest
	var reply ctlapi.ReconcileReply
	if err := json.Unmarshal(msg.Data, &req); err != nil {
		reply.Error = "bad request: " + err.Error()
	} else {
		r.log.Info("reconcile requested", zap.String("room_id", clip(string(req.RoomID))), zap.String("homeserver", clip(req.Homeserver)))
		reply = r.Reconcile(ctx, req)
	}
	b, err := json.Marshal(reply)
	if err != nil { // cannot happen: strings and integers
		return
	}
	if err := msg.Respond(b); err != nil {
		r.log.Warn("reconcile: cannot answer the request", zap.Error(err))
	}
}

// SubscribeReconcileOff answers rtcctl's reconcile requests, in the queue
// group ctlapi.ReconcileOffQueue, with why this ingest does not reconcile on
// demand (reason), so that the operator reads the cause and not "no
// responders". The caller unsubscribes.
func SubscribeReconcileOff(nc *nats.Conn, reason string, log *zap.Logger) (*nats.Subscription, error) {
	sub, err := nc.QueueSubscribe(ctlapi.ReconcileSubject, ctlapi.ReconcileOffQueue, func(msg *nats.Msg) {
		var req ctlapi.ReconcileRequest
		_ = json.Unmarshal(msg.Data, &req) // the room is only echoed
		b, err := json.Marshal(ctlapi.ReconcileReply{RoomID: req.RoomID, Attempts: []ctlapi.ReconcileResult{}, Off: reason,
			Error: "reconciliation on demand is off in this ingest: " + reason})
		if err != nil {
			return
		}
		if err := msg.Respond(b); err != nil {
			log.Warn("reconcile: cannot answer the request", zap.Error(err))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("reconcile: subscribe %s: %w", ctlapi.ReconcileSubject, err)
	}
	return sub, nil
}

// RoomTracker remembers the rooms the sources saw call state events in,
// with the homeservers that delivered them, for a window (reconcile.
// recent_window) and at most a number of them (reconcile.max_recent_rooms:
// the least recently seen go first).
type RoomTracker struct {
	mu     sync.Mutex
	window time.Duration
	max    int
	rooms  map[id.RoomID]*seenRoom
}

type seenRoom struct {
	at time.Time
	hs []string
}

// NewRoomTracker remembers up to max rooms for window.
func NewRoomTracker(window time.Duration, max int) *RoomTracker {
	return &RoomTracker{window: window, max: max, rooms: map[id.RoomID]*seenRoom{}}
}

// Note records the rooms of the call state events among evs (nil tracker:
// nothing).
func (t *RoomTracker) Note(hs string, evs []rawevent.RawEvent, now time.Time) {
	if t == nil || t.max <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range evs {
		ev := &evs[i]
		if !ev.IsState() || !callStateTypes[ev.Type] {
			continue
		}
		s := t.rooms[ev.RoomID]
		if s == nil {
			if len(t.rooms) >= t.max {
				t.evict(now)
			}
			s = &seenRoom{}
			t.rooms[ev.RoomID] = s
		}
		s.at = now
		if !slices.Contains(s.hs, hs) {
			s.hs = append(s.hs, hs)
		}
	}
}

// evict drops the rooms seen before the window, or else the least recently
// seen one.
func (t *RoomTracker) evict(now time.Time) {
	var oldest id.RoomID
	var oldestAt time.Time
	for room, s := range t.rooms {
		if now.Sub(s.at) > t.window {
			delete(t.rooms, room)
			continue
		}
		if oldest == "" || s.at.Before(oldestAt) {
			oldest, oldestAt = room, s.at
		}
	}
	if len(t.rooms) >= t.max && oldest != "" {
		delete(t.rooms, oldest)
	}
}

// Recent lists the rooms seen within the window, most recent first.
func (t *RoomTracker) Recent(now time.Time) []roomRef {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	type item struct {
		ref roomRef
		at  time.Time
	}
	var items []item
	for room, s := range t.rooms {
		if now.Sub(s.at) > t.window {
			delete(t.rooms, room)
			continue
		}
		items = append(items, item{roomRef{room: room, hs: slices.Clone(s.hs)}, s.at})
	}
	slices.SortFunc(items, func(a, b item) int {
		if c := b.at.Compare(a.at); c != 0 {
			return c
		}
		return strings.Compare(string(a.ref.room), string(b.ref.room))
	})
	out := make([]roomRef, len(items))
	for i, it := range items {
		out[i] = it.ref
	}
	return out
}

// newRateLimiter spaces requests at least 1/perSecond apart, without
// bursts (0: no limit).
func newRateLimiter(perSecond float64) *rate.Limiter {
	if perSecond <= 0 {
		return rate.NewLimiter(rate.Inf, 1)
	}
	return rate.NewLimiter(rate.Limit(perSecond), 1)
}
