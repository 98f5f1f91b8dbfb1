package topology_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

func embedded(t *testing.T) jetstream.JetStream {
	t.Helper()
	ns, err := natsutil.StartEmbedded(natsutil.EmbeddedConfig{DataDir: t.TempDir(), Port: -1}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); ns.Shutdown(); ns.WaitForShutdown() })
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func small() topology.Config {
	c := topology.DefaultConfig()
	c.Partitions = 4
	return c
}

func TestEnsureCreateThenVerify(t *testing.T) {
	js := embedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := topology.Ensure(ctx, js, small(), topology.ModeVerify); !errors.Is(err, topology.ErrMissing) {
		t.Fatalf("verify on an empty server: want topology.ErrMissing, got %v", err)
	}
	h, err := topology.Ensure(ctx, js, small(), topology.ModeCreate)
	if err != nil {
		t.Fatal(err)
	}
	if h.Raw == nil || h.Events == nil || h.DLQ == nil || h.Rooms == nil || h.Sessions == nil || h.Workers == nil {
		t.Fatalf("missing handles: %+v", h)
	}
	if _, err := topology.Ensure(ctx, js, small(), topology.ModeCreate); err != nil {
		t.Fatalf("create is not idempotent: %v", err)
	}
	if _, err := topology.Ensure(ctx, js, small(), topology.ModeVerify); err != nil {
		t.Fatalf("verify after create: %v", err)
	}
	if n, err := topology.ExistingPartitions(ctx, js); err != nil || n != 4 {
		t.Fatalf("ExistingPartitions = %d, %v", n, err)
	}
	for p := 0; p < 4; p++ {
		c, err := h.Raw.Consumer(ctx, topology.ConsumerName(p))
		if err != nil {
			t.Fatal(err)
		}
		cc := c.CachedInfo().Config
		if cc.MaxAckPending != topology.DefaultConfig().MaxAckPending || cc.PriorityPolicy != jetstream.PriorityPolicyPinned ||
			cc.FilterSubject != rawevent.PartitionFilter(p) {
			t.Errorf("consumer %d: %+v", p, cc)
		}
	}
	// The transform puts a room where rawevent.Partition says.
	tok := events.Token("!room:example.org")
	if _, err := js.Publish(ctx, rawevent.RawPrefix+"."+tok, []byte("x")); err != nil {
		t.Fatal(err)
	}
	m, err := h.Raw.GetLastMsgForSubject(ctx, rawevent.PartitionSubject(rawevent.Partition(tok, 4), tok))
	if err != nil || string(m.Data) != "x" {
		t.Fatalf("input not stored under its partition: %v", err)
	}
}

func TestPartitionMismatchRefused(t *testing.T) {
	js := embedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := topology.Ensure(ctx, js, small(), topology.ModeCreate); err != nil {
		t.Fatal(err)
	}
	other := small()
	other.Partitions = 8
	for _, mode := range []topology.Mode{topology.ModeCreate, topology.ModeVerify} {
		if _, err := topology.Ensure(ctx, js, other, mode); !errors.Is(err, topology.ErrPartitionMismatch) {
			t.Errorf("%s with 8 partitions over a 4-partition stream: want topology.ErrPartitionMismatch, got %v", mode, err)
		}
		if _, err := topology.EnsureRaw(ctx, js, other, mode); !errors.Is(err, topology.ErrPartitionMismatch) {
			t.Errorf("EnsureRaw %s: want topology.ErrPartitionMismatch, got %v", mode, err)
		}
	}
}

