package hostile

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// TestHostileHomeserver runs one pipeline (nats-server, aggregator, ingest)
// and reproduces, one room each, what a hostile homeserver was found to
// could do through the appservice API. The subtests share the pipeline and
// run one after the other (they compare metrics before and after).
func TestHostileHomeserver(t *testing.T) {
	s := startStack(t)
	t.Run("forged clock", s.testForgedClock)
	t.Run("forged clock elsewhere", s.testForgedClockElsewhere)
	t.Run("out of range numbers", s.testOutOfRange)
	t.Run("reused txn id", s.testReusedTxnID)
	t.Run("hostile and malformed writes", s.testHostileWrites)
	t.Run("auth failures counted", s.testAuthFailures)
	t.Run("memory flood", s.testMemoryFlood)
}

// testForgedClock: forged clocks. A homeserver's clock, forged in an
// event, must neither end a live session early, nor keep the room's
// logical clock in the future (a later join produced nothing), nor make a
// membership live beyond the cap past the time the ingest received it.
func (s *stack) testForgedClock(t *testing.T) {
	fourHours := int64(14400000)
	cases := []struct {
		name string
		// forged is the hostile event; carol is its sender.
		forged func(eventID string, room id.RoomID, carol id.UserID, now int64) obj
		// carolExpires: the forged event is a membership that counts, with
		// this expires_at (nil: it is no membership).
		carolExpires func(raw rawevent.RawEvent) int64
	}{
		{
			name: "top-level received_at 2100 on a room member event",
			forged: func(eventID string, room id.RoomID, carol id.UserID, now int64) obj {
				ev := roomMember(eventID, room, carol, now)
				ev["received_at"] = year2100
				return ev
			},
		},
		{
			name: "top-level received_at 2100 on a membership",
			forged: func(eventID string, room id.RoomID, carol id.UserID, now int64) obj {
				ev := callMember(eventID, room, carol, carol, "CAROL", now, joinContent("CAROL"))
				ev["received_at"] = year2100
				return ev
			},
			// Its own clock is believed (not ahead): origin_server_ts + 4 h.
			carolExpires: func(raw rawevent.RawEvent) int64 { return raw.OriginServerTS + fourHours },
		},
		{
			name: "top-level received_at not a number on a membership",
			forged: func(eventID string, room id.RoomID, carol id.UserID, now int64) obj {
				ev := callMember(eventID, room, carol, carol, "CAROL", now, joinContent("CAROL"))
				ev["received_at"] = "2100-01-01T00:00:00Z"
				return ev
			},
			// Not even parsed: no reason to reject the event.
			carolExpires: func(raw rawevent.RawEvent) int64 { return raw.OriginServerTS + fourHours },
		},
		{
			name: "top-level received_at 1e30 on a membership",
			forged: func(eventID string, room id.RoomID, carol id.UserID, now int64) obj {
				ev := callMember(eventID, room, carol, carol, "CAROL", now, joinContent("CAROL"))
				ev["received_at"] = rawNumber("1e30")
				return ev
			},
			carolExpires: func(raw rawevent.RawEvent) int64 { return raw.OriginServerTS + fourHours },
		},
		{
			name: "received_at 2100 in unsigned",
			forged: func(eventID string, room id.RoomID, carol id.UserID, now int64) obj {
				ev := roomMember(eventID, room, carol, now)
				ev["unsigned"] = obj{"received_at": year2100, "age": 1}
				return ev
			},
		},
		{
			name: "origin_server_ts 2100",
			forged: func(eventID string, room id.RoomID, carol id.UserID, _ int64) obj {
				return callMember(eventID, room, carol, carol, "CAROL", year2100, joinContent("CAROL"))
			},
			// A clock more than the skew ahead is not believed: the
			// membership starts when the ingest received it.
			carolExpires: func(raw rawevent.RawEvent) int64 { return raw.ReceivedAt + fourHours },
		},
		{
			name: "origin_server_ts 2100 and expires 30 days, beyond the cap",
			forged: func(eventID string, room id.RoomID, carol id.UserID, _ int64) obj {
				c := joinContent("CAROL")
				c["expires"] = int64(30 * 24 * 3600 * 1000)
				return callMember(eventID, room, carol, carol, "CAROL", year2100, c)
			},
			carolExpires: func(raw rawevent.RawEvent) int64 { return raw.ReceivedAt + s.maxExpires },
		},
		{
			// Within the skew allowance the sender's clock is believed, but
			// the membership still ends at most the cap after receipt.
			name: "origin_server_ts 4 min ahead (within the skew) and expires 30 days",
			forged: func(eventID string, room id.RoomID, carol id.UserID, now int64) obj {
				c := joinContent("CAROL")
				c["expires"] = int64(30 * 24 * 3600 * 1000)
				return callMember(eventID, room, carol, carol, "CAROL", now+4*60*1000, c)
			},
			carolExpires: func(raw rawevent.RawEvent) int64 { return raw.ReceivedAt + s.maxExpires },
		},
		{
			name: "origin_server_ts 2100 and created_ts 2100",
			forged: func(eventID string, room id.RoomID, carol id.UserID, _ int64) obj {
				c := joinContent("CAROL")
				c["created_ts"] = year2100
				return callMember(eventID, room, carol, carol, "CAROL", year2100, c)
			},
			carolExpires: func(raw rawevent.RawEvent) int64 { return raw.ReceivedAt + fourHours },
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			server := "clock" + fmt.Sprint(i) + ".test"
			room := id.RoomID("!forged-" + fmt.Sprint(i) + ":" + server)
			alice, bob, carol := id.UserID("@alice:"+server), id.UserID("@bob:"+server), id.UserID("@carol:"+server)
			tok := hsTokens[hsA]

			now := time.Now().UnixMilli()
			putOK(t, s.ingestAddr, tok, fmt.Sprintf("clock-%d-1", i), join(t, fmt.Sprintf("$alice-%d", i), room, alice, "ALICE", now))
			aliceJoined := s.sessions.waitJoined(t, room, alice)

			forgedID := fmt.Sprintf("$forged-%d", i)
			before := time.Now().UnixMilli()
			putOK(t, s.ingestAddr, tok, fmt.Sprintf("clock-%d-2", i), mustJSON(t, tc.forged(forgedID, room, carol, time.Now().UnixMilli())))
			after := time.Now().UnixMilli()

			// Bob joins later, as in the issue: this produced nothing while
			// the room's clock stood in 2100.
			putOK(t, s.ingestAddr, tok, fmt.Sprintf("clock-%d-3", i), join(t, fmt.Sprintf("$bob-%d", i), room, bob, "BOB", time.Now().UnixMilli()))
			bobJoined := s.sessions.waitJoined(t, room, bob)

			// The room's inputs are applied in order: anything the forged
			// event caused is before Bob's join.
			evs := s.sessions.room(t, room)
			for _, e := range evs {
				if e.Kind == events.KindMemberLeft || e.Kind == events.KindSessionEnded {
					t.Errorf("the forged event ended something:%s", describe(evs))
				}
			}
			if aliceJoined.Member.ExpiresAt != now+fourHours {
				t.Errorf("Alice's deadline %d, want %d (her origin_server_ts + 4 h)", aliceJoined.Member.ExpiresAt, now+fourHours)
			}
			if bobJoined.SessionID != aliceJoined.SessionID || bobJoined.Participants < 2 {
				t.Errorf("Bob joined session %s with %d participants, want Alice's session %s:%s",
					bobJoined.SessionID, bobJoined.Participants, aliceJoined.SessionID, describe(evs))
			}

			// RTC_RAW holds the ingest's clock, not the homeserver's.
			raw, ok := rawRecord(t, s.js, room, forgedID)
			if !ok {
				t.Fatalf("the forged event %s is not in RTC_RAW", forgedID)
			}
			if raw.ReceivedAt < before || raw.ReceivedAt > after {
				t.Errorf("RTC_RAW received_at of the forged event = %d, want the ingest's clock in [%d, %d]", raw.ReceivedAt, before, after)
			}

			var carolJoined *events.SessionEvent
			for i := range evs {
				if e := &evs[i]; e.Kind == events.KindMemberJoined && e.Member.UserID == carol {
					carolJoined = e
				}
			}
			switch {
			case tc.carolExpires != nil && carolJoined == nil:
				t.Errorf("Carol's membership did not count:%s", describe(evs))
			case tc.carolExpires == nil && carolJoined != nil:
				t.Errorf("Carol joined from a room member event:%s", describe(evs))
			case tc.carolExpires != nil:
				m := carolJoined.Member
				if want := tc.carolExpires(raw); m.ExpiresAt != want {
					t.Errorf("Carol's expires_at %d (%s), want %d (received_at %d)", m.ExpiresAt,
						time.UnixMilli(m.ExpiresAt).UTC(), want, raw.ReceivedAt)
				}
				if m.ExpiresAt > raw.ReceivedAt+s.maxExpires {
					t.Errorf("Carol's membership lives until %s, beyond received_at + the cap (%s)",
						time.UnixMilli(m.ExpiresAt).UTC(), time.UnixMilli(raw.ReceivedAt+s.maxExpires).UTC())
				}
				if m.JoinedAt > raw.ReceivedAt+s.defaultSkew {
					t.Errorf("Carol joined_at %d, after received_at %d + skew", m.JoinedAt, raw.ReceivedAt)
				}
			}

			// The stored room: its clock is the ingest's, and Alice's
			// membership still counts there.
			rec := roomRecord(t, s.js, room, bobJoined.Seq)
			if c := rec.State.Clock; c < before || c > time.Now().UnixMilli() {
				t.Errorf("room clock %s, want the ingest's clock (now)", time.UnixMilli(c).UTC())
			}
			counted := false
			for _, reg := range rec.State.Registers {
				for i := range reg.Claims {
					if c := &reg.Claims[i]; c.User == alice {
						if why := rec.State.ClaimStatus(c); why != "" {
							t.Errorf("Alice's claim does not count at the room's clock: %s", why)
						}
						counted = true
					}
				}
			}
			if !counted {
				t.Errorf("no claim of Alice in the stored room")
			}
		})
	}
}

