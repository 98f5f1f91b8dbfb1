package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

const (
	figLatency = "latency publish → stored event, p50/p99/max"
	figCPU     = "CPU per input, aggregator + nats-server"
	tgtLatency = "p99 ≤ 10 ms"
	tgtCPU     = "≤ 0.2 ms"

	maxP99      = 10 * time.Millisecond
	maxCPUInput = 200 * time.Microsecond
)

// paced publishes next(0), next(1), ... at rate per second until dur has
// passed, limit messages are published (limit > 0) or ctx ends, calling
// before(i, m) just before each publish, and waits for the PubAcks. It
// returns how many it published and over how long.
func (c *client) paced(ctx context.Context, rate, limit int, dur time.Duration, next func(i int) (*nats.Msg, error),
	before func(i int, m *nats.Msg)) (int, time.Duration, error) {
	start := time.Now()
	sent := 0
	var err error
	for ctx.Err() == nil {
		elapsed := time.Since(start)
		if elapsed >= dur {
			break
		}
		due := int(elapsed.Seconds() * float64(rate))
		if limit > 0 {
			due = min(due, limit)
		}
		for ; sent < due; sent++ {
			var m *nats.Msg
			if m, err = next(sent); err != nil {
				return sent, time.Since(start), err
			}
			if before != nil {
				before(sent, m)
			}
			if _, err = c.js.PublishMsgAsync(m, jetstream.WithStallWait(stallWait)); err != nil {
				return sent, time.Since(start), fmt.Errorf("publish %d: %w", sent, err)
			}
		}
		if limit > 0 && sent >= limit {
			break
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	wait, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	select {
	case <-c.js.PublishAsyncComplete():
	case <-wait.Done():
		return sent, elapsed, fmt.Errorf("%d PubAcks missing after 30s", c.js.PublishAsyncPending())
	}
	return sent, elapsed, nil
}

// latencyProbe matches session events to the inputs that caused them: a
// join or refresh by the member's event id, a leave by room, user and
// device.
type latencyProbe struct {
	mu       sync.Mutex
	byEvent  map[string]time.Time
	byMember map[string]time.Time
	samples  []time.Duration
}

func newLatencyProbe() *latencyProbe {
	return &latencyProbe{byEvent: map[string]time.Time{}, byMember: map[string]time.Time{}}
}

func memberKey(room, user, dev string) string { return room + "|" + user + "|" + dev }

func (p *latencyProbe) published(ev *rawevent.RawEvent, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if string(ev.Content) == "{}" {
		dev := (*ev.StateKey)[len("_"+string(ev.Sender)+"_"):]
		dev = dev[:len(dev)-len("_m.call")]
		p.byMember[memberKey(string(ev.RoomID), string(ev.Sender), dev)] = at
		return
	}
	p.byEvent[string(ev.EventID)] = at
}

func (p *latencyProbe) received(se *events.SessionEvent, at time.Time) {
	if se.Member == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var t time.Time
	var ok bool
	if se.Kind == events.KindMemberLeft {
		k := memberKey(string(se.RoomID), string(se.Member.UserID), string(se.Member.DeviceID))
		if t, ok = p.byMember[k]; ok {
			delete(p.byMember, k)
		}
	} else if t, ok = p.byEvent[string(se.Member.EventID)]; ok {
		delete(p.byEvent, string(se.Member.EventID))
	}
	if ok {
		p.samples = append(p.samples, at.Sub(t))
	}
}

func (p *latencyProbe) result() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Duration(nil), p.samples...)
}

