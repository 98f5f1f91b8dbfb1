package rtcctl

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/testutil"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

func ended(room id.RoomID, app, call string, seq uint64, startedAt, durationMS int64, peak, users, joins int) *events.SessionEvent {
	return &events.SessionEvent{ID: eventcodec.EventID(room, seq), Seq: seq, Kind: events.KindSessionEnded, SessionID: "sess-" + string(room) + "-" + call,
		RoomID: room, Application: app, CallID: call, At: startedAt + durationMS, Reason: events.ReasonLeave,
		Summary: &events.Summary{StartedAt: startedAt, EndedAt: startedAt + durationMS, DurationMS: durationMS,
			PeakParticipants: peak, DistinctUsers: users, Joins: joins}}
}

func TestHistory(t *testing.T) {
	url, js := embedded(t)
	if code, out, _ := run(t, "history", "--room", string(roomA), "-s", url); code != 0 || !strings.Contains(out, "no ended sessions") {
		t.Fatalf("empty: %d %s", code, out)
	}
	publish(t, js,
		sessionEvent(roomA, 1, events.KindSessionStarted, ""),
		sessionEvent(roomA, 2, events.KindMemberJoined, "@alice:hs1.test"),
		ended(roomA, "m.call", "", 3, 1700000000000, 90_000, 3, 2, 4),
		ended(roomB, "m.call", "", 1, 1700000100000, 5_000, 1, 1, 1),
		ended(roomA, "io.example.game", "table-1", 4, 1700000200000, 3_600_000, 5, 5, 7),
	)
	waitIndexed(t, js, 3) // the server copies session_ended events into RTC_HISTORY
	time.Sleep(20 * time.Millisecond)
	mid := time.Now()
	time.Sleep(20 * time.Millisecond)
	publish(t, js, ended(roomA, "m.call", "", 7, 1700000300000, 1_000, 2, 2, 2))
	waitIndexed(t, js, 4)

	tests := []struct {
		name  string
		args  []string
		lines [][]string // per output row (after the header): substrings
	}{
		// by end time, not stream order: the game ended last
		{"room", []string{"--room", string(roomA)}, [][]string{
			{"!a:hs1.test", "m.call", `call=""`, "2023-11-14T22:13:20.000Z", "2023-11-14T22:14:50.000Z", "1m30s", "3 2 4", "leave"},
			{"!a:hs1.test", "m.call", "1s"},
			{"io.example.game", "call=table-1", "1h0m0s", "5 5 7"}}},
		{"application", []string{"--app", "io.example.game"}, [][]string{{"!a:hs1.test", "io.example.game", "call=table-1"}}},
		{"room and application", []string{"--room", string(roomA), "--app", "m.call"}, [][]string{{"1m30s"}, {"1s"}}},
		{"every room", nil, [][]string{{"!a:hs1.test", "1m30s"}, {"!b:hs2.test", "5s", "1 1 1"}, {"!a:hs1.test", "1s"}, {"io.example.game"}}},
		{"last", []string{"--room", string(roomA), "--last", "2"}, [][]string{{"1s"}, {"io.example.game"}}},
		{"since", []string{"--since", mid.UTC().Format(time.RFC3339Nano)}, [][]string{{"!a:hs1.test", "1s"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := run(t, append([]string{"history", "-s", url}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != len(tc.lines)+1 || !strings.HasPrefix(lines[0], "ROOM") {
				t.Fatalf("want %d rows:\n%s", len(tc.lines), out)
			}
			for i, wants := range tc.lines {
				row := strings.Join(strings.Fields(lines[i+1]), " ") // columns one space apart
				for _, w := range wants {
					if !strings.Contains(row, w) {
						t.Errorf("row %d %q lacks %q", i, lines[i+1], w)
					}
				}
			}
		})
	}

	code, out, _ := run(t, "history", "-s", url, "--room", string(roomB), "--json")
	var evs []events.SessionEvent
	if err := json.Unmarshal([]byte(out), &evs); code != 0 || err != nil || len(evs) != 1 || evs[0].Summary == nil ||
		evs[0].Summary.DurationMS != 5000 || evs[0].Kind != events.KindSessionEnded {
		t.Fatalf("json: %d %v\n%s", code, err, out)
	}
	for _, bad := range [][]string{{"--since", "yesterday"}, {"--last", "-1"}, {"extra"}} {
		if code, _, _ := run(t, append([]string{"history", "-s", url}, bad...)...); code != 2 {
			t.Errorf("%v: exit %d, want 2", bad, code)
		}
	}
}

// waitIndexed waits until RTC_HISTORY holds n sessions.
func waitIndexed(t *testing.T, js jetstream.JetStream, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := js.Stream(context.Background(), topology.StreamHistory)
		if err != nil {
			t.Fatal(err)
		}
		if s.CachedInfo().State.Msgs >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("RTC_HISTORY holds %d sessions, want %d", s.CachedInfo().State.Msgs, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestHistoryWithoutIndex: against a topology without RTC_HISTORY (created
// by an older aggregator) history scans RTC_EVENTS, and says so.
func TestHistoryWithoutIndex(t *testing.T) {
	ns := testutil.NATS(t, "", -1)
	_, js := testutil.JetStream(t, ns)
	if _, err := js.CreateStream(context.Background(), topology.EventsStream(topology.DefaultConfig())); err != nil {
		t.Fatal(err)
	}
	publish(t, js, ended(roomA, "m.call", "", 3, 1700000000000, 90_000, 3, 2, 4), ended(roomB, "m.call", "", 1, 1700000100000, 5_000, 1, 1, 1))
	code, out, errs := run(t, "history", "-s", ns.ClientURL(), "--room", string(roomA))
	if code != 0 || !strings.Contains(errs, "no RTC_HISTORY") || !strings.Contains(out, "1m30s") || strings.Contains(out, "!b:hs2.test") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
}
