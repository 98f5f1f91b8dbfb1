// Package pipelinetest holds what the black-box tests of the whole pipeline
// (test/chaos, test/cluster) share: a seeded random workload of Matrix
// call-membership events, a sender that plays it as appservice
// transactions the way a homeserver retries them, and a verifier that
// compares what the pipeline stored (RTC_RAW, RTC_EVENTS, RTC_DLQ,
// rtc_sessions) with `rtcctl simulate` of the stored inputs.
package pipelinetest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The workload: rooms of the Element Call kind, where devices join a call
// (org.matrix.msc3401.call.member in the per-device form, state key
// _@user:hs_DEVICE_m.call), refresh their membership (same created_ts,
// longer expires), hang up ({}), let it expire, are replaced by a rejoin
// (new created_ts) or leave the room (m.room.member). Times are offsets
// from the moment the test starts sending (T0); the events are rendered
// with absolute timestamps then.
//
// Two rules keep the expected output independent of wall-clock timing,
// while still letting durable timers fire during the test:
//   - no input of a room is planned in [D-guardBefore, D+guardAfter) of a
//     deadline D of that room: an input stamped just before D could
//     otherwise be stored after the timer of D fired, an ordering that the
//     stream does not record (RTC_RAW keeps the timer, and the simulation
//     runs without timer inputs);
//   - no deadline falls in a quiet window around a fault that disconnects
//     the ingest (a nats-server restart or SIGKILL), when a publish stamped
//     before the fault may be stored after it (the client's reconnect
//     buffer is flushed later).

const (
	guardBefore = time.Second
	guardAfter  = 50 * time.Millisecond
	// Homeservers of the test: each has an appservice registration.
	NumHomeservers = 3
)

// WorkloadConfig says what to generate; the same configuration always
// gives the same workload.
type WorkloadConfig struct {
	Seed  uint64
	Rooms int
	Feed  time.Duration // inputs are planned in [0, Feed)
	// Bursts are the moments when a big call starts: BurstDevices devices
	// join one room at once, all refresh 3s later, half hang up 6s after
	// the start and the other half expire together 10s after it. Many
	// inputs are in flight right then: the chaos kills aggregators there.
	Bursts       []time.Duration
	BurstDevices int
	// Quiet are windows without deadlines (around the faults that
	// disconnect the ingest), in time order. The bursts' deadlines must
	// be out of them too (Generate panics otherwise).
	Quiet []Window
}

// Window is [From, To) of offsets from T0.
type Window struct{ From, To time.Duration }

// quiet returns the window d falls in, if any.
func (c WorkloadConfig) quiet(d time.Duration) (Window, bool) {
	for _, w := range c.Quiet {
		if d >= w.From && d < w.To {
			return w, true
		}
	}
	return Window{}, false
}

// GenEvent is one Matrix event of the workload.
type GenEvent struct {
	At        time.Duration
	Room      string
	ID        string
	Type      string
	StateKey  *string
	Sender    string
	Forwarded bool // the ingest forwards the type (it drops m.room.message)
	// Call member fields (Type CallMember).
	Hangup     bool
	Device     string
	CallID     string
	CreatedOff time.Duration // created_ts offset; refreshes carry it
	Refresh    bool
	Expires    time.Duration
	// Room member field (Type RoomMember).
	Membership string
}

// Deadline is the membership deadline (offset) of a join or refresh.
func (e *GenEvent) Deadline() (time.Duration, bool) {
	if e.Type != CallMember || e.Hangup {
		return 0, false
	}
	return e.CreatedOff + e.Expires, true
}

const (
	CallMember = "org.matrix.msc3401.call.member"
	RoomMember = "m.room.member"
	RoomMsg    = "m.room.message"
)

