package rtc

import (
	"bytes"
	"encoding/json"
	"strconv"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/jsonscan"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// The session form (org.matrix.msc3401.call.member per device, and the
// m.rtc.member state seed format) is read by one parser: readContent finds
// the known fields' values in one pass over the content, accepting exactly
// the JSON encoding/json accepts and resolving duplicates and nulls as its
// map decoding does; parseSessionForm applies the form's rules to those
// values, each rule once (the rules of a string, an integer and a typed
// object are shared with the other forms through fields); buildClaim turns
// the values into the Claim. Nothing is decoded into maps or through
// reflection unless a value is not plain (an escape, a fraction), so the
// joins and refreshes a busy room sees cost a few allocations.

// contentField indexes the known fields of a membership content.
type contentField int

const (
	cfApplication contentField = iota
	cfCallID
	cfDeviceID
	cfScope
	cfCallIntent
	cfFocusActive
	cfFociPreferred
	cfCreatedTS
	cfExpires
	cfMemberships
	numContentFields
)

// fieldOf names a known field.
func fieldOf(key string) (contentField, bool) {
	switch key {
	case "application":
		return cfApplication, true
	case "call_id":
		return cfCallID, true
	case "device_id":
		return cfDeviceID, true
	case "scope":
		return cfScope, true
	case callIntentField:
		return cfCallIntent, true
	case "focus_active":
		return cfFocusActive, true
	case "foci_preferred":
		return cfFociPreferred, true
	case "created_ts":
		return cfCreatedTS, true
	case "expires":
		return cfExpires, true
	case "memberships":
		return cfMemberships, true
	}
	return 0, false
}

// content holds the raw value of each known field of a content (nil when
// absent or null), as a map[string]json.RawMessage would.
type content struct {
	raw [numContentFields][]byte
}

func (c *content) has(f contentField) bool { return c.raw[f] != nil }

// readContent finds the known fields of a JSON object. ok is false when b is
// not a JSON object (encoding/json would not decode it into a map).
func readContent(b []byte) (c content, ok bool) {
	s := jsonscan.Scanner{B: b}
	s.Space()
	if s.Peek() != '{' {
		return c, false
	}
	s.I++
	s.Space()
	if s.Peek() == '}' {
		s.I++
		s.Space()
		return c, s.EOF()
	}
	for {
		keyStart := s.I
		key, simple, ok := s.Str()
		if !ok {
			return c, false
		}
		keyEnd := s.I
		s.Space()
		if s.Peek() != ':' {
			return c, false
		}
		s.I++
		s.Space()
		start := s.I
		if !s.Value(2) {
			return c, false
		}
		var f contentField
		var known bool
		if simple {
			f, known = fieldOf(string(key))
		} else {
			var k string
			_ = json.Unmarshal(b[keyStart:keyEnd], &k) // valid: scanned
			f, known = fieldOf(k)
		}
		if known { // the last of duplicate keys wins
			c.raw[f] = b[start:s.I]
			if string(c.raw[f]) == "null" {
				c.raw[f] = nil
			}
		}
		s.Space()
		switch s.Peek() {
		case ',':
			s.I++
			s.Space()
		case '}':
			s.I++
			s.Space()
			return c, s.EOF()
		default:
			return c, false
		}
	}
}

// plainString reports whether a scanned JSON string's bytes are its value
// (no escape, nothing but printable ASCII).
func plainString(b []byte) bool {
	for _, c := range b {
		if c == '\\' || c >= 0x80 {
			return false
		}
	}
	return true
}

// strValue is the rule of a string field k, given its raw value (nil:
// absent or null): required or "" when absent, a JSON string of at most
// MaxStringBytes bytes.
func strValue(raw []byte, k string, required bool) ([]byte, error) {
	if raw == nil {
		if required {
			return nil, invalid("%s missing", k)
		}
		return nil, nil
	}
	var v []byte
	switch {
	case raw[0] != '"':
		return nil, invalid("%s must be a string", k)
	case plainString(raw[1 : len(raw)-1]):
		v = raw[1 : len(raw)-1]
	default:
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, invalid("%s must be a string", k)
		}
		v = []byte(s)
	}
	if len(v) > MaxStringBytes {
		return nil, tooLarge("%s longer than %d bytes", k, MaxStringBytes)
	}
	return v, nil
}

