package aggregator

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// TestPoisonDuringApply: an input that decodes but whose processing fails
// every time (the reducer panics on it; injected through the beforeApply
// hook) is tried worker.max_deliver times, then lands in RTC_DLQ with its
// reason in headers and is terminated. Later inputs of the same partition,
// including later inputs of the same room, still flow: RTC_EVENTS equals the
// offline reduction of the inputs without the poison one.
func TestPoisonDuringApply(t *testing.T) {
	e := newEnv(t)
	const poisonID = "$poison"
	var attempts atomic.Int32
	w := e.startWorker("w1", hooks{beforeApply: func(in *events.RawEvent, _ uint64) {
		if in.EventID == poisonID {
			attempts.Add(1)
			panic("injected reducer failure")
		}
	}})
	e.waitOwned(w)

	evs := workload(40, 3, time.Now().UnixMilli())
	room := evs[0].RoomID // its first join comes first; the poison follows it
	poison := joinEv(room, "@mallory:"+testHS, "MALLORY", evs[0].OriginServerTS+1, 0, poisonID)
	inputs := append([]events.RawEvent{evs[0], poison}, evs[1:]...)
	want := offline(evs) // what must come out: the poison input has no effect
	e.publish(inputs)
	e.waitIdle(countEvents(want), 30*time.Second)
	assertMatches(t, e.sessionEvents(), want)

	maxDeliver := testWorkerConfig().MaxDeliver
	if n := attempts.Load(); n != int32(maxDeliver) {
		t.Errorf("the poison input was tried %d times, want worker.max_deliver = %d", n, maxDeliver)
	}
	dlq := e.readStream(events.StreamDLQ, events.DLQPrefix+".")
	if len(dlq) != 1 {
		t.Fatalf("RTC_DLQ holds %d messages, want 1", len(dlq))
	}
	d := dlq[0]
	body, err := events.DecodeRaw(d.data)
	if err != nil || body.EventID != poisonID {
		t.Errorf("dead letter body: %v %+v", err, body)
	}
	part := events.Partition(events.Token(string(room)), e.topo.Partitions)
	if got := d.hdr.Get(HeaderDLQReason); got != "apply" {
		t.Errorf("%s = %q, want apply", HeaderDLQReason, got)
	}
	if got := d.hdr.Get(HeaderDLQError); !strings.Contains(got, "reducer panic") || !strings.Contains(got, "injected reducer failure") {
		t.Errorf("%s = %q", HeaderDLQError, got)
	}
	if got := d.hdr.Get(HeaderDLQAttempts); got != strconv.Itoa(maxDeliver) {
		t.Errorf("%s = %q, want %d", HeaderDLQAttempts, got, maxDeliver)
	}
	if got := d.hdr.Get(HeaderDLQPart); got != strconv.Itoa(part) {
		t.Errorf("%s = %q, want %d", HeaderDLQPart, got, part)
	}
	if got := d.hdr.Get(HeaderDLQSubject); got != events.PartitionSubject(part, events.Token(string(room))) {
		t.Errorf("%s = %q", HeaderDLQSubject, got)
	}
	if d.subject != events.DLQPrefix+"."+strconv.Itoa(part) {
		t.Errorf("dead letter subject %q", d.subject)
	}

	// The poison input's RTC_RAW sequence is in the headers; inputs of its
	// partition stored after it (of its own room and of others) were all
	// processed: the consumer is idle and their events are above.
	poisonSeq, err := strconv.ParseUint(d.hdr.Get(HeaderDLQSeq), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", HeaderDLQSeq, err)
	}
	later, laterSameRoom := 0, 0
	rooms := map[id.RoomID]bool{}
	for _, m := range e.readStream(events.StreamRaw, events.PartitionSubject(part, "")) {
		in, err := events.DecodeRaw(m.data)
		if err != nil {
			t.Fatalf("RTC_RAW seq %d: %v", m.seq, err)
		}
		switch {
		case m.seq == poisonSeq && in.EventID != poisonID:
			t.Errorf("RTC_RAW seq %d is %s, not the poison input", m.seq, in.EventID)
		case m.seq > poisonSeq:
			later++
			rooms[in.RoomID] = true
			if in.RoomID == room {
				laterSameRoom++
			}
		}
	}
	if later == 0 || laterSameRoom == 0 || len(rooms) < 2 {
		t.Errorf("the test needs later inputs in the poison's partition: %d (%d of its room, %d rooms)",
			later, laterSameRoom, len(rooms))
	}
	t.Logf("partition %d: %d inputs of %d rooms after the poison (seq %d) flowed", part, later, len(rooms), poisonSeq)

	m := w.w.m
	if v := testutil.ToFloat64(m.DLQ.WithLabelValues("apply")); v != 1 {
		t.Errorf("dlq_total{reason=apply} = %v", v)
	}
	if v := testutil.ToFloat64(m.Retries.WithLabelValues("poison")); v != float64(maxDeliver-1) {
		t.Errorf("retries_total{class=poison} = %v, want %d", v, maxDeliver-1)
	}
	if v := testutil.ToFloat64(m.Inputs.WithLabelValues(string(events.InputEvent), resultDLQ)); v != 1 {
		t.Errorf("inputs_total{result=dlq} = %v", v)
	}
}

// bigJoin is a join whose content is close to the reducer's 64 KiB cap,
// nearly all of it in foci_preferred, which the room state keeps verbatim.
// bigPad is the random padding per focus (16 foci per join): chosen so that
// the last record that fits leaves a wide margin below max_payload.
var bigPad = 2800

