package roomstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/jsutil"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/testutil"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/internal/wire"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

const room = id.RoomID("!store:hs.test")

func bucket(t *testing.T) (jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	ns := testutil.NATS(t, "", -1)
	_, js := testutil.JetStream(t, ns)
	kv, err := js.CreateKeyValue(context.Background(), topology.RoomsBucket(topology.DefaultConfig()))
	if err != nil {
		t.Fatal(err)
	}
	return js, kv
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// commit stores a prepared commit the way the aggregator does: chunks, the
// header, then (unless crash) the parts.
func commit(t *testing.T, js jetstream.JetStream, rm *Room, c *Commit, crash bool) {
	t.Helper()
	if len(c.Chunks) > 0 {
		if _, err := jsutil.PublishAll(ctx(t), js, c.Chunks); err != nil {
			t.Fatal(err)
		}
	}
	res, err := jsutil.PublishAll(ctx(t), js, []*nats.Msg{c.Header})
	if err != nil {
		t.Fatal(err)
	}
	rm.Committed(c, res[0].Ack.Sequence)
	if crash {
		return
	}
	parts := rm.PartMsgs(c.Redo)
	res, err = jsutil.PublishAll(ctx(t), js, parts)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		rm.PartWritten(c.Redo.Parts[i].Key, r.Ack.Sequence)
	}
	rm.Redo = nil
}

func member(user string, dev string, ts int64, evID string) rawevent.RawEvent {
	sk := "_" + user + "_" + dev + "_m.call"
	return rawevent.RawEvent{V: events.SchemaVersion, Kind: rawevent.InputEvent, RoomID: room, EventID: id.EventID(evID),
		Type: rawevent.TypeCallMember.Type, StateKey: &sk, Sender: id.UserID(user), OriginServerTS: ts, ReceivedAt: ts,
		Content: []byte(fmt.Sprintf(`{"application":"m.call","call_id":"","scope":"m.room","device_id":%q,"expires":3600000,`+
			`"focus_active":{"type":"livekit","focus_selection":"oldest_membership"},"foci_preferred":[{"type":"livekit","livekit_service_url":"https://lk.example.org"}]}`, dev))}
}

func leave(user, dev string, ts int64, evID string) rawevent.RawEvent {
	e := member(user, dev, ts, evID)
	e.Content = []byte(`{}`)
	return e
}

func roomLeave(user string, ts int64, evID string) rawevent.RawEvent {
	return rawevent.RawEvent{V: events.SchemaVersion, Kind: rawevent.InputEvent, RoomID: room, EventID: id.EventID(evID),
		Type: rawevent.TypeRoomMember.Type, StateKey: &user, Sender: id.UserID(user), OriginServerTS: ts, ReceivedAt: ts,
		Content: []byte(`{"membership":"leave"}`)}
}

// randomInputs is a history of one room: joins, hang-ups, room leaves and
// timers over many users, so that sessions start, grow past the inline
// bounds, shrink and end.
func randomInputs(rng *rand.Rand, n int) []rawevent.RawEvent {
	var out []rawevent.RawEvent
	t0 := int64(1_700_000_000_000)
	for i := range n {
		ts := t0 + int64(i)*1000
		u := fmt.Sprintf("@u%d:hs.test", rng.IntN(12))
		d := fmt.Sprintf("D%d", rng.IntN(2))
		ev := fmt.Sprintf("$e%d", i)
		switch k := rng.IntN(10); {
		case k < 6:
			out = append(out, member(u, d, ts, ev))
		case k < 8:
			out = append(out, leave(u, d, ts, ev))
		case k < 9:
			out = append(out, roomLeave(u, ts, ev))
		default:
			out = append(out, rawevent.RawEvent{V: events.SchemaVersion, Kind: rawevent.InputTimer, RoomID: room,
				Deadline: ts + 3_600_000, ReceivedAt: ts + 3_600_000})
		}
	}
	return out
}

