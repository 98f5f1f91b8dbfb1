package roomstore

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/jsutil"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// Options bound the representation. The zero value means the defaults.
type Options struct {
	// InlineMaxRegisters and InlineMaxBytes bound an inline room: past
	// either, the room is split into parts (and stays split).
	InlineMaxRegisters int
	InlineMaxBytes     int
	// RedoInlineMax bounds a redo record kept in the header; a larger one
	// goes to chunks of ChunkSize bytes.
	RedoInlineMax int
	ChunkSize     int
}

// Defaults: a room with up to 64 registers (about 60 devices) is one value
// of at most ~64 KiB before compression; every value written stays under
// ~300 KiB, far below the 1 MiB max_payload.
const (
	DefaultInlineMaxRegisters = 64
	DefaultInlineMaxBytes     = 64 << 10
	DefaultRedoInlineMax      = 192 << 10
	DefaultChunkSize          = 192 << 10
)

func (o Options) withDefaults() Options {
	if o.InlineMaxRegisters <= 0 {
		o.InlineMaxRegisters = DefaultInlineMaxRegisters
	}
	if o.InlineMaxBytes <= 0 {
		o.InlineMaxBytes = DefaultInlineMaxBytes
	}
	if o.RedoInlineMax <= 0 {
		o.RedoInlineMax = DefaultRedoInlineMax
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	return o
}

// Room is a room as a worker holds it between commits.
type Room struct {
	Key     string // rawevent.RoomKey: the header's key
	State   *rtc.RoomState
	LastIn  uint64
	TimerAt int64
	Split   bool
	// Rev is the header's KV revision (0: never stored).
	Rev uint64
	// PartRevs holds the last revision of every split part key, deleted ones
	// included: part writes are revision-checked too, so that a worker that
	// lost the room cannot overwrite what the new owner wrote.
	PartRevs map[string]uint64
	// Redo is the redo record of the stored header: the effects of the last
	// commit, which may not have been carried out (nil: none, or known done).
	Redo *Redo

	// Where the room's effects stand, as far as this worker knows; not
	// stored (a loaded room learns them on first use). KeyRevs: the last
	// revision of each live-session key and timer subject of the room this
	// worker wrote or looked up (absent: unknown). EventsSeq: the stream
	// sequence of the room's last event in RTC_EVENTS, when EventsSeqKnown.
	// Fresh: the room was never stored, so none of its keys and events exist
	// yet (an unknown key is absent: no need to look it up).
	KeyRevs        map[string]uint64
	EventsSeq      uint64
	EventsSeqKnown bool
	Fresh          bool

	// parts are the encoded parts of an inline room, kept so that a commit
	// encodes only the parts its inputs changed (nil: to be built from the
	// state, or a split room); partBytes is their total size.
	parts     map[string][]byte
	partBytes int
}

// New returns the empty room, not stored yet.
func New(room id.RoomID) *Room {
	st := rtc.NewRoomState(room)
	st.TrackChanges()
	return &Room{Key: rawevent.RoomKey(room), State: st, PartRevs: map[string]uint64{},
		EventsSeqKnown: true, Fresh: true}
}

// Load reads a room from the rtc_rooms bucket: its header, and its parts if
// it is split. The parts the header's redo record names are overlaid, so
// the state is the one the last commit made even if its parts were not all
// written. A room never stored comes back New.
func Load(ctx context.Context, kv jetstream.KeyValue, room id.RoomID) (*Room, error) {
	key := rawevent.RoomKey(room)
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return New(room), nil
	}
	if err != nil {
		return nil, fmt.Errorf("load room %s: %w", key, err)
	}
	h, err := DecodeHeader(e.Value())
	if err != nil {
		return nil, fmt.Errorf("load room %s: %w", key, err)
	}
	rm := &Room{Key: key, LastIn: h.LastIn, TimerAt: h.TimerAt, Split: h.Split, Rev: e.Revision(),
		PartRevs: map[string]uint64{}}
	if rm.Redo, err = decodeRedo(h.RedoData); err != nil {
		return nil, fmt.Errorf("load room %s: %w", key, err)
	}
	if h.RedoChunks > 0 {
		if rm.Redo, err = loadRedoChunks(ctx, kv, key, h.LastIn, h.RedoChunks); err != nil {
			return nil, fmt.Errorf("load room %s: %w", key, err)
		}
	}
	if h.Inline != nil { // version 1
		rm.State = h.Inline
		if rm.State.RoomID == "" {
			rm.State.RoomID = room
		}
	} else {
		var parts map[string][]byte
		if h.Split {
			if parts, err = loadParts(ctx, kv, key, rm.PartRevs); err != nil {
				return nil, fmt.Errorf("load room %s: %w", key, err)
			}
		} else {
			parts = make(map[string][]byte, len(h.Parts))
			for _, p := range h.Parts {
				parts[p.Key] = p.Value
				rm.partBytes += len(p.Value)
			}
			rm.parts = parts
		}
		if rm.Redo != nil {
			for _, p := range rm.Redo.Parts {
				if p.Value == nil {
					delete(parts, p.Key)
				} else {
					parts[p.Key] = p.Value
				}
			}
		}
		st := &rtc.RoomState{RoomID: h.RoomID, Clock: h.Clock, Seq: h.Seq, Redacted: h.Redacted}
		if st.RoomID == "" {
			st.RoomID = room
		}
		if err := assemble(st, key, parts); err != nil {
			return nil, fmt.Errorf("load room %s: %w", key, err)
		}
		if err := st.RebuildMembers(); err != nil {
			return nil, fmt.Errorf("load room %s: %w: %w", key, ErrFormat, err)
		}
		rm.State = st
	}
	rm.State.RebuildDerived()
	rm.State.TrackChanges()
	return rm, nil
}

