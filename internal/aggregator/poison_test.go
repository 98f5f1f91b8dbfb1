package aggregator

import (
	"context"
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

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
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
	w := e.startWorker("w1", hooks{beforeApply: func(in *rawevent.RawEvent, _ uint64) {
		if in.EventID == poisonID {
			attempts.Add(1)
			panic("injected reducer failure")
		}
	}})
	e.waitOwned(w)

	evs := workload(40, 3, time.Now().UnixMilli())
	room := evs[0].RoomID // its first join comes first; the poison follows it
	poison := joinEv(room, "@mallory:"+testHS, "MALLORY", evs[0].OriginServerTS+1, 0, poisonID)
	inputs := append([]rawevent.RawEvent{evs[0], poison}, evs[1:]...)
	want := offline(evs) // what must come out: the poison input has no effect
	e.publish(inputs)
	e.waitIdle(countEvents(want), 30*time.Second)
	assertMatches(t, e.sessionEvents(), want)

	maxDeliver := testWorkerConfig().MaxDeliver
	if n := attempts.Load(); n != int32(maxDeliver) {
		t.Errorf("the poison input was tried %d times, want worker.max_deliver = %d", n, maxDeliver)
	}
	dlq := e.readStream(rawevent.StreamDLQ, rawevent.DLQPrefix+".")
	if len(dlq) != 1 {
		t.Fatalf("RTC_DLQ holds %d messages, want 1", len(dlq))
	}
	d := dlq[0]
	body, err := rawevent.DecodeRaw(d.data)
	if err != nil || body.EventID != poisonID {
		t.Errorf("dead letter body: %v %+v", err, body)
	}
	part := rawevent.Partition(events.Token(string(room)), e.topo.Partitions)
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
	if got := d.hdr.Get(HeaderDLQSubject); got != rawevent.PartitionSubject(part, events.Token(string(room))) {
		t.Errorf("%s = %q", HeaderDLQSubject, got)
	}
	if d.subject != rawevent.DLQPrefix+"."+strconv.Itoa(part) {
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
	for _, m := range e.readStream(rawevent.StreamRaw, rawevent.PartitionSubject(part, "")) {
		in, err := rawevent.DecodeRaw(m.data)
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
	if v := testutil.ToFloat64(m.Inputs.WithLabelValues(string(rawevent.InputEvent), resultDLQ)); v != 1 {
		t.Errorf("inputs_total{result=dlq} = %v", v)
	}
}

// bigJoin is a join whose content is close to the reducer's 64 KiB cap,
// nearly all of it in foci_preferred, which the room state keeps verbatim.
// bigJoin is a join whose content is about 16 x padBytes of incompressible
// foci: random padding, so that compression cannot shrink what stores it.
func bigJoin(room id.RoomID, n int, ts int64, padBytes int) rawevent.RawEvent {
	u := id.UserID(fmt.Sprintf("@big%d:%s", n, testHS))
	dev := fmt.Sprintf("BIG%d", n)
	rng := rand.New(rand.NewPCG(uint64(n), 1))
	foci := make([]string, 16)
	for i := range foci {
		pad := make([]byte, padBytes)
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

// TestPermanentStoreError: a commit the server refuses for a reason that
// retrying cannot fix does not block the partition. Here an operator limited
// the rtc_rooms bucket's values to 8 KiB (max_msg_size of KV_rtc_rooms) and
// one join in a small room is bigger than that. The room's inputs are tried
// max_deliver times together, then one at a time; the join whose own commit
// is still refused goes to RTC_DLQ with reason store, and every other input,
// of its room and of its partition, flows: the output is the offline
// reduction of the inputs without it.
func TestPermanentStoreError(t *testing.T) {
	e := newEnv(t)
	w := e.startWorker("w1", hooks{})
	e.waitOwned(w)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rooms, err := e.js.Stream(ctx, "KV_"+rawevent.BucketRooms)
	if err != nil {
		t.Fatal(err)
	}
	cfg := rooms.CachedInfo().Config
	cfg.MaxMsgSize = 8 << 10
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	now := time.Now().UnixMilli()
	small := workload(30, 2, now)
	// The big room shares its partition with a small one, so that inputs of
	// other rooms queue behind the failing one.
	part := rawevent.Partition(events.Token(string(small[0].RoomID)), e.topo.Partitions)
	var room id.RoomID
	for i := 0; room == ""; i++ {
		if r := id.RoomID(fmt.Sprintf("!big%d:%s", i, testHS)); rawevent.Partition(events.Token(string(r)), e.topo.Partitions) == part {
			room = r
		}
	}
	big := bigJoin(room, 0, now, 700) // ~16 KiB of foci
	inputs := []rawevent.RawEvent{
		joinEv(room, "@alice:"+testHS, "ALICE", now, 0, "$alice"),
		big,
		joinEv(room, "@bob:"+testHS, "BOB", now+2, 0, "$bob"),
	}
	inputs = append(inputs, small...)
	e.publish(inputs)

	maxDeliver := testWorkerConfig().MaxDeliver
	var applied []rawevent.RawEvent
	for _, in := range inputs {
		if in.EventID != big.EventID {
			applied = append(applied, in)
		}
	}
	want := offline(applied)
	e.waitIdle(countEvents(want), 60*time.Second)
	assertMatches(t, e.sessionEvents(), want)
	dlq := e.readStream(rawevent.StreamDLQ, rawevent.DLQPrefix+".")
	if len(dlq) != 1 {
		t.Fatalf("RTC_DLQ holds %d messages, want 1 (the big join)", len(dlq))
	}
	d := dlq[0]
	if in, err := rawevent.DecodeRaw(d.data); err != nil || in.EventID != big.EventID {
		t.Errorf("dead letter %v %+v is not the big join", err, in.EventID)
	}
	if d.hdr.Get(HeaderDLQReason) != "store" || !strings.Contains(d.hdr.Get(HeaderDLQError), "maximum") ||
		d.hdr.Get(HeaderDLQAttempts) != strconv.Itoa(maxDeliver) || d.hdr.Get(HeaderDLQPart) != strconv.Itoa(part) {
		t.Errorf("dead letter headers %v", d.hdr)
	}
	if n := testutil.ToFloat64(w.w.m.DLQ.WithLabelValues("store")); n != 1 {
		t.Errorf("dlq_total{reason=store} = %v, want 1", n)
	}
}
