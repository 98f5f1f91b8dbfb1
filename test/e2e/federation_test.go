package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/dendritetest"
	"github.com/rtcsessions/rtc-sessions/internal/e2etest"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// TestFederated acts out Element Call between users of two federating
// Dendrites, each pushing to the same ingest as its appservice, with two
// aggregators behind it. The scenarios share the stack,
// each in rooms of its own, and run in order: the last one restarts the
// ingest and kills an aggregator.
func TestFederated(t *testing.T) {
	f := startFederatedStack(t)
	for _, sc := range []struct {
		name string
		run  func(*testing.T, *fedStack)
	}{
		{"SessionForm", fedSessionForm},
		{"BothHomeservers", fedBothHomeservers},
		{"CrashedClient", fedCrashedClient},
		{"LeaveRoom", fedLeaveRoom},
		{"HostileWrite", fedHostileWrite},
		{"Malformed", fedMalformed},
		{"SeedAndLegacy", fedSeedAndLegacy},
		{"RoomVersion12", fedRoomVersion12},
		{"SessionsAndKeys", fedSessionsAndKeys},
		{"IngestRestartAggregatorKill", fedRestarts},
	} {
		t.Run(sc.name, func(t *testing.T) { sc.run(t, f) })
	}
}

// fedSessionForm: a user of hs2 in a room of hs1 joins in the session form
// (state key _@user:hs_DEVICE_m.call), refreshes with created_ts (the same
// membership: member_updated, a later expiry, the same start) and hangs up
// with {}: member_left (leave) and session_ended with its summary.
func fedSessionForm(t *testing.T, f *fedStack) {
	st := f.on(t)
	alice := f.user(t, f.hs1, "alice", "ALICEDEV")
	bob := f.user(t, f.hs2, "bob", "BOBDEV")
	room := f.room(t, f.hs1, alice, bob)
	key := deviceKey(bob, bob.DeviceID)

	join := sendState(t, bob, room, key, callContent(bob.DeviceID, fourHours, 0, "sf1"))
	evs := st.waitSessionEvents(room, 2)
	e2etest.Check(t, evs, []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(bob), 1, 1)})
	ts := rawOf(t, st.rawEvents(room), join).OriginServerTS
	m := *evs[1].Member
	if evs[0].At != ts || evs[1].At != ts || m.JoinedAt != ts || m.ExpiresAt != ts+fourHours || m.EventID != join {
		t.Errorf("join %s (origin_server_ts %d): started at %d, member_joined at %d with %+v", join, ts, evs[0].At, evs[1].At, m)
	}
	if live := checkLive(t, st, room, 1, liveDevice{user: bob}); live.StartedAt != ts || live.Members[0].ExpiresAt != ts+fourHours {
		t.Errorf("live session %+v, want started at %d, expiring at %d", live, ts, ts+fourHours)
	}

	refresh := sendState(t, bob, room, key, callContent(bob.DeviceID, 2*fourHours, ts, "sf1"))
	evs = st.waitSessionEvents(room, 3)
	e2etest.Check(t, evs, []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(bob), 1, 1), e2etest.Updated(e2etest.Of(bob), 1, 1)})
	u := *evs[2].Member
	if u.MembershipID != m.MembershipID || u.JoinedAt != ts || u.ExpiresAt != ts+2*fourHours || u.EventID != refresh {
		t.Errorf("refresh %s: member_updated with %+v, want membership %s joined at %d expiring at %d",
			refresh, u, m.MembershipID, ts, ts+2*fourHours)
	}
	if live := checkLive(t, st, room, 1, liveDevice{user: bob}); live.StartedAt != ts || live.Members[0].ExpiresAt != ts+2*fourHours {
		t.Errorf("live session after the refresh %+v, want started at %d, expiring at %d", live, ts, ts+2*fourHours)
	}

	hang := sendState(t, bob, room, key, map[string]any{})
	evs = st.waitSessionEvents(room, 5)
	e2etest.Check(t, evs, []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(bob), 1, 1), e2etest.Updated(e2etest.Of(bob), 1, 1),
		e2etest.Left(e2etest.Of(bob), events.ReasonLeave, 0, 0), e2etest.Ended(events.ReasonLeave)})
	leaveTS := rawOf(t, st.rawEvents(room), hang).OriginServerTS
	if evs[3].At != leaveTS || evs[3].Member.MembershipID != m.MembershipID {
		t.Errorf("member_left %+v at %d, want membership %s at %d", evs[3].Member, evs[3].At, m.MembershipID, leaveTS)
	}
	e2etest.CheckSummary(t, evs[4], ts, leaveTS, 1, 1, 1)
	checkLive(t, st, room, 0)
}

