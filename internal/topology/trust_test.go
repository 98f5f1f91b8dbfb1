package topology_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/natsutil"
	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/internal/topology"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// schedule is a room's timer as the aggregator publishes it
// (aggregator.TimerMsg): a one-shot schedule on rtc.timer.<roomTok> firing
// body onto rtc.fired.<roomTok>.
func schedule(tok string, at time.Time, body string) *nats.Msg {
	m := nats.NewMsg(rawevent.TimerPrefix + "." + tok)
	m.Data = []byte(body)
	m.Header.Set(jetstream.ScheduleHeader, "@at "+at.UTC().Format(time.RFC3339))
	m.Header.Set(jetstream.ScheduleTargetHeader, rawevent.FiredPrefix+"."+tok)
	m.Header.Set(jetstream.MsgTTLHeader, "never")
	return m
}

// waitMsg waits until RTC_RAW holds a message on subject.
func waitMsg(ctx context.Context, t *testing.T, s jetstream.Stream, subject string) *jetstream.RawStreamMsg {
	t.Helper()
	for {
		m, err := s.GetLastMsgForSubject(ctx, subject)
		if err == nil {
			return m
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatalf("get %s: %v", subject, err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("nothing arrived on %s", subject)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestTimersFireOntoTheTimerPath: a schedule in RTC_TIMERS fires onto
// rtc.fired.<roomTok>, and RTC_RAW sources the fired copy onto
// rtc.part.<N>.<roomTok>.timer, where N is the partition RTC_RAW's own
// transform gives the room's inputs (and rawevent.Partition computes), for
// many rooms. The fired copy's scheduling headers (Nats-Scheduler,
// Nats-Schedule-Next: purge) make RTC_RAW do nothing: the inputs stored
// before and after it are all still there, and no schedule is left.
func TestTimersFireOntoTheTimerPath(t *testing.T) {
	js := embedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := small()
	h, err := topology.Ensure(ctx, js, c, topology.ModeCreate)
	if err != nil {
		t.Fatal(err)
	}
	const rooms = 40
	toks := make([]string, rooms)
	for i := range toks {
		toks[i] = events.Token(fmt.Sprintf("!room%d:example.org", i))
		if _, err := js.Publish(ctx, rawevent.RawPrefix+"."+toks[i], []byte("input")); err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, schedule(toks[i], time.Now(), "timer "+toks[i])); err != nil {
			t.Fatalf("schedule a timer: %v", err)
		}
	}
	parts := map[int]bool{}
	for _, tok := range toks {
		p := rawevent.Partition(tok, c.Partitions)
		parts[p] = true
		m := waitMsg(ctx, t, h.Raw, fmt.Sprintf("%s.%d.%s.%s", rawevent.PartPrefix, p, tok, rawevent.TimerPathToken))
		if string(m.Data) != "timer "+tok {
			t.Fatalf("fired copy of %s: %q", tok, m.Data)
		}
		if got := m.Header.Get("Nats-Scheduler"); got != rawevent.TimerPrefix+"."+tok {
			t.Errorf("fired copy's Nats-Scheduler %q", got)
		}
		if in, err := h.Raw.GetLastMsgForSubject(ctx, rawevent.PartitionSubject(p, tok)); err != nil || string(in.Data) != "input" {
			t.Fatalf("the room's input is not in partition %d after its timer fired: %v", p, err)
		}
	}
	if len(parts) < 2 {
		t.Fatalf("all rooms in partitions %v: the test proves nothing about the hash", parts)
	}
	// Every input and every fired timer is in RTC_RAW, nothing else; the
	// consumers of the partitions see them (filter rtc.part.<N>.>).
	info, err := h.Raw.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2*rooms {
		t.Fatalf("RTC_RAW holds %d messages, want %d inputs and timers", info.State.Msgs, 2*rooms)
	}
	var pending uint64
	for p := 0; p < c.Partitions; p++ {
		ci, err := h.Raw.Consumer(ctx, topology.ConsumerName(p))
		if err != nil {
			t.Fatal(err)
		}
		pending += ci.CachedInfo().NumPending
	}
	if pending != 2*rooms {
		t.Fatalf("the partition consumers have %d pending, want %d", pending, 2*rooms)
	}
	ti, err := h.Timers.Info(ctx, jetstream.WithSubjectFilter(rawevent.TimerPrefix+".>"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ti.State.Subjects) != 0 {
		t.Fatalf("schedules left after firing: %v", ti.State.Subjects)
	}
}

// TestTimerSurvivesRestart: a timer armed before nats-server stops fires
// after it starts again, into RTC_RAW's partition.
func TestTimerSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	start := func() (*server.Server, jetstream.JetStream) {
		ns, err := natsutil.StartEmbedded(natsutil.EmbeddedConfig{DataDir: dir, Port: -1}, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return ns, js
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns, js := start()
	if _, err := topology.Ensure(ctx, js, small(), topology.ModeCreate); err != nil {
		t.Fatal(err)
	}
	tok := events.Token("!restart:example.org")
	if _, err := js.PublishMsg(ctx, schedule(tok, time.Now().Add(2*time.Second), "late")); err != nil {
		t.Fatal(err)
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	time.Sleep(3 * time.Second) // the deadline passes while the server is down
	ns, js = start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	h, err := topology.Ensure(ctx, js, small(), topology.ModeVerify)
	if err != nil {
		t.Fatal(err)
	}
	p := rawevent.Partition(tok, small().Partitions)
	if m := waitMsg(ctx, t, h.Raw, fmt.Sprintf("%s.%d.%s.%s", rawevent.PartPrefix, p, tok, rawevent.TimerPathToken)); string(m.Data) != "late" {
		t.Fatalf("fired after the restart: %q", m.Data)
	}
}

// TestRawRefusesRewrites: what a publisher of inputs could do to RTC_RAW
// with headers alone is refused by the server: roll-ups, message
// schedules, message TTLs; and so are purges and message deletions by any
// user. Nothing stored is lost.
func TestRawRefusesRewrites(t *testing.T) {
	js := embedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := topology.Ensure(ctx, js, small(), topology.ModeCreate)
	if err != nil {
		t.Fatal(err)
	}
	subj := rawevent.RawPrefix + "." + events.Token("!r:example.org")
	for i := range 3 {
		if _, err := js.Publish(ctx, subj, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ name, header, value string }{
		{"roll up everything", "Nats-Rollup", "all"},
		{"roll up the subject", "Nats-Rollup", "sub"},
		{"an input generator", jetstream.ScheduleHeader, "@every 1s"},
		{"a one-shot schedule", jetstream.ScheduleHeader, "@at " + time.Now().UTC().Format(time.RFC3339)},
		{"a self-deleting input", jetstream.MsgTTLHeader, "1s"},
		{"cancel a schedule", "Nats-Schedule-Next", "purge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := nats.NewMsg(subj)
			m.Data = []byte("hostile")
			m.Header.Set(tc.header, tc.value)
			if tc.header == jetstream.ScheduleHeader {
				m.Header.Set(jetstream.ScheduleTargetHeader, subj)
			}
			if tc.header == "Nats-Schedule-Next" {
				m.Header.Set("Nats-Scheduler", rawevent.PartitionSubject(0, "x"))
			}
			if _, err := js.PublishMsg(ctx, m); err == nil {
				t.Fatalf("RTC_RAW stored a message with %s: %s", tc.header, tc.value)
			}
		})
	}
	if err := h.Raw.Purge(ctx); err == nil {
		t.Error("RTC_RAW was purged")
	}
	if err := h.Raw.DeleteMsg(ctx, 1); err == nil {
		t.Error("a message of RTC_RAW was deleted")
	}
	info, err := h.Raw.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 {
		t.Fatalf("RTC_RAW holds %d messages, want the 3 inputs", info.State.Msgs)
	}
}

// legacyRaw is RTC_RAW as versions before RTC_TIMERS created it: the timers
// were message schedules in it.
func legacyRaw(c topology.Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:     rawevent.StreamRaw,
		Subjects: []string{rawevent.RawPrefix + ".*", rawevent.TimerPrefix + ".*"},
		SubjectTransform: &jetstream.SubjectTransformConfig{Source: rawevent.RawPrefix + ".*",
			Destination: fmt.Sprintf("%s.{{partition(%d,1)}}.{{wildcard(1)}}", rawevent.PartPrefix, c.Partitions)},
		AllowMsgSchedules: true, AllowMsgTTL: true,
		Duplicates: c.DupWindow, MaxAge: c.RawMaxAge, Storage: jetstream.FileStorage, Replicas: 1,
	}
}

// TestLegacyRawRefused: an RTC_RAW of an earlier version (message schedules
// in it, so the server forces roll-ups on and purge protection off) is
// refused by Ensure in both modes and by the ingest's EnsureRaw, with an
// error naming the stream, the flag and the migration; nats-server indeed
// refuses to turn message schedules or TTLs off by an update; Ensure
// changes nothing; and after the migration (delete, Ensure) all is well.
func TestLegacyRawRefused(t *testing.T) {
	js := embedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := small()
	s, err := js.CreateStream(ctx, legacyRaw(c))
	if err != nil {
		t.Fatal(err)
	}
	if eff := s.CachedInfo().Config; !eff.AllowRollup || eff.DenyPurge {
		t.Fatalf("the server no longer forces roll-ups with schedules (rollup %v, deny purge %v): revisit the docs",
			eff.AllowRollup, eff.DenyPurge)
	}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, topology.ErrUnsafeStream) {
			t.Fatalf("%s on a legacy RTC_RAW: %v, want ErrUnsafeStream", what, err)
		}
		for _, want := range []string{"RTC_RAW", "allow_msg_schedules", "allow_msg_ttl", "allow_rollup_hdrs", "deny_purge",
			"nats stream rm RTC_RAW", "Migrating RTC_RAW"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: the error does not say %q: %v", what, want, err)
			}
		}
	}
	for _, mode := range []topology.Mode{topology.ModeCreate, topology.ModeVerify} {
		_, err := topology.Ensure(ctx, js, c, mode)
		check("Ensure "+string(mode), err)
		_, err = topology.EnsureRaw(ctx, js, c, mode)
		check("EnsureRaw "+string(mode), err)
	}
	if _, err := js.Stream(ctx, rawevent.StreamTimers); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("Ensure created RTC_TIMERS beside a legacy RTC_RAW: %v", err)
	}
	// What the migration section of docs/nats.md says: no update turns
	// them off.
	for _, tc := range []struct {
		name string
		edit func(*jetstream.StreamConfig)
	}{
		{"message schedules", func(sc *jetstream.StreamConfig) { sc.AllowMsgSchedules = false }},
		{"message TTLs", func(sc *jetstream.StreamConfig) { sc.AllowMsgTTL = false }},
	} {
		sc := legacyRaw(c)
		tc.edit(&sc)
		if _, err := js.UpdateStream(ctx, sc); err == nil || !strings.Contains(err.Error(), "can not be disabled") {
			t.Errorf("update turning off %s: %v, want the server's refusal", tc.name, err)
		}
	}
	if err := js.DeleteStream(ctx, rawevent.StreamRaw); err != nil {
		t.Fatal(err)
	}
	if _, err := topology.Ensure(ctx, js, c, topology.ModeCreate); err != nil {
		t.Fatalf("Ensure after the migration: %v", err)
	}
	if _, err := topology.EnsureRaw(ctx, js, c, topology.ModeVerify); err != nil {
		t.Fatalf("EnsureRaw after the migration: %v", err)
	}
}

// TestEnsureChecksEffectiveConfig: streams of an earlier version that an
// update can make safe (RTC_EVENTS and RTC_RAW without deny_purge or
// deny_delete, RTC_RAW allowing roll-ups and without the timer source) are
// refused in verify mode, naming the flag, and fixed in create mode.
func TestEnsureChecksEffectiveConfig(t *testing.T) {
	js := embedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := small()
	if _, err := topology.Ensure(ctx, js, c, topology.ModeCreate); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		cfg   jetstream.StreamConfig
		flags []string
	}{
		{"RTC_EVENTS without purge and delete protection", func() jetstream.StreamConfig {
			sc := topology.EventsStream(c)
			sc.DenyPurge, sc.DenyDelete = false, false
			return sc
		}(), []string{"deny_purge", "deny_delete"}},
		{"RTC_RAW allowing roll-ups, without its timer source", func() jetstream.StreamConfig {
			sc := topology.RawStream(c)
			sc.DenyPurge, sc.DenyDelete, sc.AllowRollup, sc.Sources = false, false, true, nil
			return sc
		}(), []string{"allow_rollup_hdrs", "deny_purge", "deny_delete", "sources"}},
		{"RTC_DLQ allowing roll-ups", func() jetstream.StreamConfig {
			sc := topology.DLQStream(c)
			sc.DenyPurge, sc.AllowRollup = false, true
			return sc
		}(), []string{"allow_rollup_hdrs", "deny_purge"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// An earlier version's stream: recreated as it had it.
			if err := js.DeleteStream(ctx, tc.cfg.Name); err != nil {
				t.Fatal(err)
			}
			if _, err := js.CreateStream(ctx, tc.cfg); err != nil {
				t.Fatal(err)
			}
			_, err := topology.Ensure(ctx, js, c, topology.ModeVerify)
			if !errors.Is(err, topology.ErrUnsafeStream) {
				t.Fatalf("verify: %v, want ErrUnsafeStream", err)
			}
			for _, want := range append([]string{tc.cfg.Name, "topology.mode create"}, tc.flags...) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("verify error does not say %q: %v", want, err)
				}
			}
			if tc.cfg.Name == rawevent.StreamRaw {
				if _, err := topology.EnsureRaw(ctx, js, c, topology.ModeCreate); !errors.Is(err, topology.ErrUnsafeStream) {
					t.Errorf("EnsureRaw: %v, want ErrUnsafeStream", err)
				}
			}
			if _, err := topology.Ensure(ctx, js, c, topology.ModeCreate); err != nil {
				t.Fatalf("create mode does not fix it: %v", err)
			}
			if _, err := topology.Ensure(ctx, js, c, topology.ModeVerify); err != nil {
				t.Fatalf("verify after the update: %v", err)
			}
		})
	}
}