// baselineLatency publishes the same kind of inputs at the same rate to a
// plain file stream that re-publishes what it stores, and measures publish
// → stored (received through the re-publish), plus nats-server CPU per
// message: the floor of one JetStream hop.
func baselineLatency(ctx context.Context, e *env, rate int, dur time.Duration) (LatencySummary, time.Duration, int, error) {
	s, err := e.c.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "BENCH_LAT", Subjects: []string{"bench.lat.>"}, Storage: jetstream.FileStorage,
		Duplicates: 10 * time.Minute,
		RePublish:  &jetstream.RePublish{Source: "bench.lat.>", Destination: "bench.latlive.>"},
	})
	if err != nil {
		return LatencySummary{}, 0, 0, fmt.Errorf("create stream BENCH_LAT: %w", err)
	}
	defer func() { _ = e.c.js.DeleteStream(context.WithoutCancel(ctx), s.CachedInfo().Config.Name) }()
	var mu sync.Mutex
	sentAt := map[int]time.Time{}
	var samples []time.Duration
	sub, err := e.c.nc.Subscribe("bench.latlive.>", func(m *nats.Msg) {
		now := time.Now()
		i, err := strconv.Atoi(m.Header.Get("Bench-Seq"))
		if err != nil {
			return
		}
		mu.Lock()
		if t, ok := sentAt[i]; ok {
			samples = append(samples, now.Sub(t))
			delete(sentAt, i)
		}
		mu.Unlock()
	})
	if err != nil {
		return LatencySummary{}, 0, 0, fmt.Errorf("subscribe bench.latlive.>: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := e.c.nc.Flush(); err != nil {
		return LatencySummary{}, 0, 0, fmt.Errorf("flush: %w", err)
	}
	w := &Workload{Prefix: "lat0", Rooms: 500, Devices: 10, ExpiresMS: 4 * 3_600_000, BaseMS: time.Now().UnixMilli()}
	cpu0, err := cpuTime(e.nats.Pid())
	if err != nil {
		return LatencySummary{}, 0, 0, err
	}
	n, _, err := e.c.paced(ctx, rate, 0, dur, func(i int) (*nats.Msg, error) {
		ev := w.Input(i)
		m, err := rawMsg(&ev)
		if err != nil {
			return nil, err
		}
		m.Subject = "bench.lat." + roomToken(ev.RoomID)
		m.Header.Set("Bench-Seq", strconv.Itoa(i))
		return m, nil
	}, func(i int, _ *nats.Msg) {
		mu.Lock()
		sentAt[i] = time.Now()
		mu.Unlock()
	})
	if err != nil {
		return LatencySummary{}, 0, 0, fmt.Errorf("baseline publish: %w", err)
	}
	waitQuiet(func() int { mu.Lock(); defer mu.Unlock(); return len(samples) }, n, 5*time.Second)
	cpu1, err := cpuTime(e.nats.Pid())
	if err != nil {
		return LatencySummary{}, 0, 0, err
	}
	mu.Lock()
	defer mu.Unlock()
	if len(samples) == 0 {
		return LatencySummary{}, 0, 0, errors.New("baseline: no re-published message received")
	}
	return Summarize(samples), (cpu1 - cpu0) / time.Duration(n), n, nil
}