// fedBothHomeservers: users of both homeservers (Bob on two devices) in a
// room of hs2. Both homeservers push every event to the ingest: RTC_RAW
// holds each once (deduplicated by event id) and each device counts once.
func fedBothHomeservers(t *testing.T, f *fedStack) {
	st := f.on(t)
	alice := f.user(t, f.hs1, "alice", "ALICEDEV")
	bob := f.user(t, f.hs2, "bob", "BOBPHONE")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	bobLaptop, err := f.hs2.Login(ctx, bob.UserID.Localpart(), dendritetest.Password(bob.UserID.Localpart()), "BOBLAPTOP")
	if err != nil {
		t.Fatal(err)
	}
	room := f.room(t, f.hs2, bob, alice)

	const fwd, dup = "rtc_ingest_events_forwarded_total", "rtc_ingest_events_duplicate_total"
	memberType := `type="` + callMemberType.Type + `"`
	delivered := func(hs string) float64 {
		return ingestSum(t, st, fwd, `homeserver="`+hs+`"`, `source="appservice"`, memberType) +
			ingestSum(t, st, dup, `homeserver="`+hs+`"`, `source="appservice"`)
	}
	fwd0 := ingestSum(t, st, fwd, `source="appservice"`, memberType)
	dup0 := ingestSum(t, st, dup, `source="appservice"`)
	del0 := map[string]float64{fedHS1: delivered(fedHS1), fedHS2: delivered(fedHS2)}

	var sent []id.EventID
	step := func(c *mautrix.Client, content map[string]any, n int) {
		sent = append(sent, sendState(t, c, room, callKey(c), content))
		st.waitSessionEvents(room, n)
	}
	step(alice, callContent(alice.DeviceID, fourHours, 0, "bh"), 2)
	step(bob, callContent(bob.DeviceID, fourHours, 0, "bh"), 3)
	step(bobLaptop, callContent(bobLaptop.DeviceID, fourHours, 0, "bh"), 4)
	checkLive(t, st, room, 2, liveDevice{user: alice}, liveDevice{user: bob}, liveDevice{user: bobLaptop})
	step(bobLaptop, map[string]any{}, 5)
	step(bob, map[string]any{}, 6)
	step(alice, map[string]any{}, 8)
	evs := st.sessionEvents(room)
	e2etest.Check(t, evs, []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(alice), 1, 1), e2etest.Joined(e2etest.Of(bob), 2, 2), e2etest.Joined(e2etest.Of(bobLaptop), 3, 2),
		e2etest.Left(e2etest.Of(bobLaptop), events.ReasonLeave, 2, 2), e2etest.Left(e2etest.Of(bob), events.ReasonLeave, 1, 1),
		e2etest.Left(e2etest.Of(alice), events.ReasonLeave, 0, 0), e2etest.Ended(events.ReasonLeave)})
	raws := st.rawEvents(room)
	for _, eid := range sent {
		r := rawOf(t, raws, eid)
		if r.Source != rawevent.SourceAppservice || (r.Homeserver != fedHS1 && r.Homeserver != fedHS2) {
			t.Errorf("%s stored from %s/%s, want pushed by hs1 or hs2", eid, r.Homeserver, r.Source)
		}
	}
	e2etest.CheckSummary(t, evs[7], rawOf(t, raws, sent[0]).OriginServerTS, rawOf(t, raws, sent[5]).OriginServerTS, 3, 2, 3)
	checkLive(t, st, room, 0)

	// Each homeserver pushed every membership: what one stored first, the
	// other's copy found already there (the federated copy may come later
	// than the session events: wait for it).
	n := float64(len(sent))
	waitFor(t, "both homeservers deliver every membership", func() (bool, string) {
		d1, d2 := delivered(fedHS1)-del0[fedHS1], delivered(fedHS2)-del0[fedHS2]
		dups := ingestSum(t, st, dup, `source="appservice"`) - dup0
		return d1 >= n && d2 >= n && dups >= n,
			"delivered by hs1 " + ftoa(d1) + ", by hs2 " + ftoa(d2) + ", duplicates " + ftoa(dups) + " of " + ftoa(n)
	})
	t.Logf("memberships pushed: by hs1 %v, by hs2 %v (of %v sent); duplicates %v",
		delivered(fedHS1)-del0[fedHS1], delivered(fedHS2)-del0[fedHS2], n, ingestSum(t, st, dup, `source="appservice"`)-dup0)
	if got := ingestSum(t, st, fwd, `source="appservice"`, memberType) - fwd0; got != n {
		t.Errorf("%v call memberships stored in RTC_RAW, want %v (each once)", got, n)
	}
}

