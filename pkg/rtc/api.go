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
}

// MaxStickyMS is MSC4354's cap on a sticky event's duration (1 h).
const MaxStickyMS = 3_600_000

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{DefaultExpiresMS: 4 * 3_600_000, MaxExpiresMS: 7 * 24 * 3_600_000}
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
// become a membership.
type Rejection struct {
	EventID id.EventID `json:"event_id"`
	Reason  string     `json:"reason"`
}

func (r Rejection) String() string { return fmt.Sprintf("%s: %s", r.EventID, r.Reason) }
