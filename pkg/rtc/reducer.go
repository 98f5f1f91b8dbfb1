package rtc

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// ident is a member's identity: one device of one user in one session.
// Several registers may claim the same identity; the latest created_ts()
// among the eligible claims represents it.
type ident struct {
	app, call string
	user      id.UserID
	key       string // Claim.MemberKey
}

func (c *Claim) ident() ident { return ident{c.App, c.CallID, c.User, c.MemberKey} }

func (i ident) memberKey() string { return string(i.user) + "\x00" + i.key }

func identLess(a, b ident) int {
	return cmp.Or(cmp.Compare(a.app, b.app), cmp.Compare(a.call, b.call),
		cmp.Compare(a.user, b.user), cmp.Compare(a.key, b.key))
}

// Apply applies one input to the room state, in place, and returns the
// session events it causes. It is deterministic: the same state and input
// always give the same new state and the same events. It reads no clock: the
// room's logical now is the maximum received_at (or timer deadline) seen.
//
// Every input first expires what is due at its now, each member at its own
// deadline; then an event input updates its register and the members it
// concerns. An input that changes nothing is reported Stale.
//
// A sender's clock is bounded (see EffectiveTime): an event ranks, starts
// memberships and causes transitions at its effective time, and no
// membership lives longer than Config.MaxExpiresMS past its receive time.
// An input whose received_at (or timer deadline) is outside [0,
// MaxTimestamp] is rejected before it can move the room's clock; an event
// whose origin_server_ts is outside (0, MaxTimestamp] is rejected (it
// cannot be ranked) after its receive time has advanced the clock.
func Apply(cfg Config, st *RoomState, in *rawevent.RawEvent) Result {
	a := applier{cfg: cfg, st: st}
	if st.RoomID == "" {
		st.RoomID = in.RoomID
	}
	if in.RoomID != st.RoomID {
		a.reject(in.EventID, RejectWrongRoom, fmt.Sprintf("input for room %s applied to room %s", in.RoomID, st.RoomID))
		a.res.Stale = true
		return a.res
	}
	now := in.ReceivedAt
	if in.Kind == rawevent.InputTimer {
		now = max(now, in.Deadline)
	}
	limit := int64(MaxTimestamp)
	if in.Kind == rawevent.InputTimer {
		limit += cfg.MaxExpiresMS // a deadline may lie up to the cap past a receive time
	}
	if now < 0 || now > limit {
		a.reject(in.EventID, RejectOutOfRange, fmt.Sprintf("received_at %d outside [0, %d]", now, limit))
		a.res.Stale = true
		return a.res
	}
	st.buildIndex()
	st.Clock = max(st.Clock, now)
	a.expireDue()
	defer a.collectRegisters()
	if in.Kind == rawevent.InputEvent {
		if err := checkTimes(in); err != nil {
			a.rejectErr(in.EventID, err)
			a.res.Stale = true
			return a.res
		}
		a.applyEvent(in)
	}
	return a.res
}

type applier struct {
	cfg     Config
	st      *RoomState
	res     Result
	members []events.Member // see newMember
}

func (a *applier) reject(ev id.EventID, code RejectionCode, reason string) {
	a.res.Rejections = append(a.res.Rejections, Rejection{EventID: ev, Code: code, Reason: reason})
}

func (a *applier) rejectErr(ev id.EventID, err error) { a.reject(ev, CodeOf(err), err.Error()) }

func (a *applier) applyEvent(ev *rawevent.RawEvent) {
	switch ev.Type {
	case rawevent.TypeCallMember.Type:
		if !ev.IsState() {
			a.reject(ev.EventID, RejectNoStateKey, ev.Type+" without state_key")
			a.res.Stale = true
			return
		}
		key, old := a.st.register('s', ev.Type, *ev.StateKey)
		a.applyMember(ev, key, old, EffectiveTime(a.cfg, ev), a.parseState)
	case rawevent.TypeRTCMember.Type, rawevent.TypeRTCMemberUnstable.Type:
		if ev.IsState() {
			if ev.Type != rawevent.TypeRTCMember.Type {
				a.reject(ev.EventID, RejectStickyState, ev.Type+" is sticky-only; state event ignored")
				a.res.Stale = true
				return
			}
			key, old := a.st.register('s', ev.Type, *ev.StateKey)
			a.applyMember(ev, key, old, EffectiveTime(a.cfg, ev), a.parseState)
			return
		}
		key, err := StickyKey(ev.Content)
		if err != nil {
			a.rejectErr(ev.EventID, err)
			a.res.Stale = true
			return
		}
		rkey, old := a.st.register('k', string(ev.Sender), ev.Type, key)
		a.applyMember(ev, rkey, old, stickyRank(a.cfg, ev), a.parseSticky)
	case rawevent.TypeRTCSlot.Type, rawevent.TypeRTCSlotUnstable.Type:
		a.applySlot(ev)
	case rawevent.TypeRoomMember.Type:
		a.applyRoomMember(ev)
	case rawevent.TypeRedaction.Type:
		a.applyRedaction(ev, EffectiveTime(a.cfg, ev))
	default:
		a.reject(ev.EventID, RejectUnknownType, "event type "+ev.Type+" does not concern calls")
		a.res.Stale = true
	}
}

