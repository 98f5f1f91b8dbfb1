package rtc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/jsonscan"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// Bounds on what a membership event may contain. Anything larger is not from
// a real client and is rejected rather than stored.
const (
	MaxContentBytes = 65536 // the spec's PDU cap
	MaxStringBytes  = 255   // ids, applications, call ids, device ids
	MaxFoci         = 16    // foci_preferred, rtc_transports entries
	MaxMemberships  = 64    // entries of a legacy memberships array
	// MaxTimestamp is year 2500 in ms: later timestamps are nonsense.
	MaxTimestamp = 16_725_225_600_000
	// MaxExpiresValue bounds `expires` (2^53-1, the largest integer JSON
	// carries exactly); larger values are rejected, smaller ones are capped
	// by Config.MaxExpiresMS.
	MaxExpiresValue = rawevent.MaxSafeInteger
)

// callIntentField is the content field of a membership's call intent
// (MSC4196: "audio", "video"; any string is kept).
const callIntentField = "m.call.intent"

// AppCall is the application every Element Call membership uses; its
// call_id "" and slot id "ROOM" are the same session.
const AppCall = "m.call"

// ErrInvalid is wrapped by every validation error of the parsers.
var ErrInvalid = errors.New("invalid membership content")

// fieldError is one validation problem, with its class; it unwraps to
// ErrInvalid.
type fieldError struct {
	code RejectionCode
	msg  string
}

func (e *fieldError) Error() string { return ErrInvalid.Error() + ": " + e.msg }
func (e *fieldError) Unwrap() error { return ErrInvalid }

func invalid(format string, args ...any) error {
	return &fieldError{code: RejectMalformed, msg: fmt.Sprintf(format, args...)}
}

func outOfRange(format string, args ...any) error {
	return &fieldError{code: RejectOutOfRange, msg: fmt.Sprintf(format, args...)}
}

func tooLarge(format string, args ...any) error {
	return &fieldError{code: RejectTooLarge, msg: fmt.Sprintf(format, args...)}
}

func coded(code RejectionCode, format string, args ...any) error {
	return &fieldError{code: code, msg: fmt.Sprintf(format, args...)}
}

// CodeOf returns the RejectionCode of a parser error: the class of its first
// problem that is more specific than malformed content (out of range, too
// large, ...), else RejectMalformed.
func CodeOf(err error) RejectionCode {
	var fe *fieldError
	if errors.As(err, &fe) {
		return fe.code
	}
	return RejectMalformed
}

