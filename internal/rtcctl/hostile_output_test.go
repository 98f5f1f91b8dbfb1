package rtcctl

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/ctlapi"
	"github.com/rtcsessions/rtc-sessions/internal/eventcodec"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/roomstore"
	"github.com/rtcsessions/rtc-sessions/internal/rtcctl/safetext"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// What a homeserver can put in the ids and texts rtcctl prints.
const (
	// fakeLine is a complete `rtcctl tail` line of another room. After a
	// newline in a room id it would be printed as a line of its own.
	fakeLine = "2023-11-14T22:13:24.000Z  session_ended    !victim:hs1.test  m.call call=\"\"  reason=expired  devices=0 users=0  seq=9"
	evilRoom = id.RoomID("!evil:hs1.test\n" + fakeLine)
	osc52    = "\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07" // writes the clipboard
	csi      = "\x1b[2J\x1b[H\u009b31m"             // clears the screen; a C1 CSI
	bidi     = "\u202eelbisivni\u202c\u2066\u200b\ufeff\u3164"
	ctl      = "\r\t\x7f\x00"
)

// checkSafe fails the test when out holds a character a terminal acts on
// (other than its own line ends), prints the fake line as a line, or lacks
// one of the escapes that show the hostile text was printed, escaped.
func checkSafe(t *testing.T, what, out string, want ...string) {
	t.Helper()
	if i := safetext.FirstUnsafe(out); i >= 0 {
		t.Errorf("%s: raw %q at byte %d:\n%q", what, []rune(out[i:])[0], i, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), fakeLine[:40]) {
			t.Errorf("%s: prints the forged line %q:\n%s", what, l, out)
		}
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: lacks %q:\n%s", what, w, out)
		}
	}
}

// The escapes the operator sees.
const (
	seeRoom  = `!evil:hs1.test\n2023-11-14T22:13:24.000Z  session_ended    !victim`
	seeOSC52 = `\x1b]52;c;Y3VybCBldmlsIHwgc2g=\a`
	seeCSI   = `\x1b[2J\x1b[H\u009b31m`
	seeBidi  = `\u202eelbisivni\u202c\u2066\u200b\ufeff\u3164`
	seeCtl   = `\r\t\x7f\x00`
)