// testOutOfRange: numbers no conforming homeserver sends were stored and
// then silently yielded nothing. Now each is rejected with the reason
// out_of_range, counted where it is rejected (the ingest for what no
// canonical JSON integer can be, the aggregator for the rest), and
// produces no session event and no membership.
func (s *stack) testOutOfRange(t *testing.T) {
	cases := []struct {
		name    string
		ts      int64
		content func(obj)
		// atIngest: the ingest rejects the envelope (nothing stored in
		// RTC_RAW); otherwise the aggregator rejects it.
		atIngest bool
		// register: the kind the event's register holds (0: none).
		register rtc.RegisterKind
	}{
		{name: "origin_server_ts 2^63-100", ts: 1<<63 - 1 - 99, atIngest: true},
		{name: "origin_server_ts 2^53-1 (canonical, after year 2500)", ts: 1<<53 - 1},
		{name: "expires 1e30", content: func(c obj) { c["expires"] = rawNumber("1e30") }, register: rtc.RegisterInvalid},
		{name: "expires 2^53 (past canonical JSON)", content: func(c obj) { c["expires"] = int64(1 << 53) }, register: rtc.RegisterInvalid},
		{name: "created_ts 2^62", content: func(c obj) { c["created_ts"] = int64(1 << 62) }, register: rtc.RegisterInvalid},
		{name: "expires 0", content: func(c obj) { c["expires"] = 0 }, register: rtc.RegisterInvalid},
		{name: "expires -1", content: func(c obj) { c["expires"] = -1 }, register: rtc.RegisterInvalid},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			server := "range" + fmt.Sprint(i) + ".test"
			room := id.RoomID("!range-" + fmt.Sprint(i) + ":" + server)
			mallory, bob := id.UserID("@mallory:"+server), id.UserID("@bob:"+server)
			ingestBefore := metric(t, s.ingestHTTP, "rtc_ingest_events_rejected_total", "homeserver", hsB, "source", "appservice", "reason", "out_of_range")
			aggBefore := metric(t, s.aggHTTP, "rtc_aggregator_rejections_total", "reason", "out_of_range")

			ts := tc.ts
			if ts == 0 {
				ts = time.Now().UnixMilli()
			}
			content := joinContent("MAL")
			if tc.content != nil {
				tc.content(content)
			}
			badID := fmt.Sprintf("$range-%d", i)
			bad := mustJSON(t, callMember(badID, room, mallory, mallory, "MAL", ts, content))
			if !tc.atIngest {
				s.paceRejection()
			}
			// The rest of the transaction is stored: one bad event does not
			// cost the others.
			putOK(t, s.ingestAddr, hsTokens[hsB], fmt.Sprintf("range-%d", i), bad,
				join(t, fmt.Sprintf("$range-bob-%d", i), room, bob, "BOB", time.Now().UnixMilli()))
			bobJoined := s.sessions.waitJoined(t, room, bob)
			if !tc.atIngest {
				s.rejectionApplied()
			}

			ingestDelta := metric(t, s.ingestHTTP, "rtc_ingest_events_rejected_total", "homeserver", hsB, "source", "appservice", "reason", "out_of_range") - ingestBefore
			aggDelta := metric(t, s.aggHTTP, "rtc_aggregator_rejections_total", "reason", "out_of_range") - aggBefore
			_, stored := rawRecord(t, s.js, room, badID)
			if tc.atIngest {
				if ingestDelta != 1 || aggDelta != 0 || stored {
					t.Errorf("ingest out_of_range +%v, aggregator +%v, in RTC_RAW %v; want +1, +0, false", ingestDelta, aggDelta, stored)
				}
			} else if ingestDelta != 0 || aggDelta != 1 || !stored {
				t.Errorf("ingest out_of_range +%v, aggregator +%v, in RTC_RAW %v; want +0, +1, true", ingestDelta, aggDelta, stored)
			}

			evs := s.sessions.room(t, room)
			for _, e := range evs {
				if e.Member != nil && (e.Member.UserID == mallory || string(e.Member.EventID) == badID) {
					t.Errorf("session event for the out-of-range event:%s", describe(evs))
				}
			}
			rec := roomRecord(t, s.js, room, bobJoined.Seq)
			var held *rtc.Register
			for _, reg := range rec.State.Registers {
				if string(reg.EventID) == badID {
					held = reg
				}
			}
			switch {
			case tc.register == 0 && held != nil:
				t.Errorf("register holds the rejected event: %+v", held)
			case tc.register != 0 && held == nil:
				t.Errorf("no register holds the invalid event")
			case held != nil:
				if held.Kind != tc.register || len(held.Claims) != 0 || held.WhyCode != rtc.RejectOutOfRange {
					t.Errorf("register kind %d claims %d why %s (%s), want kind %d, no claim, why %s",
						held.Kind, len(held.Claims), held.WhyCode, held.Why, tc.register, rtc.RejectOutOfRange)
				}
			}
			if !tc.atIngest {
				s.wantRejectionLogged(t, room, badID, rtc.RejectOutOfRange)
			}
		})
	}
}