func bigJoin(room id.RoomID, n int, ts int64) events.RawEvent {
	u := id.UserID(fmt.Sprintf("@big%d:%s", n, testHS))
	dev := fmt.Sprintf("BIG%d", n)
	// Random padding: room records are compressed, so only incompressible
	// content makes one outgrow max_payload.
	rng := rand.New(rand.NewPCG(uint64(n), 1))
	foci := make([]string, 16)
	for i := range foci {
		pad := make([]byte, bigPad)
		for j := range pad {
			pad[j] = byte(rng.Uint32())
		}
		foci[i] = fmt.Sprintf(`{"type":"livekit","livekit_service_url":"https://rtc.example.org","pad":%q}`,
			base64.StdEncoding.EncodeToString(pad))
	}
	return callMember(room, u, dev, ts, fmt.Sprintf("$big%d", n), fmt.Sprintf(
		`{"application":"m.call","call_id":"","scope":"m.room","device_id":%q,%s,"foci_preferred":[%s]}`,
		dev, `"focus_active":{"type":"livekit","focus_selection":"oldest_membership"}`, strings.Join(foci, ",")))
}

// TestPoisonRecordTooLarge is the same without a hook: joins that each fit
// but whose room record (state plus outbox) would exceed the server's
// max_payload cannot be stored. That is not retried forever (it would stall
// the partition): each such input goes to RTC_DLQ after max_deliver
// attempts with reason apply, and everything else flows; the output is the
// offline reduction of the inputs minus the dead-lettered ones.
func TestPoisonRecordTooLarge(t *testing.T) {
	e := newEnv(t)
	w := e.startWorker("w1", hooks{})
	e.waitOwned(w)
	now := time.Now().UnixMilli()
	small := workload(30, 2, now)
	// The big room shares its partition with a small one, so that inputs
	// of other rooms queue behind the dead letters.
	part := events.Partition(events.Token(string(small[0].RoomID)), e.topo.Partitions)
	var room id.RoomID
	for i := 0; room == ""; i++ {
		if r := id.RoomID(fmt.Sprintf("!big%d:%s", i, testHS)); events.Partition(events.Token(string(r)), e.topo.Partitions) == part {
			room = r
		}
	}
	var inputs []events.RawEvent
	const bigJoins = 24 // compressed, about 17 fit in a 1 MB record
	for i := 0; i < bigJoins; i++ {
		inputs = append(inputs, bigJoin(room, i, now+int64(i)))
	}
	// A later input of the same room that must still flow. It holds no
	// membership (a leave on a key nobody joined), so it adds a few bytes to
	// the record and no outbox: a leave of a big member would move its
	// foci from the state into the outbox and stay at the size limit.
	inputs = append(inputs, leaveEv(room, id.UserID("@nobody:"+testHS), "NOBODY", now+100, "$bigleave0"))
	inputs = append(inputs, small...)
	e.publish(inputs)

	// Wait for the dead letters, then for the rest.
	maxDeliver := testWorkerConfig().MaxDeliver
	deadline := time.Now().Add(30 * time.Second)
	var dlq []stored
	for {
		e.waitIdle(-1, 30*time.Second)
		dlq = e.readStream(events.StreamDLQ, events.DLQPrefix+".")
		if len(dlq) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(dlq) == 0 {
		t.Fatal("no input was dead-lettered: does the room state still keep foci_preferred verbatim, " +
			"and is pkg/rtc.MaxContentBytes still 64 KiB?")
	}
	dead := map[id.EventID]bool{}
	firstSeq := uint64(0)
	for _, d := range dlq {
		in, err := events.DecodeRaw(d.data)
		if err != nil || !strings.HasPrefix(string(in.EventID), "$big") {
			t.Errorf("dead letter %v %+v is not one of the big joins", err, in.EventID)
			continue
		}
		dead[in.EventID] = true
		if d.hdr.Get(HeaderDLQReason) != "apply" || !strings.Contains(d.hdr.Get(HeaderDLQError), "maximum payload") ||
			d.hdr.Get(HeaderDLQAttempts) != strconv.Itoa(maxDeliver) || d.hdr.Get(HeaderDLQPart) != strconv.Itoa(part) {
			t.Errorf("dead letter %s headers %v", in.EventID, d.hdr)
		}
		if s, _ := strconv.ParseUint(d.hdr.Get(HeaderDLQSeq), 10, 64); firstSeq == 0 || s < firstSeq {
			firstSeq = s
		}
	}
	var applied []events.RawEvent
	for _, in := range inputs {
		if !dead[in.EventID] {
			applied = append(applied, in)
		}
	}
	want := offline(applied)
	e.waitIdle(countEvents(want), 30*time.Second)
	assertMatches(t, e.sessionEvents(), want)
	later, laterOther := 0, 0
	for _, m := range e.readStream(events.StreamRaw, events.PartitionSubject(part, "")) {
		in, _ := events.DecodeRaw(m.data)
		if m.seq > firstSeq && !dead[in.EventID] {
			later++
			if in.RoomID != room {
				laterOther++
			}
		}
	}
	if later == laterOther || laterOther == 0 {
		t.Errorf("partition %d: %d inputs after the first dead letter (seq %d), %d of other rooms: want both kinds",
			part, later, firstSeq, laterOther)
	}
	t.Logf("%d of %d big joins dead-lettered; %d later inputs of partition %d flowed (%d of other rooms)",
		len(dead), bigJoins, later, part, laterOther)
}
