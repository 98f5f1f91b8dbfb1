package ingest

import (
	"container/list"
	"fmt"
	"strings"
	"sync"

	"go.uber.org/zap"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// RelayMode says which events of another listed homeserver's users a
// homeserver may deliver (homeservers[].relay). The users of a listed
// homeserver are that homeserver's own: it delivers their events itself, so
// another homeserver's copy adds redundancy at most, and a forged copy
// (a leave `{}` on someone else's key) would end a real membership.
type RelayMode string

const (
	// RelayRooms (the default): only in rooms where the homeserver has
	// shown one of its own users, as far as this ingest process has seen
	// (an event of one of its users there, its sync bot's or state
	// reader's rooms). This keeps federation's redundancy in the rooms a
	// homeserver shares with another, and refuses relays into rooms it was
	// never seen in.
	RelayRooms RelayMode = "rooms"
	// RelayNever: never; the homeserver vouches for its own users only
	// (and for users of servers that are not listed).
	RelayNever RelayMode = "never"
	// RelayAlways: always, as federation itself trusts a relaying server.
	RelayAlways RelayMode = "always"
)

// relayModes lists the valid modes (configuration validation).
var relayModes = []RelayMode{RelayRooms, RelayNever, RelayAlways}

// Reasons an event is refused by the relay rule (the "reason" label of
// rtc_ingest_events_refused_total). The set is closed.
const (
	// RefuseUnknownRoom: an event of another listed homeserver's user, in a
	// room the delivering homeserver has not shown one of its own users in
	// (relay: rooms).
	RefuseUnknownRoom = "foreign_user_unknown_room"
	// RefuseNotRelayed: an event of another listed homeserver's user from a
	// homeserver with relay: never.
	RefuseNotRelayed = "foreign_user_not_relayed"
)

var refuseReasons = []string{RefuseUnknownRoom, RefuseNotRelayed}

// DefaultRelayMaxRooms is how many rooms the relay rule remembers per
// homeserver (relay.max_rooms).
const DefaultRelayMaxRooms = 50000

// Relay applies the cross-homeserver rule to what a listed homeserver
// delivers: an event may speak for its sender and for the user its state
// key names (a call member's key, an m.room.member target); each of those
// users must be one of the homeserver's own (its server_name), a user of a
// server that is not listed (the relaying homeservers are its only path to
// the ingest), or a user of another listed homeserver that this homeserver
// may relay (RelayMode). Refused events are counted, logged (sampled) and
// not published; the rest of their batch is.
//
// The rooms a homeserver has shown itself in are kept in memory only, per
// homeserver and bounded (least recently shown dropped first). Losing them
// (a restart, another replica, eviction) loses no event: what is refused is
// a relayed copy of an event whose own homeserver delivers it too.
//
// A nil *Relay admits everything (tests of other parts); Run always builds one.
type Relay struct {
	owners map[string]string // lower-cased server_name -> homeserver name
	hss    map[string]*relayHS
	m      *Metrics
	log    *zap.Logger
}

type relayHS struct {
	mode  RelayMode
	mu    sync.Mutex
	rooms map[id.RoomID]*list.Element
	order *list.List // of id.RoomID, most recently shown first
	max   int
}

// RelayHomeserver is what the rule needs of one listed homeserver.
type RelayHomeserver struct {
	Name       string
	ServerName string    // the server name in its users' ids; "": the homeserver owns no users
	Mode       RelayMode // "": RelayRooms
}

// NewRelay builds the rule for the listed homeservers; maxRooms bounds the
// rooms remembered per homeserver (<= 0: DefaultRelayMaxRooms). Server names
// must be unique (the configuration validation checks it).
func NewRelay(hss []RelayHomeserver, maxRooms int, m *Metrics, log *zap.Logger) *Relay {
	if maxRooms <= 0 {
		maxRooms = DefaultRelayMaxRooms
	}
	r := &Relay{owners: map[string]string{}, hss: map[string]*relayHS{}, m: m, log: sampledLogger(log, 10, m)}
	names := make([]string, 0, len(hss))
	for _, h := range hss {
		mode := h.Mode
		if mode == "" {
			mode = RelayRooms
		}
		if h.ServerName != "" {
			r.owners[strings.ToLower(h.ServerName)] = h.Name
		}
		r.hss[h.Name] = &relayHS{mode: mode, rooms: map[id.RoomID]*list.Element{}, order: list.New(), max: maxRooms}
		names = append(names, h.Name)
		// Once at start, unsampled: a server_name that is not the one in
		// the homeserver's user ids makes the rule pass its users' relays.
		log.Info("homeserver speaks for its own users", zap.String("homeserver", h.Name),
			zap.String("server_name", h.ServerName), zap.String("relay", string(mode)))
	}
	m.initRelay(names)
	return r
}

// serverOf is the server name of a user id (after the first ':'; a
// localpart has none), lower-cased: DNS names are case-insensitive, and a
// sender spelled @alice:HS1 must not escape the rule for hs1.
func serverOf(u id.UserID) string {
	_, server, ok := strings.Cut(string(u), ":")
	if !ok {
		return ""
	}
	return strings.ToLower(server)
}

// shownBySource reports whether delivering an event from src shows that the
// homeserver is in the event's room: a sync bot receives only the rooms it
// is joined to, and the state reader of the reconciliation reads only rooms
// its user is joined to (the homeserver answers 403 otherwise). Both are the
// homeserver's own users.
func shownBySource(src rawevent.Source) bool {
	switch src {
	case rawevent.SourceSync, rawevent.SourceSyncState, rawevent.SourceReconcile:
		return true
	}
	return false
}

// Admit returns the events of evs that homeserver hs may deliver, in order,
// reusing evs' array. Events of a homeserver that is not listed (the replay's
// name) and replayed events (the operator's own file) are all admitted.
func (r *Relay) Admit(hs string, src rawevent.Source, evs []rawevent.RawEvent) []rawevent.RawEvent {
	if r == nil || src == rawevent.SourceReplay {
		return evs
	}
	h := r.hss[hs]
	if h == nil {
		return evs
	}
	out := evs[:0]
	for i := range evs {
		ev := &evs[i]
		if h.mode == RelayRooms && shownBySource(src) {
			h.show(ev.RoomID)
		}
		reason, user, owner := r.check(hs, h, ev)
		if reason != "" {
			r.m.Refused.WithLabelValues(hs, string(src), reason).Inc()
			stateKey := ""
			if ev.StateKey != nil {
				stateKey = *ev.StateKey
			}
			// Sampled (one message for every reason): counted exactly above.
			r.log.Warn("event refused: "+reason, zap.String("homeserver", hs), zap.String("source", string(src)),
				zap.String("reason", reason), zap.String("room_id", clip(string(ev.RoomID))),
				zap.String("event_id", clip(string(ev.EventID))), zap.String("type", clip(ev.Type)),
				zap.String("sender", clip(string(ev.Sender))), zap.String("state_key", clip(stateKey)),
				zap.String("user", clip(string(user))), zap.String("users_homeserver", owner))
			continue
		}
		if h.mode == RelayRooms && r.owners[serverOf(ev.Sender)] == hs {
			h.show(ev.RoomID)
		}
		out = append(out, *ev)
	}
	clear(evs[len(out):]) // refused events: let their content go
	return out
}

// check returns why hs may not deliver ev ("" if it may), with the user it
// may not speak for and that user's homeserver.
func (r *Relay) check(hs string, h *relayHS, ev *rawevent.RawEvent) (reason string, user id.UserID, owner string) {
	users := [2]id.UserID{ev.Sender}
	if ev.StateKey != nil {
		users[1] = rtc.ParseStateKeyUser(*ev.StateKey) // an m.room.member key is a user id: read alike
	}
	for _, u := range users {
		if u == "" {
			continue
		}
		o, listed := r.owners[serverOf(u)]
		if !listed || o == hs {
			continue
		}
		switch h.mode {
		case RelayAlways:
			continue
		case RelayNever:
			return RefuseNotRelayed, u, o
		default:
			if !h.shown(ev.RoomID) {
				return RefuseUnknownRoom, u, o
			}
		}
	}
	return "", "", ""
}

func (h *relayHS) show(room id.RoomID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e, ok := h.rooms[room]; ok {
		h.order.MoveToFront(e)
		return
	}
	h.rooms[room] = h.order.PushFront(room)
	for h.order.Len() > h.max {
		last := h.order.Back()
		delete(h.rooms, last.Value.(id.RoomID))
		h.order.Remove(last)
	}
}

func (h *relayHS) shown(room id.RoomID) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.rooms[room]
	return ok
}

// Rooms is how many rooms hs is remembered in (tests, debugging).
func (r *Relay) Rooms(hs string) int {
	h := r.hss[hs]
	if h == nil {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.rooms)
}

// validRelayMode reports whether s is a relay mode ("" is the default).
func validRelayMode(s string) error {
	if s == "" {
		return nil
	}
	for _, m := range relayModes {
		if RelayMode(s) == m {
			return nil
		}
	}
	return fmt.Errorf("relay %q: want rooms, never or always", s)
}