// rawNumber is a JSON number written as it is (1e30).
type rawNumber string

func (n rawNumber) MarshalJSON() ([]byte, error) { return []byte(n), nil }

// wantRejectionLogged: the aggregator logged the rejection of eventID with
// its room and reason (sampled, but these tests stay far below the rate).
func (s *stack) wantRejectionLogged(t *testing.T, room id.RoomID, eventID string, code rtc.RejectionCode) {
	t.Helper()
	for _, e := range s.aggLogs.FilterMessage("membership rejected").All() {
		f := e.ContextMap()
		if f["event_id"] == eventID {
			if f["room"] != string(room) || f["reason"] != string(code) {
				t.Errorf("rejection of %s logged with room %v reason %v, want %s %s", eventID, f["room"], f["reason"], room, code)
			}
			return
		}
	}
	t.Errorf("rejection of %s not logged", eventID)
}

// testReusedTxnID: a homeserver that restarts its transaction counter
// sends new events under an id already used. They were answered 200 and
// dropped; now both transactions' events become session events, and only
// a true retry (same id, same body) is answered without storing again.
func (s *stack) testReusedTxnID(t *testing.T) {
	const server = "reuse.test"
	room := id.RoomID("!reuse:" + server)
	alice, bob := id.UserID("@alice:"+server), id.UserID("@bob:"+server)
	tok := hsTokens[hsA]
	reused := func(result string) float64 {
		return metric(t, s.ingestHTTP, "rtc_ingest_appservice_txn_reused_total", "homeserver", hsA, "result", result)
	}
	sameBefore, diffBefore := reused("same_content"), reused("different_content")

	first := join(t, "$reuse-alice", room, alice, "ALICE", time.Now().UnixMilli())
	putOK(t, s.ingestAddr, tok, "1", first)
	s.sessions.waitJoined(t, room, alice)
	// The homeserver restarted: its counter starts at 1 again.
	second := join(t, "$reuse-bob", room, bob, "BOB", time.Now().UnixMilli())
	putOK(t, s.ingestAddr, tok, "1", second)
	bobJoined := s.sessions.waitJoined(t, room, bob)
	if bobJoined.Participants != 2 {
		t.Errorf("Bob joined with %d participants, want 2", bobJoined.Participants)
	}
	// A retry of the last transaction: answered, not stored again.
	putOK(t, s.ingestAddr, tok, "1", second)
	// The same id from another homeserver is another transaction.
	carol := id.UserID("@carol:" + server)
	putOK(t, s.ingestAddr, hsTokens[hsB], "1", join(t, "$reuse-carol", room, carol, "CAROL", time.Now().UnixMilli()))
	carolJoined := s.sessions.waitJoined(t, room, carol)

	if d := reused("different_content") - diffBefore; d != 1 {
		t.Errorf("txn_reused{different_content} +%v, want +1", d)
	}
	if d := reused("same_content") - sameBefore; d != 1 {
		t.Errorf("txn_reused{same_content} +%v, want +1", d)
	}
	evs := s.sessions.room(t, room)
	joins := map[id.UserID]int{}
	for _, e := range evs {
		if e.Kind == events.KindMemberJoined {
			joins[e.Member.UserID]++
		}
	}
	if len(evs) != 4 || joins[alice] != 1 || joins[bob] != 1 || joins[carol] != 1 || carolJoined.Seq != 4 {
		t.Errorf("want session_started and one member_joined each for Alice, Bob, Carol:%s", describe(evs))
	}
	raws := 0
	for _, r := range rawRecords(t, s.js, room) {
		if r.Kind == rawevent.InputEvent {
			raws++
		}
	}
	if raws != 3 {
		t.Errorf("RTC_RAW holds %d events of the room, want 3 (each stored once)", raws)
	}
}