func (a *applier) parseState(ev *rawevent.RawEvent, old *Register) (Parsed, error) {
	return parseStateMember(a.cfg, ev, old)
}

func (a *applier) parseSticky(ev *rawevent.RawEvent, _ *Register) (Parsed, error) {
	return ParseStickyMember(a.cfg, ev)
}

// parseFunc parses a member event; old is the register it replaces, if any.
type parseFunc func(ev *rawevent.RawEvent, old *Register) (Parsed, error)

// maxWhyBytes bounds Register.Why.
const maxWhyBytes = 512

func clipWhy(s string) string {
	if len(s) <= maxWhyBytes {
		return s
	}
	n := maxWhyBytes
	for n > 0 && !utf8.RuneStart(s[n]) {
		n-- // cut between runes
	}
	return s[:n] + "..."
}

// newer is the last-writer-wins order of a register: rank, then event id.
func newer(rank int64, ev id.EventID, oldRank int64, oldEv id.EventID) bool {
	if rank != oldRank {
		return rank > oldRank
	}
	return ev > oldEv
}

// applyMember applies a member event to its register (key; old is the
// register's current value, nil if none).
func (a *applier) applyMember(ev *rawevent.RawEvent, key string, old *Register, rank int64, parse parseFunc) {
	eff := EffectiveTime(a.cfg, ev)
	if a.selfRedaction(ev, eff) {
		// The event may also be one we never held (missed, then redacted:
		// a reconcile of the current state): it then takes its register
		// like any later event, as redacted, below.
		old = a.st.Registers[key]
		defer func() { a.res.Stale = false }()
	}
	recv := receivedAt(ev)
	switch {
	case old == nil:
	case old.EventID == ev.EventID:
		// The same event again. A copy received earlier than the one the
		// register holds replaces it: whatever the order the copies arrive
		// in, the register ends with the earliest received copy (the one
		// whose bounds are tightest). Any other copy changes nothing.
		if old.ReceivedAt == 0 || recv >= old.ReceivedAt {
			a.res.Stale = true
			return
		}
	case !newer(rank, ev.EventID, old.Rank, old.EventID):
		a.res.Stale = true
		if key[0] == 'k' {
			a.lowerStickyStart(key, old, ev, parse)
		}
		return
	}
	reg := &Register{EventID: ev.EventID, Sender: ev.Sender, TS: ev.OriginServerTS, Rank: rank, ReceivedAt: recv}
	if slices.Contains(a.st.Redacted, ev.EventID) || (old != nil && old.EventID == ev.EventID && old.Kind == RegisterRedacted) {
		reg.Kind = RegisterRedacted
	} else {
		p, err := parse(ev, old)
		if err != nil {
			a.rejectErr(ev.EventID, err)
			reg.WhyCode, reg.Why = CodeOf(err), clipWhy(err.Error())
		}
		for i, r := range p.Rejected {
			a.reject(ev.EventID, p.RejectedCodes[i], r)
			if reg.WhyCode == "" {
				reg.WhyCode, reg.Why = p.RejectedCodes[i], clipWhy(strings.Join(p.Rejected, "; "))
			}
		}
		reg.Kind, reg.Claims = p.Kind, p.Claims
	}
	if old != nil && key[0] == 'k' {
		// A sticky member's updates keep its member.id: the membership
		// started with the earliest event seen for it, whatever the order.
		for i := range reg.Claims {
			for _, oc := range old.Claims {
				if oc.MembershipID == reg.Claims[i].MembershipID {
					reg.Claims[i].CreatedTS = min(reg.Claims[i].CreatedTS, oc.CreatedTS)
				}
			}
		}
	}
	a.setRegister(key, old, reg, eff)
}

