package rtcctl

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/assign"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// putHeartbeat writes a worker's key as the aggregator does
// (internal/aggregator/worker.go register): a JSON value with a per-key TTL.
func putHeartbeat(t *testing.T, js jetstream.JetStream, worker string, pins map[string]string) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"started": "2026-12-01T10:00:00Z", "pins": pins})
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg("$KV." + rawevent.BucketWorkers + "." + worker)
	m.Data = b
	if _, err := js.PublishMsg(context.Background(), m, jetstream.WithMsgTTL(time.Minute)); err != nil {
		t.Fatal(err)
	}
}

func publishRaw(t *testing.T, js jetstream.JetStream, e *rawevent.RawEvent) {
	t.Helper()
	b, err := rawevent.EncodeRaw(e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(context.Background(), rawevent.RawSubject(e.RoomID), b, jetstream.WithMsgID(e.MsgID())); err != nil {
		t.Fatal(err)
	}
}

func rawEvent(room string, n int) *rawevent.RawEvent {
	sk := "_@alice:hs1.test_DEV_m.call"
	return &rawevent.RawEvent{Kind: rawevent.InputEvent, Homeserver: "hs1.test", Source: rawevent.SourceAppservice,
		ReceivedAt: 1700000000000 + int64(n), RoomID: roomID(room), EventID: eventID(n), Type: "org.matrix.msc3401.call.member",
		StateKey: &sk, Sender: "@alice:hs1.test", OriginServerTS: 1700000000000 + int64(n),
		Content: json.RawMessage(`{"application":"m.call","call_id":"","device_id":"DEV","expires":3600000}`)}
}

func TestWorkers(t *testing.T) {
	url, js := embedded(t) // 2 partitions
	if code, out, errs := run(t, "workers", "-s", url); code != 0 || !strings.Contains(out, "workers (0 live)") ||
		!strings.Contains(out, "none: no partition is being consumed") {
		t.Fatalf("no workers: exit %d\n%s%s", code, out, errs)
	}

	// Three inputs in room A's partition; a worker pulls one through the
	// pinned group, so the partition is pinned to it.
	pA := rawevent.Partition(events.Token(string(roomA)), 2)
	for i := 0; i < 3; i++ {
		publishRaw(t, js, rawEvent(string(roomA), i))
	}
	cons, err := js.Consumer(context.Background(), rawevent.StreamRaw, topology.ConsumerName(pA))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchPriorityGroup(topology.ConsumerGroup), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for range batch.Messages() {
		got++
	}
	if got != 1 {
		t.Fatalf("fetched %d, %v", got, batch.Error())
	}
	info, err := cons.Info(context.Background())
	if err != nil || len(info.PriorityGroups) != 1 || info.PriorityGroups[0].PinnedClientID == "" {
		t.Fatalf("not pinned: %+v %v", info, err)
	}
	pin := info.PriorityGroups[0].PinnedClientID

	workers := []string{"agg-host1-aaaa", "agg-host2-bbbb"}
	owner := assign.Owner(workers, pA)
	for _, w := range workers {
		pins := map[string]string{}
		if w == owner {
			pins[strconv.Itoa(pA)] = pin
		}
		putHeartbeat(t, js, w, pins)
	}

	code, out, errs := run(t, "workers", "-s", url)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "workers (2 live)") || !strings.Contains(out, "partitions (2, 2 inputs pending)") {
		t.Fatalf("summary:\n%s", out)
	}
	assignment := assign.Assignment(workers, 2)
	for _, w := range workers {
		want := fmt.Sprintf("%s  2026-12-01T10:00:00Z  %d", w, len(assignment[w]))
		if !strings.Contains(out, want) {
			t.Errorf("lacks %q:\n%s", want, out)
		}
	}
	line := lineWith(out, " "+topology.ConsumerName(pA)+" ")
	// owner, pinned by the same worker, 2 pending, 1 awaiting its ack
	if f := strings.Fields(line); len(f) < 7 || f[2] != owner || f[3] != owner || f[4] != "2" || f[5] != "1" {
		t.Errorf("partition %d line %q\n%s", pA, line, out)
	}

	code, out, _ = run(t, "workers", "-s", url, "--json")
	var v WorkersView
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil {
		t.Fatalf("json: %d %v\n%s", code, err, out)
	}
	if len(v.Workers) != 2 || len(v.Partitions) != 2 {
		t.Fatalf("json: %+v", v)
	}
	p := v.Partitions[pA]
	if p.Owner != owner || p.PinnedClient != pin || p.PinnedBy != owner || p.NumPending != 2 || p.NumAckPending != 1 || p.LastDelivery.IsZero() {
		t.Errorf("partition %d: %+v", pA, p)
	}
	for _, w := range v.Workers {
		if fmt.Sprint(w.Owns) != fmt.Sprint(assignment[w.ID]) {
			t.Errorf("%s owns %v, want %v", w.ID, w.Owns, assignment[w.ID])
		}
	}

	// The owner is gone (its key deleted): its pin is no live worker's.
	kv, _ := js.KeyValue(context.Background(), rawevent.BucketWorkers)
	if err := kv.Delete(context.Background(), owner); err != nil {
		t.Fatal(err)
	}
	_, out, _ = run(t, "workers", "-s", url)
	if !strings.Contains(out, "workers (1 live)") || !strings.Contains(out, "pin "+pin+" (no live worker)") {
		t.Errorf("after the owner left:\n%s", out)
	}
}

// lineWith returns the first line of out containing s.
func lineWith(out, s string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

func TestCompactRanges(t *testing.T) {
	for _, tc := range []struct {
		in   []int
		want string
	}{{nil, "-"}, {[]int{3}, "3"}, {[]int{0, 1, 2, 3}, "0-3"}, {[]int{0, 1, 3, 5, 6}, "0-1,3,5-6"}} {
		if got := compactRanges(tc.in); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.in, got, tc.want)
		}
	}
}

func roomID(s string) id.RoomID { return id.RoomID(s) }
func eventID(n int) id.EventID  { return id.EventID(fmt.Sprintf("$ev%d:hs1.test", n)) }
