package rtc

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"sort"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// RoomState is everything the reducer knows about one room. It is stored as
// msgpack (wire.Marshal) between inputs, so every field that matters is
// exported; the claim index is derived and rebuilt after decoding.
type RoomState struct {
	RoomID id.RoomID `json:"room_id"`
	// Clock is the room's logical now: the maximum received_at (or timer
	// deadline) of all inputs applied so far.
	Clock int64 `json:"clock"`
	// Seq is the per-room sequence number of the last session event emitted.
	Seq uint64 `json:"seq"`
	// Registers holds the latest membership event per state key (or per
	// sticky key), keyed by registerKey.
	Registers wire.SortedMap[string, *Register] `json:"registers,omitempty"`
	// RoomMembers is the latest m.room.member per user seen so far. A user
	// with no entry counts as joined: the ingest may not have seen their
	// membership, and they could not have sent a state event otherwise.
	RoomMembers wire.SortedMap[id.UserID, RoomMember] `json:"room_members,omitempty"`
	// Slots is the latest m.rtc.slot per slot id. Only rooms that have a slot
	// for a session gate it on the slot being open.
	Slots wire.SortedMap[string, Slot] `json:"slots,omitempty"`
	// Sessions are the live sessions, keyed by sessionKey(app, callID).
	Sessions wire.SortedMap[string, *Session] `json:"sessions,omitempty"`
	// Redacted remembers recently redacted event ids (oldest first, bounded)
	// so that an event whose redaction arrived first counts as redacted.
	Redacted []id.EventID `json:"redacted,omitempty"`
	// LastEnded holds, per session key, the ended_at of the last session of
	// that key that ended: a session of the key never starts before it.
	// An entry is collected past the horizon (gc.go), when no session can
	// start that early any more.
	LastEnded wire.SortedMap[string, int64] `json:"last_ended,omitempty"`

	// claims maps a member identity to the registers claiming it.
	claims map[ident][]string
	// deadlines is a lazy min-heap of member deadlines: entries are pushed
	// when a member joins or changes and dropped when found stale, so the
	// soonest deadline costs O(log members), not a scan of the room.
	deadlines deadlineHeap
	heapBuilt bool
	// gcQueue orders the registers by when they become collectable
	// (gc.go); derived, built on first use.
	gcQueue gcHeap
	gcBuilt bool
	// endedQueue orders LastEnded's entries by when they are collected;
	// derived, built on first use.
	endedQueue gcHeap
	endedBuilt bool
	// changes records what Apply changed, when tracking is on (TrackChanges).
	changes  *Changes
	tracking bool
	// sessKeys interns session keys, so that looking a session up by its
	// identity allocates nothing.
	sessKeys map[sessIdent]string
	// scratch holds buffers reused by every Apply.
	scratch struct {
		ids     []ident
		changes []change
		key     []byte
	}
}

type sessIdent struct{ app, call string }

// maxSessKeys bounds the interned session keys (a room could see any number
// of call ids over its life).
const maxSessKeys = 1024

// sessionKey returns the session key of (app, callID), interned.
func (st *RoomState) sessionKey(app, callID string) string {
	if k, ok := st.sessKeys[sessIdent{app, callID}]; ok {
		return k
	}
	if st.sessKeys == nil || len(st.sessKeys) >= maxSessKeys {
		st.sessKeys = map[sessIdent]string{}
	}
	k := sessionKey(app, callID)
	st.sessKeys[sessIdent{app, callID}] = k
	return k
}

// register returns the key of a register, kind ('s' for a state key, 'k'
// for a sticky key) and the parts separated by NUL, and the register
// (nil if none). The key is the existing register's string when there is
// one, so that a lookup allocates nothing.
func (st *RoomState) register(kind byte, parts ...string) (string, *Register) {
	b := append(st.scratch.key[:0], kind)
	for _, p := range parts {
		b = append(b, 0)
		b = append(b, p...)
	}
	st.scratch.key = b
	r := st.Registers[string(b)]
	if r != nil && r.key != "" {
		return r.key, r
	}
	return string(b), r
}

