package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// handleEvents is GET /v1/events: the session events of RTC_EVENTS as
// Server-Sent Events. Each event's id is its RTC_EVENTS stream sequence, so
// a client that reconnects with Last-Event-ID (EventSource does by itself)
// continues right after the last event it received, from any replica;
// nothing is lost or repeated as long as RTC_EVENTS keeps the events.
// Without it the stream starts with new events, or from `since` (a time or
// a duration back) or the whole stream (`from=start`).
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request, scope Scope) {
	q := r.URL.Query()
	room, app := id.RoomID(q.Get("room")), q.Get("app")
	kind := events.Kind(q.Get("kind"))
	if kind != "" && !validKind(kind) {
		s.writeError(w, r, http.StatusBadRequest, "bad_request", fmt.Sprintf("kind %q: want one of %s", kind, kindList()))
		return
	}
	if room != "" && !scope.Allows(room) {
		s.writeError(w, r, http.StatusForbidden, "forbidden", "the token may not read this room")
		return
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy}
	switch {
	case room != "" || scope.All:
		cfg.FilterSubjects = []string{events.SessionFilter(events.SessionPrefix, app, room, kind)}
	default:
		for _, rm := range scope.Rooms {
			cfg.FilterSubjects = append(cfg.FilterSubjects, events.SessionFilter(events.SessionPrefix, app, rm, kind))
		}
	}
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = q.Get("last_event_id")
	}
	var gap string // an event that says the events after Last-Event-ID are gone
	switch {
	case last != "":
		seq, err := strconv.ParseUint(last, 10, 64)
		if err != nil {
			s.writeError(w, r, http.StatusBadRequest, "bad_request", fmt.Sprintf("Last-Event-ID %q: want the id (stream sequence) of an event", last))
			return
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq+1
		// Retention removed what follows it: the stream would start at its
		// first event without a word, so say so (the client reloads its
		// state rather than believe it missed nothing).
		if st, err := s.js.Stream(r.Context(), events.StreamEvents); err == nil {
			if first := st.CachedInfo().State.FirstSeq; seq+1 < first {
				gap = fmt.Sprintf("event: gap\ndata: {\"after\":%d,\"first\":%d}\n\n", seq, first)
			}
		}
	case q.Get("from") == "start":
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	case q.Get("from") != "":
		s.writeError(w, r, http.StatusBadRequest, "bad_request", fmt.Sprintf("from %q: the only value is start", q.Get("from")))
		return
	case q.Get("since") != "":
		t, err := parseSince(q.Get("since"), time.Now())
		if err != nil {
			s.writeError(w, r, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	if !s.sseSlots.TryAcquire() {
		s.writeError(w, r, http.StatusServiceUnavailable, "too_many_streams", "this replica serves its maximum of event streams; retry later")
		return
	}
	defer s.sseSlots.Release()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() { // the server shuts down: end the stream, the client reconnects elsewhere
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	cons, err := s.js.OrderedConsumer(ctx, events.StreamEvents, cfg)
	if err != nil {
		s.writeError(w, r, http.StatusServiceUnavailable, "unavailable", "cannot read "+events.StreamEvents)
		s.log.Warn("events: ordered consumer", zap.Error(err))
		return
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		s.writeError(w, r, http.StatusServiceUnavailable, "unavailable", "cannot read "+events.StreamEvents)
		s.log.Warn("events: messages", zap.Error(err))
		return
	}
	defer it.Stop()

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	s.metrics.sseClients.Inc()
	defer s.metrics.sseClients.Dec()

	msgs := make(chan jetstream.Msg)
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := it.Next()
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { <-ctx.Done(); it.Stop() }()

	write := func(text string) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := w.Write([]byte(text)); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write(fmt.Sprintf("retry: %d\n: connected\n\n", s.cfg.SSE.Retry.Milliseconds()) + gap) {
		return
	}
	beat := time.NewTicker(s.cfg.SSE.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-errc:
			if ctx.Err() == nil && !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				s.log.Warn("events: read", zap.Error(err))
			}
			return
		case <-beat.C:
			if !write(": heartbeat\n\n") {
				return
			}
		case m := <-msgs:
			md, err := m.Metadata()
			if err != nil {
				s.log.Warn("events: metadata", zap.Error(err))
				return
			}
			ev, err := events.DecodeSessionEvent(m.Data())
			if err != nil {
				// An event of a newer schema: end the stream loudly rather
				// than skip it (the client would never know it missed one).
				s.log.Error("events: undecodable session event", zap.Uint64("seq", md.Sequence.Stream), zap.Error(err))
				write(fmt.Sprintf("event: error\ndata: {\"code\":\"undecodable_event\",\"message\":%q}\n\n", err.Error()))
				return
			}
			data, err := json.Marshal(&ev)
			if err != nil {
				return
			}
			if !write(fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", md.Sequence.Stream, ev.Kind, data)) {
				return
			}
			s.metrics.sseEvents.Inc()
		}
	}
}

func validKind(k events.Kind) bool {
	for _, x := range events.Kinds {
		if x == k {
			return true
		}
	}
	return false
}

func kindList() string {
	var ks []string
	for _, k := range events.Kinds {
		ks = append(ks, string(k))
	}
	return strings.Join(ks, ", ")
}

// parseSince reads an RFC 3339 time or a duration back from now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("since %q: want a positive duration", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("since %q: want an RFC 3339 time or a duration (24h)", s)
	}
	return t, nil
}
