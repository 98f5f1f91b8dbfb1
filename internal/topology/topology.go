// Package topology declares every JetStream stream, consumer and KV bucket of
// rtc-sessions in one place, so that a reader sees the whole data flow at once:
//
//	ingest ──▶ rtc.raw.<roomTok> ──[RTC_RAW: transform]──▶ rtc.part.<N>.<roomTok>
//	aggregator ──▶ rtc.timer.<roomTok> [RTC_TIMERS: message schedule, one per room]
//	   ──fires──▶ rtc.fired.<roomTok> [RTC_TIMERS] ──source + transform──▶ rtc.part.<N>.<roomTok>.timer [RTC_RAW]
//	RTC_RAW ──[consumer agg-pNN, filter rtc.part.<N>.>, pinned group "agg"]──▶ aggregator worker
//	aggregator ──▶ KV rtc_rooms (state + outbox), KV rtc_sessions (live sessions)
//	aggregator ──▶ rtc.session.<app>.<room>.<call>.<kind> [RTC_EVENTS] ──RePublish──▶ rtc.live.>
//	aggregator ──▶ rtc.dlq.<N> [RTC_DLQ] for inputs it cannot decode, apply or trust
//	RTC_EVENTS session_ended ──source + transform──▶ rtc.history.<roomTok>.<appTok>.<callTok> [RTC_HISTORY]
//	workers ◀──▶ KV rtc_workers (heartbeats with per-key TTL)
//
// Trust: RTC_RAW, which the ingest and operators publish to, allows no
// purge, roll-up, message schedule, message TTL or message deletion, so one
// publish cannot empty it or make it generate inputs. The timers need
// message schedules, which make nats-server force roll-ups and purges on
// their stream; they live in RTC_TIMERS, which only the aggregator may
// publish to, and reach a room's partition by RTC_RAW sourcing their fired
// copies onto a subject no client can publish on (the .timer path). Ensure
// and EnsureRaw check the configuration the server reports (it may silently
// override flags) and refuse to go on with an unsafe one.
package topology

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// Mode says what Ensure may do.
type Mode string

const (
	ModeCreate Mode = "create" // create what is missing, update what differs
	ModeVerify Mode = "verify" // only check that everything exists as expected
)

// ConsumerGroup is the priority group every partition consumer pins.
const ConsumerGroup = "agg"

// ErrPartitionMismatch is returned when RTC_RAW exists with another partition
// count than configured: the count is fixed once the stream is created,
// because changing it would move rooms between partitions mid-stream.
var ErrPartitionMismatch = errors.New("partition count differs from the existing stream")

// ErrMissing is returned in verify mode when a stream, bucket or consumer does
// not exist.
var ErrMissing = errors.New("topology object missing")

// Config sizes the topology. Its YAML names are those of the services' topology
// section (the aggregator embeds it).
type Config struct {
	Partitions int           `yaml:"partitions"`     // RTC_RAW partitions (one consumer each); fixed once created
	Replicas   int           `yaml:"replicas"`       // 1 embedded, 3 in a cluster
	RawMaxAge  time.Duration `yaml:"raw_max_age"`    // how long raw inputs are kept (replay horizon)
	EventsAge  time.Duration `yaml:"events_max_age"` // how long session events are kept
	DLQMaxAge  time.Duration `yaml:"dlq_max_age"`
	DupWindow  time.Duration `yaml:"dup_window"` // Nats-Msg-Id de-duplication window of RTC_RAW and RTC_EVENTS
	AckWait    time.Duration `yaml:"ack_wait"`   // redelivery of an unacked input
	PinnedTTL  time.Duration `yaml:"pinned_ttl"` // how long a silent worker keeps its pin on a partition
	WorkerTTL  time.Duration `yaml:"worker_ttl"` // heartbeat TTL in rtc_workers
	// SessionMarkerTTL is how long the marker of an ended session (or of a
	// member who left a large one) stays in rtc_sessions: long enough for
	// watchers to see it, then it goes, so the bucket does not keep a
	// marker for every session that ever ended. 0 keeps markers forever.
	SessionMarkerTTL time.Duration `yaml:"session_marker_ttl"`
	// MaxAckPending bounds the inputs of a partition delivered and not yet
	// acknowledged: a worker processes them in batches (BatchSize <= it).
	MaxAckPending int `yaml:"max_ack_pending"`
	// HistoryMaxAge is how long RTC_HISTORY keeps an ended session; 0
	// means DefaultHistoryMaxAge (a configuration written before the
	// history index existed leaves it unset).
	HistoryMaxAge time.Duration `yaml:"history_max_age"`
}