// selfRedaction applies the redaction an event that arrived already
// redacted (unsigned.redacted_because) carries, at the redaction's time
// (bounded like any sender's clock), unless that redaction is already
// known. It reports whether it applied it.
func (a *applier) selfRedaction(ev *rawevent.RawEvent, eff int64) bool {
	if ev.RedactedBy == "" || slices.Contains(a.st.Redacted, ev.EventID) {
		return false
	}
	at := ev.RedactedAt
	if at <= 0 || at > receivedAt(ev)+a.cfg.ClockSkewMS {
		at = eff
	}
	a.applyRedaction(&rawevent.RawEvent{EventID: ev.RedactedBy, Redacts: ev.EventID}, max(at, eff))
	return true
}

// lowerStickyStart handles a sticky event older than its register's: it
// does not replace the register, but if it belongs to the same membership
// (member.id) it may be the join the register's update followed, so the
// membership started no later than it. Without this, a join delivered after
// its update would leave a later start than the other order does.
func (a *applier) lowerStickyStart(key string, old *Register, ev *rawevent.RawEvent, parse parseFunc) {
	p, err := parse(ev, nil)
	if err != nil || p.Kind != RegisterJoin {
		return
	}
	var changed bool
	reg := *old
	reg.Claims = slices.Clone(old.Claims)
	for i := range reg.Claims {
		for _, c := range p.Claims {
			if c.MembershipID == reg.Claims[i].MembershipID && c.CreatedTS < reg.Claims[i].CreatedTS {
				reg.Claims[i].CreatedTS = c.CreatedTS
				changed = true
			}
		}
	}
	if changed {
		a.res.Stale = false
		a.setRegister(key, old, &reg, EffectiveTime(a.cfg, ev))
	}
}

// setRegister stores reg under key and reconciles every identity the old or
// the new value claims.
func (a *applier) setRegister(key string, old, reg *Register, at int64) {
	ids := a.st.scratch.ids[:0]
	if old != nil {
		for i := range old.Claims {
			id := old.Claims[i].ident()
			ids = append(ids, id)
			if !reg.claimsIdent(id) {
				a.st.unindex(id, key)
			}
		}
	}
	for i := range reg.Claims {
		id := reg.Claims[i].ident()
		ids = append(ids, id)
		if old == nil || !old.claimsIdent(id) {
			a.st.index(id, key)
		}
	}
	defer func() { a.st.scratch.ids = ids[:0] }()
	if a.st.Registers == nil {
		a.st.Registers = map[string]*Register{}
	}
	reg.key = key
	a.st.Registers[key] = reg
	a.st.changedRegister(key)
	a.st.gcTrack(a.cfg, key, reg)
	cause := events.ReasonLeave
	switch reg.Kind {
	case RegisterInvalid:
		cause = events.ReasonInvalid
	case RegisterRedacted:
		cause = events.ReasonRedacted
	}
	a.reconcile(ids, a.st.Clock, at, cause)
}

// sameOrOlder reports whether an event with effective time eff does not
// replace the current (ts, ev) of a slot or room member: it is older, or it
// is the same event received no earlier (a copy received earlier lowers the
// entry's time, so that the earliest received copy is kept whatever the
// order).
func sameOrOlder(eff int64, ev id.EventID, oldTS int64, oldEv id.EventID) bool {
	if ev == oldEv {
		return eff >= oldTS
	}
	return !newer(eff, ev, oldTS, oldEv)
}

func (a *applier) applySlot(ev *rawevent.RawEvent) {
	if !ev.IsState() {
		a.reject(ev.EventID, RejectNoStateKey, ev.Type+" without state_key")
		a.res.Stale = true
		return
	}
	slotID := *ev.StateKey
	eff := EffectiveTime(a.cfg, ev)
	if a.selfRedaction(ev, eff) {
		defer func() { a.res.Stale = false }()
	}
	old, ok := a.st.Slots[slotID]
	if ok && sameOrOlder(eff, ev.EventID, old.TS, old.EventID) {
		a.res.Stale = true
		return
	}
	open, err := ParseSlot(slotID, ev.Content)
	if err != nil {
		a.rejectErr(ev.EventID, err)
	}
	if slices.Contains(a.st.Redacted, ev.EventID) || (ok && old.EventID == ev.EventID && !old.Open) {
		open = false // redacted (or a copy of an event since redacted)
	}
	if a.st.Slots == nil {
		a.st.Slots = map[string]Slot{}
	}
	a.st.Slots[slotID] = Slot{Open: open, TS: eff, EventID: ev.EventID}
	a.st.changedSlot(slotID)
	a.reconcile(a.st.identsWhere(func(i ident) bool { return SlotID(i.app, i.call) == slotID }),
		a.st.Clock, eff, events.ReasonSlotClosed)
}