// JSON renders the client event with absolute times (t0 in Unix ms).
func (e *GenEvent) JSON(t0 int64) json.RawMessage {
	ev := map[string]any{
		"type": e.Type, "sender": e.Sender, "event_id": e.ID, "room_id": e.Room,
		"origin_server_ts": t0 + e.At.Milliseconds(),
	}
	if e.StateKey != nil {
		ev["state_key"] = *e.StateKey
	}
	switch e.Type {
	case CallMember:
		if e.Hangup {
			ev["content"] = map[string]any{}
			break
		}
		c := map[string]any{
			"application": "m.call", "call_id": e.CallID, "scope": "m.room", "device_id": e.Device,
			"membershipID": e.Sender + ":" + e.Device, "expires": e.Expires.Milliseconds(),
			"m.call.intent": "video",
			"focus_active":  map[string]any{"type": "livekit", "focus_selection": "oldest_membership"},
			"foci_preferred": []any{map[string]any{"type": "livekit",
				"livekit_service_url": "https://livekit.example/livekit/jwt", "livekit_alias": e.Room}},
		}
		if e.Refresh {
			c["created_ts"] = t0 + e.CreatedOff.Milliseconds()
		}
		ev["content"] = c
	case RoomMember:
		ev["content"] = map[string]any{"membership": e.Membership}
	default:
		ev["content"] = map[string]any{"msgtype": "m.text", "body": "hello " + e.ID}
	}
	b, err := json.Marshal(ev)
	if err != nil {
		panic(err) // maps of strings and numbers always encode
	}
	return b
}

// Delivery is one event sent by one homeserver. An event may be delivered
// by two homeservers (a federated room): JetStream stores it once.
type Delivery struct {
	At time.Duration
	HS string
	Ev *GenEvent
}

type Workload struct {
	Cfg        WorkloadConfig
	Events     []*GenEvent // every event, by planned time
	Deliveries []Delivery  // by planned time
	// Deadlines per room (offsets), of every join and refresh.
	Deadlines map[string][]time.Duration
	// LastShortDeadline is the latest deadline within the test (the long
	// memberships last an hour).
	LastShortDeadline time.Duration
}

func HSName(i int) string { return fmt.Sprintf("hs%d.test", i+1) }

func Uniform(r *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(r.Int64N(int64(hi-lo)))
}

// generate builds the workload of cfg; the same cfg always gives the same
// workload.
func Generate(cfg WorkloadConfig) *Workload {
	w := &Workload{Cfg: cfg, Deadlines: map[string][]time.Duration{}}
	for room := 0; room < cfg.Rooms; room++ {
		r := rand.New(rand.NewPCG(cfg.Seed, uint64(room)+1))
		var evs []*GenEvent
		var dls []time.Duration
		for try := 0; ; try++ {
			evs, dls = genRoom(r, cfg, room)
			if RoomRespectsGuards(evs, dls) {
				break
			}
			if try == 10000 {
				panic(fmt.Sprintf("seed %d room %d: no workload respects the deadline guards", cfg.Seed, room))
			}
		}
		roomID := evs[0].Room
		w.Deadlines[roomID] = dls
		for _, d := range dls {
			if d < time.Hour {
				w.LastShortDeadline = max(w.LastShortDeadline, d)
			}
		}
		for i, e := range evs {
			e.ID = fmt.Sprintf("$chaos-%d-r%02d-e%03d", cfg.Seed, room, i)
		}
		w.Events = append(w.Events, evs...)
		// Deliveries: by the sender's homeserver; a quarter of the events
		// also by the room's homeserver shortly after (a federated room).
		roomHS := room % NumHomeservers
		for _, e := range evs {
			senderHS := hsIndex(e.Sender)
			w.Deliveries = append(w.Deliveries, Delivery{At: e.At, HS: HSName(senderHS), Ev: e})
			if roomHS != senderHS && r.IntN(4) == 0 {
				w.Deliveries = append(w.Deliveries, Delivery{At: e.At + Uniform(r, 0, 300*time.Millisecond),
					HS: HSName(roomHS), Ev: e})
			}
		}
	}
	for k, b := range cfg.Bursts {
		evs, dls := genBurst(cfg, k, b)
		for _, d := range dls {
			if _, in := cfg.quiet(d); in {
				panic(fmt.Sprintf("burst %d at %s: its deadline %s is in a quiet window", k, b, d))
			}
		}
		w.Deadlines[evs[0].Room] = dls
		for _, d := range dls {
			w.LastShortDeadline = max(w.LastShortDeadline, d)
		}
		w.Events = append(w.Events, evs...)
		// A homeserver sends the events of its users together.
		byHS := slices.Clone(evs)
		slices.SortStableFunc(byHS, func(a, b *GenEvent) int {
			if a.At != b.At {
				return int(a.At - b.At)
			}
			return hsIndex(a.Sender) - hsIndex(b.Sender)
		})
		for _, e := range byHS {
			w.Deliveries = append(w.Deliveries, Delivery{At: e.At, HS: HSName(hsIndex(e.Sender)), Ev: e})
		}
	}
	sort.SliceStable(w.Events, func(i, j int) bool { return w.Events[i].At < w.Events[j].At })
	sort.SliceStable(w.Deliveries, func(i, j int) bool { return w.Deliveries[i].At < w.Deliveries[j].At })
	return w
}