// DefaultHistoryMaxAge is RTC_HISTORY's retention when none is configured.
const DefaultHistoryMaxAge = 365 * 24 * time.Hour

// DefaultConfig is the configuration of a single-node deployment.
func DefaultConfig() Config {
	return Config{
		Partitions: 32,
		Replicas:   1,
		RawMaxAge:  7 * 24 * time.Hour,
		EventsAge:  30 * 24 * time.Hour,
		DLQMaxAge:  30 * 24 * time.Hour,
		DupWindow:  10 * time.Minute,
		AckWait:    5 * time.Second,
		PinnedTTL:  10 * time.Second,
		WorkerTTL:  6 * time.Second,

		MaxAckPending: 4096,

		SessionMarkerTTL: time.Hour,
		HistoryMaxAge:    DefaultHistoryMaxAge,
	}
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if c.Partitions < 1 || c.Partitions > 1024 {
		errs = append(errs, fmt.Errorf("partitions %d: must be between 1 and 1024", c.Partitions))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("replicas %d: must be between 1 and 5", c.Replicas))
	}
	if c.DupWindow <= 0 || c.DupWindow > c.RawMaxAge || c.DupWindow > c.EventsAge {
		errs = append(errs, fmt.Errorf("duplicate window %s: must be positive and within the streams' max age", c.DupWindow))
	}
	if c.WorkerTTL < time.Second {
		errs = append(errs, fmt.Errorf("worker ttl %s: must be at least 1s", c.WorkerTTL))
	}
	if c.AckWait < time.Second || c.PinnedTTL < time.Second {
		errs = append(errs, fmt.Errorf("ack wait %s and pinned ttl %s: must be at least 1s", c.AckWait, c.PinnedTTL))
	}
	if c.SessionMarkerTTL != 0 && c.SessionMarkerTTL < time.Second {
		errs = append(errs, fmt.Errorf("session marker ttl %s: want 0 (keep) or at least 1s", c.SessionMarkerTTL))
	}
	if c.HistoryMaxAge < 0 || (c.HistoryMaxAge > 0 && c.HistoryMaxAge < time.Hour) {
		errs = append(errs, fmt.Errorf("history max age %s: want 0 (the default, %s) or at least 1h", c.HistoryMaxAge, DefaultHistoryMaxAge))
	}
	if c.MaxAckPending < 1 || c.MaxAckPending > 65536 {
		errs = append(errs, fmt.Errorf("max ack pending %d: must be between 1 and 65536", c.MaxAckPending))
	}
	return errors.Join(errs...)
}

// RawStream is RTC_RAW: every input, stored under its room's partition.
// Publishers' inputs arrive on rtc.raw.<roomTok>; fired timers are sourced
// from RTC_TIMERS onto rtc.part.<N>.<roomTok>.timer, the same partition as
// the room's inputs (the same {{partition(P,1)}} over the room token), so
// one consumer sees a room's inputs and timers in one order. It is
// append-only: no purge, roll-up, message deletion, message TTL or message
// schedule (see CheckStream).
func RawStream(c Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        rawevent.StreamRaw,
		Description: "rtc-sessions: raw membership changes and fired timers, partitioned by room",
		Subjects:    []string{rawevent.RawPrefix + ".*"},
		SubjectTransform: &jetstream.SubjectTransformConfig{
			Source:      rawevent.RawPrefix + ".*",
			Destination: partitionDest(c.Partitions, ""),
		},
		Sources: []*jetstream.StreamSource{{
			Name: rawevent.StreamTimers,
			SubjectTransforms: []jetstream.SubjectTransformConfig{{
				Source:      rawevent.FiredPrefix + ".*",
				Destination: partitionDest(c.Partitions, rawevent.TimerPathToken),
			}},
		}},
		DenyDelete: true,
		DenyPurge:  true,
		Duplicates: c.DupWindow,
		MaxAge:     c.RawMaxAge,
		Storage:    jetstream.FileStorage,
		Replicas:   c.Replicas,
	}
}