// loadRedoChunks reads a chunked redo record. Chunks of another batch mean
// a later commit was being prepared, which only starts once this one's
// redo was carried out: then there is nothing to redo (nil).
func loadRedoChunks(ctx context.Context, kv jetstream.KeyValue, key string, batch uint64, n int) (*Redo, error) {
	var data []byte
	for i := range n {
		e, err := kv.Get(ctx, redoChunkKey(key, i))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("redo chunk %d: %w", i, err)
		}
		var c redoChunk
		if err := wire.Unmarshal(e.Value(), &c); err != nil {
			return nil, fmt.Errorf("%w: redo chunk %d: %w", ErrFormat, i, err)
		}
		if c.Batch != batch || c.Index != i || c.Count != n {
			return nil, nil
		}
		data = append(data, c.Data...)
	}
	return decodeRedo(data)
}

// loadParts reads every part of a split room (key -> value) with a
// filtered watch, which streams the latest value of each key, and records
// every key's revision (deletes too) in revs.
func loadParts(ctx context.Context, kv jetstream.KeyValue, key string, revs map[string]uint64) (map[string][]byte, error) {
	w, err := kv.WatchFiltered(ctx, []string{PartsFilter(key)})
	if err != nil {
		return nil, fmt.Errorf("watch parts: %w", err)
	}
	// Stopping deletes the watch's consumer: a read-only user (rtcctl) may
	// not, and would wait for an answer that never comes. Do not wait.
	defer func() { go func() { _ = w.Stop() }() }()
	parts := map[string][]byte{}
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read parts: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("read parts: watcher stopped")
			}
			if e == nil {
				return parts, nil
			}
			k := e.Key()
			if partKind(key, k) == kindRedo {
				continue
			}
			revs[k] = e.Revision()
			if e.Operation() == jetstream.KeyValuePut {
				parts[k] = e.Value()
			} else {
				delete(parts, k)
			}
		}
	}
}

