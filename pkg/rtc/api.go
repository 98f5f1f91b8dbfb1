package rtc

import (
	"errors"
	"fmt"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// Config holds the reducer's policy knobs. The zero value is not valid; start
// from DefaultConfig.
type Config struct {
	// DefaultExpiresMS applies to a membership without `expires` (the seed
	// format and js-sdk default: 4 h).
	DefaultExpiresMS int64 `yaml:"default_expires_ms"`
	// MaxExpiresMS caps `expires` so that one state event cannot pin a ghost
	// member forever (default 7 days).
	MaxExpiresMS int64 `yaml:"max_expires_ms"`
	// ClockSkewMS is how far a sender's origin_server_ts may be ahead of the
	// time the service received the event before the reducer stops believing
	// it and uses the receive time instead (see EffectiveTime; default 5 min).
	// 0 is valid and strict: any origin_server_ts later than the receive time
	// is replaced by the receive time.
	ClockSkewMS int64 `yaml:"clock_skew_ms"`

	// keepRegisters turns the collection of registers off (gc.go): the
	// tests compare the events with and without it.
	keepRegisters bool
}

// MaxStickyMS is MSC4354's cap on a sticky event's duration (1 h).
const MaxStickyMS = 3_600_000

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{DefaultExpiresMS: 4 * 3_600_000, MaxExpiresMS: 7 * 24 * 3_600_000, ClockSkewMS: 5 * 60_000}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.DefaultExpiresMS <= 0 {
		errs = append(errs, fmt.Errorf("default expires %d ms: must be positive", c.DefaultExpiresMS))
	}
	if c.MaxExpiresMS < c.DefaultExpiresMS {
		errs = append(errs, fmt.Errorf("max expires %d ms: must be at least the default %d ms", c.MaxExpiresMS, c.DefaultExpiresMS))
	}
	if c.MaxExpiresMS > MaxTimestamp {
		errs = append(errs, fmt.Errorf("max expires %d ms: must be at most %d ms", c.MaxExpiresMS, int64(MaxTimestamp)))
	}
	if c.ClockSkewMS < 0 || c.ClockSkewMS > c.MaxExpiresMS {
		errs = append(errs, fmt.Errorf("clock skew %d ms: must be between 0 and the max expires %d ms", c.ClockSkewMS, c.MaxExpiresMS))
	}
	return errors.Join(errs...)
}

// Result is what one Apply did.
type Result struct {
	// Events are the session events the input caused, in order, with their
	// per-room seq and deterministic ids already assigned.
	Events []events.SessionEvent
	// Rejections say why (parts of) the input did not count: malformed
	// content, a join for another user's state key, a stale update, ...
	Rejections []Rejection
	// Stale is true when the input changed nothing because the state already
	// holds the same or a newer event for its key (duplicates, replays).
	Stale bool
}

// Rejection explains why an event, or one entry of a legacy array, did not
// become a membership (or why an input changed nothing).
type Rejection struct {
	EventID id.EventID `json:"event_id"`
	// Code is the machine-readable class of the rejection, one of
	// RejectionCodes(): bounded, fit for a metric label.
	Code RejectionCode `json:"code"`
	// Reason is the free-text detail (every problem found, with values).
	Reason string `json:"reason"`
}

func (r Rejection) String() string { return fmt.Sprintf("%s: %s: %s", r.EventID, r.Code, r.Reason) }

// RejectionCode classifies a rejection. The set is closed: RejectionCodes
// lists every value, so that a metric can be initialised for each.
type RejectionCode string

const (
	// RejectWrongRoom: an input for another room than the state's.
	RejectWrongRoom RejectionCode = "wrong_room"
	// RejectUnknownType: an event type that does not concern calls.
	RejectUnknownType RejectionCode = "unknown_type"
	// RejectNoStateKey: a state-only type (call member, slot, m.room.member)
	// without a state key.
	RejectNoStateKey RejectionCode = "no_state_key"
	// RejectStickyState: a sticky-only type sent as a state event.
	RejectStickyState RejectionCode = "sticky_state"
	// RejectNoStickyKey: a sticky member without a usable sticky key.
	RejectNoStickyKey RejectionCode = "no_sticky_key"
	// RejectNoRedacts: a redaction that names no event.
	RejectNoRedacts RejectionCode = "no_redacts"
	// RejectMalformed: content that is not what its format requires.
	RejectMalformed RejectionCode = "malformed_content"
	// RejectTooLarge: content, strings or arrays beyond the bounds
	// (MaxContentBytes, MaxStringBytes, MaxFoci, MaxMemberships).
	RejectTooLarge RejectionCode = "too_large"
	// RejectOutOfRange: a number outside its range: origin_server_ts or
	// received_at outside (0, MaxTimestamp], created_ts or expires_ts
	// outside their range, expires not in [1, 2^53-1], a negative sticky
	// duration.
	RejectOutOfRange RejectionCode = "out_of_range"
	// RejectForeignStateKey: a join on a state key that names another user
	// than the sender.
	RejectForeignStateKey RejectionCode = "foreign_state_key"
	// RejectForeignUser: a sticky member whose member.user_id is not the sender.
	RejectForeignUser RejectionCode = "foreign_user"
	// RejectNotRoomCall: a legacy memberships entry for another call than
	// the room call (only the room call counts in that format).
	RejectNotRoomCall RejectionCode = "not_room_call"
	// RejectDuplicateDevice: a device listed twice in one legacy array.
	RejectDuplicateDevice RejectionCode = "duplicate_device"
)

// RejectionCodes lists every RejectionCode, in a fixed order.
func RejectionCodes() []RejectionCode {
	return []RejectionCode{RejectWrongRoom, RejectUnknownType, RejectNoStateKey, RejectStickyState,
		RejectNoStickyKey, RejectNoRedacts, RejectMalformed, RejectTooLarge, RejectOutOfRange,
		RejectForeignStateKey, RejectForeignUser, RejectNotRoomCall, RejectDuplicateDevice}
}