// partitionDest is the transform destination that puts a room token (the
// first wildcard) into its partition, with an optional last token.
func partitionDest(partitions int, suffix string) string {
	d := fmt.Sprintf("%s.{{partition(%d,1)}}.{{wildcard(1)}}", rawevent.PartPrefix, partitions)
	if suffix != "" {
		d += "." + suffix
	}
	return d
}

// TimersStream is RTC_TIMERS: each room's durable timer, a message schedule
// on rtc.timer.<roomTok> (one per room: a new one replaces the old) that
// fires its body onto rtc.fired.<roomTok> (a schedule's target must be a
// subject of its own stream), from where RTC_RAW sources it. Message
// schedules make the server force AllowRollup on (and DenyPurge off), which
// is why they live here and not in RTC_RAW: only the aggregator may publish
// to this stream. Definitions carry Nats-TTL: never so that MaxAge cannot
// delete one before it fires; MaxAge only ages out the fired copies.
func TimersStream(c Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              rawevent.StreamTimers,
		Description:       "rtc-sessions: the rooms' durable timers (message schedules), written by the aggregator only",
		Subjects:          []string{rawevent.TimerPrefix + ".*", rawevent.FiredPrefix + ".*"},
		AllowMsgSchedules: true,
		AllowMsgTTL:       true,
		AllowRollup:       true, // what the server sets for message schedules anyway
		MaxAge:            c.RawMaxAge,
		Storage:           jetstream.FileStorage,
		Replicas:          c.Replicas,
	}
}

// EventsStream is RTC_EVENTS: the session events, re-published under
// rtc.live.> so plain subscribers see each stored event exactly once.
func EventsStream(c Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        events.StreamEvents,
		Description: "rtc-sessions: session events",
		Subjects:    []string{events.SessionPrefix + ".>"},
		DenyDelete:  true,
		DenyPurge:   true,
		// The aggregator publishes a backlog's session events as fast
		// batches, which the server stores in order and stops at the first
		// failure (nats-server 2.14+; an older server leaves it off and the
		// aggregator publishes one event per room and round trip).
		AllowBatchPublish: true,
		Duplicates:        c.DupWindow,
		MaxAge:            c.EventsAge,
		Storage:           jetstream.FileStorage,
		Replicas:          c.Replicas,
		RePublish: &jetstream.RePublish{
			Source:      events.SessionPrefix + ".>",
			Destination: events.LivePrefix + ".>",
		},
	}
}

// The history index: RTC_HISTORY holds a copy of every session_ended event
// (with its summary) under a subject that starts with the room, so the
// history of one room is a subject-filtered read that the server answers
// from its per-subject index, however many rooms and months the stream
// holds. It is derived from RTC_EVENTS by the server (a source with a
// subject transform): nothing publishes to it, and a new RTC_HISTORY fills
// itself with every session_ended RTC_EVENTS still keeps.
const (
	StreamHistory = "RTC_HISTORY"
	HistoryPrefix = "rtc.history" // rtc.history.<roomTok>.<appTok>.<callTok>
)

// HistoryFilter is the subject filter over RTC_HISTORY of a room and an
// application ("" for every one).
func HistoryFilter(room id.RoomID, app string) string {
	parts := []string{HistoryPrefix, "*", "*", "*"}
	if room != "" {
		parts[1] = events.Token(string(room))
	}
	if app != "" {
		parts[2] = events.Token(app)
	}
	return strings.Join(parts, ".")
}