// assemble fills a state from its parts.
func assemble(st *rtc.RoomState, key string, parts map[string][]byte) error {
	st.Registers = map[string]*rtc.Register{}
	st.RoomMembers = map[id.UserID]rtc.RoomMember{}
	st.Slots = map[string]rtc.Slot{}
	st.Sessions = map[string]*rtc.Session{}
	// Sessions first: seen users attach to them.
	var later []string
	for k, v := range parts {
		var err error
		switch partKind(key, k) {
		case kindRegister:
			var p registerPart
			if err = wire.Unmarshal(v, &p); err == nil {
				st.Registers[p.Key] = p.Reg
			}
		case kindRoomMember:
			var p roomMemberPart
			if err = wire.Unmarshal(v, &p); err == nil {
				st.RoomMembers[p.User] = p.M
			}
		case kindSlot:
			var p slotPart
			if err = wire.Unmarshal(v, &p); err == nil {
				st.Slots[p.Slot] = p.S
			}
		case kindSession:
			var p sessionPart
			if err = wire.Unmarshal(v, &p); err == nil {
				st.Sessions[p.Key] = &rtc.Session{App: p.App, CallID: p.CallID, ID: p.ID, StartedAt: p.StartedAt,
					Peak: p.Peak, Joins: p.Joins, Members: map[string]*rtc.SessionMember{},
					UserDevices: map[id.UserID]int{}, SeenUsers: map[id.UserID]bool{}}
			}
		case kindSeenUser:
			later = append(later, k)
		case kindLastEnded:
			var p lastEndedPart
			if err = wire.Unmarshal(v, &p); err == nil {
				if st.LastEnded == nil {
					st.LastEnded = map[string]int64{}
				}
				st.LastEnded[p.Key] = p.At
			}
		default:
			err = errors.New("unknown part kind")
		}
		if err != nil {
			return fmt.Errorf("%w: part %s: %w", ErrFormat, k, err)
		}
	}
	for _, k := range later {
		var p seenUserPart
		if err := wire.Unmarshal(parts[k], &p); err != nil {
			return fmt.Errorf("%w: part %s: %w", ErrFormat, k, err)
		}
		if s := st.Sessions[p.Session]; s != nil {
			s.SeenUsers[p.User] = true
		}
	}
	return nil
}

// Commit is a room's commit, ready to publish: the redo chunks (stored and
// acknowledged before the header), the header (revision-checked: the commit
// point), and the effects (Redo) to carry out after it.
type Commit struct {
	Chunks []*nats.Msg
	Header *nats.Msg
	Redo   *Redo

	split   bool
	lastIn  uint64
	timerAt int64
}