// TestCheckStreamRules: the rules on each stream, flag by flag, on the
// configurations the server would report.
func TestCheckStreamRules(t *testing.T) {
	c := small()
	for _, sc := range []jetstream.StreamConfig{topology.RawStream(c), topology.EventsStream(c), topology.DLQStream(c), topology.TimersStream(c)} {
		if err := topology.CheckStream(sc, c, topology.ModeVerify); err != nil {
			t.Errorf("rtc-sessions' own %s refused: %v", sc.Name, err)
		}
	}
	for _, tc := range []struct {
		name string
		cfg  func() jetstream.StreamConfig
		flag string
	}{
		{"RTC_RAW with schedules", func() jetstream.StreamConfig { s := topology.RawStream(c); s.AllowMsgSchedules = true; return s }, "allow_msg_schedules"},
		{"RTC_RAW with TTLs", func() jetstream.StreamConfig { s := topology.RawStream(c); s.AllowMsgTTL = true; return s }, "allow_msg_ttl"},
		{"RTC_RAW with roll-ups", func() jetstream.StreamConfig { s := topology.RawStream(c); s.AllowRollup = true; return s }, "allow_rollup_hdrs"},
		{"RTC_RAW purgeable", func() jetstream.StreamConfig { s := topology.RawStream(c); s.DenyPurge = false; return s }, "deny_purge"},
		{"RTC_RAW deletable", func() jetstream.StreamConfig { s := topology.RawStream(c); s.DenyDelete = false; return s }, "deny_delete"},
		{"RTC_RAW capturing timers", func() jetstream.StreamConfig {
			s := topology.RawStream(c)
			s.Subjects = append(s.Subjects, rawevent.TimerPrefix+".*")
			return s
		}, "subjects"},
		{"RTC_RAW sourcing onto the wrong partitions", func() jetstream.StreamConfig {
			s := topology.RawStream(topology.Config{Partitions: 8})
			s.Name = rawevent.StreamRaw
			return s
		}, "sources"},
		{"RTC_EVENTS with schedules", func() jetstream.StreamConfig { s := topology.EventsStream(c); s.AllowMsgSchedules = true; return s }, "allow_msg_schedules"},
		{"RTC_EVENTS with roll-ups", func() jetstream.StreamConfig { s := topology.EventsStream(c); s.AllowRollup = true; return s }, "allow_rollup_hdrs"},
		{"RTC_EVENTS purgeable", func() jetstream.StreamConfig { s := topology.EventsStream(c); s.DenyPurge = false; return s }, "deny_purge"},
		{"RTC_DLQ with roll-ups", func() jetstream.StreamConfig { s := topology.DLQStream(c); s.AllowRollup = true; return s }, "allow_rollup_hdrs"},
		{"RTC_TIMERS without schedules", func() jetstream.StreamConfig {
			s := topology.TimersStream(c)
			s.AllowMsgSchedules = false
			return s
		}, "allow_msg_schedules"},
		{"RTC_TIMERS without TTLs", func() jetstream.StreamConfig { s := topology.TimersStream(c); s.AllowMsgTTL = false; return s }, "allow_msg_ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := topology.CheckStream(tc.cfg(), c, topology.ModeVerify)
			if !errors.Is(err, topology.ErrUnsafeStream) || !strings.Contains(err.Error(), tc.flag) {
				t.Fatalf("%v, want ErrUnsafeStream naming %s", err, tc.flag)
			}
		})
	}
}