func TestConfigValidateReportsAll(t *testing.T) {
	c := topology.Config{Partitions: 0, Replicas: 9, DupWindow: 0, WorkerTTL: 0, AckWait: 0}
	err := c.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"partitions", "replicas", "duplicate window", "worker ttl", "ack wait"} {
		if !contains(err.Error(), want) {
			t.Errorf("error does not mention %s: %v", want, err)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestEnsureRawKeepsExistingSettings: the ingest's EnsureRaw creates RTC_RAW
// when it is missing but never resets what the aggregator configured.
func TestEnsureRawKeepsExistingSettings(t *testing.T) {
	js := embedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := topology.EnsureRaw(ctx, js, small(), topology.ModeVerify); !errors.Is(err, topology.ErrMissing) {
		t.Fatalf("verify before creation: want ErrMissing, got %v", err)
	}
	s, err := topology.EnsureRaw(ctx, js, small(), topology.ModeCreate)
	if err != nil || s.CachedInfo().Config.MaxAge != small().RawMaxAge {
		t.Fatalf("create: %v", err)
	}
	agg := small()
	agg.RawMaxAge = 48 * time.Hour
	if _, err := topology.Ensure(ctx, js, agg, topology.ModeCreate); err != nil {
		t.Fatal(err)
	}
	s, err = topology.EnsureRaw(ctx, js, small(), topology.ModeCreate)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil || info.Config.MaxAge != 48*time.Hour {
		t.Fatalf("EnsureRaw reset the aggregator's max age to %v (%v)", info.Config.MaxAge, err)
	}
}

// TestConsumerMigration: a partition consumer of an earlier version (one
// ack per input, AckExplicit, which cannot be updated in place) is replaced
// by one with AckAll that starts right after the old one's ack floor: what
// was acknowledged is not delivered again, what was not is. A second Ensure
// keeps the new consumer as it is.
func TestConsumerMigration(t *testing.T) {
	js := embedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := small()
	h, err := topology.Ensure(ctx, js, c, topology.ModeCreate)
	if err != nil {
		t.Fatal(err)
	}
	// Make partition 0's consumer what an earlier version created.
	old := topology.PartitionConsumer(c, 0)
	old.AckPolicy, old.MaxAckPending = jetstream.AckExplicitPolicy, 1
	if err := h.Raw.DeleteConsumer(ctx, old.Durable); err != nil {
		t.Fatal(err)
	}
	cons, err := h.Raw.CreateConsumer(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	// Three inputs of partition 0; the old consumer acknowledges the first two.
	var room string
	for i := 0; room == ""; i++ {
		if r := "!m" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ":hs"; rawevent.Partition(events.Token(r), c.Partitions) == 0 {
			room = r
		}
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, rawevent.RawPrefix+"."+events.Token(room), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		msgs, err := cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second), jetstream.FetchPriorityGroup(topology.ConsumerGroup))
		if err != nil {
			t.Fatal(err)
		}
		for m := range msgs.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 2 { // the migration, then an Ensure that must change nothing
		if h, err = topology.Ensure(ctx, js, c, topology.ModeCreate); err != nil {
			t.Fatal(err)
		}
	}
	nc, err := h.Raw.Consumer(ctx, old.Durable)
	if err != nil {
		t.Fatal(err)
	}
	if p := nc.CachedInfo().Config.AckPolicy; p != jetstream.AckAllPolicy {
		t.Fatalf("ack policy %v after the migration", p)
	}
	msgs, err := nc.Fetch(10, jetstream.FetchMaxWait(time.Second), jetstream.FetchPriorityGroup(topology.ConsumerGroup))
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for m := range msgs.Messages() {
		got = append(got, m.Data()...)
	}
	if string(got) != "\x02" {
		t.Fatalf("after the migration the consumer delivered %v, want only the unacknowledged third input", got)
	}
}

// TestSessionMarkersOnExistingBucket: an rtc_sessions bucket created by an
// earlier version (no marker TTL) is updated in place to expire its purge
// markers.
func TestSessionMarkersOnExistingBucket(t *testing.T) {
	js := embedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	old := small()
	old.SessionMarkerTTL = 0
	if _, err := topology.Ensure(ctx, js, old, topology.ModeCreate); err != nil {
		t.Fatal(err)
	}
	if _, err := topology.Ensure(ctx, js, small(), topology.ModeCreate); err != nil {
		t.Fatalf("update to expiring markers: %v", err)
	}
	s, err := js.Stream(ctx, "KV_"+events.BucketSessions)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.CachedInfo().Config; !c.AllowMsgTTL || c.SubjectDeleteMarkerTTL != small().SessionMarkerTTL {
		t.Fatalf("rtc_sessions after the update: allow ttl %v, marker ttl %s", c.AllowMsgTTL, c.SubjectDeleteMarkerTTL)
	}
}