// member returns the member of session s with identity i, if any, without
// allocating.
func (st *RoomState) member(s *Session, i ident) *SessionMember {
	b := append(st.scratch.key[:0], i.user...)
	b = append(b, 0)
	b = append(b, i.key...)
	st.scratch.key = b
	return s.Members[string(b)]
}

// maxRedactedRemembered bounds RoomState.Redacted.
const maxRedactedRemembered = 256

// RegisterKind says what a register's current event means.
type RegisterKind uint8

const (
	RegisterJoin     RegisterKind = iota + 1 // valid membership content: Claims holds the memberships
	RegisterLeave                            // leave content ({}, membership "leave", empty memberships array)
	RegisterInvalid                          // content that failed validation
	RegisterRedacted                         // the event was redacted
)

// Register is one last-writer-wins register: the latest event for a key.
type Register struct {
	EventID id.EventID `json:"event_id"`
	Sender  id.UserID  `json:"sender"`
	TS      int64      `json:"ts"` // origin_server_ts, as the sender stated it
	// Rank orders writes: the effective time (EffectiveTime: origin_server_ts
	// bounded by the receive time plus the skew allowance) for state events,
	// the effective time plus the sticky duration for sticky events
	// (MSC4354); ties go to the larger event id.
	Rank   int64        `json:"rank"`
	Kind   RegisterKind `json:"kind"`
	Claims []Claim      `json:"claims,omitempty"`
	// ReceivedAt is the receive time of the copy of the event the register
	// holds: of several copies of one event, the earliest received is kept
	// (0 in states stored before it was recorded).
	ReceivedAt int64 `json:"received_at,omitempty"`
	// WhyCode and Why say why the register's event does not count (Kind
	// RegisterInvalid), or which entries of its legacy array do not (Kind
	// RegisterJoin): the code of the first problem and the problems found,
	// as in the Rejection the event caused. Empty when everything counted.
	WhyCode RejectionCode `json:"why_code,omitempty"`
	Why     string        `json:"why,omitempty"`

	key string // its key in RoomState.Registers, once known
}

// claimsIdent reports whether one of the register's claims has identity i.
func (r *Register) claimsIdent(i ident) bool {
	for c := range r.Claims {
		if r.Claims[c].ident() == i {
			return true
		}
	}
	return false
}

// Claim is one membership a register asserts: a device in a session.
type Claim struct {
	App    string      `json:"app"`
	CallID string      `json:"call_id"` // normalised: "" for the m.call room call
	User   id.UserID   `json:"user"`
	Device id.DeviceID `json:"device"`
	// MemberKey identifies the device within the user: the device id, or
	// "member:"+member.id for a sticky member without a device id.
	MemberKey    string          `json:"member_key"`
	MembershipID string          `json:"membership_id"`
	CreatedTS    int64           `json:"created_ts"` // created_ts(), clamped to the effective time
	Deadline     int64           `json:"deadline"`   // joined while now < Deadline
	FocusActive  json.RawMessage `json:"focus_active,omitempty"`
	FociPref     json.RawMessage `json:"foci_preferred,omitempty"`
	// CallIntent is the membership's m.call.intent, "" when absent.
	CallIntent string        `json:"call_intent,omitempty"`
	Format     events.Format `json:"format"`
	EventID    id.EventID    `json:"event_id"`
	TS         int64         `json:"ts"`
}

// RoomMember is the latest m.room.member of a user.
type RoomMember struct {
	Membership string     `json:"membership"`
	TS         int64      `json:"ts"` // the event's effective time (EffectiveTime)
	EventID    id.EventID `json:"event_id"`
}

// Slot is the latest m.rtc.slot for a slot id.
type Slot struct {
	Open    bool       `json:"open"`
	TS      int64      `json:"ts"` // the event's effective time (EffectiveTime)
	EventID id.EventID `json:"event_id"`
}

