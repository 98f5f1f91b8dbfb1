package rtc

// Registers are collected once nothing can ever count through their key
// again, so that a room's state holds the keys of recent memberships, not
// of every device that ever joined a call in it.
//
// The rule: a register is dropped once both its rank and the
// origin_server_ts its event states are more than MaxExpiresMS +
// ClockSkewMS behind the room's clock (gcAt). It counts for nobody: a
// claim's deadline is at most its created_ts() (clamped to the effective
// time, at most the rank) plus MaxExpiresMS, so every claim of it has
// expired. And dropping it changes no session event: an event of that key
// that arrives later and ranks below it (the only kind the register would
// have refused as stale) makes claims that expired as long ago, which count
// for nobody either; it takes the key until it is collected in turn. A
// later event that ranks above it takes the key either way. The
// origin_server_ts matters for another copy of the same event: a copy
// received later may rank higher than the register (an origin_server_ts
// not believed at the first receipt, because too far ahead of it, may be
// believed at a later one), which the register would have refused as the
// later receipt of an event it holds; once that timestamp too is past the
// horizon, any copy ranks at most there and its claims expired. Only what a
// Result says of such a late event differs (applied, not stale), and
// `rtcctl room` no longer shows the collected key.
//
// Only state-key registers are collected. A sticky key's register carries
// its membership's start across events (an older event of the same member.id
// lowers it: lowerStickyStart), which collecting it would forget; sticky
// events live at most an hour and are rare, so their keys are kept.
//
// Collection is incremental: every register has an entry in a heap ordered
// by the clock at which it becomes collectable (built on first use after a
// load, an entry per new register value), and each Apply takes off what is
// due, so it costs O(log registers) per changed register.

// gcHorizon is how far behind the clock a register must be for it to be
// collected.
func gcHorizon(cfg Config) int64 { return cfg.MaxExpiresMS + cfg.ClockSkewMS }

// gcAt is the clock past which reg is collected.
func gcAt(cfg Config, reg *Register) int64 { return max(reg.Rank, reg.TS) + gcHorizon(cfg) }

// gcEntry says that the register of key is collectable once the clock is
// past at (if it still ranks as it did).
type gcEntry struct {
	at  int64
	key string
}

func (a gcEntry) Less(b gcEntry) bool { return a.at < b.at }

type gcHeap = minHeap[gcEntry]

// collectable reports whether the register under key is ever collected
// (a state key's, not a sticky key's: see above).
func collectable(key string) bool { return len(key) > 0 && key[0] == 's' }

// gcTrack records a register's new value (after setRegister).
func (st *RoomState) gcTrack(cfg Config, key string, reg *Register) {
	if !st.gcBuilt || !collectable(key) {
		return // built from the registers on first use
	}
	st.gcQueue.push(gcEntry{at: gcAt(cfg, reg), key: key})
	if len(st.gcQueue) > 64 && len(st.gcQueue) > 2*len(st.Registers) {
		st.gcBuilt = false // mostly stale entries: rebuild on next use
	}
}

// collectRegisters drops the registers that are collectable at the clock.
func (a *applier) collectRegisters() {
	if a.cfg.keepRegisters {
		return
	}
	a.collectEnds()
	st := a.st
	if !st.gcBuilt {
		clear(st.gcQueue) // drop the strings
		st.gcQueue = st.gcQueue[:0]
		for key, reg := range st.Registers {
			if collectable(key) {
				st.gcQueue.push(gcEntry{at: gcAt(a.cfg, reg), key: key})
			}
		}
		st.gcBuilt = true
	}
	for len(st.gcQueue) > 0 && st.gcQueue[0].at < st.Clock {
		key := st.gcQueue[0].key
		st.gcQueue.pop()
		reg := st.Registers[key]
		if reg == nil || gcAt(a.cfg, reg) >= st.Clock {
			continue // gone already, or a newer value with its own entry
		}
		for i := range reg.Claims {
			st.unindex(reg.Claims[i].ident(), key)
		}
		delete(st.Registers, key)
		st.changedRegister(key)
	}
}

// The end of the last session of each session key (RoomState.LastEnded)
// is collected past the same horizon: an entry is dropped once its
// ended_at is more than MaxExpiresMS + ClockSkewMS behind the room's
// clock. A session that starts later starts no earlier than that horizon
// before the clock (applier.session), which is after the forgotten end:
// so collecting it changes no session event. (Without that bound, only a
// sticky membership whose start an older event lowered could start that
// early: every other claim that counts has a created_ts() less than
// MaxExpiresMS before the clock, since its deadline is at most that much
// after it.)

// rememberEnd records that the session of key k ended at time at.
func (a *applier) rememberEnd(k string, at int64) {
	st := a.st
	if st.LastEnded == nil {
		st.LastEnded = map[string]int64{}
	}
	st.LastEnded[k] = at
	st.changedLastEnded(k)
	if st.endedBuilt {
		st.endedQueue.push(gcEntry{at: at + gcHorizon(a.cfg), key: k})
		if len(st.endedQueue) > 64 && len(st.endedQueue) > 2*len(st.LastEnded) {
			st.endedBuilt = false // mostly stale entries: rebuild on next use
		}
	}
}

// collectEnds drops the ends that are past the horizon at the clock.
func (a *applier) collectEnds() {
	st := a.st
	if !st.endedBuilt {
		clear(st.endedQueue) // drop the strings
		st.endedQueue = st.endedQueue[:0]
		for k, at := range st.LastEnded {
			st.endedQueue = append(st.endedQueue, gcEntry{at: at + gcHorizon(a.cfg), key: k})
		}
		st.endedQueue.heapify()
		st.endedBuilt = true
	}
	for len(st.endedQueue) > 0 && st.endedQueue[0].at < st.Clock {
		k := st.endedQueue[0].key
		st.endedQueue.pop()
		if at, ok := st.LastEnded[k]; !ok || at+gcHorizon(a.cfg) >= st.Clock {
			continue // gone already, or a later end with its own entry
		}
		delete(st.LastEnded, k)
		st.changedLastEnded(k)
	}
}
