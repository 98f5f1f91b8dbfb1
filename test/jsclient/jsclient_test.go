package jsclient

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
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// TestElementCallClient drives calls with matrix-js-sdk's own
// MatrixRTCSession (one node process per device) against two federating
// Dendrites pushing to the ingest, and asserts at each probe that the
// project's live sessions and session events agree with js-sdk's
// session.memberships (see the package documentation for the differences
// that are allowed). The scenarios share the stack, each in a room of its
// own.
func TestElementCallClient(t *testing.T) {
	dendritetest.Require(t)
	nodeModules(t) // before the stack: a missing node fails at once
	s := startStack(t)
	for _, sc := range []struct {
		name string
		run  func(*testing.T, *stack)
	}{
		{"JoinAndLeave", joinAndLeave},
		{"CrashExpires", crashExpires},
		{"RefreshStaysJoined", refreshStaysJoined},
		{"CallIntent", callIntent},
		{"LeaveRoomAndRejoin", leaveRoomAndRejoin},
	} {
		t.Run(sc.name, func(t *testing.T) { sc.run(t, s) })
	}
}

// joinAndLeave: Alice (hs1) and Bob (hs2) join a call in a room of hs1
// and hang up (leaveRoomSession), Bob first.
func joinAndLeave(t *testing.T, s *stack) {
	host := s.host(t, s.hs1)
	alice, bob := s.register(t, s.hs1, "alice"), s.register(t, s.hs2, "bob")
	room := s.room(t, host, alice, bob)
	ca := s.client(t, alice, "ALICEDEV", room, s.hs1, clientConfig{})
	snap := s.agree(t, "alice joined", room, []e2etest.Device{alice.dev("ALICEDEV")}, ca)
	if m := snap.js[0]; m.EventID != ca.Ready.EventID {
		t.Errorf("alice's membership is event %s, her client sent %s", m.EventID, ca.Ready.EventID)
	}
	cb := s.client(t, bob, "BOBDEV", room, s.hs1, clientConfig{})
	s.agree(t, "bob joined", room, []e2etest.Device{alice.dev("ALICEDEV"), bob.dev("BOBDEV")}, ca, cb)
	cb.Do("leave")
	s.agree(t, "bob hung up", room, []e2etest.Device{alice.dev("ALICEDEV")}, ca, cb)
	ca.Do("leave")
	snap = s.agree(t, "alice hung up", room, nil, ca, cb)
	a, b := alice.dev("ALICEDEV"), bob.dev("BOBDEV")
	e2etest.Check(t, snap.evs, []e2etest.Step{e2etest.Started(), e2etest.Joined(a, 1, 1).Event(id.EventID(ca.Ready.EventID)),
		e2etest.Joined(b, 2, 2).Event(id.EventID(cb.Ready.EventID)), e2etest.Left(b, events.ReasonLeave, 1, 1),
		e2etest.Left(a, events.ReasonLeave, 0, 0), e2etest.Ended(events.ReasonLeave)})
}