// joinInvalid reports every problem of a content on one line; its code is
// that of the first problem more specific than malformed content.
func joinInvalid(errs ...error) error {
	var msgs []string
	code := RejectMalformed
	for _, err := range errs {
		var fe *fieldError
		switch {
		case err == nil:
		case errors.As(err, &fe):
			msgs = append(msgs, fe.msg)
			if code == RejectMalformed {
				code = fe.code
			}
		default:
			msgs = append(msgs, err.Error())
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return &fieldError{code: code, msg: strings.Join(msgs, "; ")}
}

// fields reads a JSON object's fields and collects every problem, so that a
// rejection names all of them at once.
type fields struct {
	m    map[string]json.RawMessage
	errs []error
}

func (f *fields) str(k string, required bool) string {
	v, err := str(f.m, k, required)
	f.add(err)
	return v
}

func (f *fields) integer(k string, lo, hi int64) (int64, bool) {
	v, ok, err := intValue(rawOf(f.m, k), k, lo, hi)
	f.add(err)
	return v, ok
}

func (f *fields) createdTS(eff int64) int64 {
	v, err := createdTS(rawOf(f.m, "created_ts"), eff)
	f.add(err)
	return v
}

// typedArray reads an optional array of typed objects.
func (f *fields) typedArray(k string) json.RawMessage {
	if !has(f.m, k) {
		return nil
	}
	v, err := typedArray(f.m[k], k)
	f.add(err)
	return v
}

// object reads a required nested object.
func (f *fields) object(k string) *fields {
	var o map[string]json.RawMessage
	if err := json.Unmarshal(f.m[k], &o); err != nil || o == nil {
		f.add(invalid("%s must be an object", k))
	}
	return &fields{m: o}
}

func (f *fields) add(err error) {
	if err != nil {
		f.errs = append(f.errs, err)
	}
}

func (f *fields) err() error { return joinInvalid(f.errs...) }

// Parsed is what a membership event says: a leave, or one or more claims.
type Parsed struct {
	Kind   RegisterKind
	Claims []Claim
	// Rejected explains entries of a legacy array that were skipped while the
	// others still count.
	Rejected []string
	// RejectedCodes holds the code of each Rejected entry.
	RejectedCodes []RejectionCode
}

// NormalizeCallID maps the m.call room call's slot id "ROOM" to "" (what
// the state events say), so both name the same session. Other applications
// keep their call ids verbatim.
func NormalizeCallID(app, callID string) string {
	if app == AppCall && callID == "ROOM" {
		return ""
	}
	return callID
}

// SlotID is the MSC4143 slot of a session: application#id, with the m.call
// room call as m.call#ROOM.
func SlotID(app, callID string) string {
	if app == AppCall && callID == "" {
		callID = "ROOM"
	}
	return app + "#" + callID
}

// ParseStateKeyUser extracts the user a call-member state key names, for the
// sender check only (the key is never trusted for the device). The forms are
// `_@user:hs_rest`, `@user:hs_rest` and `@user:hs`; the user id ends at the
// first '_' after the first ':' (a device id may hold '_', a server name
// may not). A key of another form (a bare device id) names no user and
// yields "". The ingest's relay rule reads keys with it too.
func ParseStateKeyUser(key string) id.UserID {
	k := strings.TrimPrefix(key, "_")
	if !strings.HasPrefix(k, "@") {
		return ""
	}
	colon := strings.IndexByte(k, ':')
	if colon < 2 {
		return ""
	}
	if us := strings.IndexByte(k[colon:], '_'); us >= 0 {
		k = k[:colon+us]
	}
	if len(k) <= colon+1 {
		return ""
	}
	return id.UserID(k)
}

// object decodes a JSON object into a map of raw values, enforcing the
// content size bound.
func object(raw json.RawMessage) (map[string]json.RawMessage, error) {
	if len(raw) > MaxContentBytes {
		return nil, tooLarge("content of %d bytes exceeds %d", len(raw), MaxContentBytes)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, invalid("content is not a JSON object")
	}
	return m, nil
}

func has(m map[string]json.RawMessage, k string) bool {
	v, ok := m[k]
	return ok && !bytes.Equal(bytes.TrimSpace(v), []byte("null"))
}

// rawOf is the raw value of field k, nil when absent or null.
func rawOf(m map[string]json.RawMessage, k string) []byte {
	if !has(m, k) {
		return nil
	}
	return bytes.TrimSpace(m[k])
}

// str reads a string field (strValue). required=false returns "" for an
// absent field.
func str(m map[string]json.RawMessage, k string, required bool) (string, error) {
	v, err := strValue(rawOf(m, k), k, required)
	return string(v), err
}

// intValue is the rule of an integer field k (ms) in [lo, hi], given its
// raw value (nil: absent or null). JSON numbers with an exponent or a
// fraction equal to an integer are accepted; strings and fractional numbers
// are not, and numbers outside the range are
// rejected as out of range.
func intValue(raw []byte, k string, lo, hi int64) (v int64, present bool, err error) {
	if raw == nil {
		return 0, false, nil
	}
	var f float64
	if n, ok := jsonscan.PlainInt(raw); ok {
		f = float64(n)
	} else {
		if len(raw) == 0 || raw[0] == '"' { // encoding/json would accept "123" as a json.Number
			return 0, true, invalid("%s must be a number", k)
		}
		var n json.Number
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&n); err != nil {
			return 0, true, invalid("%s must be a number", k)
		}
		var err error
		f, err = n.Float64()
		switch {
		case math.IsInf(f, 1):
			return 0, true, outOfRange("%s too large", k)
		case math.IsInf(f, -1):
			return 0, true, outOfRange("%s must not be negative", k)
		case err != nil || f != math.Trunc(f):
			return 0, true, invalid("%s must be an integer", k)
		}
	}
	switch {
	case f < float64(lo) && lo == 0:
		return 0, true, outOfRange("%s must not be negative", k)
	case f < float64(lo):
		return 0, true, outOfRange("%s must be at least %d", k, lo)
	case f > float64(hi):
		return 0, true, outOfRange("%s too large", k)
	}
	return int64(f), true, nil
}

func compact(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return nil
	}
	return b.Bytes()
}