// testHostileWrites: a membership that does not count (a write on another
// user's state key, malformed content, a broken envelope) was neither
// logged nor labelled: an operator could not find out why someone is
// missing from a call. Now each is counted by reason (at the ingest for the
// envelope, at the aggregator for the content), logged, joins no one, and
// `rtcctl room` shows why its register does not count. When it overwrites
// a live membership, that member leaves with reason invalid (DESIGN §3: the
// key's state now holds the invalid event).
func (s *stack) testHostileWrites(t *testing.T) {
	cases := []struct {
		name string
		ev   func(eventID string, room id.RoomID, alice, mallory id.UserID, now int64) obj
		// aliceFirst: Alice holds a live membership on the key first.
		aliceFirst bool
		// aggReason: the aggregator's rejection reason; ingestReason: the
		// ingest's (the event never reaches RTC_RAW).
		aggReason    rtc.RejectionCode
		ingestReason string
	}{
		{
			name: "Mallory writes a join on Alice's state key",
			ev: func(eventID string, room id.RoomID, alice, mallory id.UserID, now int64) obj {
				return callMember(eventID, room, mallory, alice, "ALICE", now, joinContent("ALICE"))
			},
			aggReason: rtc.RejectForeignStateKey,
		},
		{
			name: "Mallory overwrites Alice's live membership",
			ev: func(eventID string, room id.RoomID, alice, mallory id.UserID, now int64) obj {
				return callMember(eventID, room, mallory, alice, "ALICE", now, joinContent("ALICE"))
			},
			aliceFirst: true, aggReason: rtc.RejectForeignStateKey,
		},
		{
			name: "device_id is a number",
			ev: func(eventID string, room id.RoomID, alice, _ id.UserID, now int64) obj {
				c := joinContent("ALICE")
				c["device_id"] = 7
				return callMember(eventID, room, alice, alice, "ALICE", now, c)
			},
			aggReason: rtc.RejectMalformed,
		},
		{
			name: "Alice's client overwrites her membership without focus_active",
			ev: func(eventID string, room id.RoomID, alice, _ id.UserID, now int64) obj {
				c := joinContent("ALICE")
				delete(c, "focus_active")
				return callMember(eventID, room, alice, alice, "ALICE", now, c)
			},
			aliceFirst: true, aggReason: rtc.RejectMalformed,
		},
		{
			name: "sender is not a user id",
			ev: func(eventID string, room id.RoomID, alice, _ id.UserID, now int64) obj {
				ev := callMember(eventID, room, alice, alice, "ALICE", now, joinContent("ALICE"))
				ev["sender"] = "alice"
				return ev
			},
			ingestReason: "malformed",
		},
		{
			name: "content is an array",
			ev: func(eventID string, room id.RoomID, alice, _ id.UserID, now int64) obj {
				ev := callMember(eventID, room, alice, alice, "ALICE", now, nil)
				ev["content"] = []any{joinContent("ALICE")}
				return ev
			},
			ingestReason: "malformed",
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			server := "hostile" + fmt.Sprint(i) + ".test"
			room := id.RoomID("!hostile-" + fmt.Sprint(i) + ":" + server)
			alice, mallory, bob := id.UserID("@alice:"+server), id.UserID("@mallory:"+server), id.UserID("@bob:"+server)
			want := []string{"session_started", "member_joined " + string(bob)}
			if tc.aliceFirst {
				putOK(t, s.ingestAddr, hsTokens[hsA], fmt.Sprintf("hostile-%d-0", i),
					join(t, fmt.Sprintf("$hostile-alice-%d", i), room, alice, "ALICE", time.Now().UnixMilli()))
				s.sessions.waitJoined(t, room, alice)
				want = []string{"session_started", "member_joined " + string(alice), "member_joined " + string(bob),
					"member_left " + string(alice) + " invalid"}
			}
			aggReasons := map[rtc.RejectionCode]float64{}
			for _, c := range rtc.RejectionCodes() {
				aggReasons[c] = metric(t, s.aggHTTP, "rtc_aggregator_rejections_total", "reason", string(c))
			}
			ingestBefore := metric(t, s.ingestHTTP, "rtc_ingest_events_rejected_total", "homeserver", hsA, "source", "appservice", "reason", "malformed")

			// The room's last input causes the last expected session event,
			// so that seeing it means every input was applied: Bob's join
			// when the bad event joins no one, the bad event when it ends
			// Alice's membership (then Bob's join comes first, so that the
			// session goes on).
			badID := fmt.Sprintf("$hostile-%d", i)
			bad := mustJSON(t, tc.ev(badID, room, alice, mallory, time.Now().UnixMilli()))
			bobJoin := join(t, fmt.Sprintf("$hostile-bob-%d", i), room, bob, "BOB", time.Now().UnixMilli())
			txn := []string{bad, bobJoin}
			if tc.aliceFirst {
				txn = []string{bobJoin, bad}
			}
			if tc.aggReason != "" {
				s.paceRejection()
			}
			putOK(t, s.ingestAddr, hsTokens[hsA], fmt.Sprintf("hostile-%d", i), txn...)
			var evs []events.SessionEvent
			waitFor(t, fmt.Sprintf("%d session events in %s", len(want), room), func() bool {
				evs = s.sessions.room(t, room)
				return len(evs) >= len(want)
			})
			if tc.aggReason != "" {
				s.rejectionApplied()
			}
			if got := summarize(evs); strings.Join(got, "; ") != strings.Join(want, "; ") {
				t.Errorf("session events %q, want %q", got, want)
			}
			last := evs[len(evs)-1]

			for _, c := range rtc.RejectionCodes() {
				want := 0.0
				if c == tc.aggReason {
					want = 1
				}
				if d := metric(t, s.aggHTTP, "rtc_aggregator_rejections_total", "reason", string(c)) - aggReasons[c]; d != want {
					t.Errorf("rtc_aggregator_rejections_total{reason=%q} +%v, want +%v", c, d, want)
				}
			}
			_, stored := rawRecord(t, s.js, room, badID)
			if tc.ingestReason != "" {
				if d := metric(t, s.ingestHTTP, "rtc_ingest_events_rejected_total", "homeserver", hsA, "source", "appservice", "reason", tc.ingestReason) - ingestBefore; d != 1 || stored {
					t.Errorf("ingest rejected{reason=%s} +%v, in RTC_RAW %v; want +1, false", tc.ingestReason, d, stored)
				}
				return
			}
			if !stored {
				t.Fatalf("%s is not in RTC_RAW", badID)
			}
			s.wantRejectionLogged(t, room, badID, tc.aggReason)

			// What the operator sees: the stored register and rtcctl room.
			rec := roomRecord(t, s.js, room, last.Seq)
			var held *rtc.Register
			for _, reg := range rec.State.Registers {
				if string(reg.EventID) == badID {
					held = reg
				}
			}
			if held == nil || held.Kind != rtc.RegisterInvalid || len(held.Claims) != 0 || held.WhyCode != tc.aggReason || held.Why == "" {
				t.Fatalf("register of %s: %+v, want invalid, no claim, why %s with a text", badID, held, tc.aggReason)
			}
			out := rtcctlRoom(t, s.ns, room)
			var line string
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, badID) {
					line = l
				}
			}
			wantWhy := string(tc.aggReason) + ": " + held.Why
			if !strings.Contains(line, "_"+string(alice)+"_ALICE_m.call") || !strings.Contains(line, "invalid") || !strings.Contains(line, wantWhy) {
				t.Errorf("rtcctl room does not show Alice's key holding %s and why it does not count (want %q):\n%s", badID, wantWhy, out)
			}
		})
	}
}

