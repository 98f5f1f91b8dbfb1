package chaos

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
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
//   - no deadline falls in the quiet window around the nats-server restart,
//     when a publish stamped before the outage may be stored after it.

const (
	guardBefore = time.Second
	guardAfter  = 50 * time.Millisecond
	// Homeservers of the test: each has an appservice registration.
	numHomeservers = 3
)

type workloadConfig struct {
	Seed  uint64
	Rooms int
	Feed  time.Duration // inputs are planned in [0, Feed)
	// Bursts are the moments when a big call starts: BurstDevices devices
	// join one room at once, all refresh 3s later, half hang up 6s after
	// the start and the other half expire together 10s after it. Many
	// inputs are in flight right then: the chaos kills aggregators there.
	Bursts       []time.Duration
	BurstDevices int
	// QuietFrom, QuietTo: no deadline in this window (the nats restart).
	QuietFrom, QuietTo time.Duration
}

// genEvent is one Matrix event of the workload.
type genEvent struct {
	At        time.Duration
	Room      string
	ID        string
	Type      string
	StateKey  *string
	Sender    string
	Forwarded bool // the ingest forwards the type (it drops m.room.message)
	// Call member fields (Type callMember).
	Hangup     bool
	Device     string
	CallID     string
	CreatedOff time.Duration // created_ts offset; refreshes carry it
	Refresh    bool
	Expires    time.Duration
	// Room member field (Type roomMember).
	Membership string
}

// Deadline is the membership deadline (offset) of a join or refresh.
func (e *genEvent) Deadline() (time.Duration, bool) {
	if e.Type != callMember || e.Hangup {
		return 0, false
	}
	return e.CreatedOff + e.Expires, true
}

const (
	callMember = "org.matrix.msc3401.call.member"
	roomMember = "m.room.member"
	roomMsg    = "m.room.message"
)