// TestHostileTextIsEscaped feeds every command hostile identifiers and
// texts through a real NATS server, as a homeserver (through the ingest
// and the aggregator) or a bad DLQ entry would put them there, and checks
// each command's stdout and stderr: no raw control, bidi or invisible
// character, no forged line; the escapes visible. --json stays exact.
func TestHostileTextIsEscaped(t *testing.T) {
	url, js := embedded(t)
	ctx := context.Background()

	// rtc_sessions: a live session.
	kv, err := js.KeyValue(ctx, events.BucketSessions)
	if err != nil {
		t.Fatal(err)
	}
	live := &events.LiveSession{SessionID: "s" + osc52, RoomID: evilRoom, Application: "m.call" + bidi, CallID: csi,
		StartedAt: 1700000000000, Participants: 1, Users: 1, Seq: 1,
		Members: []events.Member{{UserID: id.UserID("@u" + ctl + ":hs1.test"), DeviceID: id.DeviceID("D" + osc52)}}}
	b, err := eventcodec.EncodeLiveSession(live)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, live.Key(), b); err != nil {
		t.Fatal(err)
	}

	// RTC_EVENTS: a session of the room, joined and ended.
	started := sessionEvent(evilRoom, 1, events.KindSessionStarted, "")
	joined := sessionEvent(evilRoom, 2, events.KindMemberJoined, id.UserID("@m"+bidi+":hs1.test"))
	joined.Member.DeviceID = id.DeviceID("DEV" + ctl)
	joined.Member.EventID = id.EventID("$j" + osc52)
	end := sessionEvent(evilRoom, 3, events.KindSessionEnded, "")
	end.Reason = events.Reason("expired" + csi)
	end.SessionID = "sess" + osc52
	for _, e := range []*events.SessionEvent{started, joined, end} {
		e.CallID = "c" + osc52
	}
	publish(t, js, started, joined, end)

	// rtc_rooms: the aggregator's state of the room.
	st := rtc.NewRoomState(evilRoom)
	st.Clock, st.Seq = 1700000002000, 3
	st.Registers = map[string]*rtc.Register{
		"org.matrix.msc3401.call.member|_@m" + bidi + "_D_m.call": {EventID: id.EventID("$r" + osc52), Sender: id.UserID("@m" + bidi + ":hs1.test"),
			TS: 1700000000000, Kind: rtc.RegisterInvalid, WhyCode: rtc.RejectForeignStateKey, Why: "state key names " + csi},
		"org.matrix.msc3401.call.member|_@m" + bidi + "_D" + osc52: {EventID: id.EventID("$e" + ctl), Sender: id.UserID("@m" + bidi + ":hs1.test"),
			TS: 1700000000000, Kind: rtc.RegisterJoin, Claims: []rtc.Claim{{App: "m.call" + bidi, CallID: csi, User: id.UserID("@m" + bidi + ":hs1.test"),
				Device: id.DeviceID("D" + osc52), MemberKey: "D" + osc52, CreatedTS: 1700000000000, Deadline: 1700014400000,
				Format: events.FormatSession, EventID: id.EventID("$e" + ctl), TS: 1700000000000}}},
	}
	st.RoomMembers = map[id.UserID]rtc.RoomMember{id.UserID("@m" + ctl + ":hs1.test"): {Membership: "leave" + osc52, TS: 1700000001500}}
	st.Sessions = map[string]*rtc.Session{"m.call" + bidi + "\x00" + csi: {App: "m.call" + bidi, CallID: csi, ID: "sess-1", StartedAt: 1700000000000, Peak: 1, Joins: 1,
		UserDevices: map[id.UserID]int{id.UserID("@m" + bidi + ":hs1.test"): 1},
		Members: map[string]*rtc.SessionMember{"@m" + bidi + ":hs1.test\x00D" + osc52: {MemberKey: "D" + osc52, Member: events.Member{UserID: id.UserID("@m" + bidi + ":hs1.test"),
			DeviceID: id.DeviceID("D" + osc52), JoinedAt: 1700000000000, ExpiresAt: 1700014400000, Format: events.FormatSession, EventID: id.EventID("$e" + ctl)}}}}}
	rm := roomstore.New(evilRoom)
	rm.State = st
	c, err := rm.Prepare(7, 1700014400000, nil, roomstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, c.Header); err != nil {
		t.Fatal(err)
	}

	// rtc_workers: a worker whose heartbeat says hostile things.
	hb, _ := json.Marshal(map[string]any{"started": "2026" + osc52 + bidi, "pins": map[string]string{"0": csi}})
	if _, err := js.Publish(ctx, "$KV."+rawevent.BucketWorkers+".agg-host1", hb); err != nil {
		t.Fatal(err)
	}

	// RTC_DLQ: a decodable input of the room with hostile fields and
	// headers, and one that does not decode, whose Rtc-Orig-Subject names
	// no room but holds escapes.
	in := rawEvent(string(evilRoom), 1)
	in.EventID, in.Sender = id.EventID("$d"+osc52), id.UserID("@s"+bidi+":hs1.test")
	sk := "_@s" + bidi + "_D" + csi
	in.StateKey = &sk
	in.Homeserver = "hs" + ctl
	in.Content = json.RawMessage(`{"application":"m.call` + bidi + `","device_id":"\u009b2J` + "\u009b2J" + `"}`)
	body, err := rawevent.EncodeRaw(in)
	if err != nil {
		t.Fatal(err)
	}
	good := deadLetter(t, js, 0, "apply"+osc52, "reduce: "+csi+bidi, 1, rawevent.PartitionSubject(0, events.Token(string(evilRoom))), body)
	bad := deadLetter(t, js, 1, "decode", "decode: "+osc52, 2, "rtc.part.1."+osc52, []byte("x"+csi+bidi))

	// The ingest's reconcile answer, quoting what homeservers said.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	reply, _ := json.Marshal(ctlapi.ReconcileReply{RoomID: evilRoom, Error: "no homeserver could read the room: " + osc52,
		Attempts: []ctlapi.ReconcileResult{{Homeserver: "hs" + bidi, Error: "forbidden: " + csi}, {Homeserver: "hs2" + osc52, Events: 2}}})
	sub, err := nc.Subscribe(ctlapi.ReconcileSubject, func(m *nats.Msg) { _ = m.Respond(reply) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// A replay file for simulate with a hostile event id and room.
	evJSON, _ := json.Marshal(map[string]any{"type": "org.matrix.msc3401.call.member", "state_key": "_@a:x_D_m.call", "sender": "@mallory:x",
		"event_id": "$x" + "\n" + fakeLine + osc52, "room_id": string(evilRoom), "origin_server_ts": 1000,
		"content": map[string]any{"application": "m.call", "call_id": "", "device_id": "D", "focus_active": map[string]any{"type": "livekit"}}})
	replay := filepath.Join(t.TempDir(), "replay.jsonl")
	if err := os.WriteFile(replay, append(evJSON, "\n{\"type\":\"m.call.member"+csi+"\"}\n"...), 0o600); err != nil {
		t.Fatal(err)
	}

	seq := func(s uint64) string { return strconv.FormatUint(s, 10) }
	tests := []struct {
		name string
		args []string
		code int
		want []string // escapes that must be visible in stdout+stderr
	}{
		{"sessions", []string{"sessions"}, 0, []string{seeRoom, seeBidi, seeCSI, seeCtl, seeOSC52}},
		{"tail", []string{"tail", "--all", "--max", "3"}, 0, []string{seeRoom, seeBidi, seeCtl, seeOSC52, "reason=expired" + seeCSI}},
		{"tail --room", []string{"tail", "--all", "--room", string(evilRoom), "--max", "1"}, 0, []string{seeRoom}},
		{"history", []string{"history"}, 0, []string{seeRoom, seeOSC52, seeCSI}},
		{"room", []string{"room", string(evilRoom)}, 0, []string{"room " + seeRoom, seeBidi, seeCSI, seeOSC52, seeCtl}},
		{"workers", []string{"workers"}, 0, []string{"2026" + seeOSC52 + seeBidi}},
		{"dlq ls", []string{"dlq", "ls"}, 0, []string{seeRoom, "apply" + seeOSC52, seeCSI + seeBidi}},
		{"dlq show", []string{"dlq", "show", seq(good)}, 0, []string{seeRoom, "$d" + seeOSC52, `state_key "_@s` + seeBidi + "_D" + seeCSI + `"`,
			"homeserver hs" + seeCtl, `"device_id":"\\u009b2J\u009b2J"`}},
		{"dlq show, undecodable", []string{"dlq", "show", seq(bad)}, 0, []string{`"x` + seeCSI + seeBidi + `"`, "rtc.part.1." + seeOSC52}},
		{"dlq redrive --dry-run", []string{"dlq", "redrive", "--all", "--dry-run"}, 1, []string{"would re-drive RTC_DLQ #" + seq(good), seeRoom, "rtc.part.1." + seeOSC52}},
		{"dlq redrive", []string{"dlq", "redrive", "--all"}, 1, []string{"re-driven RTC_DLQ #" + seq(good), "rtc.part.1." + seeOSC52}},
		{"reconcile", []string{"reconcile", string(evilRoom)}, 1, []string{seeRoom, "hs" + seeBidi + " could not read it: forbidden: " + seeCSI, "hs2" + seeOSC52, "the room: " + seeOSC52}},
		{"simulate", []string{"simulate", replay}, 1, []string{`$x\n2023-11-14T22:13:24.000Z  session_ended`, `line 2: skipped: malformed event: invalid character '\\x1b'`}},
		{"an error quoting the room", []string{"room", string(evilRoom) + osc52}, 1, []string{seeRoom}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := run(t, append(tc.args, "-s", url)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout %q\nstderr %q", code, tc.code, out, errs)
			}
			checkSafe(t, "stdout", out)
			checkSafe(t, "stderr", errs)
			checkSafe(t, "stdout and stderr", out+errs, tc.want...)
		})
	}

	// --json is exact: it decodes to the hostile strings, and writes no raw
	// DEL or C1 control.
	t.Run("json", func(t *testing.T) {
		code, out, errs := run(t, "sessions", "--json", "-s", url)
		var got []events.LiveSession
		if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || len(got) != 1 || got[0].RoomID != evilRoom ||
			got[0].CallID != csi || got[0].Members[0].UserID != live.Members[0].UserID || got[0].Application != "m.call"+bidi {
			t.Fatalf("sessions --json: exit %d %v %q\n%s", code, err, out, errs)
		}
		if strings.ContainsAny(out, "\x7f\u0080\u009b\u009f\x1b") {
			t.Fatalf("sessions --json writes a raw control character: %q", out)
		}
		if !strings.Contains(out, "\u202e") {
			t.Fatalf("sessions --json escaped the bidi override: %q", out)
		}
		code, out, _ = run(t, "tail", "--all", "--json", "--max", "3", "-s", url)
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var e events.SessionEvent
			if err := json.Unmarshal([]byte(l), &e); code != 0 || err != nil || e.RoomID != evilRoom {
				t.Fatalf("tail --json: %d %v %q", code, err, l)
			}
		}
		if strings.ContainsAny(out, "\x7f\u009b\x1b") {
			t.Fatalf("tail --json writes a raw control character: %q", out)
		}
	})
}
