package aggregator

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// BenchmarkPipeline measures inputs/s end to end through one real worker on
// an embedded nats-server (file storage): decode, load, apply, revision-
// checked KV write, outbox publish, rtc_sessions update, timer, DoubleAck.
// The baseline, measured in the same run on the same server, is the floor of
// the protocol: the same messages through the same kind of consumers (one
// in flight per partition) with nothing done but the DoubleAck.
func BenchmarkPipeline(b *testing.B) {
	rooms := max(b.N/7, 20) // workload: 7 inputs per room (3 joins, a refresh, 3 leaves)
	inputs := workload(rooms, 3, time.Now().UnixMilli())

	e := newEnv(b)
	base := protocolFloor(b, e, inputs)

	w := e.startWorker("bench", hooks{})
	e.waitOwned(w)
	want := uint64(countEvents(offline(inputs)))
	b.ResetTimer()
	start := time.Now()
	e.publish(inputs)
	waitStored(b, e.h.Events, want, 5*time.Minute)
	elapsed := time.Since(start)
	b.StopTimer()
	rate := float64(len(inputs)) / elapsed.Seconds()
	b.ReportMetric(rate, "inputs/s")
	b.ReportMetric(base, "baseline_inputs/s")
	b.ReportMetric(rate/base*100, "%_of_baseline")
}

// protocolFloor pushes the inputs through a copy of RTC_RAW's partitions
// with one consumer each (MaxAckPending 1, like the aggregator's), doing
// nothing but DoubleAck, and returns inputs/s.
func protocolFloor(b *testing.B, e *env, inputs []rawevent.RawEvent) float64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	parts := e.topo.Partitions
	cfg := topology.RawStream(e.topo)
	cfg.Name, cfg.Subjects, cfg.Sources = "FLOOR", []string{"floor.raw.*"}, nil // not the timers
	cfg.SubjectTransform = &jetstream.SubjectTransformConfig{Source: "floor.raw.*",
		Destination: fmt.Sprintf("floor.part.{{partition(%d,1)}}.{{wildcard(1)}}", parts)}
	s, err := e.js.CreateStream(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	acked := 0
	done := make(chan struct{})
	var ccs []jetstream.ConsumeContext
	for p := 0; p < parts; p++ {
		c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: fmt.Sprintf("f%d", p),
			FilterSubject: fmt.Sprintf("floor.part.%d.>", p), AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1})
		if err != nil {
			b.Fatal(err)
		}
		cc, err := c.Consume(func(m jetstream.Msg) {
			_ = m.DoubleAck(ctx)
			mu.Lock()
			acked++
			if acked == len(inputs) {
				close(done)
			}
			mu.Unlock()
		})
		if err != nil {
			b.Fatal(err)
		}
		ccs = append(ccs, cc)
	}
	start := time.Now()
	var futs []jetstream.PubAckFuture
	for i := range inputs {
		data, _ := rawevent.EncodeRaw(&inputs[i])
		f, err := e.js.PublishMsgAsync(&nats.Msg{Subject: "floor.raw." + events.Token(string(inputs[i].RoomID)), Data: data})
		if err != nil {
			b.Fatal(err)
		}
		futs = append(futs, f)
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		b.Fatal("baseline did not finish")
	}
	rate := float64(len(inputs)) / time.Since(start).Seconds()
	for _, cc := range ccs {
		cc.Stop()
	}
	return rate
}

// waitStored waits until the stream holds want messages.
func waitStored(b *testing.B, s jetstream.Stream, want uint64, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		info, err := s.Info(ctx)
		cancel()
		if err == nil && info.State.Msgs >= want {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d events stored after %s", info.State.Msgs, want, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