// EffectiveTime is when the reducer takes an event to have happened: its
// origin_server_ts, unless that is more than cfg.ClockSkewMS after the time
// the service received the event, in which case the receive time (the
// sender's clock is not believed: the event is treated as sent when it was
// received). An input without a receive time (received_at 0, as in a test
// or an operator's file without one) is taken as received at its
// origin_server_ts. It uses only fields stored in RTC_RAW, so a replay
// decides the same.
//
// The effective time ranks the event in its register (last writer wins), is
// the latest its membership may start (created_ts() is clamped to it) and
// is the time of the transitions it causes.
func EffectiveTime(cfg Config, ev *rawevent.RawEvent) int64 {
	r := receivedAt(ev)
	if ev.OriginServerTS <= r+cfg.ClockSkewMS {
		return ev.OriginServerTS
	}
	return r
}

// receivedAt is the input's receive time, or its origin_server_ts when it
// has none.
func receivedAt(ev *rawevent.RawEvent) int64 {
	if ev.ReceivedAt > 0 {
		return ev.ReceivedAt
	}
	return ev.OriginServerTS
}

// checkTimes rejects an event whose origin_server_ts or received_at is out
// of range (not in (0, MaxTimestamp]; received_at may be 0: unknown). Such a
// time cannot be ranked or bounded, so the event is not stored at all.
func checkTimes(ev *rawevent.RawEvent) error {
	var errs []error
	if ev.OriginServerTS <= 0 || ev.OriginServerTS > MaxTimestamp {
		errs = append(errs, outOfRange("origin_server_ts %d outside (0, %d]", ev.OriginServerTS, int64(MaxTimestamp)))
	}
	if ev.ReceivedAt < 0 || ev.ReceivedAt > MaxTimestamp {
		errs = append(errs, outOfRange("received_at %d outside [0, %d]", ev.ReceivedAt, int64(MaxTimestamp)))
	}
	return joinInvalid(errs...)
}

// expiryOf computes a state membership's deadline from created_ts() and
// `expires` (default and cap from cfg): created_ts() + min(expires, cap),
// and never later than the cap past the time the service received the
// event, whatever the sender's clock says.
func expiryOf(cfg Config, ev *rawevent.RawEvent, created int64, expires int64, present bool) int64 {
	if !present {
		expires = cfg.DefaultExpiresMS
	}
	if expires > cfg.MaxExpiresMS {
		expires = cfg.MaxExpiresMS
	}
	return min(created+expires, receivedAt(ev)+cfg.MaxExpiresMS)
}

// createdTS returns created_ts() = created_ts ?? origin_server_ts, clamped to
// the event's effective time, so that a membership never starts after the
// event that announced it, nor after the service received it (beyond the
// skew allowance). raw is created_ts's raw value (nil: absent or null).
func createdTS(raw []byte, eff int64) (int64, error) {
	c, ok, err := intValue(raw, "created_ts", 0, MaxTimestamp)
	if err != nil {
		return 0, err
	}
	if !ok || c > eff {
		return eff, nil
	}
	return c, nil
}

