package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// Reasons a room's reconciliation fails (the "reason" label of
// rtc_ingest_reconcile_failures_total). The set is closed.
const (
	ReconcileForbidden   = "forbidden"   // 401/403: the reader is not (or no longer) in the room, or its token is refused
	ReconcileNotFound    = "not_found"   // 404: the homeserver does not know the room
	ReconcileHTTPStatus  = "http_status" // any other non-200 answer (5xx, 429, ...)
	ReconcileUnreachable = "unreachable" // no answer: connection refused, timeout, TLS
	ReconcileTooLarge    = "too_large"   // the room state is larger than reconcile.max_state_bytes
	ReconcileMalformed   = "malformed"   // the answer is not a JSON array of events
	ReconcilePublish     = "publish"     // RTC_RAW did not acknowledge every event (NATS unavailable)
	ReconcileNoReader    = "no_reader"   // no configured homeserver can read rooms (no as_token_file, no sync bot)
	ReconcileLiveRooms   = "live_rooms"  // listing the rooms with live sessions (rtc_sessions) failed
)

var reconcileReasons = []string{ReconcileForbidden, ReconcileNotFound, ReconcileHTTPStatus, ReconcileUnreachable,
	ReconcileTooLarge, ReconcileMalformed, ReconcilePublish}

// ReconcileError is a failed room reconciliation with its metric reason.
type ReconcileError struct {
	Reason string
	Err    error
}

func (e *ReconcileError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *ReconcileError) Unwrap() error { return e.Err }

// reconcileReason is the reason label of a reconciliation error.
func reconcileReason(err error) string {
	var re *ReconcileError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ReconcileUnreachable
}

// StateReader reads the current state of a room from one homeserver with
// GET /_matrix/client/v3/rooms/{roomId}/state, as the appservice's sender
// user (as_token) or as the sync bot (its access token). Either must be
// joined to the room (or the room world-readable): a homeserver answers 403
// otherwise (Dendrite: "user ... has never joined this room").
type StateReader struct {
	Homeserver string // configured name
	URL        string // client-server API base URL
	Kind       string // "appservice" or "sync": whose token reads
	// Token returns the access token to read with (it may change: a sync
	// bot that logs in with a password gets its token at login).
	Token    func() string
	Client   *http.Client
	MaxBytes int64 // larger room states fail with ReconcileTooLarge
}

// callStateTypes are the state event types whose current state
// reconciliation re-reads (every forwarded state type but m.room.member,
// which is read only for the users these events name).
var callStateTypes = map[string]bool{
	rawevent.TypeCallMember.Type: true, rawevent.TypeRTCMember.Type: true,
	rawevent.TypeRTCSlot.Type: true, rawevent.TypeRTCSlotUnstable.Type: true,
}

// RoomState returns the room's call-member and slot state events and the
// m.room.member events of their senders, as the homeserver sent them. The
// answer is decoded one event at a time: the other state events (a large
// room's thousands of members) are dropped as they are read.
func (r *StateReader) RoomState(ctx context.Context, room id.RoomID) ([]json.RawMessage, error) {
	tok := ""
	if r.Token != nil {
		tok = r.Token()
	}
	if tok == "" {
		return nil, &ReconcileError{Reason: ReconcileForbidden, Err: fmt.Errorf("%s: no access token yet", r.Homeserver)}
	}
	u := strings.TrimRight(r.URL, "/") + "/_matrix/client/v3/rooms/" + url.PathEscape(string(room)) + "/state"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, &ReconcileError{Reason: ReconcileUnreachable, Err: fmt.Errorf("state request: %w", err)}
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	cli := r.Client
	if cli == nil {
		cli = http.DefaultClient
	}
	resp, err := cli.Do(req)
	if err != nil {
		return nil, &ReconcileError{Reason: ReconcileUnreachable, Err: fmt.Errorf("GET state of %s from %s: %w", room, r.Homeserver, err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		reason := ReconcileHTTPStatus
		switch resp.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			reason = ReconcileForbidden
		case http.StatusNotFound:
			reason = ReconcileNotFound
		}
		return nil, &ReconcileError{Reason: reason, Err: fmt.Errorf("GET state of %s from %s (as %s): %s: %s",
			room, r.Homeserver, r.Kind, resp.Status, clip(strings.TrimSpace(string(body))))}
	}
	limited := &stateCounter{r: io.LimitReader(resp.Body, r.MaxBytes+1)}
	evs, err := decodeCallState(limited)
	if limited.n > r.MaxBytes {
		return nil, &ReconcileError{Reason: ReconcileTooLarge, Err: fmt.Errorf("state of %s from %s: more than %d bytes", room, r.Homeserver, r.MaxBytes)}
	}
	if err != nil {
		return nil, &ReconcileError{Reason: ReconcileMalformed, Err: fmt.Errorf("state of %s from %s: %w", room, r.Homeserver, err)}
	}
	return evs, nil
}

type stateCounter struct {
	r io.Reader
	n int64
}

func (c *stateCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// decodeCallState reads a JSON array of client events and keeps the call
// state events and the m.room.member events of their senders. An element
// that is not an object with a type is dropped here (Prepare would reject
// it anyway); a body that is not an array is an error.
func decodeCallState(r io.Reader) ([]json.RawMessage, error) {
	dec := json.NewDecoder(r)
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, fmt.Errorf("state is not a JSON array (starts with %v)", tok)
	}
	var calls []json.RawMessage
	members := map[string]json.RawMessage{}
	senders := map[string]bool{}
	for dec.More() {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("read state event: %w", err)
		}
		var peek struct {
			Type     string  `json:"type"`
			StateKey *string `json:"state_key"`
			Sender   string  `json:"sender"`
		}
		if json.Unmarshal(raw, &peek) != nil || peek.StateKey == nil {
			continue
		}
		switch {
		case callStateTypes[peek.Type]:
			calls = append(calls, raw)
			senders[peek.Sender] = true
		case peek.Type == rawevent.TypeRoomMember.Type:
			members[*peek.StateKey] = raw
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	out := calls
	for _, user := range slices.Sorted(maps.Keys(senders)) {
		if m, ok := members[user]; ok {
			out = append(out, m)
		}
	}
	return out, nil
}

// tokenBox holds a token that one goroutine sets and others read.
type tokenBox struct {
	mu  sync.Mutex
	tok string
}

func (b *tokenBox) set(tok string) {
	b.mu.Lock()
	b.tok = tok
	b.mu.Unlock()
}

func (b *tokenBox) get() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tok
}
