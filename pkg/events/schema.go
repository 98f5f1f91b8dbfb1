package events

import (
	"encoding/json"

	"maunium.net/go/mautrix/id"
)

// SchemaVersion is the version of the session events (RTC_EVENTS) this
// package encodes. Version 3 writes every field (an empty one with its zero
// value) and the nested JSON of a member as msgpack maps and arrays;
// version 2 added Member.CallIntent and SessionEvent.Changed, and a
// member_updated for every new event of a membership (see the package
// documentation). DecodeSessionEvent reads versions 1 to 3 and refuses
// others with ErrUnsupportedVersion.
const SchemaVersion = 3

// OldestSchemaVersion is the oldest session event version the decoders
// read: events of every version since are still stored (RTC_EVENTS'
// history, the redo records of rooms in rtc_rooms).
const OldestSchemaVersion = 1

// HeaderSchemaVersion is the message header that carries a message's
// schema version ("v" of its body) on RTC_EVENTS and rtc.live.>, and on
// the values of rtc_sessions: a reader can pick its decoder, or skip a
// version it does not know, without decoding the body.
const HeaderSchemaVersion = "Rtc-Schema-Version"

// Kind is the kind of a session event.
type Kind string

const (
	KindSessionStarted Kind = "session_started"
	KindMemberJoined   Kind = "member_joined"
	KindMemberUpdated  Kind = "member_updated"
	KindMemberLeft     Kind = "member_left"
	KindSessionEnded   Kind = "session_ended"
)

// Kinds lists every kind, in the order they can occur in one session.
var Kinds = []Kind{KindSessionStarted, KindMemberJoined, KindMemberUpdated, KindMemberLeft, KindSessionEnded}

// Reason says why a member left or a session ended.
type Reason string

const (
	ReasonLeave      Reason = "leave"       // the member sent a leave ({} or membership "leave")
	ReasonExpired    Reason = "expired"     // the membership reached its deadline with no refresh
	ReasonLeftRoom   Reason = "left_room"   // the user left or was kicked or banned from the room
	ReasonRedacted   Reason = "redacted"    // the membership event was redacted
	ReasonReplaced   Reason = "replaced"    // a new membership (rejoin) replaced this one
	ReasonSlotClosed Reason = "slot_closed" // the session's m.rtc.slot was closed
	ReasonInvalid    Reason = "invalid"     // the membership was overwritten by content that is not valid
)

// Format is the wire format a membership was read from.
type Format string

const (
	FormatSeed    Format = "seed"    // m.rtc.member state event, MSC4143 June 2024
	FormatSession Format = "session" // org.matrix.msc3401.call.member per-device form (Element Call)
	FormatLegacy  Format = "legacy"  // org.matrix.msc3401.call.member memberships array
	FormatSticky  Format = "sticky"  // sticky m.rtc.member / org.matrix.msc4143.rtc.member
)

// Member is one device's membership in a session.
type Member struct {
	UserID   id.UserID   `json:"user_id"`
	DeviceID id.DeviceID `json:"device_id"`
	// MembershipID identifies this membership: a rejoin gets a new one.
	MembershipID string `json:"membership_id"`
	JoinedAt     int64  `json:"joined_at"`  // created_ts() of the membership (ms)
	ExpiresAt    int64  `json:"expires_at"` // the deadline (ms)
	// FocusActive and FociPreferred are copied from the event (compacted
	// JSON); transports for sticky members land in FociPreferred.
	FocusActive   json.RawMessage `json:"focus_active,omitempty"`
	FociPreferred json.RawMessage `json:"foci_preferred,omitempty"`
	// CallIntent is the membership's m.call.intent ("audio", "video", ...;
	// any string a client sends, up to 255 bytes), empty when absent.
	// Since schema version 2.
	CallIntent string `json:"call_intent,omitempty"`
	Format     Format `json:"format"`
	// EventID is the event that currently represents the membership.
	EventID id.EventID `json:"event_id"`
}

// The names SessionEvent.Changed uses: Member's JSON field names.
const (
	ChangeJoinedAt      = "joined_at"
	ChangeExpiresAt     = "expires_at"
	ChangeFocusActive   = "focus_active"
	ChangeFociPreferred = "foci_preferred"
	ChangeCallIntent    = "call_intent"
	ChangeFormat        = "format"
	ChangeEventID       = "event_id"
)

// Summary describes a session that ended.
type Summary struct {
	StartedAt        int64 `json:"started_at"`
	EndedAt          int64 `json:"ended_at"`
	DurationMS       int64 `json:"duration_ms"`
	PeakParticipants int   `json:"peak_participants"`
	DistinctUsers    int   `json:"distinct_users"`
	Joins            int   `json:"joins"`
}

// SessionEvent is one message on RTC_EVENTS.
type SessionEvent struct {
	V int `json:"v"`
	// ID is deterministic (room and per-room seq) and is also the message's
	// Nats-Msg-Id, so a re-published outbox is stored once.
	ID string `json:"id"`
	// Seq is the per-room sequence number: it increases by one with every
	// event of the room, so a subscriber can detect gaps and duplicates.
	Seq         uint64    `json:"seq"`
	Kind        Kind      `json:"kind"`
	SessionID   string    `json:"session_id"`
	RoomID      id.RoomID `json:"room_id"`
	Application string    `json:"application"`
	CallID      string    `json:"call_id"`
	// At is the event time of the transition (ms): the causing event's
	// origin_server_ts, or the deadline for an expiry.
	At     int64   `json:"at"`
	Member *Member `json:"member,omitempty"`
	// Changed lists, on member_updated, the fields of Member whose values
	// differ from those the membership had before (by their JSON names, in
	// the order of Member's fields: ChangeEventID, ChangeJoinedAt, ...).
	// A new event of the same membership is always a member_updated, so
	// event_id is in it unless a copy of the same event received earlier
	// changed only what its receive time bounds. Since schema version 2;
	// shared between events: do not modify.
	Changed []string `json:"changed,omitempty"`
	Reason  Reason   `json:"reason,omitempty"`
	// Participants (devices) and Users (distinct users) after the transition.
	Participants int      `json:"participants"`
	Users        int      `json:"users"`
	Summary      *Summary `json:"summary,omitempty"`
}

// Subject is the subject the event is published on.
func (e *SessionEvent) Subject() string {
	return SessionSubject(e.Application, e.CallID, e.RoomID, e.Kind)
}

// LiveSession is the value of a key in the rtc_sessions bucket: a session that
// has not ended, as of the event with sequence number Seq.
type LiveSession struct {
	V            int       `json:"v"`
	SessionID    string    `json:"session_id"`
	RoomID       id.RoomID `json:"room_id"`
	Application  string    `json:"application"`
	CallID       string    `json:"call_id"`
	StartedAt    int64     `json:"started_at"`
	Members      []Member  `json:"members"`
	Participants int       `json:"participants"`
	Users        int       `json:"users"`
	Seq          uint64    `json:"seq"`
	UpdatedAt    int64     `json:"updated_at"`
	// MembersInKeys says that, in the rtc_sessions bucket, the members are
	// not in this value but each in a key of its own (a large session, see
	// LiveSessionVersion). WatchSessions and ListLiveSessions fill Members
	// either way.
	MembersInKeys bool `json:"members_in_keys,omitempty"`
}

// Key is the session's key in the rtc_sessions bucket.
func (s *LiveSession) Key() string { return SessionKey(s.Application, s.RoomID, s.CallID) }