// hsIndex is the index of a user's homeserver (@user:hsN.test).
func hsIndex(user string) int {
	i := strings.LastIndex(user, ":hs")
	n, err := strconv.Atoi(strings.TrimSuffix(user[i+len(":hs"):], ".test"))
	if i < 0 || err != nil {
		panic("not a workload user: " + user)
	}
	return n - 1
}

// genBurst is the k-th big call (see WorkloadConfig.Bursts).
func genBurst(cfg WorkloadConfig, k int, b time.Duration) ([]*GenEvent, []time.Duration) {
	room := fmt.Sprintf("!big%d:%s", k, HSName(k%NumHomeservers))
	var evs []*GenEvent
	for i := range cfg.BurstDevices {
		user := fmt.Sprintf("@big%d-%02d:%s", k, i, HSName(i%NumHomeservers))
		key := "_" + user + "_PHONE_m.call"
		join := &GenEvent{At: b, Type: CallMember, StateKey: &key, Sender: user, Device: "PHONE", CreatedOff: b,
			Expires: 8 * time.Second}
		refresh := *join
		refresh.At, refresh.Refresh, refresh.Expires = b+3*time.Second, true, 10*time.Second
		evs = append(evs, join, &refresh)
		if i%2 == 0 {
			evs = append(evs, &GenEvent{At: b + 6*time.Second, Type: CallMember, StateKey: &key, Sender: user, Hangup: true})
		}
	}
	for i, e := range evs {
		e.Room, e.Forwarded = room, true
		e.ID = fmt.Sprintf("$chaos-%d-big%d-e%03d", cfg.Seed, k, i)
	}
	return evs, []time.Duration{b + 8*time.Second, b + 10*time.Second}
}

// RoomRespectsGuards checks the first rule of the file comment.
func RoomRespectsGuards(evs []*GenEvent, dls []time.Duration) bool {
	for _, e := range evs {
		if !e.Forwarded {
			continue
		}
		for _, d := range dls {
			if e.At >= d-guardBefore && e.At < d+guardAfter {
				return false
			}
		}
	}
	return true
}

