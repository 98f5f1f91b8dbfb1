package jsutil

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/testutil"
)

// TestPublishAllWaitsForRoom: a set far larger than the connection's window
// of unacknowledged async publishes is stored whole: PublishAll waits for
// room instead of failing with "stalled".
func TestPublishAllWaitsForRoom(t *testing.T) {
	ns := testutil.NATS(t, "", -1)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "b"}); err != nil {
		t.Fatal(err)
	}
	var msgs []*nats.Msg
	for i := range 2000 {
		msgs = append(msgs, KVPut("b", "k"+string(rune('a'+i%26)), []byte{byte(i)}))
	}
	msgs = append(msgs, KVDel("b", "ka"))
	res, err := PublishAll(ctx, js, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(msgs) || res[len(res)-1].Ack == nil {
		t.Fatalf("results %d", len(res))
	}
	kv, _ := js.KeyValue(ctx, "b")
	if _, err := kv.Get(ctx, "ka"); err == nil {
		t.Error("the delete, last of the set, was not applied after the puts")
	}
	// A revision check that fails is reported as such.
	res, err = PublishAll(ctx, js, []*nats.Msg{ExpectRevision(KVPut("b", "kb", []byte("x")), 1)})
	if err == nil || !IsRevisionMismatch(res[0].Err) {
		t.Errorf("stale revision: %v", err)
	}
}