// summarize is each session event as "kind [user [reason]]".
func summarize(evs []events.SessionEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = string(e.Kind)
		if e.Member != nil {
			out[i] += " " + string(e.Member.UserID)
		}
		if e.Reason != "" {
			out[i] += " " + string(e.Reason)
		}
	}
	return out
}

// testAuthFailures: 401/403 were counted nowhere. Now every refused token
// is counted by the homeserver it belongs to, or "unknown", and reason.
func (s *stack) testAuthFailures(t *testing.T) {
	url := "http://" + s.ingestAddr + "/_matrix/app/v1/transactions/auth-"
	body := `{"events":[]}`
	series := []struct{ hs, reason string }{
		{"unknown", "missing_token"}, {"unknown", "unknown_token"}, {"unknown", "token_mismatch"},
		{hsA, "token_mismatch"}, {hsB, "token_mismatch"}, {hsA, "unknown_token"},
	}
	cases := []struct {
		name       string
		url        string // after the prefix
		header     string // Authorization
		wantStatus int
		wantHS     string // the series that grows ("" none)
		wantReason string
	}{
		{name: "no token", url: "1", wantStatus: 401, wantHS: "unknown", wantReason: "missing_token"},
		{name: "empty access_token", url: "2?access_token=", wantStatus: 401, wantHS: "unknown", wantReason: "missing_token"},
		{name: "wrong bearer token", url: "3", header: "Bearer nope", wantStatus: 403, wantHS: "unknown", wantReason: "unknown_token"},
		{name: "another scheme", url: "4", header: "Basic " + hsTokens[hsA], wantStatus: 403, wantHS: "unknown", wantReason: "unknown_token"},
		{name: "wrong access_token", url: "5?access_token=nope", wantStatus: 403, wantHS: "unknown", wantReason: "unknown_token"},
		{name: "hs-a header, other query", url: "6?access_token=nope", header: "Bearer " + hsTokens[hsA],
			wantStatus: 403, wantHS: hsA, wantReason: "token_mismatch"},
		{name: "hs-b header, hs-a query", url: "7?access_token=" + hsTokens[hsA], header: "Bearer " + hsTokens[hsB],
			wantStatus: 403, wantHS: hsB, wantReason: "token_mismatch"},
		{name: "legacy access_token of hs-a", url: "8?access_token=" + hsTokens[hsA], wantStatus: 200},
		{name: "both, agreeing", url: "9?access_token=" + hsTokens[hsB], header: "Bearer " + hsTokens[hsB], wantStatus: 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := make([]float64, len(series))
			for i, se := range series {
				before[i] = metric(t, s.ingestHTTP, "rtc_ingest_appservice_auth_failures_total", "homeserver", se.hs, "reason", se.reason)
			}
			req, err := httpRequest("PUT", url+tc.url, body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			r := send(t, req)
			if r.status != tc.wantStatus {
				t.Fatalf("HTTP %d %s, want %d", r.status, r.body, tc.wantStatus)
			}
			if r.status != 200 {
				wantMatrixError(t, r, map[int]string{401: "M_MISSING_TOKEN", 403: "M_FORBIDDEN"}[r.status], false)
			}
			for i, se := range series {
				want := 0.0
				if se.hs == tc.wantHS && se.reason == tc.wantReason {
					want = 1
				}
				if d := metric(t, s.ingestHTTP, "rtc_ingest_appservice_auth_failures_total", "homeserver", se.hs, "reason", se.reason) - before[i]; d != want {
					t.Errorf("auth_failures_total{homeserver=%q,reason=%q} +%v, want +%v", se.hs, se.reason, d, want)
				}
			}
		})
	}
}

