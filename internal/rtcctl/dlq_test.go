package rtcctl

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/ctlapi"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// deadLetter stores body in RTC_DLQ with the headers the aggregator writes
// (internal/aggregator/batch.go deadLetter), using its constants.
func deadLetter(t *testing.T, js jetstream.JetStream, partition int, reason, errText string, origSeq uint64, origSubject string, body []byte) uint64 {
	t.Helper()
	m := nats.NewMsg(rawevent.DLQPrefix + "." + strconv.Itoa(partition))
	m.Data = body
	m.Header.Set(ctlapi.HeaderDLQReason, reason)
	m.Header.Set(ctlapi.HeaderDLQError, errText)
	m.Header.Set(ctlapi.HeaderDLQPart, strconv.Itoa(partition))
	m.Header.Set(ctlapi.HeaderDLQSeq, strconv.FormatUint(origSeq, 10))
	m.Header.Set(ctlapi.HeaderDLQSubject, origSubject)
	m.Header.Set(ctlapi.HeaderDLQAttempts, "5")
	m.Header.Set(jetstream.MsgIDHeader, "dlq-"+strconv.FormatUint(origSeq, 10))
	ack, err := js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func dlqSeqs(t *testing.T, js jetstream.JetStream) []uint64 {
	t.Helper()
	var out []uint64
	e := &runEnv{ctx: context.Background()}
	entries, err := DLQEntries(e, js)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range entries {
		out = append(out, d.Seq)
	}
	return out
}

func TestDLQ(t *testing.T) {
	url, js := embedded(t) // 2 partitions
	ctx := context.Background()
	if code, out, _ := run(t, "dlq", "ls", "-s", url); code != 0 || !strings.Contains(out, "RTC_DLQ is empty") {
		t.Fatalf("empty: %d %s", code, out)
	}
	tokA, tokB := events.Token(string(roomA)), events.Token(string(roomB))
	pA, pB := rawevent.Partition(tokA, 2), rawevent.Partition(tokB, 2)

	// An input RTC_RAW stored (Nats-Msg-Id = its event id) and the
	// aggregator dead-lettered; a body that does not decode; a timer.
	in := rawEvent(string(roomA), 1)
	publishRaw(t, js, in)
	good, err := rawevent.EncodeRaw(in)
	if err != nil {
		t.Fatal(err)
	}
	timer, err := rawevent.EncodeRaw(&rawevent.RawEvent{Kind: rawevent.InputTimer, Source: rawevent.SourceTimer, RoomID: roomB,
		ReceivedAt: 1700000009000, Deadline: 1700000009000})
	if err != nil {
		t.Fatal(err)
	}
	seqApply := deadLetter(t, js, pA, "apply", "reduce: something broke", 1, rawevent.PartitionSubject(pA, tokA), good)
	seqDecode := deadLetter(t, js, pB, "decode", "decode raw event: unsupported schema version 9", 2, rawevent.PartitionSubject(pB, tokB), []byte("\x81\xa1v\x09garbage"))
	storeIn, err := rawevent.EncodeRaw(rawEvent(string(roomB), 3))
	if err != nil {
		t.Fatal(err)
	}
	seqStore := deadLetter(t, js, pB, "store", "commit refused", 3, rawevent.PartitionSubject(pB, tokB), storeIn)
	// A timer is listed, not re-driven (TestRedriveRefusesATimer).
	if code, out, _ := run(t, "dlq", "show", strconv.FormatUint(deadLetter(t, js, pB, "timer_not_from_timer_path", "on rtc.raw", 4,
		rawevent.PartitionSubject(pB, tokB), timer), 10), "-s", url); code != 0 || !strings.Contains(out, "kind timer") {
		t.Fatalf("dlq show of a timer: %d\n%s", code, out)
	}
	dlqStream, err := js.Stream(ctx, rawevent.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	if err := dlqStream.DeleteMsg(ctx, seqStore+1); err != nil {
		t.Fatal(err)
	}

	code, out, errs := run(t, "dlq", "ls", "-s", url)
	if code != 0 {
		t.Fatalf("ls: %d %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "SEQ") {
		t.Fatalf("ls:\n%s", out)
	}
	for i, want := range [][]string{
		{strconv.FormatUint(seqApply, 10), "apply", string(roomA), "org.matrix.msc3401.call.member $ev1:hs1.test from @alice:hs1.test", "reduce: something broke"},
		{strconv.FormatUint(seqDecode, 10), "decode", string(roomB), "undecodable", "unsupported schema version 9"},
		{strconv.FormatUint(seqStore, 10), "store", string(roomB), "$ev3"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i+1], w) {
				t.Errorf("line %q lacks %q", lines[i+1], w)
			}
		}
	}
	if code, out, _ := run(t, "dlq", "list", "--reason", "decode", "-s", url); code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(out, "decode") {
		t.Errorf("ls --reason decode: %d\n%s", code, out)
	}
	code, out, _ = run(t, "dlq", "ls", "--json", "-s", url)
	var entries []DLQEntry
	if err := json.Unmarshal([]byte(out), &entries); code != 0 || err != nil || len(entries) != 3 {
		t.Fatalf("ls --json: %d %v\n%s", code, err, out)
	}
	if entries[0].Input == nil || entries[0].Input.EventID != in.EventID || entries[1].Input != nil || entries[1].DecodeError == "" ||
		entries[0].Headers[ctlapi.HeaderDLQReason][0] != "apply" {
		t.Errorf("ls --json: %+v", entries)
	}

	code, out, errs = run(t, "dlq", "show", strconv.FormatUint(seqApply, 10), "-s", url)
	if code != 0 {
		t.Fatalf("show: %d %s", code, errs)
	}
	for _, want := range []string{"reason apply  attempts 5  partition " + strconv.Itoa(pA), "Rtc-Dlq-Error: reduce: something broke",
		"Rtc-Orig-Subject: " + rawevent.PartitionSubject(pA, tokA), "event $ev1:hs1.test  type org.matrix.msc3401.call.member  sender @alice:hs1.test",
		`state_key "_@alice:hs1.test_DEV_m.call"`, `content {"application":"m.call"`} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	if code, out, _ := run(t, "dlq", "show", strconv.FormatUint(seqDecode, 10), "-s", url); code != 0 || !strings.Contains(out, "does not decode") {
		t.Errorf("show undecodable: %d\n%s", code, out)
	}
	if code, _, errs := run(t, "dlq", "show", "999", "-s", url); code != 1 || !strings.Contains(errs, "not found") {
		t.Errorf("show missing: %d %s", code, errs)
	}

	for _, bad := range [][]string{{"dlq", "redrive"}, {"dlq", "redrive", "1", "--all"}, {"dlq", "redrive", "1", "--reason", "x"}, {"dlq", "show"}, {"dlq", "show", "x"}} {
		if code, _, _ := run(t, append(bad, "-s", url)...); code != 2 {
			t.Errorf("%v: exit %d, want 2", bad, code)
		}
	}

	raw, err := js.Stream(ctx, rawevent.StreamRaw)
	if err != nil {
		t.Fatal(err)
	}
	rawInfo, _ := raw.Info(ctx)
	rawBefore := rawInfo.State.Msgs

	// --dry-run changes nothing.
	code, out, _ = run(t, "dlq", "redrive", "--all", "--dry-run", "-s", url)
	if code != 0 || strings.Count(out, "would re-drive") != 3 || !strings.Contains(out, "to "+rawevent.RawSubject(roomA)) {
		t.Fatalf("dry run: %d\n%s", code, out)
	}
	if got := dlqSeqs(t, js); len(got) != 3 {
		t.Fatalf("dry run removed entries: %v", got)
	}

	// One entry: published to rtc.raw.<roomA> (stored although RTC_RAW
	// holds its event id already), then deleted from RTC_DLQ.
	code, out, errs = run(t, "dlq", "redrive", strconv.FormatUint(seqApply, 10), "-s", url)
	if code != 0 || !strings.Contains(out, "re-driven RTC_DLQ #"+strconv.FormatUint(seqApply, 10)) {
		t.Fatalf("redrive: %d %s %s", code, out, errs)
	}
	m, err := raw.GetLastMsgForSubject(ctx, rawevent.PartitionSubject(pA, tokA))
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != string(good) || m.Header.Get(HeaderRedrivenFrom) != "RTC_DLQ #"+strconv.FormatUint(seqApply, 10) {
		t.Errorf("re-driven message: %q %v", m.Data, m.Header)
	}
	if got := dlqSeqs(t, js); len(got) != 2 || got[0] != seqDecode {
		t.Errorf("after redrive: %v", got)
	}
	if _, err := raw.GetMsg(ctx, rawBefore+1); err != nil {
		t.Errorf("RTC_RAW has no new message: %v", err)
	}

	// --all --reason store: only that entry.
	if code, out, _ := run(t, "dlq", "redrive", "--all", "--reason", "store", "-s", url); code != 0 || !strings.Contains(out, "1 re-driven") {
		t.Fatalf("redrive --reason store: %d\n%s", code, out)
	}
	if got := dlqSeqs(t, js); len(got) != 1 || got[0] != seqDecode {
		t.Errorf("after redrive of the store entry: %v", got)
	}

	// Not acknowledged (RTC_RAW is gone): the entry stays.
	if err := js.DeleteStream(ctx, rawevent.StreamRaw); err != nil {
		t.Fatal(err)
	}
	code, _, errs = run(t, "dlq", "redrive", "--all", "-s", url, "--timeout", "1s")
	if code != 1 || !strings.Contains(errs, "stays in RTC_DLQ") || !strings.Contains(errs, "0 of 1 re-driven") {
		t.Errorf("redrive without RTC_RAW: %d %s", code, errs)
	}
	if got := dlqSeqs(t, js); len(got) != 1 || got[0] != seqDecode {
		t.Errorf("an unacknowledged re-drive removed the entry: %v", got)
	}
	_, err = raw.Info(ctx)
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("RTC_RAW still there: %v", err)
	}
}