// Session is a live session of the room.
type Session struct {
	App       string `json:"app"`
	CallID    string `json:"call_id"`
	ID        string `json:"id"`
	StartedAt int64  `json:"started_at"`
	// Members maps a member's identity within the session (user and member
	// key) to the member.
	Members wire.SortedMap[string, *SessionMember] `json:"members"`
	// UserDevices counts the members of each user: distinct users in O(1).
	UserDevices wire.SortedMap[id.UserID, int]  `json:"user_devices"`
	Peak        int                             `json:"peak"`
	SeenUsers   wire.SortedMap[id.UserID, bool] `json:"seen_users"`
	Joins       int                             `json:"joins"`
}

// SessionMember is a member of a live session and the key it is claimed by.
type SessionMember struct {
	Member    events.Member `json:"m"`
	MemberKey string        `json:"k"`

	key string // its key in Session.Members, once known
}

// mapKey returns the member's key in Session.Members.
func (m *SessionMember) mapKey() string {
	if m.key == "" {
		m.key = string(m.Member.UserID) + "\x00" + m.MemberKey
	}
	return m.key
}

// NewRoomState returns the empty state of a room.
func NewRoomState(room id.RoomID) *RoomState {
	return &RoomState{RoomID: room}
}

// NextDeadline is the soonest membership deadline among the live members,
// or 0 when there is none: the time at which the room's durable timer must
// fire an input.
func (st *RoomState) NextDeadline() int64 {
	if e, ok := st.soonest(); ok {
		return e.at
	}
	return 0
}

// deadlineEntry is a member's deadline, ordered by time and then identity
// (session key, then member key: the same order as identLess).
type deadlineEntry struct {
	at        int64
	sess, key string
}

func (a deadlineEntry) Less(b deadlineEntry) bool {
	if a.at != b.at {
		return a.at < b.at
	}
	if a.sess != b.sess {
		return a.sess < b.sess
	}
	return a.key < b.key
}

type deadlineHeap = minHeap[deadlineEntry]

// minHeap is a binary min-heap of entries ordered by their Less method (exported only so that linters see it used through the type parameter): the
// member deadlines (deadlineHeap) and the registers by collection time
// (gcHeap).
type minHeap[E interface{ Less(E) bool }] []E

func (h *minHeap[E]) push(e E) {
	*h = append(*h, e)
	q := *h
	for i := len(q) - 1; i > 0; {
		p := (i - 1) / 2
		if !q[i].Less(q[p]) {
			break
		}
		q[i], q[p] = q[p], q[i]
		i = p
	}
}

// heapify orders the entries as a heap in O(n) (a rebuild every O(n)
// pushes thus costs O(1) per push).
func (h minHeap[E]) heapify() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *minHeap[E]) pop() {
	q := *h
	n := len(q) - 1
	var zero E
	q[0] = q[n]
	q[n] = zero // drop what the entry points to
	q = q[:n]
	q.down(0)
	*h = q
}

// down moves entry i down to its place.
func (h minHeap[E]) down(i int) {
	q, n := h, len(h)
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && q[l].Less(q[m]) {
			m = l
		}
		if r < n && q[r].Less(q[m]) {
			m = r
		}
		if m == i {
			break
		}
		q[i], q[m] = q[m], q[i]
		i = m
	}
}

// memberDeadline records that a member now has deadline d (old: its
// deadline before, 0 for a member that just joined). The heap keeps, for
// every live member, an entry no later than its deadline: a later deadline
// needs no new entry (soonest corrects the old one when it comes first), so
// a refresh that extends a membership costs O(1).
func (st *RoomState) memberDeadline(sess, key string, old, d int64) {
	if !st.heapBuilt || (old != 0 && d >= old) {
		return // built from the members on first use; or the entry still bounds it
	}
	st.deadlines.push(deadlineEntry{at: d, sess: sess, key: key})
	if len(st.deadlines) > 64 && len(st.deadlines) > 2*st.memberCount() {
		st.heapBuilt = false // mostly stale entries: rebuild on next use
	}
}