// typedObject is the rule of a focus or transport: a JSON object whose
// "type" is a string (of at most MaxStringBytes bytes). It returns the
// object compacted (raw itself when it is compact).
func typedObject(raw []byte, what string, index int) ([]byte, error) {
	s := jsonscan.Scanner{B: raw}
	s.Space()
	if s.Peek() != '{' {
		return nil, invalid("%s must be an object", elementName(what, index))
	}
	s.I++
	s.Space()
	var typ []byte
	for s.Peek() != '}' {
		keyStart := s.I
		key, simple, ok := s.Str()
		keyEnd := s.I
		s.Space()
		if !ok || s.Peek() != ':' {
			return nil, invalid("%s must be an object", elementName(what, index))
		}
		s.I++
		s.Space()
		start := s.I
		if !s.Value(2) {
			return nil, invalid("%s must be an object", elementName(what, index))
		}
		isType := simple && string(key) == "type"
		if !simple {
			var k string
			_ = json.Unmarshal(raw[keyStart:keyEnd], &k)
			isType = k == "type"
		}
		if isType { // the last "type" wins
			typ = raw[start:s.I]
			if string(typ) == "null" {
				typ = nil
			}
		}
		s.Space()
		if s.Peek() == ',' {
			s.I++
			s.Space()
		}
	}
	if _, err := strValue(typ, "type", true); err != nil {
		return nil, invalid("%s.type must be a string", elementName(what, index))
	}
	return compactValue(raw), nil
}

// elementName is what, or what[index] for an element of an array (index
// >= 0).
func elementName(what string, index int) string {
	if index < 0 {
		return what
	}
	return what + "[" + strconv.Itoa(index) + "]"
}

// typedArray is the rule of a list of foci or transports: an array of at
// most MaxFoci typed objects. It returns the array compacted.
func typedArray(raw []byte, what string) ([]byte, error) {
	s := jsonscan.Scanner{B: raw}
	s.Space()
	if s.Literal("null") { // an empty array to encoding/json
		return compactValue(raw), nil
	}
	if s.Peek() != '[' {
		return nil, invalid("%s must be an array", what)
	}
	s.I++
	s.Space()
	var buf [MaxFoci][]byte
	elems := buf[:0]
	n := 0
	for s.Peek() != ']' {
		start := s.I
		if !s.Value(2) {
			return nil, invalid("%s must be an array", what)
		}
		if n < MaxFoci {
			elems = append(elems, raw[start:s.I])
		}
		n++
		s.Space()
		if s.Peek() == ',' {
			s.I++
			s.Space()
		}
	}
	if n > MaxFoci {
		return nil, tooLarge("%s has %d entries, limit %d", what, n, MaxFoci)
	}
	for i, e := range elems {
		if _, err := typedObject(e, what, i); err != nil {
			return nil, err
		}
	}
	return compactValue(raw), nil
}

// compactValue returns a valid JSON value without white space outside its
// strings: raw itself when it has none.
func compactValue(raw []byte) []byte {
	if isCompact(raw) {
		return raw
	}
	return compact(raw)
}

// isCompact reports whether valid JSON b has no white space outside its
// strings.
func isCompact(b []byte) bool {
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case !inString && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return false
		}
	}
	return true
}

