package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// floorCPU is the server's share of an input with no aggregator at all:
// the same JetStream operations per input as the pipeline's at a steady
// rate, done by the benchmark itself, one input at a time (what a batch
// holds at a low rate), and the nats-server CPU they cost. Per input: the
// input is stored in a file stream and delivered to a pull consumer; a
// revision-checked KV put (the room's commit) is awaited; a message with
// a Nats-Msg-Id goes to a second file stream that re-publishes it to a
// subscriber (the session event) together with a second KV put (the live
// session), both awaited; then the input is acknowledged. The aggregator's
// figure at the same rate cannot go below this one's server part. With
// wave > 0 the inputs that arrive within wave of the first are done
// together (floorWorker).
func floorCPU(ctx context.Context, e *env, rate int, dur, wave time.Duration) (perInput time.Duration, n int, err error) {
	js := e.c.js
	const in, out = "BENCH_FLOOR_IN", "BENCH_FLOOR_OUT"
	for _, cfg := range []jetstream.StreamConfig{
		{Name: in, Subjects: []string{"bench.floorin.>"}, Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute},
		{Name: out, Subjects: []string{"bench.floorout.>"}, Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute,
			RePublish: &jetstream.RePublish{Source: "bench.floorout.>", Destination: "bench.floorlive.>"}},
	} {
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			return 0, 0, fmt.Errorf("create stream %s: %w", cfg.Name, err)
		}
		defer func() { _ = js.DeleteStream(context.WithoutCancel(ctx), cfg.Name) }()
	}
	var buckets [2]jetstream.KeyValue
	for i, name := range []string{"bench_floor_rooms", "bench_floor_sessions"} {
		kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: name, Storage: jetstream.FileStorage})
		if err != nil {
			return 0, 0, fmt.Errorf("create bucket %s: %w", name, err)
		}
		buckets[i] = kv
		defer func() { _ = js.DeleteKeyValue(context.WithoutCancel(ctx), name) }()
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, in, jetstream.ConsumerConfig{Durable: "floor",
		AckPolicy: jetstream.AckAllPolicy, MaxAckPending: 4096, AckWait: 5 * time.Second}); err != nil {
		return 0, 0, fmt.Errorf("create consumer: %w", err)
	}

	// The worker has its own connection, as the aggregator has.
	wc, err := connect(e.nats.url, "rtcbench-floor-worker")
	if err != nil {
		return 0, 0, err
	}
	defer wc.close()
	var received atomic.Int64
	sub, err := e.c.nc.Subscribe("bench.floorlive.>", func(*nats.Msg) { received.Add(1) })
	if err != nil {
		return 0, 0, fmt.Errorf("subscribe: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := e.c.nc.Flush(); err != nil {
		return 0, 0, fmt.Errorf("flush: %w", err)
	}
	wcons, err := wc.js.Consumer(ctx, in, "floor")
	if err != nil {
		return 0, 0, fmt.Errorf("bind consumer: %w", err)
	}
	it, err := wcons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return 0, 0, fmt.Errorf("consume: %w", err)
	}
	defer it.Stop()
	revs := map[string]uint64{}
	workErr := make(chan error, 1)
	go func() { workErr <- floorWorker(it, wc.js, buckets, revs, wave) }()

	w := &Workload{Prefix: "floor", Rooms: 500, Devices: 10, ExpiresMS: 4 * 3_600_000, BaseMS: time.Now().UnixMilli()}
	cpu0, err := cpuTime(e.nats.Pid())
	if err != nil {
		return 0, 0, err
	}
	n, _, err = e.c.paced(ctx, rate, 0, dur, func(i int) (*nats.Msg, error) {
		ev := w.Input(i)
		m, err := rawMsg(&ev)
		if err != nil {
			return nil, err
		}
		m.Subject = "bench.floorin." + roomToken(ev.RoomID)
		m.Header.Set(jetstream.MsgIDHeader, "floor-"+strconv.Itoa(i))
		return m, nil
	}, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("floor publish: %w", err)
	}
	waitQuiet(func() int { return int(received.Load()) }, n, 10*time.Second)
	cpu1, err := cpuTime(e.nats.Pid())
	if err != nil {
		return 0, 0, err
	}
	it.Stop()
	if err := <-workErr; err != nil {
		return 0, 0, err
	}
	if got := int(received.Load()); got < n {
		return 0, 0, fmt.Errorf("floor: %d of %d inputs went through", got, n)
	}
	return (cpu1 - cpu0) / time.Duration(n), n, nil
}

// floorWorker does an input's operations for the inputs that arrive within
// wave of the first (0: one at a time): every commit of the wave awaited
// at once, then every effect, then one ack.
func floorWorker(it jetstream.MessagesContext, js jetstream.JetStream, buckets [2]jetstream.KeyValue,
	revs map[string]uint64, wave time.Duration) error {
	for {
		first, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return err
		}
		msgs := []jetstream.Msg{first}
		for deadline := time.Now().Add(wave); wave > 0; {
			left := time.Until(deadline)
			if left <= 0 {
				break
			}
			m, err := it.Next(jetstream.NextMaxWait(left))
			if err != nil {
				break
			}
			msgs = append(msgs, m)
		}
		var commits []jetstream.PubAckFuture
		for _, m := range msgs {
			room := m.Subject()[len("bench.floorin."):]
			pm := nats.NewMsg("$KV.bench_floor_rooms." + room)
			pm.Data = m.Data()
			pm.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(revs[room], 10))
			f, err := js.PublishMsgAsync(pm)
			if err != nil {
				return fmt.Errorf("floor commit: %w", err)
			}
			commits = append(commits, f)
		}
		var effects []jetstream.PubAckFuture
		for i, f := range commits {
			room := msgs[i].Subject()[len("bench.floorin."):]
			select {
			case ack := <-f.Ok():
				revs[room] = ack.Sequence
			case err := <-f.Err():
				return fmt.Errorf("floor commit: %w", err)
			}
			ev := nats.NewMsg("bench.floorout." + room)
			ev.Data = msgs[i].Data()
			ev.Header.Set(jetstream.MsgIDHeader, msgs[i].Headers().Get(jetstream.MsgIDHeader)+"-ev")
			sess := nats.NewMsg("$KV.bench_floor_sessions." + room)
			sess.Data = msgs[i].Data()
			for _, m := range []*nats.Msg{ev, sess} {
				f, err := js.PublishMsgAsync(m)
				if err != nil {
					return fmt.Errorf("floor effect: %w", err)
				}
				effects = append(effects, f)
			}
		}
		for _, f := range effects {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("floor effect: %w", err)
			}
		}
		if err := msgs[len(msgs)-1].Ack(); err != nil {
			return fmt.Errorf("floor ack: %w", err)
		}
	}
}