// Prepare builds the commit of the inputs applied to the room since its last
// commit: lastIn is the last of them, timerAt the deadline the room's timer
// will be armed for, outbox their session events. It collects the state's
// changes: call it once per commit.
func (rm *Room) Prepare(lastIn uint64, timerAt int64, outbox []events.SessionEvent, o Options) (*Commit, error) {
	o = o.withDefaults()
	st := rm.State
	changes := st.TakeChanges()
	h := &Header{LastIn: lastIn, TimerAt: timerAt}
	redo, err := newRedo(lastIn, outbox)
	if err != nil {
		return nil, fmt.Errorf("encode outbox of room %s: %w", rm.Key, err)
	}
	// The encoded record is only copied (into the header or its chunks):
	// it is encoded into a pooled buffer.
	scratchBuf := scratch.Get().(*[]byte)
	rb := redo.AppendMsgpack((*scratchBuf)[:0])
	defer func() { putScratch(scratchBuf, rb) }()
	c := &Commit{Redo: redo, lastIn: lastIn, timerAt: timerAt}
	// The redo record goes into the header when it is small, and to chunks
	// written before the header otherwise. Its parts are known only once
	// the form is: an inline room that outgrows its bounds is split, and
	// then writes every part.
	setRedo := func() error {
		if len(rb) <= o.RedoInlineMax {
			h.RedoData = rb
			return nil
		}
		n := (len(rb) + o.ChunkSize - 1) / o.ChunkSize
		h.RedoChunks = n
		for i := range n {
			part := rb[i*o.ChunkSize : min((i+1)*o.ChunkSize, len(rb))]
			cb, err := wire.Marshal(&redoChunk{V: FormatVersion, Batch: lastIn, Index: i, Count: n, Data: part})
			if err != nil {
				return fmt.Errorf("encode redo chunk of room %s: %w", rm.Key, err)
			}
			c.Chunks = append(c.Chunks, jsutil.KVPut(rawevent.BucketRooms, redoChunkKey(rm.Key, i), cb))
		}
		return nil
	}
	h.RoomID, h.Clock, h.Seq, h.Redacted = st.RoomID, st.Clock, st.Seq, st.Redacted
	// finish places the redo record and encodes the header, the commit point.
	finish := func() (*Commit, error) {
		if err := setRedo(); err != nil {
			return nil, err
		}
		hb, err := EncodeHeader(h)
		if err != nil {
			return nil, fmt.Errorf("room %s: %w", rm.Key, err)
		}
		c.Header = jsutil.ExpectRevision(jsutil.KVPut(rawevent.BucketRooms, rm.Key, hb), rm.Rev)
		return c, nil
	}
	var all []Part // every part, when the room becomes split
	if !rm.Split {
		if rm.parts == nil { // a new room, or a version-1 record: encode every part once
			rm.parts, rm.partBytes = map[string][]byte{}, 0
			changes = allChanges(st)
		}
		changed, err := partsOf(rm.Key, st, changes)
		if err != nil {
			return nil, err
		}
		for _, p := range changed {
			rm.partBytes += len(p.Value) - len(rm.parts[p.Key])
			if p.Value == nil {
				delete(rm.parts, p.Key)
			} else {
				rm.parts[p.Key] = p.Value
			}
		}
		keys := make([]string, 0, len(rm.parts))
		for k := range rm.parts {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		ps := make([]Part, len(keys))
		for i, k := range keys {
			ps[i] = Part{Key: k, Value: rm.parts[k]}
		}
		if len(st.Registers) <= o.InlineMaxRegisters && rm.partBytes <= o.InlineMaxBytes {
			h.Parts = ps
			return finish()
		}
		all = ps // becomes split: every part goes to its own key
	}
	// Split: the state's parts in keys of their own.
	c.split = true
	if all != nil {
		redo.Parts = all
	} else if redo.Parts, err = partsOf(rm.Key, st, changes); err != nil {
		return nil, err
	}
	rb = redo.AppendMsgpack(rb[:0])
	h.Split = true
	return finish()
}

// Committed records that the commit's header was stored at revision rev.
func (rm *Room) Committed(c *Commit, rev uint64) {
	rm.Rev, rm.LastIn, rm.TimerAt, rm.Split, rm.Redo = rev, c.lastIn, c.timerAt, c.split, c.Redo
	if c.split {
		rm.parts, rm.partBytes = nil, 0 // a split room keeps only revisions
	}
}

// PartMsgs are the revision-checked writes of the redo record's parts.
func (rm *Room) PartMsgs(r *Redo) []*nats.Msg {
	out := make([]*nats.Msg, 0, len(r.Parts))
	for _, p := range r.Parts {
		var m *nats.Msg
		if p.Value == nil {
			m = jsutil.KVDel(rawevent.BucketRooms, p.Key)
		} else {
			m = jsutil.KVPut(rawevent.BucketRooms, p.Key, p.Value)
		}
		out = append(out, jsutil.ExpectRevision(m, rm.PartRevs[p.Key]))
	}
	return out
}

// PartWritten records a part's new revision.
func (rm *Room) PartWritten(key string, rev uint64) { rm.PartRevs[key] = rev }

// allChanges names every part of the state: what a room that becomes split
// writes.
func allChanges(st *rtc.RoomState) *rtc.Changes {
	c := &rtc.Changes{Registers: map[string]struct{}{}, RoomMembers: map[id.UserID]struct{}{}, Slots: map[string]struct{}{},
		Sessions: map[string]struct{}{}, Members: map[rtc.MemberRef]struct{}{}, SeenUsers: map[rtc.SeenUserRef]struct{}{}}
	for k := range st.Registers {
		c.Registers[k] = struct{}{}
	}
	for u := range st.RoomMembers {
		c.RoomMembers[u] = struct{}{}
	}
	for s := range st.Slots {
		c.Slots[s] = struct{}{}
	}
	for sk, s := range st.Sessions {
		c.Sessions[sk] = struct{}{}
		for u := range s.SeenUsers {
			c.SeenUsers[rtc.SeenUserRef{Session: sk, User: u}] = struct{}{}
		}
	}
	c.LastEnded = make(map[string]struct{}, len(st.LastEnded))
	for sk := range st.LastEnded {
		c.LastEnded[sk] = struct{}{}
	}
	return c
}

// partsOf encodes the parts named by changes, in key order: a part's
// current value, or a delete when it is no longer in the state.
func partsOf(room string, st *rtc.RoomState, c *rtc.Changes) ([]Part, error) {
	out := map[string][]byte{}
	var err error
	put := func(key string, v any) {
		if err != nil {
			return
		}
		var b []byte
		if b, err = encodePart(v); err == nil {
			out[key] = b
		}
	}
	del := func(key string) { out[key] = nil }
	if c != nil {
		for k := range c.Registers {
			if r := st.Registers[k]; r != nil {
				put(registerKey(room, k), &registerPart{Key: k, Reg: r})
			} else {
				del(registerKey(room, k))
			}
		}
		for u := range c.RoomMembers {
			if m, ok := st.RoomMembers[u]; ok {
				put(roomMemberKey(room, u), &roomMemberPart{User: u, M: m})
			} else {
				del(roomMemberKey(room, u))
			}
		}
		for s := range c.Slots {
			if v, ok := st.Slots[s]; ok {
				put(slotKey(room, s), &slotPart{Slot: s, S: v})
			} else {
				del(slotKey(room, s))
			}
		}
		// Ended sessions: their seen users go (members left one by one and
		// are in c.Members). A session of the same key may have started
		// again in the same commit: its own seen users are puts below.
		for sk, ended := range c.Ended {
			for _, s := range ended {
				for u := range s.SeenUsers {
					del(seenUserKey(room, sk, u))
				}
			}
		}
		for sk := range c.Sessions {
			if s := st.Sessions[sk]; s != nil {
				put(sessionPartKey(room, sk), &sessionPart{Key: sk, App: s.App, CallID: s.CallID, ID: s.ID,
					StartedAt: s.StartedAt, Peak: s.Peak, Joins: s.Joins})
			} else {
				del(sessionPartKey(room, sk))
			}
		}
		for sk := range c.LastEnded {
			if at, ok := st.LastEnded[sk]; ok {
				put(lastEndedKey(room, sk), &lastEndedPart{Key: sk, At: at})
			} else {
				del(lastEndedKey(room, sk))
			}
		}
		// Session members are not stored: they follow from the registers
		// (rtc.RoomState.RebuildMembers), which halves what a member costs.
		for ref := range c.SeenUsers {
			if s := st.Sessions[ref.Session]; s != nil && s.SeenUsers[ref.User] {
				put(seenUserKey(room, ref.Session, ref.User), &seenUserPart{Session: ref.Session, User: ref.User})
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("room %s: %w", room, err)
	}
	keys := make([]string, 0, len(out))
	for k := range out {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]Part, len(keys))
	for i, k := range keys {
		parts[i] = Part{Key: k, Value: out[k]}
	}
	return parts, nil
}