// FuzzRedriveSubject: whatever the body and the Rtc-Orig-Subject header of a
// DLQ entry, a re-drive publishes to rtc.raw.<token of a room id> or not at
// all.
func FuzzRedriveSubject(f *testing.F) {
	good, _ := rawevent.EncodeRaw(rawEvent(string(roomA), 1))
	tok := events.Token(string(roomB))
	f.Add(good, rawevent.PartitionSubject(1, tok))
	f.Add([]byte("garbage"), rawevent.PartitionSubject(0, tok))
	f.Add([]byte{}, "rtc.part.1.>")
	f.Add([]byte{}, rawevent.TimerSubject(roomA))
	f.Add([]byte{}, "rtc.raw."+events.Token("not a room"))
	f.Add([]byte{}, "rtc.part.1.a b")
	f.Fuzz(func(t *testing.T, body []byte, orig string) {
		h := nats.Header{}
		h.Set(ctlapi.HeaderDLQSubject, orig)
		d := newDLQEntry(1, time.Time{}, "rtc.dlq.0", h, body)
		subj, err := d.RedriveSubject()
		if err != nil {
			if d.Room() != "" && (d.Input == nil || d.Input.Kind != rawevent.InputTimer) {
				t.Fatalf("room %q but no subject: %v", d.Room(), err)
			}
			return
		}
		parts := strings.Split(subj, ".")
		if len(parts) != 3 || parts[0]+"."+parts[1] != rawevent.RawPrefix || strings.ContainsAny(subj, "*> \t\r\n") {
			t.Fatalf("subject %q", subj)
		}
		room, err := events.ParseToken(parts[2])
		if err != nil || events.Token(room) != parts[2] || id.RoomID(room) != d.Room() {
			t.Fatalf("subject %q: token of %q, entry room %q (%v)", subj, room, d.Room(), err)
		}
	})
}

