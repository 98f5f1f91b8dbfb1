package rtc

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// Y2100 is 2100-01-01 in ms: a sender's clock far in the future.
const Y2100 = int64(4102444800000)

func withTS(e rawevent.RawEvent, ts int64) rawevent.RawEvent { e.OriginServerTS = ts; return e }

// TestEffectiveTime: the rule at its boundaries.
func TestEffectiveTime(t *testing.T) {
	cfg := DefaultConfig()
	skew := cfg.ClockSkewMS
	strict := cfg
	strict.ClockSkewMS = 0
	tests := []struct {
		name     string
		cfg      Config
		ts, recv int64
		want     int64
	}{
		{"sent before received", cfg, T0, T0 + 1000, T0},
		{"sent when received", cfg, T0, T0, T0},
		{"ahead within the allowance", cfg, T0 + 1000, T0, T0 + 1000},
		{"ahead by exactly the allowance", cfg, T0 + skew, T0, T0 + skew},
		{"ahead by the allowance + 1 ms", cfg, T0 + skew + 1, T0, T0},
		{"year 2100", cfg, Y2100, T0, T0},
		{"no receive time: origin_server_ts", cfg, Y2100, 0, Y2100},
		{"strict: 1 ms ahead", strict, T0 + 1, T0, T0},
		{"strict: on time", strict, T0, T0, T0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := rawevent.RawEvent{OriginServerTS: tt.ts, ReceivedAt: tt.recv}
			if got := EffectiveTime(tt.cfg, &ev); got != tt.want {
				t.Fatalf("EffectiveTime(ts %d, recv %d) = %d, want %d", tt.ts, tt.recv, got, tt.want)
			}
		})
	}
}

// TestMembershipBounds: created_ts(), the deadline and the sticky deadline
// at the boundaries of the rule (every case through the reducer).
func TestMembershipBounds(t *testing.T) {
	cfg := DefaultConfig()
	skew, maxExp := cfg.ClockSkewMS, cfg.MaxExpiresMS
	tests := []struct {
		name              string
		in                rawevent.RawEvent
		joined, deadline  int64
		noJoin            bool
		rank, registerRcv int64
	}{
		{name: "on time, default expiry", in: withRecv(callJoin(alice, "A", "", T0, ""), T0+50),
			joined: T0, deadline: T0 + 4*hour, rank: T0},
		{name: "ahead within skew: believed", in: withRecv(callJoin(alice, "A", "", T0+skew, ""), T0),
			joined: T0 + skew, deadline: T0 + skew + 4*hour, rank: T0 + skew},
		{name: "ahead beyond skew: received time", in: withRecv(callJoin(alice, "A", "", T0+skew+1, ""), T0),
			joined: T0, deadline: T0 + 4*hour, rank: T0},
		{name: "year 2100: received time", in: withRecv(callJoin(alice, "A", "", Y2100, ""), T0),
			joined: T0, deadline: T0 + 4*hour, rank: T0},
		{name: "created_ts 2100 clamped to the effective time", in: withRecv(callJoin(alice, "A", "", T0, fmt.Sprintf(`,"created_ts":%d`, Y2100)), T0),
			joined: T0, deadline: T0 + 4*hour, rank: T0},
		{name: "created_ts in the past is kept", in: withRecv(callJoin(alice, "A", "", T0, fmt.Sprintf(`,"created_ts":%d`, T0-hour)), T0),
			joined: T0 - hour, deadline: T0 + 3*hour, rank: T0},
		{name: "cap past receipt binds when believed ahead", in: withRecv(callJoin(alice, "A", "", T0+skew, fmt.Sprintf(`,"expires":%d`, 30*24*hour)), T0),
			joined: T0 + skew, deadline: T0 + maxExp, rank: T0 + skew},
		{name: "expires above the cap is capped", in: withRecv(callJoin(alice, "A", "", T0, fmt.Sprintf(`,"expires":%d`, int64(rawevent.MaxSafeInteger))), T0),
			joined: T0, deadline: T0 + maxExp, rank: T0},
		{name: "legacy expires_ts 2100 is capped past receipt", in: withRecv(ev{typ: rawevent.TypeCallMember.Type, stateKey: alice, sender: alice, id: "$arr", ts: Y2100,
			content: fmt.Sprintf(`{"memberships":[{"application":"m.call","call_id":"","device_id":"A","expires_ts":%d}]}`, Y2100+hour)}.raw(), T0),
			joined: T0, deadline: T0 + maxExp, rank: T0},
		{name: "sticky 2100: starts and ranks at receipt", in: withRecv(sticky(alice, "A", "m1", Y2100, ""), T0),
			joined: T0, deadline: T0 + hour, rank: T0 + hour},
		{name: "sticky ahead within skew: deadline from receipt", in: withRecv(sticky(alice, "A", "m1", T0+skew, ""), T0),
			joined: T0 + skew, deadline: T0 + hour, rank: T0 + skew + hour},
		{name: "sent long before receipt: already expired", in: withRecv(callJoin(alice, "A", "", T0, `,"expires":5000`), T0+5000),
			noJoin: true, rank: T0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, evs, rej := run(t, tt.in)
			if len(rej) != 0 {
				t.Fatalf("rejections %v", rej)
			}
			var reg *Register
			for _, r := range st.Registers {
				reg = r
			}
			if reg == nil || reg.Rank != tt.rank || reg.ReceivedAt != tt.in.ReceivedAt || reg.TS != tt.in.OriginServerTS {
				t.Fatalf("register %+v, want rank %d", reg, tt.rank)
			}
			if tt.noJoin {
				wantKinds(t, evs)
				return
			}
			wantKinds(t, evs, "session_started", "member_joined")
			m := evs[1].Member
			if m.JoinedAt != tt.joined || m.ExpiresAt != tt.deadline {
				t.Fatalf("joined %d expires %d, want %d %d", m.JoinedAt, m.ExpiresAt, tt.joined, tt.deadline)
			}
			if evs[0].At > tt.in.ReceivedAt+skew || evs[1].At > tt.in.ReceivedAt+skew {
				t.Fatalf("transition at %d, later than receipt + skew", evs[1].At)
			}
			if m.ExpiresAt > tt.in.ReceivedAt+maxExp {
				t.Fatalf("membership outlives receipt + cap: %d > %d", m.ExpiresAt, tt.in.ReceivedAt+maxExp)
			}
		})
	}
}