// ParseStateMember parses the content of a call-member state event: the
// org.matrix.msc3401.call.member per-device session form, its legacy
// memberships array, or an m.rtc.member state event of the seed format.
// Content without `application` (and without `memberships`) is a leave.
func ParseStateMember(cfg Config, ev *rawevent.RawEvent) (Parsed, error) {
	return parseStateMember(cfg, ev, nil)
}

// parseStateMember is ParseStateMember reusing the strings and bytes of
// prev (the register the event replaces) where they are equal.
func parseStateMember(cfg Config, ev *rawevent.RawEvent, prev *Register) (Parsed, error) {
	if err := checkTimes(ev); err != nil {
		return Parsed{Kind: RegisterInvalid}, err
	}
	if len(ev.Content) > MaxContentBytes {
		return Parsed{Kind: RegisterInvalid}, tooLarge("content of %d bytes exceeds %d", len(ev.Content), MaxContentBytes)
	}
	var c content
	if !readContent(ev.Content, &c) {
		return Parsed{Kind: RegisterInvalid}, invalid("content is not a JSON object")
	}
	if c.has(cfMemberships) && !c.has(cfApplication) {
		if ev.Type != rawevent.TypeCallMember.Type {
			return Parsed{Kind: RegisterInvalid}, invalid("memberships array in %s", ev.Type)
		}
		return parseLegacy(cfg, ev, c.raw[cfMemberships], prev)
	}
	if !c.has(cfApplication) {
		return Parsed{Kind: RegisterLeave}, nil
	}
	return parseSessionForm(cfg, ev, &c, prev)
}

// parseLegacy expands a legacy memberships array (js-sdk v28-v35). Entries
// count only for the room call (call_id "" and scope m.room
// case 24) and only until created_ts()+expires (or expires_ts).
func parseLegacy(cfg Config, ev *rawevent.RawEvent, memberships []byte, prev *Register) (Parsed, error) {
	var entries []json.RawMessage
	if err := json.Unmarshal(memberships, &entries); err != nil {
		return Parsed{Kind: RegisterInvalid}, invalid("memberships must be an array")
	}
	if len(entries) > MaxMemberships {
		return Parsed{Kind: RegisterInvalid}, tooLarge("memberships has %d entries, limit %d", len(entries), MaxMemberships)
	}
	if key := ParseStateKeyUser(*ev.StateKey); len(entries) > 0 && key != "" && key != ev.Sender {
		return Parsed{Kind: RegisterInvalid}, coded(RejectForeignStateKey, "state key names %s but the sender is %s", key, ev.Sender)
	}
	p := Parsed{Kind: RegisterLeave}
	seen := map[string]bool{}
	for i, raw := range entries {
		c, err := parseLegacyEntry(cfg, ev, raw, prev)
		if err != nil {
			p.Rejected = append(p.Rejected, fmt.Sprintf("memberships[%d]: %v", i, err))
			p.RejectedCodes = append(p.RejectedCodes, CodeOf(err))
			continue
		}
		if seen[c.MemberKey] {
			p.Rejected = append(p.Rejected, fmt.Sprintf("memberships[%d]: device %s listed twice", i, c.Device))
			p.RejectedCodes = append(p.RejectedCodes, RejectDuplicateDevice)
			continue
		}
		seen[c.MemberKey] = true
		p.Kind = RegisterJoin
		p.Claims = append(p.Claims, c)
	}
	if len(entries) > 0 && len(p.Claims) == 0 {
		p.Kind = RegisterInvalid
	}
	return p, nil
}