// TestRedriveAllReportsBadEntries: `dlq redrive --all` with an entry that
// names no room (its body does not decode and its Rtc-Orig-Subject has no
// room token) among good ones re-drives the good ones, names the bad one
// with its sequence and why on stderr, and exits 1; so does --dry-run,
// which changes nothing. Given sequences, a missing one is reported the
// same way and does not stop the others.
func TestRedriveAllReportsBadEntries(t *testing.T) {
	url, js := embedded(t) // 2 partitions
	ctx := context.Background()
	tokA, tokB := events.Token(string(roomA)), events.Token(string(roomB))
	pA, pB := rawevent.Partition(tokA, 2), rawevent.Partition(tokB, 2)
	body := func(room string, n int) []byte {
		b, err := rawevent.EncodeRaw(rawEvent(room, n))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good1 := deadLetter(t, js, pA, "apply", "reduce: broke", 11, rawevent.PartitionSubject(pA, tokA), body(string(roomA), 11))
	bad := deadLetter(t, js, 0, "decode", "decode raw event: garbage", 12, "rtc.part.0.!!not-a-token", []byte("garbage"))
	good2 := deadLetter(t, js, pB, "apply", "reduce: broke", 13, rawevent.PartitionSubject(pB, tokB), body(string(roomB), 13))
	seq := func(s uint64) string { return strconv.FormatUint(s, 10) }
	raw, err := js.Stream(ctx, rawevent.StreamRaw)
	if err != nil {
		t.Fatal(err)
	}
	rawMsgs := func() uint64 {
		info, err := raw.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}

	code, out, errs := run(t, "dlq", "redrive", "--all", "--dry-run", "-s", url)
	if code != 1 || strings.Count(out, "would re-drive") != 2 || !strings.Contains(out, "#"+seq(good1)) || !strings.Contains(out, "#"+seq(good2)) ||
		!strings.Contains(out, "2 of 3 can be re-driven") {
		t.Fatalf("dry run: exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(errs, "RTC_DLQ #"+seq(bad)+": the input does not decode") || !strings.Contains(errs, "names no room") ||
		!strings.Contains(errs, "not: RTC_DLQ #"+seq(bad)) {
		t.Fatalf("dry run: the bad entry is not reported with its sequence and why:\n%s", errs)
	}
	if got := dlqSeqs(t, js); len(got) != 3 || rawMsgs() != 0 {
		t.Fatalf("dry run changed something: RTC_DLQ %v, RTC_RAW %d", got, rawMsgs())
	}

	code, out, errs = run(t, "dlq", "redrive", "--all", "-s", url)
	if code != 1 || !strings.Contains(out, "re-driven RTC_DLQ #"+seq(good1)) || !strings.Contains(out, "re-driven RTC_DLQ #"+seq(good2)) ||
		!strings.Contains(out, "2 of 3 re-driven") {
		t.Fatalf("redrive --all: exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(errs, "RTC_DLQ #"+seq(bad)+": the input does not decode") || !strings.Contains(errs, "2 of 3 re-driven; not: RTC_DLQ #"+seq(bad)) {
		t.Fatalf("redrive --all: stderr\n%s", errs)
	}
	if got := dlqSeqs(t, js); len(got) != 1 || got[0] != bad || rawMsgs() != 2 {
		t.Fatalf("after redrive --all: RTC_DLQ %v (want only #%d), RTC_RAW %d messages (want 2)", got, bad, rawMsgs())
	}
	for _, room := range []id.RoomID{roomA, roomB} {
		if _, err := raw.GetLastMsgForSubject(ctx, rawevent.PartitionSubject(rawevent.Partition(events.Token(string(room)), 2), events.Token(string(room)))); err != nil {
			t.Errorf("%s not re-driven: %v", room, err)
		}
	}

	// Given sequences: a missing one and the bad one are reported, the good
	// one is re-driven.
	good3 := deadLetter(t, js, pA, "apply", "reduce: broke", 14, rawevent.PartitionSubject(pA, tokA), body(string(roomA), 14))
	code, out, errs = run(t, "dlq", "redrive", "999", seq(bad), seq(good3), "-s", url)
	if code != 1 || !strings.Contains(out, "re-driven RTC_DLQ #"+seq(good3)) || !strings.Contains(errs, "RTC_DLQ #999: not found") ||
		!strings.Contains(errs, "1 of 3 re-driven; not: RTC_DLQ #999, #"+seq(bad)) {
		t.Fatalf("redrive by sequence: exit %d\n%s%s", code, out, errs)
	}
	if got := dlqSeqs(t, js); len(got) != 1 || got[0] != bad {
		t.Fatalf("after redrive by sequence: RTC_DLQ %v", got)
	}
	// Only good entries: exit 0.
	if code, out, errs := run(t, "dlq", "redrive", "--all", "--reason", "apply", "-s", url); code != 0 || !strings.Contains(out, "nothing to re-drive") {
		t.Fatalf("no apply entries left: exit %d\n%s%s", code, out, errs)
	}
}

func TestClipText(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{{"abc", 3, "abc"}, {"abcd", 3, "abc…"}, {"ab\u202ed", 3, "ab…"}, {"aé", 2, "a…"}} {
		if got := clipText(tc.in, tc.n); got != tc.want {
			t.Errorf("clipText(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// TestRedriveRefusesATimer: a timer input in the DLQ (one published on
// rtc.raw, or a dead-lettered one from the timer path) is reported as not
// re-drivable: on rtc.raw it would only go back to the DLQ.
func TestRedriveRefusesATimer(t *testing.T) {
	url, js := embedded(t) // 2 partitions
	tok := events.Token(string(roomA))
	p := rawevent.Partition(tok, 2)
	b, err := rawevent.EncodeRaw(&rawevent.RawEvent{Kind: rawevent.InputTimer, Source: rawevent.SourceTimer, RoomID: roomA,
		Deadline: 1700000000000, ReceivedAt: 1700000000000})
	if err != nil {
		t.Fatal(err)
	}
	timer := deadLetter(t, js, p, "timer_not_from_timer_path", "a timer input on rtc.raw", 21,
		rawevent.PartitionSubject(p, tok), b)
	code, out, errs := run(t, "dlq", "redrive", "--all", "-s", url)
	want := "RTC_DLQ #" + strconv.FormatUint(timer, 10) + ": a timer input cannot be re-driven"
	if code != 1 || !strings.Contains(errs, want) || !strings.Contains(out+errs, "0 of 1 re-driven") {
		t.Fatalf("redrive of a timer: exit %d\n%s%s", code, out, errs)
	}
	if got := dlqSeqs(t, js); len(got) != 1 || got[0] != timer {
		t.Fatalf("RTC_DLQ %v, want the timer entry kept", got)
	}
}