// fedCrashedClient: two clients join with short expiries and never leave
// (crashed, and Dendrite has no delayed events): each leaves with reason
// expired at its deadline (created_ts() + expires), the session ends
// (expired) when the last one does.
func fedCrashedClient(t *testing.T, f *fedStack) {
	st := f.on(t)
	alice := f.user(t, f.hs1, "alice", "ALICEDEV")
	bob := f.user(t, f.hs2, "bob", "BOBDEV")
	room := f.room(t, f.hs1, alice, bob)
	// Short enough to keep the test fast, long enough that the joins are
	// applied before their deadlines on a loaded machine; Bob's deadline
	// comes first (he joins after Alice with a shorter expiry).
	const aliceExpires, bobExpires = 10_000, 5_000
	aj := sendState(t, alice, room, callKey(alice), callContent(alice.DeviceID, aliceExpires, 0, "cc"))
	st.waitSessionEvents(room, 2)
	bj := sendState(t, bob, room, callKey(bob), callContent(bob.DeviceID, bobExpires, 0, "cc"))
	sentAt := time.Now()
	// A prefix: on a very slow machine Bob may have expired already.
	e2etest.Check(t, st.waitSessionEvents(room, 3)[:3], []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(alice), 1, 1), e2etest.Joined(e2etest.Of(bob), 2, 2)})
	if time.Since(sentAt) < bobExpires*time.Millisecond/2 {
		checkLive(t, st, room, 2, liveDevice{user: alice}, liveDevice{user: bob})
	}

	evs := st.waitSessionEvents(room, 6)
	raws := st.rawEvents(room)
	aliceTS, bobTS := rawOf(t, raws, aj).OriginServerTS, rawOf(t, raws, bj).OriginServerTS
	first, second := bob, alice
	firstAt, lastAt := bobTS+bobExpires, aliceTS+aliceExpires
	if lastAt < firstAt { // Bob joined more than 5 s after Alice: a very slow machine
		first, second, firstAt, lastAt = alice, bob, lastAt, firstAt
	}
	e2etest.Check(t, evs, []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(alice), 1, 1), e2etest.Joined(e2etest.Of(bob), 2, 2),
		e2etest.Left(e2etest.Of(first), events.ReasonExpired, 1, 1), e2etest.Left(e2etest.Of(second), events.ReasonExpired, 0, 0), e2etest.Ended(events.ReasonExpired)})
	if evs[3].At != firstAt || evs[4].At != lastAt {
		t.Errorf("expired at %d and %d, want the deadlines %d and %d", evs[3].At, evs[4].At, firstAt, lastAt)
	}
	e2etest.CheckSummary(t, evs[5], aliceTS, lastAt, 2, 2, 2)
	checkLive(t, st, room, 0)
}

// fedLeaveRoom: a user of hs2 in a call changes his display name (an
// m.room.member join again: nothing changes), then leaves the room
// (m.room.member leave): member_left with reason left_room, while the other
// stays. Invited and joined again while his membership is still valid, he
// counts again (the same membership); kicked, he leaves again (left_room:
// the kick's sender is the kicker, its state key the user).
func fedLeaveRoom(t *testing.T, f *fedStack) {
	st := f.on(t)
	alice := f.user(t, f.hs1, "alice", "ALICEDEV")
	bob := f.user(t, f.hs2, "bob", "BOBDEV")
	room := f.room(t, f.hs1, alice, bob)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	aj := sendState(t, alice, room, callKey(alice), callContent(alice.DeviceID, fourHours, 0, "lr"))
	st.waitSessionEvents(room, 2)
	sendState(t, bob, room, callKey(bob), callContent(bob.DeviceID, fourHours, 0, "lr"))
	st.waitSessionEvents(room, 3)

	if err := bob.SetDisplayName(ctx, "Bob in a call"); err != nil {
		t.Fatalf("%s sets a display name: %v", bob.UserID, err)
	}
	waitFor(t, "bob's display name change in RTC_RAW", func() (bool, string) {
		for _, r := range st.rawEvents(room) {
			if r.Type == "m.room.member" && r.StateKey != nil && *r.StateKey == string(bob.UserID) &&
				strings.Contains(string(r.Content), "Bob in a call") {
				return true, ""
			}
		}
		return false, "not stored"
	})
	st.settled()
	e2etest.Check(t, st.sessionEvents(room), []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(alice), 1, 1), e2etest.Joined(e2etest.Of(bob), 2, 2)})

	if _, err := bob.LeaveRoom(ctx, room); err != nil {
		t.Fatalf("%s leaves %s: %v", bob.UserID, room, err)
	}
	e2etest.Check(t, st.waitSessionEvents(room, 4), []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(alice), 1, 1), e2etest.Joined(e2etest.Of(bob), 2, 2),
		e2etest.Left(e2etest.Of(bob), events.ReasonLeftRoom, 1, 1)})
	checkLive(t, st, room, 1, liveDevice{user: alice})

	// The session event can come from hs2's push before hs1 has bob's
	// leave over federation; until then hs1 refuses the invite ("already
	// joined").
	waitFor(t, fmt.Sprintf("%s invites %s again (hs1 has his leave)", alice.UserID, bob.UserID), func() (bool, string) {
		if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	f.join(t, f.hs1, bob, room)
	st.waitSessionEvents(room, 5)
	checkLive(t, st, room, 2, liveDevice{user: alice}, liveDevice{user: bob})
	if _, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "e2e"}); err != nil {
		t.Fatalf("%s kicks %s: %v", alice.UserID, bob.UserID, err)
	}
	st.waitSessionEvents(room, 6)
	al := hangUp(t, alice, room)
	evs := st.waitSessionEvents(room, 8)
	e2etest.Check(t, evs, []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(alice), 1, 1), e2etest.Joined(e2etest.Of(bob), 2, 2),
		e2etest.Left(e2etest.Of(bob), events.ReasonLeftRoom, 1, 1), e2etest.Joined(e2etest.Of(bob), 2, 2), e2etest.Left(e2etest.Of(bob), events.ReasonLeftRoom, 1, 1),
		e2etest.Left(e2etest.Of(alice), events.ReasonLeave, 0, 0), e2etest.Ended(events.ReasonLeave)})
	if evs[4].Member.MembershipID != evs[2].Member.MembershipID {
		t.Errorf("bob counted again with membership %s, want his membership %s restored", evs[4].Member.MembershipID, evs[2].Member.MembershipID)
	}
	raws := st.rawEvents(room)
	// Bob's restored membership is a join of the session (3 joins).
	e2etest.CheckSummary(t, evs[7], rawOf(t, raws, aj).OriginServerTS, rawOf(t, raws, al).OriginServerTS, 2, 2, 3)
	checkLive(t, st, room, 0)
}

