package bench

import (
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

const benchHS = "bench.example.org"

// The focus of an Element Call membership, as sent today: it makes the
// inputs (and the stored members) as large as real ones.
const focus = `"focus_active":{"type":"livekit","focus_selection":"oldest_membership"},` +
	`"foci_preferred":[{"type":"livekit","livekit_service_url":"https://livekit.bench.example.org","livekit_alias":"!abcdefghijklmnop:bench.example.org"}]`

// Workload generates realistic org.matrix.msc3401.call.member inputs (the
// per-device "session" form Element Call sends) for a set of rooms: in
// every cycle each device of a room joins, refreshes its membership (same
// created_ts, a later expiry: a member_updated) and leaves. Inputs of
// different rooms are interleaved round-robin, inputs of one room are in
// time order, the way many concurrent calls reach the ingest.
type Workload struct {
	Prefix    string // distinguishes the rooms and event ids of one workload from another's
	Rooms     int
	Devices   int   // devices per room
	ExpiresMS int64 // the joins' expires (refreshes add to it)
	BaseMS    int64 // timestamp of input 0; input i is at BaseMS+i
}

// StepsPerCycle is how many inputs one room gets per cycle.
func (w *Workload) StepsPerCycle() int { return 3 * w.Devices }

// Input returns input i of the endless sequence.
func (w *Workload) Input(i int) rawevent.RawEvent {
	r := i % w.Rooms
	step := i / w.Rooms
	cycle, within := step/w.StepsPerCycle(), step%w.StepsPerCycle()
	switch {
	case within < w.Devices:
		return w.Join(r, within, cycle)
	case within < 2*w.Devices:
		return w.Refresh(r, within-w.Devices, cycle, 1)
	default:
		return w.Leave(r, within-2*w.Devices, cycle)
	}
}

// index is the position in the sequence of a room's step in a cycle.
func (w *Workload) index(r, cycle, within int) int {
	return (cycle*w.StepsPerCycle()+within)*w.Rooms + r
}

// Room is the id of room r.
func (w *Workload) Room(r int) id.RoomID {
	return id.RoomID(fmt.Sprintf("!%s%06d:%s", w.Prefix, r, benchHS))
}

func (w *Workload) user(d int) id.UserID { return id.UserID(fmt.Sprintf("@user%05d:%s", d, benchHS)) }
func device(d int) string                { return fmt.Sprintf("DEV%05dXYZ", d) }

func (w *Workload) event(r, d int, evID string, ts int64, content string) rawevent.RawEvent {
	user := w.user(d)
	sk := "_" + string(user) + "_" + device(d) + "_m.call"
	return rawevent.RawEvent{V: events.SchemaVersion, Kind: rawevent.InputEvent, Homeserver: benchHS,
		Source: rawevent.SourceAppservice, ReceivedAt: ts, RoomID: w.Room(r), EventID: id.EventID(evID),
		Type: rawevent.TypeCallMember.Type, StateKey: &sk, Sender: user, OriginServerTS: ts,
		Content: json.RawMessage(content)}
}

// Join is device d of room r joining in cycle c.
func (w *Workload) Join(r, d, c int) rawevent.RawEvent {
	ts := w.BaseMS + int64(w.index(r, c, d))
	return w.event(r, d, fmt.Sprintf("$%s-j%d-%d-%d", w.Prefix, r, d, c), ts, fmt.Sprintf(
		`{"application":"m.call","call_id":"","scope":"m.room","device_id":%q,"expires":%d,%s}`,
		device(d), w.ExpiresMS, focus))
}

// Refresh is the k-th refresh (k ≥ 1) of device d's membership of cycle c
// in room r: the same created_ts and an expiry k minutes later, so every
// refresh is a visible member_updated. Refresh k is timed after the
// cycle's regular refresh (k = 1) and before its leave.
func (w *Workload) Refresh(r, d, c, k int) rawevent.RawEvent {
	joinTS := w.BaseMS + int64(w.index(r, c, d))
	ts := w.BaseMS + int64(w.index(r, c, w.Devices+d)) + int64(k-1)
	return w.event(r, d, fmt.Sprintf("$%s-r%d-%d-%d-%d", w.Prefix, r, d, c, k), ts, fmt.Sprintf(
		`{"application":"m.call","call_id":"","scope":"m.room","device_id":%q,"expires":%d,"created_ts":%d,%s}`,
		device(d), w.ExpiresMS+int64(k)*60_000, joinTS, focus))
}

// Leave is device d of room r leaving in cycle c.
func (w *Workload) Leave(r, d, c int) rawevent.RawEvent {
	ts := w.BaseMS + int64(w.index(r, c, 2*w.Devices+d))
	return w.event(r, d, fmt.Sprintf("$%s-l%d-%d-%d", w.Prefix, r, d, c), ts, `{}`)
}

// rawMsg is the message the ingest publishes for e: subject rtc.raw.<roomTok>,
// msgpack body, Nats-Msg-Id from the event.
func rawMsg(e *rawevent.RawEvent) (*nats.Msg, error) {
	data, err := rawevent.EncodeRaw(e)
	if err != nil {
		return nil, fmt.Errorf("encode input %s: %w", e.EventID, err)
	}
	m := nats.NewMsg(rawevent.RawSubject(e.RoomID))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, e.MsgID())
	return m, nil
}
