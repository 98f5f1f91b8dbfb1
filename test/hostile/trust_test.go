package hostile

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/authz"
	"github.com/rtcsessions/rtc-sessions/internal/authz/authztest"
	"github.com/rtcsessions/rtc-sessions/internal/ingest"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// TestInputPublishersCannotRewrite: what the ingest's and the operator's
// credentials could do to RTC_RAW and to rooms beyond publishing an input,
// against nats-server with the shipped users and the real aggregator and
// ingest, each logged in as its own user. Each was possible before: one
// `Nats-Rollup: all` emptied RTC_RAW with every armed timer, a
// `Nats-Schedule: @every` made a permanent input generator, an input was
// grouped under the room its body named, and a timer input from any
// publisher moved a room's clock to its deadline.
func TestInputPublishersCannotRewrite(t *testing.T) {
	srv := authztest.Start(t)
	startAggregator(t, srv.ConnConfig(authz.UserAggregator))
	ingestAddr, _ := startIngest(t, srv.NS, func(c *ingest.Config) { c.NATS = srv.ConnConfig(authz.UserIngest) })
	agg := srv.Connect(t, authz.UserAggregator) // to look at the streams
	ing := srv.Connect(t, authz.UserIngest)
	op := srv.Connect(t, authz.UserOperator)
	sessions := followSessions(t, srv.Connect(t, authz.UserSubscriber).JS)
	now := time.Now().UnixMilli()

	t.Run("ingest rolls up RTC_RAW", func(t *testing.T) {
		room, alice := id.RoomID("!rollup:"+hsA), id.UserID("@alice:"+hsA)
		content := joinContent("ALICE")
		content["expires"] = 3000 // her timer fires 3 s after the join
		putOK(t, ingestAddr, hsTokens[hsA], "rollup-1", mustJSON(t, callMember("$rollup-alice", room, alice, alice, "ALICE", time.Now().UnixMilli(), content)))
		sessions.waitJoined(t, room, alice)
		before := streamMsgs(t, agg, rawevent.StreamRaw)

		err := publishWith(ing, rawevent.RawSubject(room), "Nats-Rollup", "all", "")
		if err == nil {
			t.Fatal("RTC_RAW accepted a publish with Nats-Rollup: all")
		}
		t.Logf("refused: %v", err)
		if after := streamMsgs(t, agg, rawevent.StreamRaw); after < before {
			t.Fatalf("RTC_RAW held %d messages, now %d", before, after)
		}
		// Her armed timer survived: she expires by it.
		waitFor(t, "Alice to expire by her timer", func() bool {
			for _, e := range sessions.room(t, room) {
				if e.Kind == events.KindMemberLeft && e.Reason == events.ReasonExpired {
					return true
				}
			}
			return false
		})
	})

	for _, tc := range []struct {
		user string
		c    *authztest.Client
	}{{authz.UserIngest, ing}, {authz.UserOperator, op}} {
		t.Run(tc.user+" schedules an input generator", func(t *testing.T) {
			room := id.RoomID("!generator-" + tc.user + ":" + hsA)
			body := rawInput(t, room, rawevent.RawEvent{Kind: rawevent.InputEvent, RoomID: room, EventID: "$gen", ReceivedAt: now})
			rawBefore, dlqBefore := streamMsgs(t, agg, rawevent.StreamRaw), streamMsgs(t, agg, rawevent.StreamDLQ)
			m := nats.NewMsg(rawevent.RawSubject(room))
			m.Data = body
			m.Header.Set(jetstream.ScheduleHeader, "@every 1s")
			m.Header.Set(jetstream.ScheduleTargetHeader, rawevent.RawSubject(room))
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			if _, err := tc.c.JS.PublishMsg(ctx, m); err == nil {
				t.Fatal("RTC_RAW accepted a message schedule")
			} else {
				t.Logf("refused: %v", err)
			}
			time.Sleep(2500 * time.Millisecond) // two periods of the generator, had it been stored
			if raw, dlq := streamMsgs(t, agg, rawevent.StreamRaw), streamMsgs(t, agg, rawevent.StreamDLQ); raw != rawBefore || dlq != dlqBefore {
				t.Fatalf("messages appeared: RTC_RAW %d -> %d, RTC_DLQ %d -> %d", rawBefore, raw, dlqBefore, dlq)
			}
		})
	}

	t.Run("operator publishes room B's input on room A's subject", func(t *testing.T) {
		roomA, roomB, bob := id.RoomID("!subject-a:"+hsA), id.RoomID("!subject-b:"+hsA), id.UserID("@bob:"+hsA)
		ts := time.Now().UnixMilli()
		// The forgery takes the event id of Bob's real join, with another
		// device: grouped under B (its body's room), it would join that
		// device and make the real join a duplicate.
		forged, err := ingest.Prepare([]byte(join(t, "$subject-bob", roomB, bob, "FORGED", ts)), roomB, ts, hsA, rawevent.SourceAppservice)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if _, err := op.JS.Publish(ctx, rawevent.RawSubject(roomA), rawInput(t, roomA, forged), jetstream.WithMsgID("forged-bob")); err != nil {
			t.Fatalf("operator publish: %v", err)
		}
		d := waitDeadLetter(t, agg, "room_mismatch", "$subject-bob")
		t.Logf("dead letter: %s", d)
		putOK(t, ingestAddr, hsTokens[hsA], "subject-1", join(t, "$subject-bob", roomB, bob, "BOB", ts))
		if j := sessions.waitJoined(t, roomB, bob); j.Member.DeviceID != "BOB" {
			t.Fatalf("Bob joined room B with device %s, want his real BOB", j.Member.DeviceID)
		}
		for _, r := range []id.RoomID{roomA, roomB} {
			for _, e := range sessions.room(t, r) {
				if e.Member != nil && e.Member.DeviceID == "FORGED" {
					t.Errorf("the forged input reached %s: %s", r, e.Kind)
				}
			}
		}
	})

	t.Run("operator publishes a timer input dated 2500", func(t *testing.T) {
		room, carol, dave := id.RoomID("!clock:"+hsA), id.UserID("@carol:"+hsA), id.UserID("@dave:"+hsA)
		putOK(t, ingestAddr, hsTokens[hsA], "clock-1", join(t, "$clock-carol", room, carol, "CAROL", time.Now().UnixMilli()))
		joined := sessions.waitJoined(t, room, carol)
		y2500 := time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
		forged := rawevent.RawEvent{V: events.SchemaVersion, Kind: rawevent.InputTimer, Source: rawevent.SourceTimer, RoomID: room,
			Deadline: y2500, ReceivedAt: y2500}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if _, err := op.JS.Publish(ctx, rawevent.RawSubject(room), rawInput(t, room, forged), jetstream.WithMsgID("forged-timer")); err != nil {
			t.Fatalf("operator publish: %v", err)
		}
		d := waitDeadLetter(t, agg, "timer_not_from_timer_path", "")
		t.Logf("dead letter: %s", d)
		putOK(t, ingestAddr, hsTokens[hsA], "clock-2", join(t, "$clock-dave", room, dave, "DAVE", time.Now().UnixMilli()))
		daveJoined := sessions.waitJoined(t, room, dave)
		for _, e := range sessions.room(t, room) {
			if e.Kind == events.KindMemberLeft || e.Kind == events.KindSessionEnded {
				t.Errorf("%s in the room: %s", e.Kind, describe(sessions.room(t, room)))
			}
		}
		if daveJoined.SessionID != joined.SessionID {
			t.Errorf("Dave joined session %s, Carol's is %s", daveJoined.SessionID, joined.SessionID)
		}
		if rec := roomRecord(t, agg.JS, room, daveJoined.Seq); rec.State.Clock >= year2100 {
			t.Errorf("the room's clock is %d (%s)", rec.State.Clock, time.UnixMilli(rec.State.Clock).UTC())
		}
	})
}