// JSON renders the client event with absolute times (t0 in Unix ms).
func (e *genEvent) JSON(t0 int64) json.RawMessage {
	ev := map[string]any{
		"type": e.Type, "sender": e.Sender, "event_id": e.ID, "room_id": e.Room,
		"origin_server_ts": t0 + e.At.Milliseconds(),
	}
	if e.StateKey != nil {
		ev["state_key"] = *e.StateKey
	}
	switch e.Type {
	case callMember:
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
	case roomMember:
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

// delivery is one event sent by one homeserver. An event may be delivered
// by two homeservers (a federated room): JetStream stores it once.
type delivery struct {
	At time.Duration
	HS string
	Ev *genEvent
}

type workload struct {
	Cfg        workloadConfig
	Events     []*genEvent // every event, by planned time
	Deliveries []delivery  // by planned time
	// Deadlines per room (offsets), of every join and refresh.
	Deadlines map[string][]time.Duration
	// LastShortDeadline is the latest deadline within the test (the long
	// memberships last an hour).
	LastShortDeadline time.Duration
}

func hsName(i int) string { return fmt.Sprintf("hs%d.test", i+1) }

func uniform(r *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(r.Int64N(int64(hi-lo)))
}

// generate builds the workload of cfg; the same cfg always gives the same
// workload.
func generate(cfg workloadConfig) *workload {
	w := &workload{Cfg: cfg, Deadlines: map[string][]time.Duration{}}
	for room := 0; room < cfg.Rooms; room++ {
		r := rand.New(rand.NewPCG(cfg.Seed, uint64(room)+1))
		var evs []*genEvent
		var dls []time.Duration
		for try := 0; ; try++ {
			evs, dls = genRoom(r, cfg, room)
			if roomRespectsGuards(evs, dls) {
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
		roomHS := room % numHomeservers
		for _, e := range evs {
			senderHS := hsIndex(e.Sender)
			w.Deliveries = append(w.Deliveries, delivery{At: e.At, HS: hsName(senderHS), Ev: e})
			if roomHS != senderHS && r.IntN(4) == 0 {
				w.Deliveries = append(w.Deliveries, delivery{At: e.At + uniform(r, 0, 300*time.Millisecond),
					HS: hsName(roomHS), Ev: e})
			}
		}
	}
	for k, b := range cfg.Bursts {
		evs, dls := genBurst(cfg, k, b)
		w.Deadlines[evs[0].Room] = dls
		for _, d := range dls {
			w.LastShortDeadline = max(w.LastShortDeadline, d)
		}
		w.Events = append(w.Events, evs...)
		// A homeserver sends the events of its users together.
		byHS := slices.Clone(evs)
		slices.SortStableFunc(byHS, func(a, b *genEvent) int {
			if a.At != b.At {
				return int(a.At - b.At)
			}
			return hsIndex(a.Sender) - hsIndex(b.Sender)
		})
		for _, e := range byHS {
			w.Deliveries = append(w.Deliveries, delivery{At: e.At, HS: hsName(hsIndex(e.Sender)), Ev: e})
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

// genBurst is the k-th big call (see workloadConfig.Bursts).
func genBurst(cfg workloadConfig, k int, b time.Duration) ([]*genEvent, []time.Duration) {
	room := fmt.Sprintf("!big%d:%s", k, hsName(k%numHomeservers))
	var evs []*genEvent
	for i := range cfg.BurstDevices {
		user := fmt.Sprintf("@big%d-%02d:%s", k, i, hsName(i%numHomeservers))
		key := "_" + user + "_PHONE_m.call"
		join := &genEvent{At: b, Type: callMember, StateKey: &key, Sender: user, Device: "PHONE", CreatedOff: b,
			Expires: 8 * time.Second}
		refresh := *join
		refresh.At, refresh.Refresh, refresh.Expires = b+3*time.Second, true, 10*time.Second
		evs = append(evs, join, &refresh)
		if i%2 == 0 {
			evs = append(evs, &genEvent{At: b + 6*time.Second, Type: callMember, StateKey: &key, Sender: user, Hangup: true})
		}
	}
	for i, e := range evs {
		e.Room, e.Forwarded = room, true
		e.ID = fmt.Sprintf("$chaos-%d-big%d-e%03d", cfg.Seed, k, i)
	}
	return evs, []time.Duration{b + 8*time.Second, b + 10*time.Second}
}

// roomRespectsGuards checks the first rule of the file comment.
func roomRespectsGuards(evs []*genEvent, dls []time.Duration) bool {
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
func genRoom(r *rand.Rand, cfg workloadConfig, room int) ([]*genEvent, []time.Duration) {
	roomID := fmt.Sprintf("!room%02d:%s", room, hsName(room%numHomeservers))
	nUsers := 2 + r.IntN(4)
	users := make([]string, nUsers)
	for i := range users {
		users[i] = fmt.Sprintf("@u%02d%c:%s", room, 'a'+i, hsName(r.IntN(numHomeservers)))
	}
	var evs []*genEvent
	var dls []time.Duration
	sk := func(s string) *string { return &s }
	add := func(e *genEvent) *genEvent {
		e.Room = roomID
		e.Forwarded = e.Type != roomMsg
		evs = append(evs, e)
		if d, ok := e.Deadline(); ok {
			dls = append(dls, d)
		}
		return e
	}
	inRoom := map[string]bool{}
	if r.IntN(10) < 6 { // most rooms announce their members first
		for _, u := range users {
			add(&genEvent{At: uniform(r, 0, 1500*time.Millisecond), Type: roomMember, StateKey: sk(u), Sender: u,
				Membership: "join"})
			inRoom[u] = true
		}
	}
	// chooseDeadline picks a deadline after from, out of the quiet window.
	chooseDeadline := func(from time.Duration, long bool) time.Duration {
		if long {
			return from + time.Hour
		}
		d := from + uniform(r, 3*time.Second, 8*time.Second)
		if d >= cfg.QuietFrom && d < cfg.QuietTo {
			d = cfg.QuietTo + uniform(r, 200*time.Millisecond, 2*time.Second)
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
		t := uniform(r, 500*time.Millisecond, cfg.Feed/4)
		for t < cfg.Feed-4*time.Second {
			if !inRoom[user] && r.IntN(2) == 0 {
				add(&genEvent{At: t, Type: roomMember, StateKey: sk(user), Sender: user, Membership: "join"})
				inRoom[user] = true
				t += uniform(r, 100*time.Millisecond, 500*time.Millisecond)
			}
			// A stint: join, then actions until it ends.
			long := r.IntN(6) == 0
			created := t
			d := chooseDeadline(t, long)
			add(&genEvent{At: t, Type: callMember, StateKey: sk(key), Sender: user, Device: device, CallID: callID,
				CreatedOff: created, Expires: d - created})
			last := t
			for {
				lo, hi := last+300*time.Millisecond, min(d-guardBefore-200*time.Millisecond, cfg.Feed)
				if hi <= lo {
					// No room for an action before the deadline: it expires
					// (or, when long, stays until the end).
					t = max(d, last) + uniform(r, 500*time.Millisecond, 4*time.Second)
					break
				}
				ta := uniform(r, lo, min(hi, lo+6*time.Second))
				x := r.IntN(100)
				switch {
				case x < 45: // refresh: same created_ts, deadline moves on
					d = chooseDeadline(ta, long)
					add(&genEvent{At: ta, Type: callMember, StateKey: sk(key), Sender: user, Device: device,
						CallID: callID, CreatedOff: created, Refresh: true, Expires: d - created})
					last = ta
					continue
				case x < 65: // hang up
					add(&genEvent{At: ta, Type: callMember, StateKey: sk(key), Sender: user, Hangup: true})
					t = ta + uniform(r, 500*time.Millisecond, 5*time.Second)
				case x < 85: // nothing more: the membership expires
					t = d + uniform(r, 500*time.Millisecond, 5*time.Second)
				case x < 93: // the user leaves the room, and may come back
					add(&genEvent{At: ta, Type: roomMember, StateKey: sk(user), Sender: user, Membership: "leave"})
					inRoom[user] = false
					back := ta + uniform(r, 300*time.Millisecond, 3*time.Second)
					if r.IntN(2) == 0 && back < d-guardBefore-200*time.Millisecond {
						add(&genEvent{At: back, Type: roomMember, StateKey: sk(user), Sender: user, Membership: "join"})
						inRoom[user] = true
						last = back
						continue
					}
					t = max(d, ta) + uniform(r, 500*time.Millisecond, 4*time.Second)
				default: // a rejoin with a new created_ts replaces the membership
					created = ta
					d = chooseDeadline(ta, long)
					add(&genEvent{At: ta, Type: callMember, StateKey: sk(key), Sender: user, Device: device,
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
		add(&genEvent{At: uniform(r, 0, cfg.Feed), Type: roomMsg, Sender: u})
	}
	slices.SortStableFunc(evs, func(a, b *genEvent) int { return int(a.At - b.At) })
	return evs, dls
}

func (w *workload) forwardedCount() int {
	n := 0
	for _, e := range w.Events {
		if e.Forwarded {
			n++
		}
	}
	return n
}

// TestWorkloadRules checks the generator: sizes within the range,
// the deadline guards and the quiet window hold, deliveries are in time
// order, and the same seed gives the same workload.
func TestWorkloadRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		seed uint64
	}{{"seed 1", 1}, {"seed 42", 42}, {"seed 20261201", 20261201}, {"seed max", ^uint64(0)}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaultWorkloadConfig(tc.seed)
			w := generate(cfg)
			if n := w.forwardedCount(); n < 300 || n > 750 {
				t.Errorf("%d forwarded inputs, want 300-750", n)
			}
			kinds := map[string]int{}
			for _, e := range w.Events {
				k := e.Type
				switch {
				case e.Hangup:
					k += "/hangup"
				case e.Refresh:
					k += "/refresh"
				case e.Type == roomMember:
					k += "/" + e.Membership
				}
				kinds[k]++
			}
			for _, k := range []string{callMember, callMember + "/refresh", callMember + "/hangup",
				roomMember + "/join", roomMember + "/leave", roomMsg} {
				if kinds[k] == 0 {
					t.Errorf("no %s events: %v", k, kinds)
				}
			}
			expiring := 0
			for room, dls := range w.Deadlines {
				for _, d := range dls {
					if d < time.Hour && d > cfg.Feed+10*time.Second {
						t.Errorf("room %s: deadline %s too late: the test would wait for it", room, d)
					}
					if d >= cfg.QuietFrom && d < cfg.QuietTo {
						t.Errorf("room %s: deadline %s in the quiet window", room, d)
					}
					if d < time.Hour {
						expiring++
					}
				}
			}
			if expiring < 50 {
				t.Errorf("only %d short deadlines", expiring)
			}
			byRoom := map[string][]*genEvent{}
			for _, e := range w.Events {
				byRoom[e.Room] = append(byRoom[e.Room], e)
			}
			for room, evs := range byRoom {
				if !roomRespectsGuards(evs, w.Deadlines[room]) {
					t.Errorf("room %s: an input is planned within the guard of a deadline", room)
				}
			}
			if !slices.IsSortedFunc(w.Deliveries, func(a, b delivery) int { return int(a.At - b.At) }) {
				t.Error("deliveries not in time order")
			}
			again := generate(cfg)
			if len(again.Deliveries) != len(w.Deliveries) {
				t.Fatal("the same seed gave another workload")
			}
			for i := range w.Deliveries {
				a, b := w.Deliveries[i], again.Deliveries[i]
				if a.At != b.At || a.HS != b.HS || string(a.Ev.JSON(1)) != string(b.Ev.JSON(1)) {
					t.Fatalf("delivery %d differs for the same seed", i)
				}
			}
			t.Logf("%d events (%d forwarded), %d deliveries, %d short deadlines, last at %s; %v",
				len(w.Events), w.forwardedCount(), len(w.Deliveries), expiring, w.LastShortDeadline, kinds)
		})
	}
}
