package rtc

import (
	"bytes"
	"encoding/json"
	"strconv"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/jsonscan"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
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
// absent or null), as a map[string]json.RawMessage would, and what the rules
// of the focus and the foci need to know of theirs, found while reading.
type content struct {
	raw   [numContentFields][]byte
	focus typedFacts
	foci  arrayFacts
	// spaced: the content has white space outside its strings (its
	// values may need compacting).
	spaced bool
	// plain has the bit of each field whose value is a string without
	// escapes or non-ASCII bytes (its bytes are its value).
	plain uint16
}

// str is strValue of field f, without looking at a plain string's bytes
// again.
func (c *content) str(f contentField, k string, required bool) ([]byte, error) {
	if raw := c.raw[f]; c.plain&(1<<f) != 0 && len(raw)-2 <= MaxStringBytes {
		return raw[1 : len(raw)-1], nil
	}
	return strValue(c.raw[f], k, required)
}

func (c *content) has(f contentField) bool { return c.raw[f] != nil }

// readContent finds the known fields of a JSON object into c (zero). It
// returns false when b is not a JSON object (encoding/json would not decode
// it into a map).
func readContent(b []byte, c *content) bool {
	s := jsonscan.Scanner{B: b}
	s.Space()
	ok := s.Object(1, func(key []byte, simple bool, quoted []byte) bool {
		var f contentField
		var known bool
		if simple {
			f, known = fieldOf(string(key))
		} else {
			f, known = fieldOfQuoted(quoted)
		}
		start := s.I
		var ok bool
		switch {
		case known && f == cfFocusActive:
			ok = scanTypedObject(&s, 2, &c.focus)
		case known && f == cfFociPreferred:
			ok = scanTypedArray(&s, 2, "foci_preferred", &c.foci)
		case s.Peek() == '"':
			var plain bool
			_, plain, ok = s.Str()
			if known && plain {
				c.plain |= 1 << f
			} else if known {
				c.plain &^= 1 << f
			}
		default:
			ok = s.Value(2)
			if known {
				c.plain &^= 1 << f
			}
		}
		if ok && known { // the last of duplicate keys wins
			c.raw[f] = b[start:s.I]
			if string(c.raw[f]) == "null" {
				c.raw[f] = nil
			}
		}
		return ok
	})
	s.Space()
	c.spaced = s.Spaced
	return ok && s.EOF()
}

// fieldOfQuoted names the known field a key with escapes names.
func fieldOfQuoted(quoted []byte) (contentField, bool) {
	var k string
	_ = json.Unmarshal(quoted, &k) // valid: scanned
	return fieldOf(k)
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

// typedFacts is what the rule of a focus or transport needs to know of a
// value, found while scanning it.
type typedFacts struct {
	object bool
	typ    []byte // the raw value of its (last) "type", nil when absent or null
}

// scanTypedObject scans a value (at depth) and records its typedFacts; ok
// is false when it is not valid JSON.
func scanTypedObject(s *jsonscan.Scanner, depth int, f *typedFacts) bool {
	*f = typedFacts{}
	if s.Peek() != '{' {
		return s.Value(depth)
	}
	f.object = true
	return s.Object(depth, func(key []byte, simple bool, quoted []byte) bool {
		start := s.I
		if !s.Value(depth + 1) {
			return false
		}
		isType := simple && string(key) == "type"
		if !simple {
			var k string
			_ = json.Unmarshal(quoted, &k) // valid: scanned
			isType = k == "type"
		}
		if isType { // the last "type" wins
			f.typ = s.B[start:s.I]
			if string(f.typ) == "null" {
				f.typ = nil
			}
		}
		return true
	})
}

// typedRule is the rule of a focus or transport: a JSON object whose "type"
// is a string (of at most MaxStringBytes bytes).
func typedRule(f *typedFacts, what string, index int) error {
	if !f.object {
		return invalid("%s must be an object", elementName(what, index))
	}
	if _, err := strValue(f.typ, "type", true); err != nil {
		return invalid("%s.type must be a string", elementName(what, index))
	}
	return nil
}

// elementName is what, or what[index] for an element of an array (index
// >= 0).
func elementName(what string, index int) string {
	if index < 0 {
		return what
	}
	return what + "[" + strconv.Itoa(index) + "]"
}

// arrayFacts is what the rule of a list of foci or transports needs to know
// of a value, found while scanning it.
type arrayFacts struct {
	array bool  // an array, or null (an empty array to encoding/json)
	n     int   // its elements
	bad   error // the typedRule problem of the first of its first MaxFoci elements that has one
}

// scanTypedArray scans a value (at depth) and records its arrayFacts; ok is
// false when it is not valid JSON.
func scanTypedArray(s *jsonscan.Scanner, depth int, what string, f *arrayFacts) bool {
	*f = arrayFacts{}
	if s.Peek() != '[' {
		if s.Literal("null") {
			f.array = true
			return true
		}
		return s.Value(depth)
	}
	f.array = true
	return s.Array(depth, func() bool {
		i := f.n
		f.n++
		if i >= MaxFoci {
			return s.Value(depth + 1)
		}
		var e typedFacts
		if !scanTypedObject(s, depth+1, &e) {
			return false
		}
		if f.bad == nil {
			f.bad = typedRule(&e, what, i)
		}
		return true
	})
}

// arrayRule is the rule of a list of foci or transports: an array of at
// most MaxFoci typed objects.
func arrayRule(f *arrayFacts, what string) error {
	switch {
	case !f.array:
		return invalid("%s must be an array", what)
	case f.n > MaxFoci:
		return tooLarge("%s has %d entries, limit %d", what, f.n, MaxFoci)
	}
	return f.bad
}

// typedArray applies arrayRule to a raw value (valid JSON) and returns it
// compacted.
func typedArray(raw []byte, what string) ([]byte, error) {
	var f arrayFacts
	s := jsonscan.Scanner{B: raw}
	s.Space()
	if !scanTypedArray(&s, 2, what, &f) {
		return nil, invalid("%s must be an array", what)
	}
	if err := arrayRule(&f, what); err != nil {
		return nil, err
	}
	return compactValue(raw), nil
}

// compactValue returns a valid JSON value without white space outside its
// strings: raw itself when it has none.
func compactValue(raw []byte) []byte {
	s := jsonscan.Scanner{B: raw}
	s.Space()
	s.Value(1)
	s.Space()
	if !s.Spaced {
		return raw
	}
	return compact(raw)
}

// parseSessionForm applies the session form's rules to a content with
// application, reporting every problem at once, and builds the claim.
func parseSessionForm(cfg Config, ev *rawevent.RawEvent, c *content, prev *Register) (Parsed, error) {
	var errs errorList
	p := claimParts{format: events.FormatSession}
	if ev.Type == rawevent.TypeRTCMember.Type {
		p.format = events.FormatSeed
	}
	var err error
	p.app, err = c.str(cfApplication, "application", true)
	errs.add(err)
	p.callID, err = c.str(cfCallID, "call_id", true)
	errs.add(err)
	p.device, err = c.str(cfDeviceID, "device_id", true)
	errs.add(err)
	if c.has(cfDeviceID) && len(p.device) == 0 {
		errs.add(invalid("device_id empty"))
	}
	if c.has(cfApplication) && len(p.app) == 0 {
		errs.add(invalid("application empty"))
	}
	// The focus and the foci were scanned with their facts while reading;
	// they are compact unless the content has white space.
	value := func(raw []byte) []byte {
		if c.spaced {
			return compactValue(raw)
		}
		return raw
	}
	if !c.has(cfFocusActive) {
		errs.add(invalid("focus_active missing"))
	} else if err := typedRule(&c.focus, "focus_active", -1); err != nil {
		errs.add(err)
	} else {
		p.focus = value(c.raw[cfFocusActive])
	}
	if c.has(cfFociPreferred) {
		if err := arrayRule(&c.foci, "foci_preferred"); err != nil {
			errs.add(err)
		} else {
			p.foci = value(c.raw[cfFociPreferred])
		}
	}
	if p.foci == nil && p.format == events.FormatSeed {
		errs.add(invalid("foci_preferred missing"))
	}
	_, err = c.str(cfScope, "scope", false)
	errs.add(err)
	// m.call.intent sits at the top level of this form, beside the
	// session's fields (js-sdk's CallMembership reads it there and
	// refuses a membership whose intent is not a string).
	p.intent, err = c.str(cfCallIntent, callIntentField, false)
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
	claims := make([]Claim, 1)
	buildClaim(&claims[0], ev, &p, prev)
	return Parsed{Kind: RegisterJoin, Claims: claims}, nil
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
func buildClaim(c *Claim, ev *rawevent.RawEvent, p *claimParts, prev *Register) {
	var pc *Claim
	if prev != nil && len(prev.Claims) == 1 {
		pc = &prev.Claims[0]
	} else {
		pc = &Claim{}
	}
	*c = Claim{
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
	// The membership id: user/device/created_ts() (a rejoin, with a new
	// created_ts, is a new membership), built without formatting.
	var buf [128]byte
	mid := append(buf[:0], ev.Sender...)
	mid = append(mid, '/')
	mid = append(mid, p.device...)
	mid = append(mid, '/')
	mid = strconv.AppendInt(mid, p.created, 10)
	c.MembershipID = reuse(mid, pc.MembershipID)
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