func (a *applier) applyRoomMember(ev *rawevent.RawEvent) {
	if !ev.IsState() {
		a.reject(ev.EventID, RejectNoStateKey, "m.room.member without state_key")
		a.res.Stale = true
		return
	}
	user := id.UserID(*ev.StateKey)
	eff := EffectiveTime(a.cfg, ev)
	old, ok := a.st.RoomMembers[user]
	if ok && sameOrOlder(eff, ev.EventID, old.TS, old.EventID) {
		a.res.Stale = true
		return
	}
	ms, err := ParseRoomMembership(ev.Content)
	if err != nil {
		// A membership event we cannot read leaves the user's membership as
		// it was: counting them out on a parse error would drop real calls.
		a.rejectErr(ev.EventID, err)
		a.res.Stale = true
		return
	}
	if a.st.RoomMembers == nil {
		a.st.RoomMembers = map[id.UserID]RoomMember{}
	}
	a.st.RoomMembers[user] = RoomMember{Membership: ms, TS: eff, EventID: ev.EventID}
	a.st.changedRoomMember(user)
	a.reconcile(a.st.identsWhere(func(i ident) bool { return i.user == user }),
		a.st.Clock, eff, events.ReasonLeftRoom)
}

// applyRedaction applies a redaction that happened at time at.
func (a *applier) applyRedaction(ev *rawevent.RawEvent, at int64) {
	target := ev.Redacts
	if target == "" { // room version 11 carries it in the content
		var c struct {
			Redacts id.EventID `json:"redacts"`
		}
		if json.Unmarshal(ev.Content, &c) == nil {
			target = c.Redacts
		}
	}
	if target == "" {
		a.reject(ev.EventID, RejectNoRedacts, "redaction without redacts")
		a.res.Stale = true
		return
	}
	if slices.Contains(a.st.Redacted, target) {
		a.res.Stale = true
		return
	}
	// Remember the redaction: the redacted event may arrive after it.
	a.st.Redacted = append(a.st.Redacted, target)
	if n := len(a.st.Redacted) - maxRedactedRemembered; n > 0 {
		a.st.Redacted = slices.Delete(a.st.Redacted, 0, n)
	}
	keys := make([]string, 0, 1)
	for k, r := range a.st.Registers {
		if r.EventID == target && r.Kind != RegisterRedacted {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		old := a.st.Registers[k]
		// The register keeps its place in the write order: a later event
		// for the key still replaces it, the redacted event itself does not.
		reg := &Register{EventID: old.EventID, Sender: old.Sender, TS: old.TS, Rank: old.Rank,
			ReceivedAt: old.ReceivedAt, Kind: RegisterRedacted}
		a.setRegister(k, old, reg, at)
	}
	for slotID, s := range a.st.Slots {
		if s.EventID == target && s.Open {
			s.Open = false
			a.st.Slots[slotID] = s
			a.st.changedSlot(slotID)
			a.reconcile(a.st.identsWhere(func(i ident) bool { return SlotID(i.app, i.call) == slotID }),
				a.st.Clock, at, events.ReasonRedacted)
		}
	}
}

// expireDue removes every member whose deadline is at or before the room's
// clock, one at a time in deadline order, each at its own deadline, so that
// a session ends at the moment its last member expired.
func (a *applier) expireDue() {
	for {
		e, ok := a.st.soonest()
		if !ok || e.at > a.st.Clock {
			return
		}
		s := a.st.Sessions[e.sess]
		ids := append(a.st.scratch.ids[:0], identOf(s, s.Members[e.key]))
		a.reconcile(ids, e.at, e.at, events.ReasonExpired)
		a.st.scratch.ids = ids[:0]
	}
}

func identOf(s *Session, m *SessionMember) ident {
	return ident{s.App, s.CallID, m.Member.UserID, m.MemberKey}
}

// eligible reports whether a claim counts at time t, and why not.
func (st *RoomState) eligible(c *Claim, t int64) (bool, events.Reason) {
	if c.Deadline <= t {
		return false, events.ReasonExpired
	}
	if rm, ok := st.RoomMembers[c.User]; ok && rm.Membership != "join" {
		return false, events.ReasonLeftRoom
	}
	if s, ok := st.Slots[SlotID(c.App, c.CallID)]; ok && !s.Open {
		return false, events.ReasonSlotClosed
	}
	return true, ""
}

// winner is the claim that represents an identity at time t: the eligible
// claim with the latest created_ts(), then origin_server_ts, then event id;
// nil when none is eligible (whyNotCounted says why a member's own claim
// does not count).
func (st *RoomState) winner(i ident, t int64) *Claim {
	var best *Claim
	for _, key := range st.claims[i] {
		reg := st.Registers[key]
		for ci := range reg.Claims {
			c := &reg.Claims[ci]
			if c.ident() != i {
				continue
			}
			if ok, _ := st.eligible(c, t); !ok {
				continue
			}
			if best == nil || c.CreatedTS > best.CreatedTS ||
				(c.CreatedTS == best.CreatedTS && (c.TS > best.TS || (c.TS == best.TS && c.EventID > best.EventID))) {
				best = c
			}
		}
	}
	return best
}

// whyNotCounted is why the claim behind member m of identity i does not
// count at t, or "" when no register holds that claim any more.
func (st *RoomState) whyNotCounted(i ident, m *events.Member, t int64) events.Reason {
	for _, key := range st.claims[i] {
		reg := st.Registers[key]
		for ci := range reg.Claims {
			c := &reg.Claims[ci]
			if c.ident() == i && c.EventID == m.EventID && c.MembershipID == m.MembershipID {
				_, why := st.eligible(c, t)
				return why
			}
		}
	}
	return ""
}

type change struct {
	id     ident
	old    *SessionMember
	new    *Claim
	reason events.Reason
}

// reconcile recomputes the given identities at time t and emits what
// changed, with event time at. Joins, rejoins and updates come first and
// leaves after, and a session ends only if it is empty once the whole input
// is applied: one input that swaps members never ends a session.
func (a *applier) reconcile(ids []ident, t, at int64, cause events.Reason) {
	if len(ids) == 0 {
		return
	}
	slices.SortFunc(ids, identLess)
	ids = slices.Compact(ids)
	changes := a.st.scratch.changes[:0]
	defer func() {
		clear(changes) // drop the pointers
		a.st.scratch.changes = changes[:0]
	}()
	for _, i := range ids {
		var old *SessionMember
		if s := a.st.Sessions[a.st.sessionKey(i.app, i.call)]; s != nil {
			old = a.st.member(s, i)
		}
		w := a.st.winner(i, t)
		if old == nil && w == nil {
			continue
		}
		// A member that leaves leaves for its own claim's reason when that
		// claim is still held but no longer counts (expired, left the room,
		// slot closed); otherwise (its event was replaced, redacted) for the
		// input's cause. Another claim of the identity that does not count,
		// one that expired long before, says nothing of why this one left.
		reason := cause
		if w == nil && old != nil {
			if why := a.st.whyNotCounted(i, &old.Member, t); why != "" {
				reason = why
			}
		}
		changes = append(changes, change{id: i, old: old, new: w, reason: reason})
	}
	if len(changes) == 0 {
		return
	}
	touched := map[string]*Session{}
	// First the joins, rejoins and updates.
	for _, c := range changes {
		if c.new == nil {
			continue
		}
		s := a.session(c.id, changes, t, at)
		sk := a.st.sessionKey(c.id.app, c.id.call)
		touched[sk] = s
		switch {
		case c.old == nil:
			a.join(s, sk, c.id, c.new, at)
		case c.old.Member.MembershipID != c.new.MembershipID:
			a.leave(s, sk, c.old, events.ReasonReplaced, at)
			a.join(s, sk, c.id, c.new, at)
		default:
			// The same membership: a new event of it (a refresh, a new call
			// intent or foci), or another register's claim of it taking
			// over. Subscribers see every change, the event id too, so
			// that the live session names the membership's current event.
			diff := memberChanges(&c.old.Member, c.new)
			if diff == 0 {
				continue
			}
			m := a.newMember(c.new)
			before := c.old.Member.ExpiresAt
			c.old.Member = *m
			a.st.changedMember(sk, c.old.mapKey())
			a.st.memberDeadline(sk, c.old.mapKey(), before, m.ExpiresAt)
			a.emitChanged(s, m, changedLists[diff], at)
		}
	}
	// Then the leaves. A session that empties ends with the reason of the
	// leave that emptied it.
	endReason := map[string]events.Reason{}
	for _, c := range changes {
		if c.new != nil {
			continue
		}
		k := a.st.sessionKey(c.id.app, c.id.call)
		s := a.st.Sessions[k]
		touched[k] = s
		a.leave(s, k, c.old, c.reason, at)
		endReason[k] = c.reason
	}
	keys := make([]string, 0, len(touched))
	for k, s := range touched {
		if len(s.Members) == 0 {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		s := touched[k]
		a.emit(events.KindSessionEnded, s, nil, endReason[k], at, &events.Summary{
			StartedAt: s.StartedAt, EndedAt: at, DurationMS: max(at-s.StartedAt, 0),
			PeakParticipants: s.Peak, DistinctUsers: len(s.SeenUsers), Joins: s.Joins,
		})
		delete(a.st.Sessions, k)
		a.st.endedSession(k, s)
		a.rememberEnd(k, at)
	}
}

// session returns the live session of an identity, starting it when needed
// (the members are evaluated at t). A new session starts at the earliest
// created_ts() among the members joining it in this input, but never
// before the end of the previous session of its key (a membership restored
// when its user rejoins the room keeps its created_ts(), from before that
// end), nor more than the collection horizon before t (gc.go: the end of a
// previous session is forgotten past it; only a sticky membership whose
// start an older event lowered can start earlier). Its id hashes its key
// and the seq of its session_started, which no other event of the room
// ever has: an id names one session forever.
func (a *applier) session(i ident, changes []change, t, at int64) *Session {
	k := a.st.sessionKey(i.app, i.call)
	if s := a.st.Sessions[k]; s != nil {
		return s
	}
	var start int64
	first := true
	for ci := range changes {
		c := &changes[ci]
		if c.new == nil || c.id.app != i.app || c.id.call != i.call {
			continue
		}
		if first || c.new.CreatedTS < start {
			start, first = c.new.CreatedTS, false
		}
	}
	if end, ok := a.st.LastEnded[k]; ok {
		start = max(start, end)
	}
	start = max(start, t-gcHorizon(a.cfg))
	s := &Session{
		App: i.app, CallID: i.call, StartedAt: start,
		ID:      eventcodec.SessionID(a.st.RoomID, i.app, i.call, a.st.Seq+1), // the seq emit gives session_started
		Members: map[string]*SessionMember{}, UserDevices: map[id.UserID]int{}, SeenUsers: map[id.UserID]bool{},
	}
	if a.st.Sessions == nil {
		a.st.Sessions = map[string]*Session{}
	}
	a.st.Sessions[k] = s
	a.st.changedSession(k)
	a.emit(events.KindSessionStarted, s, nil, "", at, nil)
	return s
}

// join adds the member claimed by c to session s (key sk).
func (a *applier) join(s *Session, sk string, i ident, c *Claim, at int64) {
	m := a.newMember(c)
	mk := i.memberKey()
	s.Members[mk] = &SessionMember{Member: *m, MemberKey: i.key, key: mk}
	a.st.changedMember(sk, mk)
	a.st.changedSession(sk) // Joins and Peak
	if !s.SeenUsers[m.UserID] {
		a.st.changedSeenUser(sk, m.UserID)
	}
	a.st.memberDeadline(sk, mk, 0, m.ExpiresAt)
	s.UserDevices[m.UserID]++
	s.SeenUsers[m.UserID] = true
	s.Joins++
	s.Peak = max(s.Peak, len(s.Members))
	a.emit(events.KindMemberJoined, s, m, "", at, nil)
}

func (a *applier) leave(s *Session, sk string, old *SessionMember, reason events.Reason, at int64) {
	mk := old.mapKey()
	delete(s.Members, mk)
	a.st.changedMember(sk, mk)
	if s.UserDevices[old.Member.UserID]--; s.UserDevices[old.Member.UserID] <= 0 {
		delete(s.UserDevices, old.Member.UserID)
	}
	m := a.newMember(nil)
	*m = old.Member
	a.emit(events.KindMemberLeft, s, m, reason, at, nil)
}

// newMember returns a new member for an event (of claim c, if not nil).
// Members are allocated a few at a time: one allocation serves the events
// of an ordinary input.
func (a *applier) newMember(c *Claim) *events.Member {
	if len(a.members) == cap(a.members) {
		a.members = make([]events.Member, 0, 2)
	}
	a.members = a.members[:len(a.members)+1]
	m := &a.members[len(a.members)-1]
	if c != nil {
		*m = toMember(c)
	}
	return m
}

func (a *applier) emit(kind events.Kind, s *Session, m *events.Member, reason events.Reason, at int64, sum *events.Summary) {
	a.st.Seq++
	if a.res.Events == nil {
		a.res.Events = make([]events.SessionEvent, 0, 2)
	}
	a.res.Events = append(a.res.Events, events.SessionEvent{
		V: events.SchemaVersion, ID: eventID(a.st.RoomID, a.st.Seq), Seq: a.st.Seq, Kind: kind,
		SessionID: s.ID, RoomID: a.st.RoomID, Application: s.App, CallID: s.CallID, At: at,
		Member: m, Reason: reason, Participants: len(s.Members), Users: s.users(), Summary: sum,
	})
}

// emitChanged emits the member_updated of member m of session s, with the
// names of the fields that changed.
func (a *applier) emitChanged(s *Session, m *events.Member, changed []string, at int64) {
	a.emit(events.KindMemberUpdated, s, m, "", at, nil)
	a.res.Events[len(a.res.Events)-1].Changed = changed
}

func toMember(c *Claim) events.Member {
	return events.Member{
		UserID: c.User, DeviceID: c.Device, MembershipID: c.MembershipID, JoinedAt: c.CreatedTS,
		ExpiresAt: c.Deadline, FocusActive: c.FocusActive, FociPreferred: c.FociPref, CallIntent: c.CallIntent,
		Format: c.Format, EventID: c.EventID,
	}
}

// changeNames are the member fields that can change within a membership
// (user, device and membership id cannot), in Member's field order; bit i
// of a change set stands for changeNames[i].
var changeNames = [...]string{events.ChangeJoinedAt, events.ChangeExpiresAt, events.ChangeFocusActive,
	events.ChangeFociPreferred, events.ChangeCallIntent, events.ChangeFormat, events.ChangeEventID}

// changedLists holds, for every change set, its names: the lists are
// shared by the events, so that a member_updated allocates nothing for
// them (full slice expressions: an append copies).
var changedLists = func() (out [1 << len(changeNames)][]string) {
	for set := range out {
		var l []string
		for i, n := range changeNames {
			if set&(1<<i) != 0 {
				l = append(l, n)
			}
		}
		out[set] = l[:len(l):len(l)]
	}
	return out
}()

// memberChanges is the set of fields (changeNames) in which claim c of a
// membership differs from member a of the same membership.
func memberChanges(a *events.Member, c *Claim) uint {
	var set uint
	for i, changed := range [...]bool{
		a.JoinedAt != c.CreatedTS, a.ExpiresAt != c.Deadline,
		string(a.FocusActive) != string(c.FocusActive), string(a.FociPreferred) != string(c.FociPref),
		a.CallIntent != c.CallIntent, a.Format != c.Format, a.EventID != c.EventID,
	} {
		if changed {
			set |= 1 << i
		}
	}
	return set
}

// buildIndex derives the claim index after the state was decoded.
func (st *RoomState) buildIndex() {
	if st.claims != nil {
		return
	}
	st.claims = map[ident][]string{}
	for key, reg := range st.Registers {
		for i := range reg.Claims {
			st.index(reg.Claims[i].ident(), key)
		}
	}
}

func (st *RoomState) index(i ident, key string) {
	if !slices.Contains(st.claims[i], key) {
		st.claims[i] = append(st.claims[i], key)
	}
}

func (st *RoomState) unindex(i ident, key string) {
	keys := slices.DeleteFunc(st.claims[i], func(k string) bool { return k == key })
	if len(keys) == 0 {
		delete(st.claims, i)
	} else {
		st.claims[i] = keys
	}
}

// identsWhere lists the claimed identities matching f, plus live members
// matching f that no register claims any more.
func (st *RoomState) identsWhere(f func(ident) bool) []ident {
	var out []ident
	for i := range st.claims {
		if f(i) {
			out = append(out, i)
		}
	}
	for _, s := range st.Sessions {
		for _, m := range s.Members {
			if i := identOf(s, m); f(i) {
				out = append(out, i)
			}
		}
	}
	return out
}