// fedHostileWrite: Mallory (hs2) writes a join into Alice's state key,
// which a stable room version lets anyone with the power level do. It joins
// no one and is recorded as a rejection (foreign_state_key); the key now
// holds that invalid event, so Alice's membership ends (reason invalid, as
// the design says). A {} from Mallory on Alice's key is a leave the
// homeserver accepted: it is honoured.
func fedHostileWrite(t *testing.T, f *fedStack) {
	st := f.on(t)
	alice := f.user(t, f.hs1, "alice", "ALICEDEV")
	mallory := f.user(t, f.hs2, "mallory", "MALDEV")
	room := f.room(t, f.hs1, alice, mallory)
	key := callKey(alice)

	j1 := sendState(t, alice, room, key, callContent(alice.DeviceID, fourHours, 0, "hw1"))
	st.waitSessionEvents(room, 2)
	hostile := sendState(t, mallory, room, key, callContent(alice.DeviceID, fourHours, 0, "evil"))
	e2etest.Check(t, st.waitSessionEvents(room, 4), []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(alice), 1, 1),
		e2etest.Left(e2etest.Of(alice), events.ReasonInvalid, 0, 0), e2etest.Ended(events.ReasonInvalid)})
	checkRejected(t, st, room, hostile, "foreign_state_key")
	checkLive(t, st, room, 0)

	j2 := sendState(t, alice, room, key, callContent(alice.DeviceID, fourHours, 0, "hw2"))
	st.waitSessionEvents(room, 6)
	// A join into the key of a device of Alice that is in no call: nothing
	// happens but the rejection.
	idle := sendState(t, mallory, room, deviceKey(alice, "ALICEPHONE"), callContent("ALICEPHONE", fourHours, 0, "evil"))
	clear := sendState(t, mallory, room, key, map[string]any{})
	evs := st.waitSessionEvents(room, 8)
	e2etest.Check(t, evs, []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(alice), 1, 1),
		e2etest.Left(e2etest.Of(alice), events.ReasonInvalid, 0, 0), e2etest.Ended(events.ReasonInvalid),
		e2etest.Started(), e2etest.Joined(e2etest.Of(alice), 1, 1), e2etest.Left(e2etest.Of(alice), events.ReasonLeave, 0, 0), e2etest.Ended(events.ReasonLeave)})
	checkRejected(t, st, room, idle, "foreign_state_key")
	raws := st.rawEvents(room)
	ts := func(eid id.EventID) int64 { return rawOf(t, raws, eid).OriginServerTS }
	e2etest.CheckSummary(t, evs[3], ts(j1), ts(hostile), 1, 1, 1)
	e2etest.CheckSummary(t, evs[7], ts(j2), ts(clear), 1, 1, 1)
	checkLive(t, st, room, 0)
}