// TestForgedClockRoomKeepsWorking is the forged-clock reproduction at the reducer:
// events dated 2100 neither end nor pin anyone, and later joins still work.
func TestForgedClockRoomKeepsWorking(t *testing.T) {
	r := func(e rawevent.RawEvent, at int64) rawevent.RawEvent { return withRecv(e, at) }
	st, evs, rej := run(t,
		r(callJoin(alice, "A", "", T0, ""), T0),
		// Carol's homeserver dates her join 2100: she joins now, for 4 h.
		r(callJoin(carol, "C", "", Y2100, ""), T0+1000),
		// Mallory writes Alice's key, dated 2100: Alice's membership is
		// replaced by invalid content (as without the date), not for ever.
		r(withSender(callJoin(alice, "A", "", Y2100, ""), "@mallory:evil.example"), T0+2000),
		// A leave for Carol dated 2100 is a leave now.
		r(callLeave(carol, "C", Y2100+5), T0+3000),
		// Alice rejoins on the same key, at a real time, after the forged
		// write: she is back.
		r(callJoin(alice, "A", "", T0+4000, ""), T0+4000),
		// Bob joins later: he joins.
		r(callJoin(bob, "B", "", T0+5000, ""), T0+5000),
	)
	wantKinds(t, evs, "session_started", "member_joined", "member_joined", "member_left/invalid",
		"member_left/leave", "session_ended/leave", "session_started", "member_joined", "member_joined")
	if len(rej) != 1 || rej[0].Code != RejectForeignStateKey {
		t.Fatalf("rejections %v", rej)
	}
	if st.Clock != T0+5000 {
		t.Fatalf("room clock %d moved by a sender's clock", st.Clock)
	}
	for _, e := range evs {
		if e.At > T0+5000 || (e.Summary != nil && e.Summary.EndedAt > T0+5000) {
			t.Fatalf("%s at %d: a sender's clock became a transition time", e.Kind, e.At)
		}
	}
	if got := members(st); !slices.Equal(got, []string{"m.call| @alice:example.org/A", "m.call| @bob:example.org/B"}) {
		t.Fatalf("members %v", got)
	}
	if d := st.NextDeadline(); d != T0+4000+4*hour {
		t.Fatalf("next deadline %d", d)
	}
	// And they expire on time: nothing of 2100 is left.
	res := Apply(DefaultConfig(), st, ptr(tick(T0+5000+4*hour)))
	wantKinds(t, res.Events, "member_left/expired", "member_left/expired", "session_ended/expired")
	if st.NextDeadline() != 0 {
		t.Fatalf("deadline %d left", st.NextDeadline())
	}
}

