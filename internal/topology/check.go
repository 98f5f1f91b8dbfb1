package topology

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// ErrUnsafeStream is returned by Ensure and EnsureRaw when a stream's
// configuration, as the server reports it, lets a publisher rewrite what the
// design says is append-only, or lacks what the timers need. nats-server may
// set flags by itself (message schedules force roll-ups on and purge
// protection off), so the effective configuration is what is checked, not
// the requested one. Retrying does not help: the message says what to do.
var ErrUnsafeStream = errors.New("unsafe stream configuration")

// MigrateRawHint is what to do with an RTC_RAW that no update can make
// safe: one created by a version that kept the timers (message schedules)
// in it. nats-server refuses to turn message schedules or message TTLs off
// on an existing stream.
const MigrateRawHint = "nats-server cannot turn this off on an existing stream: migrate RTC_RAW " +
	"(stop the ingest; wait until `rtcctl workers` shows no pending inputs; stop the aggregators; " +
	"delete the stream with an administrator's user, `nats stream rm RTC_RAW`; start this version's " +
	"aggregator, which creates RTC_RAW and RTC_TIMERS, then the ingest; docs/nats.md, \"Migrating RTC_RAW\")"

// A streamRule is one property a stream must have.
type streamRule struct {
	flag    string // the setting, as `nats stream info` and the JSON API name it
	bad     func(cfg jetstream.StreamConfig, c Config) bool
	why     string // what a stream with the bad setting allows
	fixable bool   // an update (create mode) can set it right
}

var (
	ruleNoSchedules = streamRule{"allow_msg_schedules", func(s jetstream.StreamConfig, _ Config) bool { return s.AllowMsgSchedules },
		"with message schedules nats-server forces roll-ups on and purge protection off, so one publish with " +
			"`Nats-Rollup: all` empties the stream, and one with `Nats-Schedule: @every 1s` makes a permanent input generator", false}
	ruleNoTTL = streamRule{"allow_msg_ttl", func(s jetstream.StreamConfig, _ Config) bool { return s.AllowMsgTTL },
		"a publisher's `Nats-TTL` header makes its message delete itself, before it is processed or read", false}
	ruleNoRollup = streamRule{"allow_rollup_hdrs", func(s jetstream.StreamConfig, _ Config) bool { return s.AllowRollup },
		"one publish with `Nats-Rollup: all` purges the stream", true}
	ruleDenyPurge = streamRule{"deny_purge", func(s jetstream.StreamConfig, _ Config) bool { return !s.DenyPurge },
		"the stream can be purged (false: it must be true)", true}
	ruleDenyDelete = streamRule{"deny_delete", func(s jetstream.StreamConfig, _ Config) bool { return !s.DenyDelete },
		"stored messages can be deleted (false: it must be true)", true}
)

// streamRules are the rules of each stream whose settings matter for trust.
// The KV buckets' streams are not here: only the aggregator writes them,
// and KV needs roll-ups (a key's purge is one).
func streamRules(name string) []streamRule {
	switch name {
	case rawevent.StreamRaw:
		return []streamRule{ruleNoSchedules, ruleNoTTL, ruleNoRollup, ruleDenyPurge, ruleDenyDelete,
			{"subjects", func(s jetstream.StreamConfig, _ Config) bool {
				return len(s.Subjects) != 1 || s.Subjects[0] != rawevent.RawPrefix+".*"
			}, "it must capture exactly " + rawevent.RawPrefix + ".* (the timers live in " + rawevent.StreamTimers + ")", true},
			{"sources", func(s jetstream.StreamConfig, c Config) bool { return !hasTimerSource(s, c) },
				"it must source " + rawevent.StreamTimers + "' " + rawevent.FiredPrefix + ".* onto the partitions' timer path, " +
					"or no timer reaches the aggregator", true}}
	case events.StreamEvents:
		return []streamRule{ruleNoSchedules, ruleNoTTL, ruleNoRollup, ruleDenyPurge, ruleDenyDelete}
	case rawevent.StreamDLQ:
		return []streamRule{ruleNoSchedules, ruleNoRollup, ruleDenyPurge}
	case StreamHistory:
		// Only sourced from RTC_EVENTS; nobody publishes to it, and the
		// history it keeps must not be rewritten either.
		return []streamRule{ruleNoSchedules, ruleNoTTL, ruleNoRollup, ruleDenyPurge, ruleDenyDelete}
	case rawevent.StreamTimers:
		return []streamRule{
			{"allow_msg_schedules", func(s jetstream.StreamConfig, _ Config) bool { return !s.AllowMsgSchedules },
				"false: the rooms' timers are message schedules in this stream", true},
			{"allow_msg_ttl", func(s jetstream.StreamConfig, _ Config) bool { return !s.AllowMsgTTL },
				"false: a timer carries `Nats-TTL: never` so that max_age cannot delete it before it fires", true},
		}
	}
	return nil
}