// fedMalformed: memberships with malformed content (example E7 and fields
// missing) are rejected (recorded, no member), are stored in RTC_RAW like
// any event, go to no dead-letter queue, and lose nothing else: the valid
// memberships around them count. A malformed update of a joined membership
// ends it (reason invalid).
func fedMalformed(t *testing.T, f *fedStack) {
	st := f.on(t)
	alice := f.user(t, f.hs1, "alice", "ALICEDEV")
	bob := f.user(t, f.hs2, "bob", "BOBDEV")
	room := f.room(t, f.hs2, bob, alice)
	dlq0 := dlqCount(t, st)

	aj := sendState(t, alice, room, callKey(alice), callContent(alice.DeviceID, fourHours, 0, "mf"))
	st.waitSessionEvents(room, 2)
	without := func(device id.DeviceID, field string) map[string]any {
		c := callContent(device, fourHours, 0, "mf")
		delete(c, field)
		return c
	}
	bad := map[string]map[string]any{
		"BAD1": without("BAD1", "call_id"),
		"BAD2": without("BAD2", "device_id"),
		"BAD3": without("BAD3", "focus_active"),
		// example E7: device_id not a string, focus_active without type,
		// expires a string
		"BAD4": {"application": "m.call", "call_id": "", "device_id": 42, "focus_active": map[string]any{}, "expires": "14400000"},
	}
	var rejected []id.EventID
	for _, dev := range []id.DeviceID{"BAD1", "BAD2", "BAD3", "BAD4"} {
		rejected = append(rejected, sendState(t, bob, room, deviceKey(bob, dev), bad[string(dev)]))
	}
	// Bob's events reach the ingest in order: when his valid join is
	// applied, the malformed ones before it are.
	sendState(t, bob, room, callKey(bob), callContent(bob.DeviceID, fourHours, 0, "mf"))
	e2etest.Check(t, st.waitSessionEvents(room, 3), []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(alice), 1, 1), e2etest.Joined(e2etest.Of(bob), 2, 2)})
	for _, eid := range rejected {
		checkRejected(t, st, room, eid, "malformed_content")
	}
	checkLive(t, st, room, 2, liveDevice{user: alice}, liveDevice{user: bob})

	update := sendState(t, bob, room, callKey(bob), without(bob.DeviceID, "device_id"))
	st.waitSessionEvents(room, 4)
	checkRejected(t, st, room, update, "malformed_content")
	al := hangUp(t, alice, room)
	evs := st.waitSessionEvents(room, 6)
	e2etest.Check(t, evs, []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(alice), 1, 1), e2etest.Joined(e2etest.Of(bob), 2, 2),
		e2etest.Left(e2etest.Of(bob), events.ReasonInvalid, 1, 1), e2etest.Left(e2etest.Of(alice), events.ReasonLeave, 0, 0), e2etest.Ended(events.ReasonLeave)})
	raws := st.rawEvents(room)
	for _, eid := range append(rejected, update) {
		rawOf(t, raws, eid)
	}
	if evs[3].At != rawOf(t, raws, update).OriginServerTS {
		t.Errorf("bob's membership ended at %d, want at the malformed update's time", evs[3].At)
	}
	e2etest.CheckSummary(t, evs[5], rawOf(t, raws, aj).OriginServerTS, rawOf(t, raws, al).OriginServerTS, 2, 2, 2)
	if n := dlqCount(t, st); n != dlq0 {
		t.Errorf("RTC_DLQ holds %d messages, %d before the malformed events", n, dlq0)
	}
	checkLive(t, st, room, 0)
}