// soonest returns the live member with the soonest deadline.
func (st *RoomState) soonest() (deadlineEntry, bool) {
	if !st.heapBuilt {
		clear(st.deadlines) // drop the strings
		st.deadlines = st.deadlines[:0]
		for sk, s := range st.Sessions {
			for mk, m := range s.Members {
				st.deadlines = append(st.deadlines, deadlineEntry{at: m.Member.ExpiresAt, sess: sk, key: mk})
			}
		}
		st.deadlines.heapify()
		st.heapBuilt = true
	}
	for len(st.deadlines) > 0 {
		e := st.deadlines[0]
		if s := st.Sessions[e.sess]; s != nil {
			if m := s.Members[e.key]; m != nil {
				if m.Member.ExpiresAt == e.at {
					return e, true
				}
				if m.Member.ExpiresAt > e.at { // extended since: correct the entry
					st.deadlines[0].at = m.Member.ExpiresAt
					st.deadlines.down(0)
					continue
				}
			}
		}
		st.deadlines.pop() // the member left (or a later entry is stale)
	}
	return deadlineEntry{}, false
}

func (st *RoomState) memberCount() int {
	n := 0
	for _, s := range st.Sessions {
		n += len(s.Members)
	}
	return n
}

// LiveSessions returns the live sessions, ordered by key.
func (st *RoomState) LiveSessions() []events.LiveSession {
	keys := make([]string, 0, len(st.Sessions))
	for k := range st.Sessions {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]events.LiveSession, 0, len(keys))
	for _, k := range keys {
		out = append(out, st.liveSession(st.Sessions[k]))
	}
	return out
}

// LiveSession returns the live session of (app, callID), if there is one.
func (st *RoomState) LiveSession(app, callID string) (events.LiveSession, bool) {
	s, ok := st.Sessions[sessionKey(app, callID)]
	if !ok {
		return events.LiveSession{}, false
	}
	return st.liveSession(s), true
}

func (st *RoomState) liveSession(s *Session) events.LiveSession { return st.LiveSessionOf(s, true) }

// LiveSessionOf is the live session s as rtc_sessions holds it: the one
// place that builds it, for the aggregator and for simulate. withMembers
// false leaves the members out (a large session keeps them in keys of their
// own).
func (st *RoomState) LiveSessionOf(s *Session, withMembers bool) events.LiveSession {
	ls := events.LiveSession{
		V: events.LiveSessionVersion, SessionID: s.ID, RoomID: st.RoomID, Application: s.App, CallID: s.CallID,
		StartedAt: s.StartedAt, Participants: len(s.Members), Users: s.users(), Seq: st.Seq, UpdatedAt: st.Clock,
	}
	if !withMembers {
		return ls
	}
	ls.Members = make([]events.Member, 0, len(s.Members))
	for _, m := range s.Members {
		ls.Members = append(ls.Members, m.Member)
	}
	events.SortMembers(ls.Members) // the contract's order: oldest membership first
	return ls
}

// users counts the distinct users among the members.
func (s *Session) users() int { return len(s.UserDevices) }

func sessionKey(app, callID string) string { return app + "\x00" + callID }

// ClaimStatus says why a claim of a valid register does not count at the
// room's clock (events.ReasonExpired, ReasonLeftRoom, ReasonSlotClosed), or
// "" when it counts (another claim of the same device with a later
// created_ts() may still represent the member). With Register.WhyCode it
// tells an operator why someone is missing from a call.
func (st *RoomState) ClaimStatus(c *Claim) events.Reason {
	_, why := st.eligible(c, st.Clock)
	return why
}

// eventID is eventcodec.EventID computed without allocating but for the
// result (TestEventIDMatches holds them equal).
func eventID(room id.RoomID, seq uint64) string {
	const label = "rtc-sessions/event"
	var buf [4 + len(label) + 4 + 255 + 4 + 8]byte
	if len(room) > 255 {
		return eventcodec.EventID(room, seq)
	}
	b := binary.BigEndian.AppendUint32(buf[:0], uint32(len(label)))
	b = append(b, label...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(room)))
	b = append(b, room...)
	b = binary.BigEndian.AppendUint32(b, 8)
	b = binary.BigEndian.AppendUint64(b, seq)
	sum := sha256.Sum256(b)
	var out [22]byte
	base64.RawURLEncoding.Encode(out[:], sum[:16])
	return string(out[:])
}