// HistoryStream is RTC_HISTORY: RTC_EVENTS' session_ended events
// (rtc.session.<appTok>.<roomTok>.<callTok>.session_ended) sourced onto
// rtc.history.<roomTok>.<appTok>.<callTok>, kept for HistoryMaxAge.
func HistoryStream(c Config) jetstream.StreamConfig {
	age := c.HistoryMaxAge
	if age == 0 {
		age = DefaultHistoryMaxAge
	}
	return jetstream.StreamConfig{
		Name:        StreamHistory,
		Description: "rtc-sessions: ended sessions with their summaries, by room (sourced from RTC_EVENTS)",
		Sources: []*jetstream.StreamSource{{
			Name: events.StreamEvents,
			SubjectTransforms: []jetstream.SubjectTransformConfig{{
				Source:      events.SessionFilter(events.SessionPrefix, "", "", events.KindSessionEnded),
				Destination: HistoryPrefix + ".{{wildcard(2)}}.{{wildcard(1)}}.{{wildcard(3)}}",
			}},
		}},
		DenyDelete: true,
		DenyPurge:  true,
		MaxAge:     age,
		Storage:    jetstream.FileStorage,
		Replicas:   c.Replicas,
	}
}

// DLQStream is RTC_DLQ: inputs that could not be decoded or applied, with
// the reason in headers.
func DLQStream(c Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        rawevent.StreamDLQ,
		Description: "rtc-sessions: inputs the aggregator could not decode or apply",
		Subjects:    []string{rawevent.DLQPrefix + ".>"},
		// Not DenyDelete: `rtcctl dlq redrive` deletes the entries it re-drove.
		DenyPurge: true,
		MaxAge:    c.DLQMaxAge,
		Storage:   jetstream.FileStorage,
		Replicas:  c.Replicas,
	}
}

// RoomsBucket holds each room's reducer state and outbox.
func RoomsBucket(c Config) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket: rawevent.BucketRooms, Description: "rtc-sessions: per-room aggregator state",
		History: 1, Storage: jetstream.FileStorage, Replicas: c.Replicas,
	}
}

// SessionsBucket holds the live sessions; a key is purged when its session
// ends, with a marker that expires after SessionMarkerTTL (per-message TTL,
// enabled by LimitMarkerTTL).
func SessionsBucket(c Config) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket: events.BucketSessions, Description: "rtc-sessions: live sessions",
		History: 1, Storage: jetstream.FileStorage, Replicas: c.Replicas,
		LimitMarkerTTL: c.SessionMarkerTTL,
	}
}

// WorkersBucket holds the aggregator workers' heartbeats. LimitMarkerTTL makes
// watchers see a key that expired, which is how a crashed worker is noticed.
func WorkersBucket(c Config) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket: rawevent.BucketWorkers, Description: "rtc-sessions: aggregator worker heartbeats",
		History: 1, Storage: jetstream.FileStorage, Replicas: c.Replicas,
		LimitMarkerTTL: c.WorkerTTL,
	}
}

// ConsumerName is the durable consumer of a partition.
func ConsumerName(partition int) string { return fmt.Sprintf("agg-p%02d", partition) }

// PartitionConsumer is the durable pull consumer of one partition. The
// pinned priority group makes sure only one worker at a time receives the
// partition; up to MaxAckPending inputs may be in flight, which the worker
// processes in batches, in stream order per room (across a hand-off too:
// the next owner reads what the previous one left unacknowledged directly
// from the stream, in order, before anything newer). Inputs are processed
// in stream order, so one ack per batch (AckAll, on its last input) settles
// the whole batch, and also what a dead owner left that the next one read
// from the stream.
func PartitionConsumer(c Config, partition int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        ConsumerName(partition),
		Description:    fmt.Sprintf("rtc-sessions aggregator, partition %d", partition),
		FilterSubject:  rawevent.PartitionFilter(partition),
		AckPolicy:      jetstream.AckAllPolicy,
		AckWait:        c.AckWait,
		MaxAckPending:  c.MaxAckPending,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{ConsumerGroup},
		PinnedTTL:      c.PinnedTTL,
	}
}

// Handles are the objects a service works with after Ensure.
type Handles struct {
	Raw, Events, DLQ, Timers jetstream.Stream
	History                  jetstream.Stream
	Rooms, Sessions, Workers jetstream.KeyValue
}