// genRoom generates one room: 2-5 users, 1-3 calling devices.
func genRoom(r *rand.Rand, cfg WorkloadConfig, room int) ([]*GenEvent, []time.Duration) {
	roomID := fmt.Sprintf("!room%02d:%s", room, HSName(room%NumHomeservers))
	nUsers := 2 + r.IntN(4)
	users := make([]string, nUsers)
	for i := range users {
		users[i] = fmt.Sprintf("@u%02d%c:%s", room, 'a'+i, HSName(r.IntN(NumHomeservers)))
	}
	var evs []*GenEvent
	var dls []time.Duration
	sk := func(s string) *string { return &s }
	add := func(e *GenEvent) *GenEvent {
		e.Room = roomID
		e.Forwarded = e.Type != RoomMsg
		evs = append(evs, e)
		if d, ok := e.Deadline(); ok {
			dls = append(dls, d)
		}
		return e
	}
	inRoom := map[string]bool{}
	if r.IntN(10) < 6 { // most rooms announce their members first
		for _, u := range users {
			add(&GenEvent{At: Uniform(r, 0, 1500*time.Millisecond), Type: RoomMember, StateKey: sk(u), Sender: u,
				Membership: "join"})
			inRoom[u] = true
		}
	}
	// chooseDeadline picks a deadline after from, out of the quiet window.
	chooseDeadline := func(from time.Duration, long bool) time.Duration {
		if long {
			return from + time.Hour
		}
		d := from + Uniform(r, 3*time.Second, 8*time.Second)
		for w, in := cfg.quiet(d); in; w, in = cfg.quiet(d) {
			d = w.To + Uniform(r, 200*time.Millisecond, 2*time.Second)
		}
		return d
	}
	nDevices := 1 + r.IntN(3)
	for dev := 0; dev < nDevices; dev++ {
		user := users[r.IntN(len(users))]
		device := fmt.Sprintf("DEV%c", 'A'+dev)
		key := "_" + user + "_" + device + "_m.call"
		callID := ""
		if r.IntN(10) == 0 {
			callID = "ROOM" // the same session as "" for m.call
		}
		t := Uniform(r, 500*time.Millisecond, cfg.Feed/4)
		for t < cfg.Feed-4*time.Second {
			if !inRoom[user] && r.IntN(2) == 0 {
				add(&GenEvent{At: t, Type: RoomMember, StateKey: sk(user), Sender: user, Membership: "join"})
				inRoom[user] = true
				t += Uniform(r, 100*time.Millisecond, 500*time.Millisecond)
			}
			// A stint: join, then actions until it ends.
			long := r.IntN(6) == 0
			created := t
			d := chooseDeadline(t, long)
			add(&GenEvent{At: t, Type: CallMember, StateKey: sk(key), Sender: user, Device: device, CallID: callID,
				CreatedOff: created, Expires: d - created})
			last := t
			for {
				lo, hi := last+300*time.Millisecond, min(d-guardBefore-200*time.Millisecond, cfg.Feed)
				if hi <= lo {
					// No room for an action before the deadline: it expires
					// (or, when long, stays until the end).
					t = max(d, last) + Uniform(r, 500*time.Millisecond, 4*time.Second)
					break
				}
				ta := Uniform(r, lo, min(hi, lo+6*time.Second))
				x := r.IntN(100)
				switch {
				case x < 45: // refresh: same created_ts, deadline moves on
					d = chooseDeadline(ta, long)
					add(&GenEvent{At: ta, Type: CallMember, StateKey: sk(key), Sender: user, Device: device,
						CallID: callID, CreatedOff: created, Refresh: true, Expires: d - created})
					last = ta
					continue
				case x < 65: // hang up
					add(&GenEvent{At: ta, Type: CallMember, StateKey: sk(key), Sender: user, Hangup: true})
					t = ta + Uniform(r, 500*time.Millisecond, 5*time.Second)
				case x < 85: // nothing more: the membership expires
					t = d + Uniform(r, 500*time.Millisecond, 5*time.Second)
				case x < 93: // the user leaves the room, and may come back
					add(&GenEvent{At: ta, Type: RoomMember, StateKey: sk(user), Sender: user, Membership: "leave"})
					inRoom[user] = false
					back := ta + Uniform(r, 300*time.Millisecond, 3*time.Second)
					if r.IntN(2) == 0 && back < d-guardBefore-200*time.Millisecond {
						add(&GenEvent{At: back, Type: RoomMember, StateKey: sk(user), Sender: user, Membership: "join"})
						inRoom[user] = true
						last = back
						continue
					}
					t = max(d, ta) + Uniform(r, 500*time.Millisecond, 4*time.Second)
				default: // a rejoin with a new created_ts replaces the membership
					created = ta
					d = chooseDeadline(ta, long)
					add(&GenEvent{At: ta, Type: CallMember, StateKey: sk(key), Sender: user, Device: device,
						CallID: callID, CreatedOff: created, Expires: d - created})
					last = ta
					continue
				}
				break
			}
			if long {
				break // a long membership is one stint
			}
		}
	}
	// Messages the ingest must drop.
	for range r.IntN(3) {
		u := users[r.IntN(len(users))]
		add(&GenEvent{At: Uniform(r, 0, cfg.Feed), Type: RoomMsg, Sender: u})
	}
	slices.SortStableFunc(evs, func(a, b *GenEvent) int { return int(a.At - b.At) })
	return evs, dls
}

func (w *Workload) ForwardedCount() int {
	n := 0
	for _, e := range w.Events {
		if e.Forwarded {
			n++
		}
	}
	return n
}