// waitQuiet waits until count() reaches want or stops growing for a
// while, at most max.
func waitQuiet(count func() int, want int, max time.Duration) {
	deadline := time.Now().Add(max)
	last, lastAt := -1, time.Now()
	for time.Now().Before(deadline) {
		c := count()
		if c >= want {
			return
		}
		if c != last {
			last, lastAt = c, time.Now()
		} else if time.Since(lastAt) > time.Second {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func runLatency(ctx context.Context, e *env) ([]Row, error) {
	rate, dur := e.o.SteadyRate, e.o.SteadyDuration
	baseDur := min(dur, 5*time.Second)
	base, baseCPU, baseN, err := baselineLatency(ctx, e, rate, baseDur)
	if err != nil {
		return nil, err
	}
	e.logf("baseline (one stream, %s msgs at %d/s): %s, nats-server CPU %s ms per message", fmtCount(int64(baseN)), rate, base, fmtMS(baseCPU))
	floor, floorN, err := floorCPU(ctx, e, rate, baseDur, 0)
	if err != nil {
		return nil, err
	}
	// The same in waves (what a worker-wide linger would buy the server, at
	// the price of the wave's length in latency).
	const floorWave = 4 * time.Millisecond
	floorW, floorWN, err := floorCPU(ctx, e, rate, baseDur, floorWave)
	if err != nil {
		return nil, err
	}
	e.logf("floor in waves of %s (%s inputs): nats-server CPU %s ms per input", floorWave, fmtCount(int64(floorWN)), fmtMS(floorW))
	e.logf("floor (an input's JetStream operations without the aggregator, %s inputs at %d/s): nats-server CPU %s ms per input",
		fmtCount(int64(floorN)), rate, fmtMS(floor))

	agg, err := e.startReadyAggregator(ctx)
	if err != nil {
		return nil, err
	}

	// What the processes burn with no input at all (heartbeats, pulls,
	// timers): part of every per-input CPU figure at a low rate.
	idle0, err := e.cpuOf(agg)
	if err != nil {
		return nil, err
	}
	idleStart := time.Now()
	time.Sleep(3 * time.Second)
	idle1, err := e.cpuOf(agg)
	if err != nil {
		return nil, err
	}
	idleShare := (idle1 - idle0).Seconds() / time.Since(idleStart).Seconds() // cores busy when idle

	probe := newLatencyProbe()
	var decodeErrs atomic.Int64
	sub, err := e.c.nc.Subscribe(events.LivePrefix+".>", func(m *nats.Msg) {
		now := time.Now()
		se, err := events.DecodeSessionEvent(m.Data)
		if err != nil {
			decodeErrs.Add(1)
			return
		}
		probe.received(&se, now)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s.>: %w", events.LivePrefix, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, fmt.Errorf("pending limits: %w", err)
	}
	if err := e.c.nc.Flush(); err != nil {
		return nil, fmt.Errorf("flush: %w", err)
	}

	w := &Workload{Prefix: "lat1", Rooms: 500, Devices: 10, ExpiresMS: 4 * 3_600_000, BaseMS: time.Now().UnixMilli()}
	aggCPU0, err1 := cpuTime(agg.Pid())
	natsCPU0, err2 := cpuTime(e.nats.Pid())
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	waitProfiles := e.startProfiles(ctx, "steady", dur, []*aggregatorProc{agg})
	n, elapsed, err := e.c.paced(ctx, rate, 0, dur, func(i int) (*nats.Msg, error) {
		ev := w.Input(i)
		return rawMsg(&ev)
	}, func(i int, _ *nats.Msg) {
		ev := w.Input(i) // deterministic: the same input as the message's
		probe.published(&ev, time.Now())
	})
	waitProfiles()
	if err != nil {
		return nil, fmt.Errorf("steady publish: %w", err)
	}
	if _, err := e.drain(ctx, stallPipeline, nil); err != nil {
		return nil, fmt.Errorf("after the steady phase: %w", err)
	}
	waitQuiet(func() int { return len(probe.result()) }, n, 5*time.Second)
	aggCPU1, err1 := cpuTime(agg.Pid())
	natsCPU1, err2 := cpuTime(e.nats.Pid())
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	samples := probe.result()
	if len(samples) == 0 {
		return nil, fmt.Errorf("no session event matched any of the %d inputs (%d undecodable)", n, decodeErrs.Load())
	}
	lat := Summarize(samples)
	achieved := float64(n) / elapsed.Seconds()
	e.logf("pipeline: %s inputs at %s: %s (%d matched)", fmtCount(int64(n)), fmtRate(achieved), lat, lat.N)

	var rows []Row
	note := fmt.Sprintf("%s inputs at %s for %s, 1 aggregator; %d matched to their session event",
		fmtCount(int64(n)), fmtRate(achieved), elapsed.Round(time.Second), lat.N)
	if lat.N < n*95/100 {
		note += fmt.Sprintf(" (only %d%%: the rest produced no visible event or it was not seen)", lat.N*100/n)
	}
	note += fmt.Sprintf("; baseline: %s inputs at the same rate to a plain file stream, received through its re-publish", fmtCount(int64(baseN)))
	v := Met
	if lat.P99 > maxP99 {
		v = Missed
	}
	rows = append(rows, Row{Figure: figLatency + fmt.Sprintf(" @ %s/s", fmtCount(int64(rate))), Measured: lat.String(),
		Baseline: base.String(), Target: tgtLatency, Verdict: v, Note: note})

	aggPer := (aggCPU1 - aggCPU0) / time.Duration(n)
	natsPer := (natsCPU1 - natsCPU0) / time.Duration(n)
	total := aggPer + natsPer
	v = Met
	if total > maxCPUInput {
		v = Missed
	}
	rows = append(rows, Row{Figure: figCPU + fmt.Sprintf(" @ %s/s", fmtCount(int64(rate))),
		Measured: fmt.Sprintf("%s ms (aggregator %s + nats-server %s)", fmtMS(total), fmtMS(aggPer), fmtMS(natsPer)),
		Baseline: fmt.Sprintf("%s ms nats-server per raw msg; %s ms nats-server per input's operations, no aggregator (%s in %s waves)",
			fmtMS(baseCPU), fmtMS(floor), fmtMS(floorW), floorWave),
		Target: tgtCPU, Verdict: v,
		Note: fmt.Sprintf("utime+stime from /proc over the steady phase and its drain, divided by %s inputs; "+
			"%.2f cores busy at this rate; with no input at all the two use %.3f cores (%s ms per input at this rate). "+
			"The second baseline is the server's floor: the same JetStream operations per input (store and deliver the input, "+
			"a revision-checked KV put awaited, then the session event with its re-publish and a second KV put awaited, then the ack), "+
			"done one input at a time by the benchmark itself at the same rate, %s inputs; in waves: the inputs arriving within "+
			"the wave's length done together (every commit awaited at once, then every effect, one ack)",
			fmtCount(int64(n)), total.Seconds()*achieved, idleShare, fmtMS(time.Duration(idleShare/achieved*float64(time.Second))),
			fmtCount(int64(floorN)))})
	return rows, nil
}