// Ensure creates or verifies the whole topology. In create mode it is
// idempotent and safe to run from every replica at start. In both modes it
// checks the configuration the server reports for each stream (CheckStream)
// and fails with ErrUnsafeStream, naming the stream, the flag and what to do,
// when a stream lets a publisher purge, roll up, schedule or delete where the
// design says it must not, or lacks what the timers need. ErrUnsafeStream,
// ErrPartitionMismatch and ErrMissing (verify mode) do not go away by
// retrying.
func Ensure(ctx context.Context, js jetstream.JetStream, c Config, mode Mode) (*Handles, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("topology config: %w", err)
	}
	if err := checkPartitions(ctx, js, c.Partitions); err != nil {
		return nil, err
	}
	// An RTC_RAW that no update can make safe (an earlier version's, with
	// message schedules) is refused before anything is created: RTC_TIMERS
	// could not be created beside it anyway (it claims rtc.timer.*).
	if err := checkExistingRaw(ctx, js, c); err != nil {
		return nil, err
	}
	var h Handles
	var err error
	streams := []struct {
		cfg jetstream.StreamConfig
		dst *jetstream.Stream
	}{{TimersStream(c), &h.Timers}, {RawStream(c), &h.Raw}, {EventsStream(c), &h.Events}, {DLQStream(c), &h.DLQ}, {HistoryStream(c), &h.History}}
	for _, s := range streams {
		if mode == ModeVerify {
			*s.dst, err = js.Stream(ctx, s.cfg.Name)
		} else {
			*s.dst, err = js.CreateOrUpdateStream(ctx, s.cfg)
		}
		if err != nil {
			return nil, wrapMissing(err, "stream "+s.cfg.Name)
		}
		if err := CheckStream((*s.dst).CachedInfo().Config, c, mode); err != nil {
			return nil, err
		}
	}
	buckets := []struct {
		cfg jetstream.KeyValueConfig
		dst *jetstream.KeyValue
	}{{RoomsBucket(c), &h.Rooms}, {SessionsBucket(c), &h.Sessions}, {WorkersBucket(c), &h.Workers}}
	for _, b := range buckets {
		if mode == ModeVerify {
			*b.dst, err = js.KeyValue(ctx, b.cfg.Bucket)
		} else {
			*b.dst, err = js.CreateOrUpdateKeyValue(ctx, b.cfg)
		}
		if err != nil {
			return nil, wrapMissing(err, "kv bucket "+b.cfg.Bucket)
		}
	}
	for p := 0; p < c.Partitions; p++ {
		cc := PartitionConsumer(c, p)
		if mode == ModeVerify {
			_, err = h.Raw.Consumer(ctx, cc.Durable)
		} else {
			err = ensureConsumer(ctx, h.Raw, cc)
		}
		if err != nil {
			return nil, wrapMissing(err, "consumer "+cc.Durable)
		}
	}
	return &h, nil
}

// ensureConsumer creates a partition consumer or updates it in place. Where
// an existing one starts (a consumer recreated by recreateConsumer starts at
// a sequence) cannot change and is kept.
func ensureConsumer(ctx context.Context, s jetstream.Stream, cc jetstream.ConsumerConfig) error {
	c, err := s.Consumer(ctx, cc.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		_, err = s.CreateConsumer(ctx, cc)
		return err
	case err != nil:
		return err
	}
	old := c.CachedInfo().Config
	cc.DeliverPolicy, cc.OptStartSeq = old.DeliverPolicy, old.OptStartSeq
	if old.AckPolicy != cc.AckPolicy {
		return recreateConsumer(ctx, s, cc)
	}
	_, err = s.UpdateConsumer(ctx, cc)
	return err
}