func parseLegacyEntry(cfg Config, ev *rawevent.RawEvent, raw json.RawMessage, prev *Register) (Claim, error) {
	m, err := object(raw)
	if err != nil {
		return Claim{}, err
	}
	f := &fields{m: m}
	app := f.str("application", true)
	callID := f.str("call_id", true)
	device := f.str("device_id", true)
	scope := f.str("scope", false)
	created := f.createdTS(EffectiveTime(cfg, ev))
	expires, hasExpires := f.integer("expires", 1, MaxExpiresValue)
	expiresTS, hasExpiresTS := f.integer("expires_ts", 1, MaxTimestamp)
	foci := f.typedArray("foci_active")
	if err := f.err(); err != nil {
		return Claim{}, err
	}
	switch {
	case app == "" || device == "":
		return Claim{}, invalid("application and device_id must not be empty")
	case callID != "" || (scope != "" && scope != "m.room"):
		return Claim{}, coded(RejectNotRoomCall, "only the room call (call_id \"\", scope m.room) counts in a legacy array")
	case !hasExpires && !hasExpiresTS:
		return Claim{}, invalid("neither expires nor expires_ts")
	}
	deadline := expiryOf(cfg, ev, created, expires, true)
	if !hasExpires { // expires wins when both are present
		deadline = min(expiresTS, created+cfg.MaxExpiresMS, receivedAt(ev)+cfg.MaxExpiresMS)
	}
	var c Claim
	buildClaim(&c, ev, &claimParts{app: []byte(app), callID: []byte(callID), device: []byte(device),
		foci: foci, created: created, deadline: deadline, format: events.FormatLegacy}, prev)
	return c, nil
}

// StickyKey returns the MSC4354 sticky key of a sticky member event
// (sticky_key, or msc4354_sticky_key; they must agree when both are set).
func StickyKey(content json.RawMessage) (string, error) {
	m, err := object(content)
	if err != nil {
		return "", err
	}
	a, errA := str(m, "sticky_key", false)
	b, errB := str(m, "msc4354_sticky_key", false)
	if err := joinInvalid(errA, errB); err != nil {
		return "", err
	}
	switch {
	case a == "" && b == "":
		return "", coded(RejectNoStickyKey, "no sticky_key")
	case a != "" && b != "" && a != b:
		return "", coded(RejectNoStickyKey, "sticky_key and msc4354_sticky_key differ")
	case a != "":
		return a, nil
	}
	return b, nil
}

// StickyDeadline is when a sticky event stops being sticky (MSC4354):
// min(received, origin_server_ts) + min(duration, 1 h). The receive time
// bounds it: a sender's clock cannot make it longer.
func StickyDeadline(ev *rawevent.RawEvent) (int64, error) {
	if ev.StickyDurationMS == nil {
		return 0, invalid("not sticky: no sticky duration")
	}
	d := *ev.StickyDurationMS
	if d < 0 {
		return 0, outOfRange("negative sticky duration")
	}
	return min(receivedAt(ev), ev.OriginServerTS) + min(d, MaxStickyMS), nil
}

// stickyRank orders a sticky key's writes (MSC4354: the event that stays
// sticky longest wins): the effective time plus the sticky duration (capped
// at 1 h).
func stickyRank(cfg Config, ev *rawevent.RawEvent) int64 {
	rank := EffectiveTime(cfg, ev)
	if ev.StickyDurationMS != nil {
		rank += min(max(*ev.StickyDurationMS, 0), MaxStickyMS)
	}
	return rank
}

