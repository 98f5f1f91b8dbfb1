package rtc

import (
	"fmt"

	"maunium.net/go/mautrix/id"
)

// Changes lists the parts of a RoomState that Apply changed since change
// tracking started or the last TakeChanges. A store that keeps a large room
// as many small records (one per register, per session member, ...) writes
// only these, so that an input's cost does not grow with the room.
//
// A key present in a set means "changed": the part's current value is in
// the state, and a part no longer in the state was deleted. Sets with
// nothing in them may be nil.
type Changes struct {
	Registers   map[string]struct{}    // register keys (RoomState.Registers)
	RoomMembers map[id.UserID]struct{} // users (RoomState.RoomMembers)
	Slots       map[string]struct{}    // slot ids (RoomState.Slots)
	// Sessions are the sessions whose own fields changed, that started or
	// that ended (RoomState.Sessions keys).
	Sessions map[string]struct{}
	// Members are the session members that joined, changed or left.
	Members map[MemberRef]struct{}
	// SeenUsers are the users a session saw for the first time.
	SeenUsers map[SeenUserRef]struct{}
	// Ended holds the sessions that ended, as they were when they ended
	// (several for one key when a session ended, started again and ended
	// again), so that a store can delete every part it kept of them.
	Ended map[string][]*Session
	// LastEnded are the session keys whose entry in RoomState.LastEnded
	// was set or collected.
	LastEnded map[string]struct{}
}

// MemberRef names a member of a session: RoomState.Sessions[Session].Members[Member].
type MemberRef struct{ Session, Member string }

// SeenUserRef names an entry of RoomState.Sessions[Session].SeenUsers.
type SeenUserRef struct {
	Session string
	User    id.UserID
}

// Empty reports whether nothing changed.
func (c *Changes) Empty() bool {
	return c == nil || len(c.Registers)+len(c.RoomMembers)+len(c.Slots)+len(c.Sessions)+len(c.Members)+
		len(c.SeenUsers)+len(c.LastEnded) == 0
}

// TrackChanges makes every later Apply record what it changes, until
// TakeChanges collects it. Tracking is off by default: the pure reducer
// (tests, rtcctl simulate) does not pay for it.
func (st *RoomState) TrackChanges() { st.tracking = true }

// TakeChanges returns what changed since tracking started or the last call,
// and starts a new, empty set. It returns nil when tracking is off, and an
// empty set when nothing changed.
func (st *RoomState) TakeChanges() *Changes {
	if !st.tracking {
		return nil
	}
	c := st.changes
	st.changes = nil // allocated again on the next change: idle rooms hold no sets
	if c == nil {
		c = &Changes{}
	}
	return c
}

// recorder returns the set being recorded, nil when tracking is off.
func (st *RoomState) recorder() *Changes {
	if !st.tracking {
		return nil
	}
	if st.changes == nil {
		st.changes = &Changes{}
	}
	return st.changes
}

func (st *RoomState) changedRegister(key string) {
	if c := st.recorder(); c != nil {
		if c.Registers == nil {
			c.Registers = map[string]struct{}{}
		}
		c.Registers[key] = struct{}{}
	}
}

func (st *RoomState) changedRoomMember(u id.UserID) {
	if c := st.recorder(); c != nil {
		if c.RoomMembers == nil {
			c.RoomMembers = map[id.UserID]struct{}{}
		}
		c.RoomMembers[u] = struct{}{}
	}
}

func (st *RoomState) changedSlot(slot string) {
	if c := st.recorder(); c != nil {
		if c.Slots == nil {
			c.Slots = map[string]struct{}{}
		}
		c.Slots[slot] = struct{}{}
	}
}

func (st *RoomState) changedSession(sess string) {
	if c := st.recorder(); c != nil {
		if c.Sessions == nil {
			c.Sessions = map[string]struct{}{}
		}
		c.Sessions[sess] = struct{}{}
	}
}

func (st *RoomState) endedSession(sess string, s *Session) {
	st.changedSession(sess)
	if c := st.recorder(); c != nil {
		if c.Ended == nil {
			c.Ended = map[string][]*Session{}
		}
		c.Ended[sess] = append(c.Ended[sess], s)
	}
}

func (st *RoomState) changedLastEnded(sess string) {
	if c := st.recorder(); c != nil {
		if c.LastEnded == nil {
			c.LastEnded = map[string]struct{}{}
		}
		c.LastEnded[sess] = struct{}{}
	}
}

func (st *RoomState) changedMember(sess, member string) {
	if c := st.recorder(); c != nil {
		if c.Members == nil {
			c.Members = map[MemberRef]struct{}{}
		}
		c.Members[MemberRef{sess, member}] = struct{}{}
	}
}

func (st *RoomState) changedSeenUser(sess string, u id.UserID) {
	if c := st.recorder(); c != nil {
		if c.SeenUsers == nil {
			c.SeenUsers = map[SeenUserRef]struct{}{}
		}
		c.SeenUsers[SeenUserRef{sess, u}] = struct{}{}
	}
}

// SessionKey is the key of a session in RoomState.Sessions.
func SessionKey(app, callID string) string { return sessionKey(app, callID) }

// RebuildDerived recomputes what a store need not keep because it follows
// from the rest: each session's devices per user, from its members. A store
// that loads a state from parts calls it before the first Apply.
func (st *RoomState) RebuildDerived() {
	for _, s := range st.Sessions {
		s.UserDevices = map[id.UserID]int{}
		for _, m := range s.Members {
			s.UserDevices[m.Member.UserID]++
		}
	}
	st.heapBuilt = false
	st.gcBuilt = false
	st.endedBuilt = false
	st.claims = nil
}

// RebuildMembers recomputes the members of the live sessions from the
// registers: each claimed identity whose winning claim counts at the room's
// clock is a member of its session, exactly as that claim says. Apply keeps
// the members equal to that after every input (the reducer's invariant,
// checked by its tests), so a store may keep the sessions without their
// members (only their own fields and seen users) and call this after
// loading; the registers are the source. It fails when a winning claim's
// session is not live, or a live session ends up empty: parts that do not
// belong together.
func (st *RoomState) RebuildMembers() error {
	st.claims = nil
	st.buildIndex()
	for _, s := range st.Sessions {
		s.Members = map[string]*SessionMember{}
	}
	for i := range st.claims {
		w := st.winner(i, st.Clock)
		if w == nil {
			continue
		}
		s := st.Sessions[st.sessionKey(i.app, i.call)]
		if s == nil {
			return fmt.Errorf("rebuild members: %s/%s counts in %s %q, which is not live", i.user, i.key, i.app, i.call)
		}
		mk := i.memberKey()
		s.Members[mk] = &SessionMember{Member: toMember(w), MemberKey: i.key, key: mk}
	}
	for k, s := range st.Sessions {
		if len(s.Members) == 0 {
			return fmt.Errorf("rebuild members: live session %q has no member", k)
		}
	}
	st.RebuildDerived()
	return nil
}