// TestForgedRoomMembershipAndSlot: a room leave or a slot closing dated 2100
// does not shadow the real events that follow it.
func TestForgedRoomMembershipAndSlot(t *testing.T) {
	_, evs, _ := run(t,
		withRecv(callJoin(alice, "A", "", T0, ""), T0),
		withRecv(roomMember(alice, "leave", Y2100), T0+1000),
		withRecv(roomMember(alice, "join", T0+2000), T0+2000),
	)
	wantKinds(t, evs, "session_started", "member_joined", "member_left/left_room", "session_ended/left_room",
		"session_started", "member_joined")
	if evs[2].At != T0+1000 {
		t.Fatalf("left at %d, want the receive time", evs[2].At)
	}
	_, evs, _ = run(t,
		withRecv(slot("open", T0), T0),
		withRecv(callJoin(alice, "A", "", T0+1, ""), T0+1),
		withRecv(slot("closed", Y2100), T0+2),
		withRecv(slot("open", T0+3), T0+3),
	)
	wantKinds(t, evs, "session_started", "member_joined", "member_left/slot_closed", "session_ended/slot_closed",
		"session_started", "member_joined")
}

// TestOutOfRangeRejected: numbers no real event carries are rejected with a
// code, and nothing of them is stored (or, for content, the register says
// why it does not count).
func TestOutOfRangeRejected(t *testing.T) {
	tests := []struct {
		name    string
		in      rawevent.RawEvent
		reason  string
		stored  bool // content problem: the register holds the invalid event
		clockTo int64
	}{
		{name: "origin_server_ts 2^63-100", in: withRecv(withTS(callJoin(alice, "A", "", T0, ""), 1<<63-100), T0+7),
			reason: "origin_server_ts", clockTo: T0 + 7},
		{name: "origin_server_ts beyond year 2500", in: withRecv(withTS(callJoin(alice, "A", "", T0, ""), MaxTimestamp+1), T0+7),
			reason: "origin_server_ts", clockTo: T0 + 7},
		{name: "origin_server_ts 0", in: withRecv(withTS(callJoin(alice, "A", "", T0, ""), 0), T0+7),
			reason: "origin_server_ts", clockTo: T0 + 7},
		{name: "negative origin_server_ts", in: withRecv(withTS(roomMember(alice, "leave", T0), -1), T0+7),
			reason: "origin_server_ts", clockTo: T0 + 7},
		{name: "received_at 2^63-100 does not move the clock", in: withRecv(callJoin(alice, "A", "", T0, ""), 1<<63-100),
			reason: "received_at", clockTo: T0 - 1},
		{name: "negative received_at", in: withRecv(callJoin(alice, "A", "", T0, ""), -5),
			reason: "received_at", clockTo: T0 - 1},
		{name: "expires 1e30", in: callJoin(alice, "A", "", T0, `,"expires":1e30`), reason: "expires too large", stored: true, clockTo: T0},
		{name: "expires 1e400", in: callJoin(alice, "A", "", T0, `,"expires":1e400`), reason: "expires too large", stored: true, clockTo: T0},
		{name: "expires 2^53", in: callJoin(alice, "A", "", T0, `,"expires":9007199254740992`), reason: "expires too large", stored: true, clockTo: T0},
		{name: "expires 0", in: callJoin(alice, "A", "", T0, `,"expires":0`), reason: "expires must be at least 1", stored: true, clockTo: T0},
		{name: "negative expires", in: callJoin(alice, "A", "", T0, `,"expires":-1`), reason: "expires must be at least 1", stored: true, clockTo: T0},
		{name: "created_ts beyond year 2500", in: callJoin(alice, "A", "", T0, `,"created_ts":1e17`), reason: "created_ts too large", stored: true, clockTo: T0},
		{name: "negative created_ts", in: callJoin(alice, "A", "", T0, `,"created_ts":-1`), reason: "created_ts must not be negative", stored: true, clockTo: T0},
		{name: "legacy expires_ts beyond year 2500", in: ev{typ: rawevent.TypeCallMember.Type, stateKey: alice, sender: alice, id: "$arr", ts: T0,
			content: `{"memberships":[{"application":"m.call","call_id":"","device_id":"A","expires_ts":1e17}]}`}.raw(),
			reason: "expires_ts too large", stored: true, clockTo: T0},
		{name: "negative sticky duration", in: func() rawevent.RawEvent {
			e := sticky(alice, "A", "m", T0, "")
			e.StickyDurationMS = ptr(int64(-1))
			return e
		}(),
			reason: "negative sticky duration", stored: true, clockTo: T0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := NewRoomState(room)
			st.Clock = T0 - 1
			res := Apply(DefaultConfig(), st, &tt.in)
			if len(res.Events) != 0 {
				t.Fatalf("events %v", kinds(res.Events))
			}
			if len(res.Rejections) != 1 || res.Rejections[0].Code != RejectOutOfRange || !strings.Contains(res.Rejections[0].Reason, tt.reason) {
				t.Fatalf("want one out_of_range rejection naming %q, got %v", tt.reason, res.Rejections)
			}
			if st.Clock != tt.clockTo {
				t.Fatalf("clock %d, want %d", st.Clock, tt.clockTo)
			}
			switch {
			case !tt.stored && (len(st.Registers)+len(st.RoomMembers) != 0 || !res.Stale):
				t.Fatalf("out-of-range event stored: %+v", st.Registers)
			case tt.stored:
				if len(st.Registers) != 1 {
					t.Fatalf("registers %+v", st.Registers)
				}
				for _, r := range st.Registers {
					if r.Kind != RegisterInvalid || r.WhyCode != RejectOutOfRange || !strings.Contains(r.Why, tt.reason) {
						t.Fatalf("register %+v does not say why it does not count", r)
					}
				}
			}
		})
	}
}

