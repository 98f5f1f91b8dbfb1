package api

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// liveMirror keeps the live sessions of rtc_sessions in memory, kept
// current by a watch, so that GET /v1/sessions answers from memory however
// many clients poll it. It holds nothing that cannot be read again from the
// bucket: a restarted replica rebuilds it at start (and is not ready until
// it has).
type liveMirror struct {
	mu     sync.RWMutex
	byKey  map[string]events.LiveSession
	synced bool
	err    error // the last watch failure, while re-watching
}

func newLiveMirror() *liveMirror { return &liveMirror{byKey: map[string]events.LiveSession{}} }

// run watches rtc_sessions until ctx ends, watching again after a failure
// (the bucket not there yet, NATS away) with a capped back-off. A new watch
// starts from the bucket's current values: the mirror is replaced by them.
func (m *liveMirror) run(ctx context.Context, js jetstream.JetStream, log *zap.Logger, onChange func()) {
	delay := 250 * time.Millisecond
	for ctx.Err() == nil {
		fresh := map[string]events.LiveSession{}
		initial := true
		err := events.WatchSessions(ctx, js, func(key string, s *events.LiveSession) error {
			target := fresh
			m.mu.Lock()
			if !initial {
				target = m.byKey
			}
			if s == nil {
				delete(target, key)
			} else {
				if s.Members == nil {
					s.Members = []events.Member{}
				}
				target[key] = *s
			}
			m.mu.Unlock()
			if !initial && onChange != nil {
				onChange()
			}
			return nil
		}, func() {
			m.mu.Lock()
			if initial {
				m.byKey, m.synced, m.err, initial = fresh, true, nil, false
			}
			m.mu.Unlock()
			delay = 250 * time.Millisecond
			if onChange != nil {
				onChange()
			}
		})
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("watch ended")
		}
		m.mu.Lock()
		m.synced, m.err = false, err
		m.mu.Unlock()
		log.Warn("watching rtc_sessions failed; watching again", zap.Error(err), zap.Duration("in", delay))
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 10*time.Second)
	}
}

// ready reports whether the mirror holds the bucket's current sessions.
func (m *liveMirror) ready() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.synced {
		return nil
	}
	if m.err != nil {
		return m.err
	}
	return errors.New("reading rtc_sessions")
}

// list returns the live sessions in scope matching room and app ("" for
// any), oldest first (then by key).
func (m *liveMirror) list(scope Scope, room id.RoomID, app string) []events.LiveSession {
	m.mu.RLock()
	out := make([]events.LiveSession, 0, len(m.byKey))
	for _, s := range m.byKey {
		if (room == "" || s.RoomID == room) && (app == "" || s.Application == app) && scope.Allows(s.RoomID) {
			out = append(out, s)
		}
	}
	m.mu.RUnlock()
	slices.SortFunc(out, func(a, b events.LiveSession) int {
		if a.StartedAt != b.StartedAt {
			if a.StartedAt < b.StartedAt {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Key(), b.Key())
	})
	return out
}

// get returns the live session with this id, if it is in scope.
func (m *liveMirror) get(scope Scope, sessionID string) (events.LiveSession, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, s := range m.byKey {
		if s.SessionID == sessionID && scope.Allows(s.RoomID) {
			return s, true
		}
	}
	return events.LiveSession{}, false
}

// counts returns the live sessions and participants (devices) of all rooms.
func (m *liveMirror) counts() (sessions, participants int) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, s := range m.byKey {
		sessions++
		participants += s.Participants
	}
	return sessions, participants
}