// rawInput encodes an input as the ingest does.
func rawInput(t *testing.T, room id.RoomID, ev rawevent.RawEvent) []byte {
	t.Helper()
	ev.V = events.SchemaVersion
	b, err := rawevent.EncodeRaw(&ev)
	if err != nil {
		t.Fatalf("encode an input of %s: %v", room, err)
	}
	return b
}

// publishWith publishes a forged input carrying one header as c.
func publishWith(c *authztest.Client, subject, header, value, target string) error {
	m := nats.NewMsg(subject)
	m.Data = []byte("forged")
	m.Header.Set(header, value)
	if target != "" {
		m.Header.Set(jetstream.ScheduleTargetHeader, target)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err := c.JS.PublishMsg(ctx, m)
	return err
}

// streamMsgs is the number of messages a stream holds.
func streamMsgs(t *testing.T, c *authztest.Client, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	s, err := c.JS.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("look up %s: %v", stream, err)
	}
	return s.CachedInfo().State.Msgs
}

// waitDeadLetter waits for an RTC_DLQ entry with reason whose body is an
// input with eventID (any, when empty), and describes it.
func waitDeadLetter(t *testing.T, agg *authztest.Client, reason, eventID string) string {
	t.Helper()
	var found string
	waitFor(t, "a dead letter with reason "+reason, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		s, err := agg.JS.Stream(ctx, rawevent.StreamDLQ)
		if err != nil {
			return false
		}
		st := s.CachedInfo().State
		for seq := st.FirstSeq; seq <= st.LastSeq && st.Msgs > 0; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if err != nil {
				continue
			}
			in, err := rawevent.DecodeRaw(m.Data)
			if m.Header.Get("Rtc-Dlq-Reason") == reason && err == nil && (eventID == "" || string(in.EventID) == eventID) {
				found = strings.Join([]string{reason, m.Header.Get("Rtc-Dlq-Error"), m.Header.Get("Rtc-Orig-Subject")}, " | ")
				return true
			}
		}
		return false
	})
	return found
}