// TestRejectionCodes: every rejection the reducer makes carries a code from
// RejectionCodes, for each kind of input that is rejected.
func TestRejectionCodes(t *testing.T) {
	codes := RejectionCodes()
	seen := map[RejectionCode]bool{}
	for _, c := range codes {
		if c == "" || seen[c] || strings.ContainsAny(string(c), " .-") {
			t.Fatalf("bad or duplicate code %q", c)
		}
		seen[c] = true
	}
	e6 := example(t, "E6")[0]
	tests := []struct {
		in   rawevent.RawEvent
		want RejectionCode
	}{
		{func() rawevent.RawEvent { e := callJoin(alice, "A", "", T0, ""); e.RoomID = "!other:x"; return e }(), RejectWrongRoom},
		{ev{typ: "m.room.message", sender: alice, id: "$m", ts: T0, noState: true, content: `{}`}.raw(), RejectUnknownType},
		{ev{typ: rawevent.TypeCallMember.Type, sender: alice, id: "$n", ts: T0, noState: true, content: `{}`}.raw(), RejectNoStateKey},
		{ev{typ: rawevent.TypeRTCMemberUnstable.Type, stateKey: "k", sender: alice, id: "$s", ts: T0, content: `{}`}.raw(), RejectStickyState},
		{ev{typ: rawevent.TypeRTCMemberUnstable.Type, sender: alice, id: "$k", ts: T0, noState: true, sticky: hour, content: `{"application":{"type":"m.call"}}`}.raw(), RejectNoStickyKey},
		{ev{typ: "m.room.redaction", sender: alice, id: "$r", ts: T0, noState: true, content: `{}`}.raw(), RejectNoRedacts},
		{example(t, "E7")[0], RejectMalformed},
		{withContent(callJoin(alice, "A", "", T0, ""), `{"application":"m.call","call_id":"","device_id":"`+strings.Repeat("d", 300)+`","focus_active":{"type":"x"}}`), RejectTooLarge},
		{callJoin(alice, "A", "", T0, `,"expires":1e30`), RejectOutOfRange},
		{e6, RejectForeignStateKey},
		{withSender(sticky(alice, "A", "mid", T0, ""), bob), RejectForeignUser},
		{ev{typ: rawevent.TypeCallMember.Type, stateKey: alice, sender: alice, id: "$a1", ts: T0,
			content: `{"memberships":[{"application":"m.call","call_id":"x","device_id":"A","expires":1000}]}`}.raw(), RejectNotRoomCall},
		{ev{typ: rawevent.TypeCallMember.Type, stateKey: alice, sender: alice, id: "$a2", ts: T0,
			content: `{"memberships":[{"application":"m.call","call_id":"","device_id":"A","expires":1000},{"application":"m.call","call_id":"","device_id":"A","expires":1000}]}`}.raw(), RejectDuplicateDevice},
	}
	covered := map[RejectionCode]bool{}
	for _, tt := range tests {
		t.Run(string(tt.want), func(t *testing.T) {
			res := Apply(DefaultConfig(), NewRoomState(room), &tt.in)
			if len(res.Rejections) != 1 || res.Rejections[0].Code != tt.want || res.Rejections[0].Reason == "" {
				t.Fatalf("want one %s rejection, got %v", tt.want, res.Rejections)
			}
			covered[tt.want] = true
		})
	}
	for _, c := range codes {
		if !covered[c] {
			t.Errorf("code %s has no test", c)
		}
	}
	// Random histories: every rejection has a known code.
	for seed := uint64(0); seed < 20; seed++ {
		_, _, rej := run(t, randomEvents(rand.New(rand.NewPCG(seed, 3)), 80)...)
		for _, r := range rej {
			if !seen[r.Code] || r.Reason == "" {
				t.Fatalf("seed %d: rejection %v has no known code", seed, r)
			}
		}
	}
}