// same fails unless two states hold the same registers, room members,
// sessions (with members and seen users), clock, seq and redactions.
func same(t *testing.T, got, want *rtc.RoomState, what string) {
	t.Helper()
	enc := func(st *rtc.RoomState) string {
		b, err := wire.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if enc(got) == enc(want) {
		return
	}
	diff := func(name string, a, b any) {
		ea, _ := wire.Marshal(a)
		eb, _ := wire.Marshal(b)
		if string(ea) != string(eb) {
			t.Errorf("%s: %s differs:\n got %+v\nwant %+v", what, name, a, b)
		}
	}
	diff("clock/seq", []any{got.Clock, got.Seq, got.RoomID}, []any{want.Clock, want.Seq, want.RoomID})
	diff("redacted", got.Redacted, want.Redacted)
	diff("registers", got.Registers, want.Registers)
	diff("room members", got.RoomMembers, want.RoomMembers)
	diff("slots", got.Slots, want.Slots)
	diff("last ended", got.LastEnded, want.LastEnded)
	for k, s := range want.Sessions {
		g := got.Sessions[k]
		if g == nil {
			t.Errorf("%s: session %q missing", what, k)
			continue
		}
		diff("session "+k+" members", g.Members, s.Members)
		diff("session "+k+" user devices", g.UserDevices, s.UserDevices)
		diff("session "+k+" seen users", g.SeenUsers, s.SeenUsers)
		diff("session "+k+" fields", []any{g.ID, g.StartedAt, g.Peak, g.Joins, g.App, g.CallID}, []any{s.ID, s.StartedAt, s.Peak, s.Joins, s.App, s.CallID})
	}
	if len(got.Sessions) != len(want.Sessions) {
		t.Errorf("%s: %d sessions, want %d", what, len(got.Sessions), len(want.Sessions))
	}
	t.FailNow()
}

// TestRoundTrip applies random histories in random batches, committing each
// batch, and loads the room back after every commit: the stored state is
// the state, in both forms (small bounds make rooms split early), including
// when a commit's parts were never written (a crash after the header).
func TestRoundTrip(t *testing.T) {
	js, kv := bucket(t)
	opts := Options{InlineMaxRegisters: 5, RedoInlineMax: 2 << 10, ChunkSize: 1 << 10}
	for seed := range uint64(6) {
		rng := rand.New(rand.NewPCG(seed, 3))
		r := id.RoomID(fmt.Sprintf("!store%d:hs.test", seed))
		rm := New(r)
		inputs := randomInputs(rng, 150)
		var seq uint64
		for i := 0; i < len(inputs); {
			n := 1 + rng.IntN(12)
			var outbox []events.SessionEvent
			for ; n > 0 && i < len(inputs); n-- {
				in := inputs[i]
				in.RoomID = r
				seq++
				outbox = append(outbox, rtc.Apply(rtc.DefaultConfig(), rm.State, &in).Events...)
				i++
			}
			c, err := rm.Prepare(seq, rm.State.NextDeadline(), outbox, opts)
			if err != nil {
				t.Fatal(err)
			}
			crash := rng.IntN(5) == 0
			commit(t, js, rm, c, crash)
			got, err := Load(ctx(t), kv, r)
			if err != nil {
				t.Fatalf("seed %d: load: %v", seed, err)
			}
			what := fmt.Sprintf("seed %d after input %d (split %v, crash %v)", seed, i, rm.Split, crash)
			same(t, got.State, rm.State, what)
			if got.LastIn != seq || got.Split != rm.Split || got.Rev != rm.Rev {
				t.Fatalf("%s: loaded last_in %d split %v rev %d, want %d %v %d", what, got.LastIn, got.Split, got.Rev, seq, rm.Split, rm.Rev)
			}
			if got.Redo != nil {
				if err := got.Redo.DecodeOutbox(); err != nil {
					t.Fatal(err)
				}
			}
			if got.Redo == nil || !reflect.DeepEqual(got.Redo.Outbox, c.Redo.Outbox) && len(outbox) > 0 {
				t.Fatalf("%s: redo record not loaded: %+v", what, got.Redo)
			}
			if crash {
				// The new owner carries out the redo record: its parts with the
				// revisions it read.
				parts := got.PartMsgs(got.Redo)
				res, err := jsutil.PublishAll(ctx(t), js, parts)
				if err != nil {
					t.Fatalf("%s: redo: %v", what, err)
				}
				for k, pr := range res {
					got.PartWritten(got.Redo.Parts[k].Key, pr.Ack.Sequence)
				}
				got.Redo = nil
				rm = got
			}
		}
		if !rm.Split {
			t.Errorf("seed %d: the room never split (bounds too large for the test?)", seed)
		}
	}
}

// TestStaleWriterFenced: part writes are revision-checked, so a worker that
// lost a split room cannot overwrite what the new owner wrote.
func TestStaleWriterFenced(t *testing.T) {
	js, kv := bucket(t)
	opts := Options{InlineMaxRegisters: 1}
	old := New(room)
	var outbox []events.SessionEvent
	for i, u := range []string{"@a:hs.test", "@b:hs.test"} {
		in := member(u, "D", int64(1_700_000_000_000+i), fmt.Sprintf("$j%d", i))
		outbox = append(outbox, rtc.Apply(rtc.DefaultConfig(), old.State, &in).Events...)
	}
	c, err := old.Prepare(2, 0, outbox, opts)
	if err != nil {
		t.Fatal(err)
	}
	commit(t, js, old, c, false)
	// The new owner loads the room and commits a change of @a's register.
	nw, err := Load(ctx(t), kv, room)
	if err != nil {
		t.Fatal(err)
	}
	in := leave("@a:hs.test", "D", 1_700_000_001_000, "$l")
	ev := rtc.Apply(rtc.DefaultConfig(), nw.State, &in).Events
	c2, err := nw.Prepare(3, 0, ev, opts)
	if err != nil {
		t.Fatal(err)
	}
	commit(t, js, nw, c2, false)
	// The old owner, unaware, tries to write its parts again.
	res, err := jsutil.PublishAll(ctx(t), js, old.PartMsgs(c.Redo))
	if err == nil {
		t.Fatal("a stale owner rewrote parts the new owner had changed")
	}
	if !jsutil.IsRevisionMismatch(res[0].Err) && !jsutil.IsRevisionMismatch(err) {
		t.Errorf("want a revision mismatch, got %v", err)
	}
	// ... and cannot commit its header either.
	c3, err := old.Prepare(4, 0, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jsutil.PublishAll(ctx(t), js, []*nats.Msg{c3.Header}); !jsutil.IsRevisionMismatch(err) {
		t.Errorf("stale header commit: want a revision mismatch, got %v", err)
	}
	got, err := Load(ctx(t), kv, room)
	if err != nil {
		t.Fatal(err)
	}
	same(t, got.State, nw.State, "after the stale writes")
}

// TestStaleRedoChunks: chunks of a later batch than the header's mean that
// the header's redo record was carried out already (a later commit only
// starts after it): Load reports no redo instead of a mixed record.
func TestStaleRedoChunks(t *testing.T) {
	js, kv := bucket(t)
	opts := Options{RedoInlineMax: 64, ChunkSize: 128}
	rm := New(room)
	var outbox []events.SessionEvent
	for i := range 5 {
		in := member(fmt.Sprintf("@u%d:hs.test", i), "D", int64(1_700_000_000_000+i), fmt.Sprintf("$j%d", i))
		outbox = append(outbox, rtc.Apply(rtc.DefaultConfig(), rm.State, &in).Events...)
	}
	c, err := rm.Prepare(5, 0, outbox, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Chunks) < 2 {
		t.Fatalf("want several chunks, have %d", len(c.Chunks))
	}
	commit(t, js, rm, c, false)
	got, err := Load(ctx(t), kv, room)
	if err == nil && got.Redo != nil {
		err = got.Redo.DecodeOutbox()
	}
	if err != nil || got.Redo == nil || len(got.Redo.Outbox) != len(outbox) {
		t.Fatalf("chunked redo not loaded: %v %+v", err, got)
	}
	// The next commit's first chunk is written, then the worker dies.
	in := leave("@u0:hs.test", "D", 1_700_000_001_000, "$l")
	ev := rtc.Apply(rtc.DefaultConfig(), rm.State, &in).Events
	c2, err := rm.Prepare(6, 0, append(ev, outbox...), opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jsutil.PublishAll(ctx(t), js, c2.Chunks[:1]); err != nil {
		t.Fatal(err)
	}
	got, err = Load(ctx(t), kv, room)
	if err != nil {
		t.Fatal(err)
	}
	if got.Redo != nil || got.LastIn != 5 {
		t.Errorf("stale chunks: redo %v last_in %d, want none and 5", got.Redo != nil, got.LastIn)
	}
}

// TestBoundedValues: a call of 3,000 devices in one room: every value
// written stays small, and a commit of one input writes a bounded number of
// parts whatever the size of the call.
func TestBoundedValues(t *testing.T) {
	js, kv := bucket(t)
	rm := New(room)
	var seq uint64
	maxValue := 0
	t0 := int64(1_700_000_000_000)
	for b := range 30 { // 30 batches of 100 joins
		var outbox []events.SessionEvent
		for i := range 100 {
			n := b*100 + i
			in := member(fmt.Sprintf("@u%d:hs.test", n), "D", t0+int64(n), fmt.Sprintf("$j%d", n))
			seq++
			outbox = append(outbox, rtc.Apply(rtc.DefaultConfig(), rm.State, &in).Events...)
		}
		c, err := rm.Prepare(seq, rm.State.NextDeadline(), outbox, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range append(c.Chunks, c.Header) {
			maxValue = max(maxValue, len(m.Data))
		}
		for _, p := range c.Redo.Parts {
			maxValue = max(maxValue, len(p.Value))
		}
		commit(t, js, rm, c, false)
	}
	if !rm.Split {
		t.Fatal("a 3,000-device room is still inline")
	}
	// One refresh in the big room.
	in := member("@u7:hs.test", "D", t0+1_000_000, "$refresh")
	seq++
	ev := rtc.Apply(rtc.DefaultConfig(), rm.State, &in).Events
	c, err := rm.Prepare(seq, rm.State.NextDeadline(), ev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(c.Redo.Parts); n == 0 || n > 4 {
		t.Errorf("one refresh in a 3,000-device call writes %d parts, want 1-4", n)
	}
	if len(c.Header.Data) > 4<<10 {
		t.Errorf("split header of a 3,000-device call: %d bytes", len(c.Header.Data))
	}
	commit(t, js, rm, c, false)
	if maxValue > DefaultRedoInlineMax+(16<<10) {
		t.Errorf("largest value written: %d bytes, want <= %d", maxValue, DefaultRedoInlineMax+(16<<10))
	}
	got, err := Load(ctx(t), kv, room)
	if err != nil {
		t.Fatal(err)
	}
	same(t, got.State, rm.State, "3,000-device room")
	t.Logf("largest value %d bytes; refresh commit: header %d bytes, %d parts", maxValue, len(c.Header.Data), len(c.Redo.Parts))
}

// TestLegacyRecord: a version-1 record (one value with the whole state and
// the outbox) still loads, as an inline room whose redo is its outbox.
func TestLegacyRecord(t *testing.T) {
	_, kv := bucket(t)
	st := rtc.NewRoomState(room)
	in := member("@a:hs.test", "D", 1_700_000_000_000, "$j")
	evs := rtc.Apply(rtc.DefaultConfig(), st, &in).Events
	b, err := wire.Marshal(&legacyRecord{V: 1, LastIn: 9, Outbox: evs, TimerAt: 5, State: st})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx(t), rawevent.RoomKey(room), compress(b)); err != nil {
		t.Fatal(err)
	}
	got, err := Load(ctx(t), kv, room)
	if err != nil {
		t.Fatal(err)
	}
	if got.Redo != nil {
		if err := got.Redo.DecodeOutbox(); err != nil {
			t.Fatal(err)
		}
	}
	if got.LastIn != 9 || got.TimerAt != 5 || got.Split || got.Redo == nil || len(got.Redo.Outbox) != len(evs) {
		t.Fatalf("legacy record: %+v", got)
	}
	same(t, got.State, st, "legacy")
	if _, err := DecodeHeader([]byte("\x00s2\xff\xff")); err == nil {
		t.Error("corrupt record decoded")
	}
}