// parseSessionForm applies the session form's rules to a content with
// application, reporting every problem at once, and builds the claim.
func parseSessionForm(cfg Config, ev *events.RawEvent, c *content, prev *Register) (Parsed, error) {
	var errs errorList
	p := claimParts{format: events.FormatSession}
	if ev.Type == events.TypeRTCMember.Type {
		p.format = events.FormatSeed
	}
	var err error
	p.app, err = strValue(c.raw[cfApplication], "application", true)
	errs.add(err)
	p.callID, err = strValue(c.raw[cfCallID], "call_id", true)
	errs.add(err)
	p.device, err = strValue(c.raw[cfDeviceID], "device_id", true)
	errs.add(err)
	if c.has(cfDeviceID) && len(p.device) == 0 {
		errs.add(invalid("device_id empty"))
	}
	if c.has(cfApplication) && len(p.app) == 0 {
		errs.add(invalid("application empty"))
	}
	if !c.has(cfFocusActive) {
		errs.add(invalid("focus_active missing"))
	} else {
		p.focus, err = typedObject(c.raw[cfFocusActive], "focus_active", -1)
		errs.add(err)
	}
	if c.has(cfFociPreferred) {
		p.foci, err = typedArray(c.raw[cfFociPreferred], "foci_preferred")
		errs.add(err)
	}
	if p.foci == nil && p.format == events.FormatSeed {
		errs.add(invalid("foci_preferred missing"))
	}
	_, err = strValue(c.raw[cfScope], "scope", false)
	errs.add(err)
	// m.call.intent sits at the top level of this form, beside the
	// session's fields (js-sdk's CallMembership reads it there and
	// refuses a membership whose intent is not a string).
	p.intent, err = strValue(c.raw[cfCallIntent], callIntentField, false)
	errs.add(err)
	p.created, err = createdTS(c.raw[cfCreatedTS], EffectiveTime(cfg, ev))
	errs.add(err)
	expires, hasExpires, err := intValue(c.raw[cfExpires], "expires", 1, MaxExpiresValue)
	errs.add(err)
	if err := errs.err(); err != nil {
		return Parsed{Kind: RegisterInvalid}, err
	}
	if key := ParseStateKeyUser(*ev.StateKey); key != "" && key != ev.Sender {
		return Parsed{Kind: RegisterInvalid}, coded(RejectForeignStateKey, "state key names %s but the sender is %s", key, ev.Sender)
	}
	p.deadline = expiryOf(cfg, ev, p.created, expires, hasExpires)
	return Parsed{Kind: RegisterJoin, Claims: []Claim{buildClaim(ev, &p, prev)}}, nil
}

// errorList collects a content's problems.
type errorList []error

func (l *errorList) add(err error) {
	if err != nil {
		*l = append(*l, err)
	}
}

func (l errorList) err() error { return joinInvalid(l...) }

// claimParts are the values of a state membership (the session form, the
// seed format, an entry of a legacy array) its claim is built from.
type claimParts struct {
	app, callID, device []byte
	focus, foci, intent []byte // nil: absent
	created, deadline   int64
	format              events.Format
}

// buildClaim builds the claim of a state membership. prev is the register
// the event replaces (nil if none): its claim's strings and bytes are reused
// where equal, so that a refresh allocates little.
func buildClaim(ev *events.RawEvent, p *claimParts, prev *Register) Claim {
	var pc Claim
	if prev != nil && len(prev.Claims) == 1 {
		pc = prev.Claims[0]
	}
	c := Claim{
		App:    reuse(p.app, AppCall, pc.App),
		CallID: reuse(p.callID, "", pc.CallID),
		User:   ev.Sender, Format: p.format, EventID: ev.EventID, TS: ev.OriginServerTS,
		CreatedTS: p.created, Deadline: p.deadline,
	}
	c.CallID = NormalizeCallID(c.App, c.CallID)
	c.MemberKey = reuse(p.device, pc.MemberKey)
	c.Device = id.DeviceID(c.MemberKey)
	if p.focus != nil {
		c.FocusActive = reuseBytes(p.focus, pc.FocusActive)
	}
	if p.foci != nil {
		c.FociPref = reuseBytes(p.foci, pc.FociPref)
	}
	if p.intent != nil {
		c.CallIntent = reuse(p.intent, "audio", "video", pc.CallIntent)
	}
	// membershipID, without formatting.
	var buf [128]byte
	mid := append(buf[:0], ev.Sender...)
	mid = append(mid, '/')
	mid = append(mid, p.device...)
	mid = append(mid, '/')
	mid = strconv.AppendInt(mid, p.created, 10)
	c.MembershipID = reuse(mid, pc.MembershipID)
	return c
}

// reuse returns the candidate equal to b, or a new string of b.
func reuse(b []byte, candidates ...string) string {
	for _, c := range candidates {
		if string(b) == c {
			return c
		}
	}
	return string(b)
}

func reuseBytes(b []byte, prev []byte) []byte {
	if prev != nil && bytes.Equal(b, prev) {
		return prev
	}
	return bytes.Clone(b)
}