// TestRegisterWhy: a register that does not count says why; one whose
// legacy entries partly count names the entries that do not.
func TestRegisterWhy(t *testing.T) {
	st, _, _ := run(t, example(t, "E6")...)
	for _, r := range st.Registers {
		if r.Kind != RegisterInvalid || r.WhyCode != RejectForeignStateKey || !strings.Contains(r.Why, "@alice:example.org") {
			t.Fatalf("register %+v", r)
		}
	}
	st, _, _ = run(t, ev{typ: rawevent.TypeCallMember.Type, stateKey: alice, sender: alice, id: "$arr", ts: T0,
		content: `{"memberships":[{"application":"m.call","call_id":"","device_id":"A","expires":3600000},{"application":"m.call","call_id":"other","device_id":"B","expires":3600000}]}`}.raw())
	for _, r := range st.Registers {
		if r.Kind != RegisterJoin || r.WhyCode != RejectNotRoomCall || !strings.Contains(r.Why, "memberships[1]") {
			t.Fatalf("register %+v", r)
		}
	}
	st, _, _ = run(t, callJoin(alice, "A", "", T0, `,"expires":5000`), callJoin(bob, "B", "", T0, ""), roomMember(bob, "leave", T0+1))
	status := map[id.UserID]events.Reason{}
	for _, r := range st.Registers {
		if r.WhyCode != "" || r.Why != "" {
			t.Fatalf("a valid register says %s: %s", r.WhyCode, r.Why)
		}
		status[r.Claims[0].User] = st.ClaimStatus(&r.Claims[0])
	}
	if status[alice] != "" || status[bob] != events.ReasonLeftRoom {
		t.Fatalf("claim status %v", status)
	}
	Apply(DefaultConfig(), st, ptr(tick(T0+5000)))
	for _, r := range st.Registers {
		if r.Claims[0].User == alice && st.ClaimStatus(&r.Claims[0]) != events.ReasonExpired {
			t.Fatalf("expired claim: %q", st.ClaimStatus(&r.Claims[0]))
		}
	}
}