// ParseStickyMember parses a sticky m.rtc.member / org.matrix.msc4143.rtc.member
// event: the MSC4143 head shape (member{id, membership}, transports) and the
// js-sdk shape (member{user_id, device_id, id}, rtc_transports). Content with
// only the sticky key, or member.membership "leave", is a leave. The
// membership starts at the event's effective time (EffectiveTime).
func ParseStickyMember(cfg Config, ev *rawevent.RawEvent) (Parsed, error) {
	if err := checkTimes(ev); err != nil {
		return Parsed{Kind: RegisterInvalid}, err
	}
	m, err := object(ev.Content)
	if err != nil {
		return Parsed{Kind: RegisterInvalid}, err
	}
	if !has(m, "application") {
		return Parsed{Kind: RegisterLeave}, nil
	}
	var member map[string]json.RawMessage
	if err := json.Unmarshal(m["member"], &member); err != nil || member == nil {
		return Parsed{Kind: RegisterInvalid}, invalid("member must be an object")
	}
	if ms, _ := str(member, "membership", false); ms == "leave" {
		return Parsed{Kind: RegisterLeave}, nil
	}
	f := &fields{m: m}
	af := f.object("application")
	app := af.str("type", true)
	f.errs = append(f.errs, af.errs...)
	// The intent is in the application object here. js-sdk ignores one
	// that is not a string (the membership still counts); so does this.
	intent, _ := str(af.m, callIntentField, false)
	slot := f.str("slot_id", true)
	mf := &fields{m: member}
	memberID := mf.str("id", true)
	userID := mf.str("user_id", false)
	device := mf.str("device_id", false)
	if device == "" {
		device = mf.str("claimed_device_id", false)
	}
	if ms := mf.str("membership", false); ms != "" && ms != "join" {
		f.add(invalid("member.membership must be join or leave"))
	}
	f.errs = append(f.errs, mf.errs...)
	var foci json.RawMessage
	switch {
	case has(m, "rtc_transports"):
		foci = f.typedArray("rtc_transports")
	case has(m, "transports"):
		tr := f.object("transports")
		foci = tr.typedArray("published")
		f.errs = append(f.errs, tr.errs...)
	}
	_, err = StickyKey(ev.Content)
	f.add(err)
	deadline, err := StickyDeadline(ev)
	f.add(err)
	if err := f.err(); err != nil {
		return Parsed{Kind: RegisterInvalid}, err
	}
	if memberID == "" {
		return Parsed{Kind: RegisterInvalid}, invalid("member.id empty")
	}
	appPart, callID, ok := strings.Cut(slot, "#")
	if !ok || appPart != app || strings.Contains(callID, "#") {
		return Parsed{Kind: RegisterInvalid}, invalid("slot_id %q does not match application %q", slot, app)
	}
	if userID != "" && id.UserID(userID) != ev.Sender {
		return Parsed{Kind: RegisterInvalid}, coded(RejectForeignUser, "member.user_id %s is not the sender %s", userID, ev.Sender)
	}
	key := device
	if key == "" {
		key = "member:" + memberID
	}
	return Parsed{Kind: RegisterJoin, Claims: []Claim{{
		App: app, CallID: NormalizeCallID(app, callID), User: ev.Sender, Device: id.DeviceID(device),
		MemberKey: key, MembershipID: memberID, CreatedTS: EffectiveTime(cfg, ev), Deadline: deadline,
		FociPref: foci, CallIntent: intent, Format: events.FormatSticky, EventID: ev.EventID, TS: ev.OriginServerTS,
	}}}, nil
}

// ParseSlot parses an m.rtc.slot content. A slot that fails validation
// counts as closed (MSC4143 head).
func ParseSlot(slotID string, content json.RawMessage) (open bool, err error) {
	m, err := object(content)
	if err != nil {
		return false, err
	}
	status, err := str(m, "status", true)
	if err != nil {
		return false, err
	}
	switch status {
	case "closed":
		return false, nil
	case "open":
	default:
		return false, invalid("slot status %q", status)
	}
	var application map[string]json.RawMessage
	if err := json.Unmarshal(m["application"], &application); err != nil || application == nil {
		return false, invalid("open slot without application object")
	}
	app, err := str(application, "type", true)
	if err != nil {
		return false, err
	}
	if !strings.HasPrefix(slotID, app+"#") {
		return false, invalid("slot %q does not belong to application %q", slotID, app)
	}
	return true, nil
}

// ParseRoomMembership reads m.room.member's membership.
func ParseRoomMembership(content json.RawMessage) (string, error) {
	m, err := object(content)
	if err != nil {
		return "", err
	}
	ms, err := str(m, "membership", true)
	if err != nil {
		return "", err
	}
	switch ms {
	case "join", "leave", "ban", "invite", "knock":
		return ms, nil
	}
	return "", invalid("unknown membership %q", ms)
}