// hasTimerSource reports whether RTC_RAW sources RTC_TIMERS' fired timers
// with the transform that puts them on their room's partition.
func hasTimerSource(s jetstream.StreamConfig, c Config) bool {
	want := RawStream(c).Sources[0]
	for _, src := range s.Sources {
		if src == nil || src.Name != want.Name || src.FilterSubject != "" || src.External != nil ||
			len(src.SubjectTransforms) != len(want.SubjectTransforms) {
			continue
		}
		same := true
		for i, tr := range src.SubjectTransforms {
			if tr != want.SubjectTransforms[i] {
				same = false
			}
		}
		if same {
			return true
		}
	}
	return false
}

// CheckStream checks the configuration the server reports for a stream of
// rtc-sessions against the rules of its name. mode says what the caller
// could do about it: in create mode the stream was just created or updated
// with rtc-sessions' settings, so a violation means the server overrode them.
// It returns nil for streams without rules.
func CheckStream(cfg jetstream.StreamConfig, c Config, mode Mode) error {
	var problems []string
	fixable := true
	for _, r := range streamRules(cfg.Name) {
		if r.bad(cfg, c) {
			problems = append(problems, fmt.Sprintf("%s: %s", r.flag, r.why))
			fixable = fixable && r.fixable
		}
	}
	if len(problems) == 0 {
		return nil
	}
	var todo string
	switch {
	case !fixable && cfg.Name == rawevent.StreamRaw:
		todo = MigrateRawHint
	case !fixable:
		todo = fmt.Sprintf("nats-server cannot turn this off on an existing stream: with the services stopped, "+
			"delete %s with an administrator's user and start the aggregator in create mode, which creates it again", cfg.Name)
	case mode == ModeCreate:
		todo = "rtc-sessions asked for the right setting and the server reports another: check the server's " +
			"JetStream settings, and fix the stream with an administrator's user (`nats stream edit " + cfg.Name + "`)"
	default:
		todo = "start the aggregator once with topology.mode create (it updates the stream), or fix it with an " +
			"administrator's user (`nats stream edit " + cfg.Name + "`)"
	}
	return fmt.Errorf("%w: stream %s: %s; %s", ErrUnsafeStream, cfg.Name, strings.Join(problems, "; "), todo)
}

// checkExistingRaw refuses an existing RTC_RAW that no update can fix,
// before Ensure changes anything.
func checkExistingRaw(ctx context.Context, js jetstream.JetStream, c Config) error {
	s, err := js.Stream(ctx, rawevent.StreamRaw)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return wrapMissing(err, "stream "+rawevent.StreamRaw)
	}
	cfg := s.CachedInfo().Config
	for _, r := range streamRules(rawevent.StreamRaw) {
		if !r.fixable && r.bad(cfg, c) {
			return CheckStream(cfg, c, ModeCreate)
		}
	}
	return nil
}