// fedSeedAndLegacy: one call whose members use the other two state formats:
// Alice (hs1) the seed format (an m.rtc.member state event, MSC4143 of June
// 2024, no expires: 4 h), Bob (hs2) the legacy memberships array (one event
// on his user id key listing two devices, one with expires, one with
// expires_ts only). Removing an entry from the array is that device's
// leave, an empty array the last one's.
func fedSeedAndLegacy(t *testing.T, f *fedStack) {
	st := f.on(t)
	alice := f.user(t, f.hs1, "alice", "ALICEDEV")
	bob := f.user(t, f.hs2, "bob", "BOBDEV")
	room := f.room(t, f.hs1, alice, bob)

	seedKey := "_" + string(alice.UserID) + "_" + string(alice.DeviceID)
	seed := map[string]any{"application": "m.call", "call_id": "", "device_id": alice.DeviceID,
		"focus_active":   map[string]any{"type": "livekit", "focus_selection": "oldest_membership"},
		"foci_preferred": []any{map[string]any{"type": "livekit", "livekit_service_url": "https://sfu.example", "livekit_alias": room}}}
	sj := sendTyped(t, alice, room, rtcMemberType, seedKey, seed)
	evs := st.waitSessionEvents(room, 2)
	e2etest.Check(t, evs, []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(alice), 1, 1).Fmt(events.FormatSeed)})
	seedTS := rawOf(t, st.rawEvents(room), sj).OriginServerTS
	if m := evs[1].Member; m.JoinedAt != seedTS || m.ExpiresAt != seedTS+fourHours {
		t.Errorf("seed member %+v, want joined at %d, expiring 4 h later", m, seedTS)
	}

	const phone, laptop = id.DeviceID("BOBPHONE"), id.DeviceID("BOBLAPTOP")
	laptopExpiresTS := time.Now().Add(time.Hour).UnixMilli()
	foci := []any{map[string]any{"type": "livekit", "livekit_service_url": "https://sfu.example", "livekit_alias": room}}
	phoneEntry := map[string]any{"application": "m.call", "call_id": "", "scope": "m.room", "device_id": phone,
		"expires": 3_600_000, "foci_active": foci, "membershipID": "k3XpQ"}
	laptopEntry := map[string]any{"application": "m.call", "call_id": "", "scope": "m.room", "device_id": laptop,
		"expires_ts": laptopExpiresTS, "foci_active": foci, "membershipID": "p9Zq1"}
	legacyKey := string(bob.UserID)
	lj := sendState(t, bob, room, legacyKey, map[string]any{"memberships": []any{phoneEntry, laptopEntry}})
	bobPhone := liveDevice{user: bob, device: phone}
	bobLaptop := liveDevice{user: bob, device: laptop}
	evs = st.waitSessionEvents(room, 4)
	e2etest.Check(t, evs, []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(alice), 1, 1).Fmt(events.FormatSeed),
		e2etest.Joined(e2etest.Of(bob).On(laptop), 2, 2).Fmt(events.FormatLegacy), e2etest.Joined(e2etest.Of(bob).On(phone), 3, 2).Fmt(events.FormatLegacy)})
	legacyTS := rawOf(t, st.rawEvents(room), lj).OriginServerTS
	if m := evs[2].Member; m.JoinedAt != legacyTS || m.ExpiresAt != laptopExpiresTS {
		t.Errorf("legacy laptop member %+v, want joined at %d expiring at %d (expires_ts)", m, legacyTS, laptopExpiresTS)
	}
	if m := evs[3].Member; m.JoinedAt != legacyTS || m.ExpiresAt != legacyTS+3_600_000 {
		t.Errorf("legacy phone member %+v, want joined at %d expiring 1 h later", m, legacyTS)
	}
	checkLive(t, st, room, 2, liveDevice{user: alice}, bobPhone, bobLaptop)

	// The phone leaves: the array is rewritten without it, the laptop's entry
	// keeping its created_ts (what js-sdk did).
	// The laptop's membership is now the new event: a member_updated
	// (event_id changed) in the same transition as the phone's leave.
	laptopEntry["created_ts"] = legacyTS
	rewritten := sendState(t, bob, room, legacyKey, map[string]any{"memberships": []any{laptopEntry}})
	evs = st.waitSessionEvents(room, 6)
	if e := evs[4]; e.Kind != events.KindMemberUpdated || e.Member == nil || e.Member.EventID != rewritten ||
		!slices.Equal(e.Changed, []string{events.ChangeEventID}) {
		t.Errorf("after the rewrite, #4 is %s of %+v changing %v, want the laptop's member_updated naming %s (event_id changed)",
			e.Kind, e.Member, e.Changed, rewritten)
	}
	checkLive(t, st, room, 2, liveDevice{user: alice}, bobLaptop)
	sendState(t, bob, room, legacyKey, map[string]any{"memberships": []any{}})
	st.waitSessionEvents(room, 7)
	sl := sendTyped(t, alice, room, rtcMemberType, seedKey, map[string]any{})
	evs = st.waitSessionEvents(room, 9)
	legacyLaptop := e2etest.Of(bob).On(laptop)
	e2etest.Check(t, evs, []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(alice), 1, 1).Fmt(events.FormatSeed),
		e2etest.Joined(legacyLaptop, 2, 2).Fmt(events.FormatLegacy), e2etest.Joined(e2etest.Of(bob).On(phone), 3, 2).Fmt(events.FormatLegacy),
		e2etest.Updated(legacyLaptop, 3, 2).Fmt(events.FormatLegacy).Event(rewritten),
		e2etest.Left(e2etest.Of(bob).On(phone), events.ReasonLeave, 2, 2).Fmt(events.FormatLegacy),
		e2etest.Left(legacyLaptop, events.ReasonLeave, 1, 1).Fmt(events.FormatLegacy),
		e2etest.Left(e2etest.Of(alice), events.ReasonLeave, 0, 0).Fmt(events.FormatSeed), e2etest.Ended(events.ReasonLeave)})
	e2etest.CheckSummary(t, evs[8], seedTS, rawOf(t, st.rawEvents(room), sl).OriginServerTS, 3, 2, 3)
	checkLive(t, st, room, 0)
}

// fedRoomVersion12: a call in a room of version 12 (room ids without a
// server part), users of both homeservers (one whose localpart holds an
// underscore, which the state key check must split right).
func fedRoomVersion12(t *testing.T, f *fedStack) {
	st := f.on(t)
	alice := f.user(t, f.hs1, "alice_v", "ALICEDEV")
	bob := f.user(t, f.hs2, "bob", "BOBDEV")
	room := f.roomVersion(t, "12", f.hs2, bob, alice)
	if strings.Contains(string(room), ":") {
		t.Errorf("room id %s has a server part: not a version 12 room id", room)
	}
	aj := sendState(t, alice, room, callKey(alice), callContent(alice.DeviceID, fourHours, 0, "v12"))
	st.waitSessionEvents(room, 2)
	sendState(t, bob, room, callKey(bob), callContent(bob.DeviceID, fourHours, 0, "v12"))
	st.waitSessionEvents(room, 3)
	checkLive(t, st, room, 2, liveDevice{user: alice}, liveDevice{user: bob})
	checkRejected(t, st, room, sendState(t, bob, room, callKey(alice), callContent(alice.DeviceID, fourHours, 0, "evil")), "foreign_state_key")
	bl := hangUp(t, bob, room)
	evs := st.waitSessionEvents(room, 6)
	e2etest.Check(t, evs, []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(alice), 1, 1), e2etest.Joined(e2etest.Of(bob), 2, 2),
		e2etest.Left(e2etest.Of(alice), events.ReasonInvalid, 1, 1), e2etest.Left(e2etest.Of(bob), events.ReasonLeave, 0, 0), e2etest.Ended(events.ReasonLeave)})
	raws := st.rawEvents(room)
	e2etest.CheckSummary(t, evs[5], rawOf(t, raws, aj).OriginServerTS, rawOf(t, raws, bl).OriginServerTS, 2, 2, 2)
	checkLive(t, st, room, 0)
}