// crashExpires: Bob (hs2) joins with a short membership expiry and his
// process is SIGKILLed (no leave is sent: stopClient() would send one).
// Alice's js-sdk drops him when his membership expires; the project ends
// his membership as expired at the same deadline, within a tolerance for
// the timers.
func crashExpires(t *testing.T, s *stack) {
	host := s.host(t, s.hs1)
	alice, bob := s.register(t, s.hs1, "alice"), s.register(t, s.hs2, "bob")
	room := s.room(t, host, alice, bob)
	ca := s.client(t, alice, "ALICEDEV", room, s.hs1, clientConfig{})
	// Bob would refresh 2 s before his 10 s expiry; he is killed long
	// before that.
	cb := s.client(t, bob, "BOBDEV", room, s.hs1, clientConfig{ExpiryMS: 10_000, HeadroomMS: 2_000})
	both := []e2etest.Device{alice.dev("ALICEDEV"), bob.dev("BOBDEV")}
	s.agree(t, "bob joined", room, both, ca, cb)
	cb.Kill()
	killedAt := time.Now().UnixMilli()
	snap := s.agree(t, "bob crashed, not yet expired", room, both, ca)
	deadline := snap.find(bob.dev("BOBDEV")).ExpiresTS
	if deadline < killedAt {
		t.Fatalf("bob's membership expires at %d, before his client was killed (%d): the machine is too slow for this scenario", deadline, killedAt)
	}

	// Poll both views around the deadline: when js-sdk stops listing Bob
	// (the node clock) and when the project's member_left is stored (this
	// process's clock: the same machine).
	const tolerance = 5_000 // ms: timers, federation, a loaded machine
	var jsDrop, projectDrop int64
	for jsDrop == 0 || projectDrop == 0 {
		if time.Now().UnixMilli() > deadline+tolerance+waitTimeout.Milliseconds() {
			t.Fatalf("bob's membership expired at %d: js-sdk dropped him at %d, the project's member_left stored at %d (0: not yet)%s",
				deadline, jsDrop, projectDrop, e2etest.Describe(s.sessionEvents(t, room)))
		}
		if jsDrop == 0 {
			p := ca.Probe()
			if !slices.ContainsFunc(p.Memberships, func(m jsMembership) bool { return m.UserID == string(bob.userID) }) {
				jsDrop = p.Now
			}
		}
		if projectDrop == 0 {
			for _, e := range s.sessionEvents(t, room) {
				if e.Kind == events.KindMemberLeft && e.Member != nil && e.Member.UserID == bob.userID {
					projectDrop = time.Now().UnixMilli()
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("bob's membership expires at %d: js-sdk dropped it %+d ms after, the project's member_left was read %+d ms after",
		deadline, jsDrop-deadline, projectDrop-deadline)
	if jsDrop < deadline || jsDrop > deadline+tolerance {
		t.Errorf("js-sdk dropped bob at %d, %+d ms from his deadline %d", jsDrop, jsDrop-deadline, deadline)
	}
	if projectDrop > deadline+tolerance {
		t.Errorf("the project ended bob's membership %d ms after his deadline %d (tolerance %d ms)", projectDrop-deadline, deadline, tolerance)
	}
	s.agree(t, "bob expired", room, []e2etest.Device{alice.dev("ALICEDEV")}, ca)
	ca.Do("leave")
	snap = s.agree(t, "alice hung up", room, nil, ca)
	evs := snap.evs
	a, b := alice.dev("ALICEDEV"), bob.dev("BOBDEV")
	want := []e2etest.Step{e2etest.Started(), e2etest.Joined(a, 1, 1).Event(id.EventID(ca.Ready.EventID)),
		e2etest.Joined(b, 2, 2).Event(id.EventID(cb.Ready.EventID))}
	// A refresh of Bob's that got out before the kill (on a slow machine).
	for _, e := range evs[min(3, len(evs)):] {
		if e.Kind != events.KindMemberUpdated {
			break
		}
		want = append(want, e2etest.Updated(b, 2, 2))
	}
	want = append(want, e2etest.Left(b, events.ReasonExpired, 1, 1), e2etest.Left(a, events.ReasonLeave, 0, 0),
		e2etest.Ended(events.ReasonLeave))
	e2etest.Check(t, evs, want)
	if e := evs[len(want)-3]; e.At != deadline {
		t.Errorf("bob's member_left (expired) is at %d, js-sdk's expiry of his membership is %d%s", e.At, deadline, e2etest.Describe(evs))
	}
}

// refreshStaysJoined: Carol (hs2) joins with a 6 s membership expiry and
// js-sdk refreshes it 3 s before each expiry (expires 12 s, 18 s, ... from
// the same created_ts). Through several refresh periods both views keep
// her joined with the same membership; the project emits a member_updated
// per refresh and never a member_left. An observer on hs1 (in the room,
// not in the call) is a second js-sdk view.
func refreshStaysJoined(t *testing.T, s *stack) {
	host := s.host(t, s.hs1)
	carol, dave := s.register(t, s.hs2, "carol"), s.register(t, s.hs1, "dave")
	room := s.room(t, host, carol, dave)
	obs := s.client(t, dave, "DAVEDEV", room, s.hs1, clientConfig{Observe: true})
	cc := s.client(t, carol, "CAROLDEV", room, s.hs1, clientConfig{ExpiryMS: 6_000, HeadroomMS: 3_000})
	me := []e2etest.Device{carol.dev("CAROLDEV")}
	first := s.agree(t, "carol joined", room, me, obs, cc).find(me[0])
	seen := map[string]bool{first.EventID: true}
	end := time.Now().Add(20 * time.Second)
	for i := 0; time.Now().Before(end); i++ {
		time.Sleep(2 * time.Second)
		m := s.agree(t, fmt.Sprintf("probe %d while carol refreshes", i), room, me, obs, cc).find(me[0])
		if m.CreatedTS != first.CreatedTS {
			t.Fatalf("carol's membership changed its created_ts from %d to %d: js-sdk started a new membership", first.CreatedTS, m.CreatedTS)
		}
		seen[m.EventID] = true
	}
	if len(seen) < 4 {
		t.Errorf("carol's membership was %d events in 20 s, want her join and at least 3 refreshes", len(seen))
	}
	cc.Do("leave")
	evs := s.agree(t, "carol hung up", room, nil, obs, cc).evs
	want := []e2etest.Step{e2etest.Started(), e2etest.Joined(me[0], 1, 1).Event(id.EventID(cc.Ready.EventID))}
	for range max(0, len(evs)-4) {
		want = append(want, e2etest.Updated(me[0], 1, 1))
	}
	want = append(want, e2etest.Left(me[0], events.ReasonLeave, 0, 0), e2etest.Ended(events.ReasonLeave))
	e2etest.Check(t, evs, want)
	if updates := len(evs) - 4; updates < 3 {
		t.Errorf("%d member_updated for carol's refreshes, want at least 3%s", updates, e2etest.Describe(evs))
	}
	for _, e := range evs[1 : len(evs)-1] {
		if e.Member.MembershipID != evs[1].Member.MembershipID || e.Member.JoinedAt != first.CreatedTS {
			t.Errorf("#%d %s: membership %s joined at %d, want carol's membership %s joined at %d (js-sdk's created_ts)",
				e.Seq, e.Kind, e.Member.MembershipID, e.Member.JoinedAt, evs[1].Member.MembershipID, first.CreatedTS)
		}
	}
}

// callIntent: Erin (hs1) joins with intent video, then calls
// updateCallIntent('audio'): js-sdk sends a new membership event (same
// created_ts, m.call.intent audio). The project must tell subscribers: a
// member_updated naming the new event and intent, and the live session
// naming them.
func callIntent(t *testing.T, s *stack) {
	host := s.host(t, s.hs1)
	erin := s.register(t, s.hs1, "erin")
	room := s.room(t, host, erin)
	ce := s.client(t, erin, "ERINDEV", room, s.hs1, clientConfig{Intent: "video"})
	me := []e2etest.Device{erin.dev("ERINDEV")}
	joinedAs := s.agree(t, "erin joined", room, me, ce).find(me[0])
	if joinedAs.CallIntent != "video" {
		t.Fatalf("js-sdk reports erin's intent %q, want video", joinedAs.CallIntent)
	}
	ce.Do("intent audio")
	now := ce.Probe()
	var js jsMembership
	for _, m := range now.Memberships {
		if m.UserID == string(erin.userID) {
			js = m
		}
	}
	if js.CallIntent != "audio" || js.EventID == joinedAs.EventID || js.CreatedTS != joinedAs.CreatedTS {
		t.Fatalf("after updateCallIntent('audio') js-sdk reports %+v, want intent audio in a new event of the membership created at %d",
			js, joinedAs.CreatedTS)
	}

	// The project: wait (bounded) for both the live session and RTC_EVENTS
	// to name the new event and intent.
	var live []liveView
	var evs []events.SessionEvent
	ok := false
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		live, evs = s.liveSessions(t, room), s.sessionEvents(t, room)
		liveOK := len(live) == 1 && len(live[0].Members) == 1 && live[0].Members[0].EventID == js.EventID &&
			live[0].Members[0].CallIntent == "audio"
		evOK := slices.ContainsFunc(evs, func(e events.SessionEvent) bool {
			return e.Kind == events.KindMemberUpdated && e.Member != nil && string(e.Member.EventID) == js.EventID &&
				e.Member.CallIntent == "audio" && slices.Contains(e.Changed, "call_intent")
		})
		if ok = liveOK && evOK; ok {
			break
		}
	}
	if !ok {
		t.Errorf("updateCallIntent('audio') is not reported by the project: js-sdk's membership is now event %s with "+
			"m.call.intent audio (created_ts %d unchanged); want a member_updated naming that event with call_intent "+
			"\"audio\" (changed: call_intent) and the live session naming it. Content-only changes of a membership (call intent, foci, a new "+
			"event id) must reach subscribers.\nlive session: %s\nsession events:%s",
			js.EventID, js.CreatedTS, liveString(live), e2etest.Describe(evs))
	}
	ce.Do("leave")
	s.agree(t, "erin hung up", room, nil, ce)
}

// leaveRoomAndRejoin: Frank (hs2) is alone in a call and leaves the room
// (m.room.member leave, without hanging up): his membership stops counting
// (js-sdk requires the sender's room membership join) and the session
// ends. The host re-invites him and he joins the room again: his membership
// event, still unexpired, counts again in both views. The project starts a
// new session for it: a new session_id, started no earlier than the ended
// one ended.
func leaveRoomAndRejoin(t *testing.T, s *stack) {
	host := s.host(t, s.hs1)
	frank, gina := s.register(t, s.hs2, "frank"), s.register(t, s.hs1, "gina")
	room := s.room(t, host, frank, gina)
	obs := s.client(t, gina, "GINADEV", room, s.hs1, clientConfig{Observe: true})
	cf := s.client(t, frank, "FRANKDEV", room, s.hs1, clientConfig{})
	me := []e2etest.Device{frank.dev("FRANKDEV")}
	first := s.agree(t, "frank joined", room, me, obs, cf)
	s1 := first.live.SessionID

	cf.Do("leave-room")
	// Frank's own client no longer follows the room: only the observer's
	// view is compared until he is back.
	afterLeave := s.agree(t, "frank left the room", room, nil, obs)
	var endedAt int64
	for _, e := range afterLeave.evs {
		if e.Kind == events.KindSessionEnded && e.SessionID == s1 {
			endedAt = e.At
		}
	}
	firstSession := []e2etest.Step{e2etest.Started(), e2etest.Joined(me[0], 1, 1).Event(id.EventID(cf.Ready.EventID)),
		e2etest.Left(me[0], events.ReasonLeftRoom, 0, 0), e2etest.Ended(events.ReasonLeftRoom)}
	e2etest.Check(t, afterLeave.evs, firstSession)

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	// The invite needs hs1 to have Frank's leave over federation.
	deadline := time.Now().Add(waitTimeout)
	for {
		_, err := host.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: frank.userID})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s invites %s again: %v", host.UserID, frank.userID, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	cf.Do("join-room")
	back := s.agree(t, "frank rejoined the room", room, me, obs, cf)
	s2, startedAt := back.live.SessionID, back.live.StartedAt
	var startedEvent int64 // the session_started after the session_ended
	for _, e := range back.evs[len(afterLeave.evs):] {
		if e.Kind == events.KindSessionStarted {
			startedEvent = e.At
			break
		}
	}
	t.Logf("session %s ended at %d; after the rejoin session %s started at %d (live session's started_at, %+d ms), "+
		"its session_started is at %d (%+d ms); js-sdk lists frank's membership %+v",
		s1, endedAt, s2, startedAt, startedAt-endedAt, startedEvent, startedEvent-endedAt, back.find(me[0]))
	if startedEvent < endedAt {
		t.Errorf("the session restored by frank's rejoin has its session_started at %d, before the previous session ended at %d%s",
			startedEvent, endedAt, e2etest.Describe(back.evs))
	}
	if s2 == s1 {
		t.Errorf("the session restored by frank's rejoin has session_id %s, the id of the session that ended at %d: "+
			"a session_id must name one session%s", s2, endedAt, e2etest.Describe(back.evs))
	}
	if startedAt < endedAt {
		t.Errorf("the session restored by frank's rejoin (%s) has started_at %d in rtc_sessions, %d ms before the previous "+
			"session (%s) ended at %d: a session must not start before the previous one of its call ended%s",
			s2, startedAt, endedAt-startedAt, s1, endedAt, e2etest.Describe(back.evs))
	}
	cf.Do("leave")
	final := s.agree(t, "frank hung up", room, nil, obs, cf)
	e2etest.Check(t, final.evs, append(firstSession, e2etest.Started(), e2etest.Joined(me[0], 1, 1),
		e2etest.Left(me[0], events.ReasonLeave, 0, 0), e2etest.Ended(events.ReasonLeave)))
}

func (a account) dev(device string) e2etest.Device {
	return e2etest.Device{User: a.userID, Device: id.DeviceID(device)}
}

// snapshot is a moment on which js-sdk and the project agreed.
type snapshot struct {
	js   []jsMembership        // every client's session.memberships (equal), sorted
	live *liveView             // nil: no live session
	evs  []events.SessionEvent // the room's session events
}

// find is who's membership in js-sdk's view.
func (s snapshot) find(who e2etest.Device) jsMembership {
	for _, m := range s.js {
		if m.UserID == string(who.User) && m.DeviceID == string(who.Device) {
			return m
		}
	}
	return jsMembership{}
}

// agree polls until every client's session.memberships lists exactly
// want, the clients agree on every membership, and the project agrees
// with them: its live session (rtcctl sessions --json) lists the same
// members with joined_at = created_ts, expires_at = js-sdk's absolute
// expiry and the same event id (and call intent, when the project reports
// one), and its session events end in that state. It fails t after
// waitTimeout with what each side shows.
func (s *stack) agree(t *testing.T, what string, room id.RoomID, want []e2etest.Device, clients ...*jsClient) snapshot {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		snap, diff := s.compare(t, room, want, clients)
		if diff == "" {
			return snap
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: js-sdk and the project do not agree within %s:\n%s\nsession events:%s", what, waitTimeout, diff,
				e2etest.Describe(snap.evs))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *stack) compare(t *testing.T, room id.RoomID, want []e2etest.Device, clients []*jsClient) (snapshot, string) {
	t.Helper()
	var snap snapshot
	var diffs []string
	var exp []string
	for _, w := range want {
		exp = append(exp, w.String())
	}
	slices.Sort(exp)
	var ref *jsClient
	for _, c := range clients {
		p := c.Probe()
		ms := slices.Clone(p.Memberships)
		slices.SortFunc(ms, func(a, b jsMembership) int {
			return strings.Compare(a.UserID+"/"+a.DeviceID, b.UserID+"/"+b.DeviceID)
		})
		var got []string
		for _, m := range ms {
			got = append(got, m.UserID+"/"+m.DeviceID)
		}
		if !slices.Equal(got, exp) {
			diffs = append(diffs, fmt.Sprintf("js-sdk of %s lists %v, want %v: %s", c.Name, got, exp, jsString(ms)))
			continue
		}
		if ref == nil {
			ref, snap.js = c, ms
		} else if !slices.Equal(ms, snap.js) {
			diffs = append(diffs, fmt.Sprintf("js-sdk of %s sees %s, of %s %s", c.Name, jsString(ms), ref.Name, jsString(snap.js)))
		}
	}
	lives := s.liveSessions(t, room)
	snap.evs = s.sessionEvents(t, room)
	if len(lives) > 1 {
		return snap, fmt.Sprintf("the project has %d live sessions in the room: %s", len(lives), liveString(lives))
	}
	if len(lives) == 1 {
		snap.live = &lives[0]
	}
	if len(want) == 0 {
		if snap.live != nil {
			diffs = append(diffs, "the project has a live session: "+liveString(lives))
		}
		if n := len(snap.evs); n > 0 && snap.evs[n-1].Kind != events.KindSessionEnded {
			diffs = append(diffs, fmt.Sprintf("the room's last session event is %s, want session_ended", snap.evs[n-1].Kind))
		}
		return snap, strings.Join(diffs, "\n")
	}
	if snap.live == nil {
		return snap, strings.Join(append(diffs, "the project has no live session"), "\n")
	}
	if len(diffs) > 0 {
		return snap, strings.Join(diffs, "\n") + "\nthe project's live session: " + liveString(lives)
	}
	live := snap.live
	if n := len(snap.evs); n == 0 || snap.evs[n-1].Seq != live.Seq || snap.evs[n-1].SessionID != live.SessionID {
		diffs = append(diffs, fmt.Sprintf("the live session %s is at seq %d, the room's session events end elsewhere", live.SessionID, live.Seq))
	}
	members := map[string]memberView{}
	for _, m := range live.Members {
		members[m.UserID+"/"+m.DeviceID] = m
	}
	lastEvent := map[string]events.Member{} // the last member_joined/member_updated of each member
	for _, e := range snap.evs {
		if e.Member != nil && (e.Kind == events.KindMemberJoined || e.Kind == events.KindMemberUpdated) {
			lastEvent[string(e.Member.UserID)+"/"+string(e.Member.DeviceID)] = *e.Member
		}
	}
	if len(members) != len(snap.js) || live.Participants != len(snap.js) {
		diffs = append(diffs, fmt.Sprintf("the project's live session has %d members (participants %d), js-sdk %d",
			len(live.Members), live.Participants, len(snap.js)))
	}
	for _, j := range snap.js {
		k := j.UserID + "/" + j.DeviceID
		m, ok := members[k]
		if !ok {
			diffs = append(diffs, "the project's live session does not list "+k)
			continue
		}
		if m.JoinedAt != j.CreatedTS || m.ExpiresAt != j.ExpiresTS || m.EventID != j.EventID {
			diffs = append(diffs, fmt.Sprintf("%s: the project has event %s joined_at %d expires_at %d, js-sdk event %s created_ts %d expires %d",
				k, m.EventID, m.JoinedAt, m.ExpiresAt, j.EventID, j.CreatedTS, j.ExpiresTS))
		}
		// The call intent is compared once the project reports one (the
		// callIntent scenario requires it).
		if m.CallIntent != "" && m.CallIntent != j.CallIntent {
			diffs = append(diffs, fmt.Sprintf("%s: the project has call intent %q, js-sdk %q", k, m.CallIntent, j.CallIntent))
		}
		if e, ok := lastEvent[k]; !ok || string(e.EventID) != m.EventID || e.ExpiresAt != m.ExpiresAt {
			diffs = append(diffs, fmt.Sprintf("%s: the live session names event %s expiring at %d, the last session event of the member %s expiring at %d",
				k, m.EventID, m.ExpiresAt, e.EventID, e.ExpiresAt))
		}
	}
	if len(diffs) > 0 {
		return snap, strings.Join(diffs, "\n") + "\njs-sdk: " + jsString(snap.js) + "\nthe project's live session: " + liveString(lives)
	}
	return snap, ""
}

func jsString(ms []jsMembership) string {
	var parts []string
	for _, m := range ms {
		parts = append(parts, fmt.Sprintf("{%s/%s event %s created_ts %d expires %d intent %q}", m.UserID, m.DeviceID,
			m.EventID, m.CreatedTS, m.ExpiresTS, m.CallIntent))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func liveString(ls []liveView) string {
	var parts []string
	for _, l := range ls {
		var ms []string
		for _, m := range l.Members {
			ms = append(ms, fmt.Sprintf("{%s/%s event %s joined_at %d expires_at %d intent %q}", m.UserID, m.DeviceID,
				m.EventID, m.JoinedAt, m.ExpiresAt, m.CallIntent))
		}
		parts = append(parts, fmt.Sprintf("session %s started_at %d seq %d members [%s]", l.SessionID, l.StartedAt, l.Seq,
			strings.Join(ms, " ")))
	}
	if len(parts) == 0 {
		return "(none)"
	}
	return strings.Join(parts, "; ")
}
