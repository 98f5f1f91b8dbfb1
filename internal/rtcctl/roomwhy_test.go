package rtcctl

import (
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// TestWhyNotCounted: every reason the reducer can have not to count a
// register is shown (the register's kind and rejection, and each claim's
// expiry, room leave, closed slot or a newer claim of the same device),
// and a counted claim shows none.
func TestWhyNotCounted(t *testing.T) {
	const clock = 1700000010000
	claim := func(user id.UserID, dev id.DeviceID, deadline int64, ev id.EventID) rtc.Claim {
		return rtc.Claim{App: "m.call", User: user, Device: dev, MemberKey: string(dev), MembershipID: "m-" + string(ev),
			CreatedTS: 1700000000000, Deadline: deadline, Format: events.FormatSession, EventID: ev, TS: 1700000000000}
	}
	st := rtc.NewRoomState(roomA)
	st.Clock = clock
	st.RoomMembers = map[id.UserID]rtc.RoomMember{"@gone:hs1.test": {Membership: "leave", TS: 1700000005000}}
	st.Slots = map[string]rtc.Slot{rtc.SlotID("io.game", "g1"): {Open: false, TS: 1700000006000}}
	st.Sessions = map[string]*rtc.Session{"m.call\x00": {App: "m.call", ID: "s1", Members: map[string]*rtc.SessionMember{
		"@alice:hs1.test\x00AD": {MemberKey: "AD", Member: events.Member{UserID: "@alice:hs1.test", DeviceID: "AD", EventID: "$new", MembershipID: "m-$new"}},
	}}}
	slotClaim := claim("@carol:hs1.test", "CD", clock+1000, "$slot")
	slotClaim.App, slotClaim.CallID = "io.game", "g1"

	tests := []struct {
		name string
		reg  rtc.Register
		want string
	}{
		{"counted", rtc.Register{Kind: rtc.RegisterJoin, Claims: []rtc.Claim{claim("@alice:hs1.test", "AD", clock+1000, "$new")}}, ""},
		{"expired", rtc.Register{Kind: rtc.RegisterJoin, Claims: []rtc.Claim{claim("@bob:hs1.test", "BD", 1700000004000, "$b")}},
			"expired at 2023-11-14T22:13:24.000Z"},
		{"expired at the clock", rtc.Register{Kind: rtc.RegisterJoin, Claims: []rtc.Claim{claim("@bob:hs1.test", "BD", clock, "$b")}},
			"expired at 2023-11-14T22:13:30.000Z"},
		{"left the room", rtc.Register{Kind: rtc.RegisterJoin, Claims: []rtc.Claim{claim("@gone:hs1.test", "GD", clock+1000, "$g")}},
			"its user left the room (leave at 2023-11-14T22:13:25.000Z)"},
		{"slot closed", rtc.Register{Kind: rtc.RegisterJoin, Claims: []rtc.Claim{slotClaim}},
			"its slot io.game#g1 closed at 2023-11-14T22:13:26.000Z"},
		{"superseded", rtc.Register{Kind: rtc.RegisterJoin, Claims: []rtc.Claim{claim("@alice:hs1.test", "AD", clock+1000, "$old")}},
			"superseded by $new (membership m-$new)"},
		{"in no session", rtc.Register{Kind: rtc.RegisterJoin, Claims: []rtc.Claim{claim("@dave:hs1.test", "DD", clock+1000, "$d")}},
			"not a member of any session"},
		{"leave", rtc.Register{Kind: rtc.RegisterLeave}, "a leave (no membership)"},
		{"redacted", rtc.Register{Kind: rtc.RegisterRedacted}, "redacted"},
		{"invalid", rtc.Register{Kind: rtc.RegisterInvalid, WhyCode: rtc.RejectForeignStateKey, Why: "state key names @c, sender is @m"},
			"foreign_state_key: state key names @c, sender is @m"},
		{"legacy array, one entry rejected, one expired", rtc.Register{Kind: rtc.RegisterJoin, WhyCode: rtc.RejectForeignStateKey, Why: "entry 2: x",
			Claims: []rtc.Claim{claim("@alice:hs1.test", "AD", clock+1000, "$new"), claim("@alice:hs1.test", "AE", 1700000004000, "$new")}},
			"foreign_state_key: entry 2: x; @alice:hs1.test/AE: expired at 2023-11-14T22:13:24.000Z"},
		{"expired and left", rtc.Register{Kind: rtc.RegisterJoin, Claims: []rtc.Claim{claim("@gone:hs1.test", "GD", 1700000004000, "$g")}},
			"expired at 2023-11-14T22:13:24.000Z, its user left the room (leave at 2023-11-14T22:13:25.000Z)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := WhyNotCounted(st, &tc.reg); got != tc.want {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}