// fedSessionsAndKeys: more than one call in a room. The room call named ""
// by one client and "ROOM" (its MSC4143 slot id) by another is one session;
// one device under two state keys (a client upgraded from the
// _@user_DEVICE key to _@user_DEVICE_m.call) is one member, represented by
// the membership with the latest created_ts(); another application is a
// session of its own, with the room's seq shared by both sessions.
func fedSessionsAndKeys(t *testing.T, f *fedStack) {
	st := f.on(t)
	alice := f.user(t, f.hs1, "alice", "ALICEDEV")
	bob := f.user(t, f.hs2, "bob", "BOBDEV")
	room := f.room(t, f.hs1, alice, bob)
	const board, boardCall = "io.example.board", "b1"

	aj := sendState(t, alice, room, callKey(alice), callContent(alice.DeviceID, fourHours, 0, "sk"))
	st.waitSessionEvents(room, 2)
	slot := callContent(bob.DeviceID, fourHours, 0, "sk")
	slot["call_id"] = "ROOM"
	sendState(t, bob, room, callKey(bob), slot)
	st.waitSessionEvents(room, 3)

	// Alice's device again, under the key of older clients: the later
	// membership represents the device (a rejoin: replaced, then joined).
	oldKey := "_" + string(alice.UserID) + "_" + string(alice.DeviceID)
	sendState(t, alice, room, oldKey, callContent(alice.DeviceID, fourHours, 0, "sk-old"))
	evs := st.waitSessionEvents(room, 5)
	if len(evs) == 5 && evs[3].Member != nil && evs[4].Member != nil && evs[3].Member.MembershipID == evs[4].Member.MembershipID {
		t.Errorf("alice's second key: membership %s replaced by itself", evs[3].Member.MembershipID)
	}

	boardContent := callContent(bob.DeviceID, fourHours, 0, "sk")
	boardContent["application"], boardContent["call_id"] = board, boardCall
	boardKey := "_" + string(bob.UserID) + "_" + string(bob.DeviceID) + "_" + board + boardCall
	sendState(t, bob, room, boardKey, boardContent)
	st.waitSessionEvents(room, 7)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	all, err := events.ListLiveSessions(ctx, st.js)
	if err != nil {
		t.Fatal(err)
	}
	var apps []string
	for _, ls := range all {
		if ls.RoomID == room {
			apps = append(apps, fmt.Sprintf("%s/%q:%d", ls.Application, ls.CallID, ls.Participants))
		}
	}
	if want := []string{`io.example.board/"b1":1`, `m.call/"":2`}; !slices.Equal(apps, want) {
		t.Errorf("live sessions of %s: %v, want %v", room, apps, want)
	}

	// The newer key leaves: the older membership represents the device again.
	sendState(t, alice, room, oldKey, map[string]any{})
	st.waitSessionEvents(room, 9)
	sendState(t, bob, room, boardKey, map[string]any{})
	st.waitSessionEvents(room, 11)
	hangUp(t, bob, room)
	st.waitSessionEvents(room, 12)
	al := hangUp(t, alice, room)
	evs = st.waitSessionEvents(room, 14)
	e2etest.Check(t, evs, []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(alice), 1, 1), e2etest.Joined(e2etest.Of(bob), 2, 2),
		e2etest.Left(e2etest.Of(alice), events.ReasonReplaced, 1, 1), e2etest.Joined(e2etest.Of(alice), 2, 2),
		e2etest.Started().In(board, boardCall), e2etest.Joined(e2etest.Of(bob), 1, 1).In(board, boardCall),
		e2etest.Left(e2etest.Of(alice), events.ReasonReplaced, 1, 1), e2etest.Joined(e2etest.Of(alice), 2, 2),
		e2etest.Left(e2etest.Of(bob), events.ReasonLeave, 0, 0).In(board, boardCall), e2etest.Ended(events.ReasonLeave).In(board, boardCall),
		e2etest.Left(e2etest.Of(bob), events.ReasonLeave, 1, 1), e2etest.Left(e2etest.Of(alice), events.ReasonLeave, 0, 0), e2etest.Ended(events.ReasonLeave)})
	if evs[8].Member.MembershipID != evs[1].Member.MembershipID {
		t.Errorf("after the newer key's leave alice is membership %s, want her first one %s", evs[8].Member.MembershipID, evs[1].Member.MembershipID)
	}
	raws := st.rawEvents(room)
	e2etest.CheckSummary(t, evs[13], rawOf(t, raws, aj).OriginServerTS, rawOf(t, raws, al).OriginServerTS, 2, 2, 4)
	checkLive(t, st, room, 0)
}