// TestSameEventReceivedTwice: the same event delivered twice (outside the
// ingest's duplicate window, or from two homeservers) with different receive
// times gives the same state whatever the order: the earliest received copy
// wins, for a sender's clock far ahead (rank and start from the receive
// time), within the allowance (the cap past receipt) and for sticky events
// (deadline from the receive time).
func TestSameEventReceivedTwice(t *testing.T) {
	skew := DefaultConfig().ClockSkewMS
	tests := []struct {
		name   string
		e      rawevent.RawEvent
		r1, r2 int64
	}{
		{"dated 2100", callJoin(carol, "C", "", Y2100, ""), T0, T0 + hour},
		{"ahead within the allowance, long expiry", callJoin(carol, "C", "", T0+skew, fmt.Sprintf(`,"expires":%d`, 30*24*hour)), T0, T0 + skew},
		{"sticky ahead within the allowance", sticky(carol, "C", "m", T0+skew, ""), T0, T0 + skew},
		{"sticky dated 2100", sticky(carol, "C", "m", Y2100, ""), T0, T0 + 1000},
		{"room leave dated 2100", roomMember(alice, "leave", Y2100), T0 + 10, T0 + hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, second := withRecv(tt.e, tt.r1), withRecv(tt.e, tt.r2)
			other := []rawevent.RawEvent{withRecv(callJoin(alice, "A", "", T0, ""), T0), withRecv(callJoin(bob, "B", "", T0+5, ""), T0+5)}
			var want string
			for p, order := range [][]rawevent.RawEvent{
				{other[0], first, other[1], second},
				{other[0], second, other[1], first},
				{second, first, other[0], other[1]},
				{first, second, other[1], other[0]},
				{other[1], other[0], second, first},
			} {
				st, _, _ := run(t, order...)
				got := fingerprint(st) + fmt.Sprint(registerTimes(st))
				if p == 0 {
					want = got
				} else if got != want {
					t.Fatalf("order %d diverged:\n got  %s\n want %s", p, got, want)
				}
			}
			// The state is that of the earliest copy alone.
			st, _, _ := run(t, other[0], first, other[1])
			st.Clock = max(st.Clock, tt.r2)
			if got := fingerprint(st) + fmt.Sprint(registerTimes(st)); got != want {
				t.Fatalf("not the earliest copy's state:\n got  %s\n want %s", got, want)
			}
		})
	}
}

// registerTimes lists each register's event, rank and receive time, and
// each room member's time.
func registerTimes(st *RoomState) []string {
	var out []string
	for k, r := range st.Registers {
		out = append(out, fmt.Sprintf("%q %s rank=%d recv=%d", k, r.EventID, r.Rank, r.ReceivedAt))
	}
	for u, m := range st.RoomMembers {
		out = append(out, fmt.Sprintf("%s %s %d", u, m.Membership, m.TS))
	}
	slices.Sort(out)
	return out
}

// TestConfigValidateSkew: the skew allowance must be within [0, cap].
func TestConfigValidateSkew(t *testing.T) {
	for _, tt := range []struct {
		skew int64
		ok   bool
	}{{0, true}, {5 * 60_000, true}, {-1, false}, {DefaultConfig().MaxExpiresMS + 1, false}} {
		c := DefaultConfig()
		c.ClockSkewMS = tt.skew
		if err := c.Validate(); (err == nil) != tt.ok {
			t.Errorf("skew %d: Validate() = %v", tt.skew, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestClipWhy: a long reason is cut at the bound, between runes.
func TestClipWhy(t *testing.T) {
	short := "device_id missing"
	if clipWhy(short) != short {
		t.Fatal("a short reason was changed")
	}
	long := "x" + strings.Repeat("é", maxWhyBytes) // 2 bytes each: byte maxWhyBytes is inside a rune
	got := clipWhy(long)
	if len(got) > maxWhyBytes+3 || !utf8.ValidString(got) || !strings.HasSuffix(got, "...") {
		t.Fatalf("clipped to %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
}