// recreateConsumer replaces a partition consumer whose settings cannot be
// updated in place (the acknowledgement policy of versions before batches):
// the new one starts after the old one's ack floor, so nothing processed is
// delivered again and nothing unprocessed is skipped (inputs delivered and
// not acknowledged are delivered again, which the aggregator recognises).
// Stop every aggregator of the older version first: it cannot read the
// rooms the new one writes.
func recreateConsumer(ctx context.Context, s jetstream.Stream, cc jetstream.ConsumerConfig) error {
	c, err := s.Consumer(ctx, cc.Durable)
	if err != nil {
		return fmt.Errorf("recreate consumer %s: %w", cc.Durable, err)
	}
	floor := c.CachedInfo().AckFloor.Stream
	if err := s.DeleteConsumer(ctx, cc.Durable); err != nil {
		return fmt.Errorf("recreate consumer %s: delete: %w", cc.Durable, err)
	}
	cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, floor+1
	if floor == 0 {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverAllPolicy, 0
	}
	if _, err := s.CreateConsumer(ctx, cc); err != nil {
		return fmt.Errorf("recreate consumer %s: %w", cc.Durable, err)
	}
	return nil
}

// EnsureRaw looks up RTC_RAW, what the ingest needs in order to publish, and
// in create mode creates it when it is missing (the ingest may start before
// the aggregator). It never updates an existing stream: the aggregator owns
// the stream's settings, and an ingest with defaults must not reset them.
// Like Ensure it refuses (ErrUnsafeStream) an RTC_RAW whose effective
// configuration lets a publisher rewrite it: the ingest does not publish
// into a stream that one of its own publishes could empty.
func EnsureRaw(ctx context.Context, js jetstream.JetStream, c Config, mode Mode) (jetstream.Stream, error) {
	if err := checkPartitions(ctx, js, c.Partitions); err != nil {
		return nil, err
	}
	s, err := js.Stream(ctx, rawevent.StreamRaw)
	if err == nil || mode == ModeVerify || !errors.Is(err, jetstream.ErrStreamNotFound) {
		if err != nil {
			return nil, wrapMissing(err, "stream "+rawevent.StreamRaw)
		}
		// Verify mode: the ingest cannot update the stream, so what an
		// update would fix is reported as for Ensure's verify mode.
		if err := CheckStream(s.CachedInfo().Config, c, ModeVerify); err != nil {
			return nil, err
		}
		return s, nil
	}
	s, err = js.CreateStream(ctx, RawStream(c))
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // created meanwhile by another replica
		s, err = js.Stream(ctx, rawevent.StreamRaw)
	}
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", rawevent.StreamRaw, err)
	}
	if err := CheckStream(s.CachedInfo().Config, c, ModeVerify); err != nil {
		return nil, err
	}
	return s, nil
}

func wrapMissing(err error, what string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) ||
		errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("%s: %w (start a service in create mode, or create it by hand)", what, ErrMissing)
	}
	return fmt.Errorf("ensure %s: %w", what, err)
}

var partitionRe = regexp.MustCompile(`\{\{\s*partition\(\s*(\d+)\s*,`)

// ExistingPartitions reads the partition count of an existing RTC_RAW; it
// returns 0 and no error when the stream does not exist yet.
func ExistingPartitions(ctx context.Context, js jetstream.JetStream) (int, error) {
	s, err := js.Stream(ctx, rawevent.StreamRaw)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("look up stream %s: %w", rawevent.StreamRaw, err)
	}
	st := s.CachedInfo().Config.SubjectTransform
	if st == nil {
		return 0, fmt.Errorf("stream %s has no subject transform: it was not created by rtc-sessions", rawevent.StreamRaw)
	}
	m := partitionRe.FindStringSubmatch(st.Destination)
	if m == nil {
		return 0, fmt.Errorf("stream %s transform %q has no partition(): it was not created by rtc-sessions", rawevent.StreamRaw, st.Destination)
	}
	return strconv.Atoi(m[1])
}

func checkPartitions(ctx context.Context, js jetstream.JetStream, want int) error {
	have, err := ExistingPartitions(ctx, js)
	if err != nil {
		return err
	}
	if have != 0 && have != want {
		return fmt.Errorf("%w: %s has %d partitions, the configuration says %d; set partitions: %d (changing the count needs a drain-and-migrate)",
			ErrPartitionMismatch, rawevent.StreamRaw, have, want, have)
	}
	return nil
}