// fedRestarts: mid-call the ingest is restarted (the homeservers retry
// what they could not push meanwhile) and the aggregator owning the room is
// SIGKILLed while the call changes (the other takes over; then a new one
// joins and partitions move again). The session events are still exact:
// none lost, none twice, the room's seq gapless.
func fedRestarts(t *testing.T, f *fedStack) {
	st := f.on(t)
	alice := f.user(t, f.hs1, "alice", "ALICEDEV")
	bob := f.user(t, f.hs2, "bob", "BOBDEV")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	alicePhone, err := f.hs1.Login(ctx, alice.UserID.Localpart(), dendritetest.Password(alice.UserID.Localpart()), "ALICEPHONE")
	if err != nil {
		t.Fatal(err)
	}
	bobPhone, err := f.hs2.Login(ctx, bob.UserID.Localpart(), dendritetest.Password(bob.UserID.Localpart()), "BOBPHONE")
	if err != nil {
		t.Fatal(err)
	}
	room := f.room(t, f.hs1, alice, bob)
	var sent []id.EventID
	send := func(c *mautrix.Client, content map[string]any) id.EventID {
		eid := sendState(t, c, room, callKey(c), content)
		sent = append(sent, eid)
		return eid
	}

	aj := send(alice, callContent(alice.DeviceID, fourHours, 0, "rs"))
	st.waitSessionEvents(room, 2)
	bj := send(bob, callContent(bob.DeviceID, fourHours, 0, "rs"))
	st.waitSessionEvents(room, 3)
	raws := st.rawEvents(room)
	aliceTS, bobTS := rawOf(t, raws, aj).OriginServerTS, rawOf(t, raws, bj).OriginServerTS

	// The ingest goes down; Alice's events sent meanwhile (one sender: both
	// homeservers push them in order) arrive when it is back, on the same
	// address, through the homeservers' retries.
	if err := st.ingest.Stop(30 * time.Second); err != nil {
		t.Fatalf("stop the ingest: %v", err)
	}
	send(alice, callContent(alice.DeviceID, 2*fourHours, aliceTS, "rs"))
	send(alicePhone, callContent(alicePhone.DeviceID, fourHours, 0, "rs"))
	in, err := st.h.StartIngest(f.ingestCfg, st.ingest.AppserviceAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.WaitReady(waitTimeout); err != nil {
		t.Fatal(err)
	}
	f.base.ingest, st.ingest = in, in
	e2etest.Check(t, st.waitSessionEvents(room, 5), []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(alice), 1, 1), e2etest.Joined(e2etest.Of(bob), 2, 2),
		e2etest.Updated(e2etest.Of(alice), 2, 2), e2etest.Joined(e2etest.Of(alicePhone), 3, 2)})

	// The owner of the room's partition dies amid a burst of Bob's events
	// (one user: both homeservers push them in order): his refresh, a
	// second device joining, refreshing and hanging up, and his hang-up.
	owner, i := f.owner(t, st, room)
	send(bob, callContent(bob.DeviceID, 2*fourHours, bobTS, "rs"))
	pj := send(bobPhone, callContent(bobPhone.DeviceID, fourHours, 0, "rs"))
	if err := owner.Kill(); err != nil {
		t.Fatal(err)
	}
	f.aggs = append(f.aggs[:i], f.aggs[i+1:]...)
	t.Logf("killed %s, the owner of the room's partition %d", owner.Cfg.ID, rawevent.Partition(rawevent.RoomKey(room), partitions))
	phoneTS := originTS(t, bobPhone, room, pj)
	send(bobPhone, callContent(bobPhone.DeviceID, 2*fourHours, phoneTS, "rs"))
	send(bobPhone, map[string]any{})
	send(bob, map[string]any{})
	st.waitSessionEvents(room, 10)

	// A new aggregator joins: partitions move to it (a graceful hand-off).
	if err := f.startAggregator(t).WaitReady(waitTimeout); err != nil {
		t.Fatal(err)
	}
	send(alicePhone, map[string]any{})
	st.waitSessionEvents(room, 11)
	last := send(alice, map[string]any{})
	evs := st.waitSessionEvents(room, 13)
	e2etest.Check(t, evs, []e2etest.Step{e2etest.Started(), e2etest.Joined(e2etest.Of(alice), 1, 1), e2etest.Joined(e2etest.Of(bob), 2, 2),
		e2etest.Updated(e2etest.Of(alice), 2, 2), e2etest.Joined(e2etest.Of(alicePhone), 3, 2),
		e2etest.Updated(e2etest.Of(bob), 3, 2), e2etest.Joined(e2etest.Of(bobPhone), 4, 2), e2etest.Updated(e2etest.Of(bobPhone), 4, 2),
		e2etest.Left(e2etest.Of(bobPhone), events.ReasonLeave, 3, 2), e2etest.Left(e2etest.Of(bob), events.ReasonLeave, 2, 1),
		e2etest.Left(e2etest.Of(alicePhone), events.ReasonLeave, 1, 1), e2etest.Left(e2etest.Of(alice), events.ReasonLeave, 0, 0), e2etest.Ended(events.ReasonLeave)})
	raws = st.rawEvents(room)
	for _, eid := range sent {
		rawOf(t, raws, eid)
	}
	e2etest.CheckSummary(t, evs[12], aliceTS, rawOf(t, raws, last).OriginServerTS, 4, 2, 4)
	checkLive(t, st, room, 0)
}