// testForgedClockElsewhere: the other clocks a homeserver states, in a
// sticky membership (MSC4354) and in an event that arrives already
// redacted, are bounded by the receive time too: they neither make a
// membership outlive its bound, nor date a transition in the future, nor
// move the room's clock. Alice and Bob are in the call; the forged event
// comes; Dave joins after it.
func (s *stack) testForgedClockElsewhere(t *testing.T) {
	const hour = int64(3600000)
	cases := []struct {
		name   string
		forged func(eventID string, room id.RoomID, alice, carol id.UserID, aliceEvent obj) obj
		// then, if set, is a transaction sent after the forged event.
		then func(room id.RoomID, alice id.UserID) []obj
		// want is the session events the forged event (and then) causes;
		// check looks at the first of them.
		want  func(alice, carol id.UserID) []string
		check func(t *testing.T, e events.SessionEvent, raw rawevent.RawEvent)
	}{
		{
			name: "a redaction of Alice's membership dated 2100",
			forged: func(eventID string, room id.RoomID, alice, _ id.UserID, aliceEvent obj) obj {
				return obj{"type": "m.room.redaction", "sender": alice, "event_id": eventID, "room_id": room,
					"origin_server_ts": year2100, "redacts": aliceEvent["event_id"], "content": obj{"redacts": aliceEvent["event_id"]}}
			},
			want: func(alice, _ id.UserID) []string { return []string{"member_left " + string(alice) + " redacted"} },
			check: func(t *testing.T, e events.SessionEvent, raw rawevent.RawEvent) {
				if e.At != raw.ReceivedAt {
					t.Errorf("Alice left at %s, want when the redaction was received, %s", time.UnixMilli(e.At).UTC(), time.UnixMilli(raw.ReceivedAt).UTC())
				}
			},
		},
		{
			// Before, a room leave dated 2100 outranked every later join
			// of Alice's until 2100: she could not come back.
			name: "Alice leaves the room dated 2100, then rejoins",
			forged: func(eventID string, room id.RoomID, alice, _ id.UserID, _ obj) obj {
				return obj{"type": "m.room.member", "state_key": alice, "sender": alice, "event_id": eventID,
					"room_id": room, "origin_server_ts": year2100, "content": obj{"membership": "leave"}}
			},
			then: func(room id.RoomID, alice id.UserID) []obj {
				return []obj{roomMember("$elsewhere-rejoin-"+string(room), room, alice, time.Now().UnixMilli())}
			},
			want: func(alice, _ id.UserID) []string {
				return []string{"member_left " + string(alice) + " left_room", "member_joined " + string(alice)}
			},
			check: func(t *testing.T, e events.SessionEvent, raw rawevent.RawEvent) {
				if e.At != raw.ReceivedAt {
					t.Errorf("Alice left at %s, want when her leave was received, %s", time.UnixMilli(e.At).UTC(), time.UnixMilli(raw.ReceivedAt).UTC())
				}
			},
		},
		{
			name: "sticky membership dated 2100 with duration 2^53-1",
			forged: func(eventID string, room id.RoomID, _, carol id.UserID, _ obj) obj {
				key := "c0ffee00-0000-4000-8000-000000000001"
				return obj{"type": "org.matrix.msc4143.rtc.member", "sender": carol, "event_id": eventID, "room_id": room,
					"origin_server_ts": year2100, "msc4354_sticky": obj{"duration_ms": int64(1<<53 - 1)},
					"content": obj{"slot_id": "m.call#ROOM", "application": obj{"type": "m.call"},
						"member":         obj{"user_id": carol, "device_id": "CAROL", "id": key},
						"rtc_transports": []any{obj{"type": "livekit", "livekit_service_url": "https://sfu.example"}},
						"versions":       []any{}, "msc4354_sticky_key": key}}
			},
			want: func(_, carol id.UserID) []string { return []string{"member_joined " + string(carol)} },
			check: func(t *testing.T, e events.SessionEvent, raw rawevent.RawEvent) {
				// MSC4354: min(received, origin_server_ts) + min(duration, 1 h).
				if e.Member.ExpiresAt != raw.ReceivedAt+hour || e.Member.JoinedAt > raw.ReceivedAt || e.At > raw.ReceivedAt {
					t.Errorf("Carol joined_at %d at %d expires_at %d, want joined by and expiring 1 h after received_at %d",
						e.Member.JoinedAt, e.At, e.Member.ExpiresAt, raw.ReceivedAt)
				}
			},
		},
		{
			name: "Alice's membership arrives redacted, the redaction dated 2100",
			forged: func(_ string, _ id.RoomID, _, _ id.UserID, aliceEvent obj) obj {
				ev := obj{}
				for k, v := range aliceEvent {
					ev[k] = v
				}
				ev["content"] = obj{}
				ev["unsigned"] = obj{"redacted_because": obj{"event_id": "$redaction-2100", "origin_server_ts": year2100}}
				return ev
			},
			want: func(alice, _ id.UserID) []string { return []string{"member_left " + string(alice) + " redacted"} },
			check: func(t *testing.T, e events.SessionEvent, raw rawevent.RawEvent) {
				// The transition is dated by the event's own (believed)
				// time, not by the redaction's clock far ahead.
				if e.At != raw.OriginServerTS {
					t.Errorf("Alice left at %s, want her event's time %s", time.UnixMilli(e.At).UTC(), time.UnixMilli(raw.OriginServerTS).UTC())
				}
			},
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			server := "elsewhere" + fmt.Sprint(i) + ".test"
			room := id.RoomID("!elsewhere-" + fmt.Sprint(i) + ":" + server)
			alice, bob := id.UserID("@alice:"+server), id.UserID("@bob:"+server)
			carol, dave := id.UserID("@carol:"+server), id.UserID("@dave:"+server)
			tok := hsTokens[hsB]
			aliceEvent := callMember(fmt.Sprintf("$elsewhere-alice-%d", i), room, alice, alice, "ALICE", time.Now().UnixMilli(), joinContent("ALICE"))
			putOK(t, s.ingestAddr, tok, fmt.Sprintf("elsewhere-%d-1", i), mustJSON(t, aliceEvent),
				join(t, fmt.Sprintf("$elsewhere-bob-%d", i), room, bob, "BOB", time.Now().UnixMilli()))
			s.sessions.waitJoined(t, room, bob)

			forgedEv := tc.forged(fmt.Sprintf("$elsewhere-forged-%d", i), room, alice, carol, aliceEvent)
			before := time.Now().UnixMilli()
			putOK(t, s.ingestAddr, tok, fmt.Sprintf("elsewhere-%d-2", i), mustJSON(t, forgedEv))
			after := time.Now().UnixMilli()
			if tc.then != nil {
				var then []string
				for _, ev := range tc.then(room, alice) {
					then = append(then, mustJSON(t, ev))
				}
				putOK(t, s.ingestAddr, tok, fmt.Sprintf("elsewhere-%d-then", i), then...)
			}
			putOK(t, s.ingestAddr, tok, fmt.Sprintf("elsewhere-%d-3", i), join(t, fmt.Sprintf("$elsewhere-dave-%d", i), room, dave, "DAVE", time.Now().UnixMilli()))
			daveJoined := s.sessions.waitJoined(t, room, dave)

			evs := s.sessions.room(t, room)
			want := append([]string{"session_started", "member_joined " + string(alice), "member_joined " + string(bob)},
				tc.want(alice, carol)...)
			want = append(want, "member_joined "+string(dave))
			if got := summarize(evs); strings.Join(got, "; ") != strings.Join(want, "; ") {
				t.Fatalf("session events %q, want %q", got, want)
			}
			var raw rawevent.RawEvent
			for _, r := range rawRecords(t, s.js, room) {
				if r.EventID == id.EventID(forgedEv["event_id"].(string)) && r.ReceivedAt >= before {
					raw = r
				}
			}
			if raw.ReceivedAt < before || raw.ReceivedAt > after {
				t.Fatalf("forged event in RTC_RAW with received_at %d, want the ingest's clock in [%d, %d]", raw.ReceivedAt, before, after)
			}
			tc.check(t, evs[3], raw)
			rec := roomRecord(t, s.js, room, daveJoined.Seq)
			if c := rec.State.Clock; c < before || c > time.Now().UnixMilli() {
				t.Errorf("room clock %s, want the ingest's clock (now)", time.UnixMilli(c).UTC())
			}
		})
	}
}
