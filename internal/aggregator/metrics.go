package aggregator

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
	"github.com/rtcsessions/rtc-sessions/pkg/events"
	"github.com/rtcsessions/rtc-sessions/pkg/rtc"
)

// Metrics are the aggregator's Prometheus metrics. Several workers in one
// process (tests) each get their own registry.
type Metrics struct {
	Inputs           *prometheus.CounterVec // by kind (event, timer) and result
	Transitions      *prometheus.CounterVec // session events by kind
	Rejections       *prometheus.CounterVec // reducer rejections by reason (rtc.RejectionCodes)
	CASConflicts     prometheus.Counter     // rtc_rooms revision mismatches
	PublishSeconds   prometheus.Histogram   // outbox flush latency
	ProcessSeconds   prometheus.Histogram   // one input, end to end
	ConsumerLag      *prometheus.GaugeVec   // NumPending by partition
	OwnedPartitions  prometheus.Gauge       // partitions this worker consumes
	LiveWorkers      prometheus.Gauge       // workers seen in rtc_workers
	LiveSessions     prometheus.Gauge       // reported by the owner of partition 0
	LiveMembers      prometheus.Gauge       // reported by the owner of partition 0
	TimerLateness    prometheus.Histogram   // wall time of processing minus deadline
	TimersArmed      prometheus.Counter     // schedules published
	DLQ              *prometheus.CounterVec // dead-lettered inputs by reason
	Retries          *prometheus.CounterVec // failed attempts by class (poison, transient)
	Handoffs         *prometheus.CounterVec // partitions acquired / released
	CacheLookups     *prometheus.CounterVec // room cache hit / miss
	BatchInputs      prometheus.Histogram   // inputs per batch
	CatchUp          prometheus.Counter     // inputs read directly from RTC_RAW after a hand-off
	Redos            prometheus.Counter     // commits of a previous owner carried out on load
	EffectConflicts  *prometheus.CounterVec // conditional effect writes that found another state (live_session, event_order, fenced)
	EventBatches     *prometheus.CounterVec // fast batches of session events, by result (stored, stopped, failed)
	DeadPinsReleased prometheus.Counter     // pins of dead workers released on take-over
	LogSampledOut    prometheus.Counter     // rejection log lines dropped by sampling
}

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered anywhere).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns = "rtc_aggregator"
	latency := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	m := &Metrics{
		Inputs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "inputs_total",
			Help: "Inputs taken from RTC_RAW, by kind (event, timer) and result (applied, duplicate, stale, dlq)."},
			[]string{"kind", "result"}),
		Transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "transitions_total",
			Help: "Session events produced, by kind."}, []string{"kind"}),
		Rejections: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "rejections_total",
			Help: "Events (or array entries) the reducer did not count as memberships, by reason."}, []string{"reason"}),
		CASConflicts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "cas_conflicts_total",
			Help: "Room record writes that lost a revision check and were retried."}),
		EffectConflicts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "effect_conflicts_total",
			Help: "Conditional effect writes that found another state than expected, by kind: live_session (a key's revision was not the one this worker knew), event_order (the room's last event in RTC_EVENTS was not the one before), fenced (a newer owner had written the room: the older commit was not carried out)."},
			[]string{"kind"}),
		EventBatches: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "event_batches_total",
			Help: "Fast batches of session events published to RTC_EVENTS, by result: stored (whole), stopped (the server stopped it at a message that failed; the rest went one event at a time), failed (no answer; the rest went one event at a time)."},
			[]string{"result"}),
		PublishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "publish_seconds",
			Help: "Time to publish an outbox (events, live sessions, timer) and receive every ack.", Buckets: latency}),
		ProcessSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "batch_seconds",
			Help: "Time to process one batch of inputs, from its delivery to its acks.", Buckets: latency}),
		BatchInputs: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "batch_inputs",
			Help: "Inputs per processed batch.", Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}}),
		CatchUp: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "catchup_inputs_total",
			Help: "Inputs read directly from RTC_RAW because a previous owner received them and did not acknowledge them."}),
		DeadPinsReleased: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "dead_pins_released_total",
			Help: "Partition pins of workers that are gone released at take-over, instead of waiting for pinned_ttl."}),
		LogSampledOut: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "log_sampled_out_total",
			Help: "Log lines about rejected memberships dropped by sampling (more than 5 a second); rejections_total counts every rejection."}),
		Redos: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "redos_total",
			Help: "Rooms whose last commit's effects were carried out again when the room was loaded (a previous owner died after committing)."}),
		ConsumerLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "consumer_lag",
			Help: "Inputs of a partition not yet processed (undelivered plus delivered and unacknowledged), read every stats_interval by its owner."}, []string{"partition"}),
		OwnedPartitions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "owned_partitions",
			Help: "Partitions this worker consumes."}),
		LiveWorkers: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "live_workers",
			Help: "Workers with a live heartbeat in rtc_workers, as this worker sees them."}),
		LiveSessions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "live_sessions",
			Help: "Live sessions in rtc_sessions, kept from a watch of the bucket by the owner of partition 0; 0 elsewhere (use max or sum)."}),
		LiveMembers: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "live_members",
			Help: "Members (devices) of the live sessions; reported like live_sessions."}),
		TimerLateness: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "timer_lateness_seconds",
			Help:    "Wall-clock delay between a timer's deadline and its processing.",
			Buckets: []float64{.25, .5, 1, 1.5, 2, 3, 5, 10, 30, 60, 300}}),
		TimersArmed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "timers_armed_total",
			Help: "Room timers (message schedules) published."}),
		DLQ: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "dlq_total",
			Help: "Inputs sent to RTC_DLQ, by reason."}, []string{"reason"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "retries_total",
			Help: "Failed processing attempts that were retried, by class (poison, transient)."}, []string{"class"}),
		Handoffs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "partition_handoffs_total",
			Help: "Partitions acquired and released by this worker."}, []string{"op"}),
		CacheLookups: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "room_cache_lookups_total",
			Help: "Room record cache lookups, by result (hit, miss)."}, []string{"result"}),
	}
	// Every labelled counter exists from the start for its known label
	// values: an alert on rate() sees 0, not nothing, until the first one.
	for _, c := range rtc.RejectionCodes() {
		m.Rejections.WithLabelValues(string(c))
	}
	for _, k := range events.Kinds {
		m.Transitions.WithLabelValues(string(k))
	}
	for _, kind := range []rawevent.InputKind{rawevent.InputEvent, rawevent.InputTimer} {
		for _, r := range []string{resultApplied, resultStale, resultDuplicate, resultDLQ} {
			m.Inputs.WithLabelValues(string(kind), r)
		}
	}
	for _, r := range append([]string{"decode", "apply", "store", "room_state"}, inputReasons...) {
		m.DLQ.WithLabelValues(r)
	}
	for _, c := range []string{"transient", "poison"} {
		m.Retries.WithLabelValues(c)
	}
	for _, op := range []string{"acquired", "released"} {
		m.Handoffs.WithLabelValues(op)
	}
	for _, r := range []string{"hit", "miss"} {
		m.CacheLookups.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.Inputs, m.Transitions, m.Rejections, m.CASConflicts, m.EffectConflicts, m.EventBatches, m.PublishSeconds, m.ProcessSeconds,
			m.ConsumerLag, m.OwnedPartitions, m.LiveWorkers, m.LiveSessions, m.LiveMembers, m.TimerLateness,
			m.TimersArmed, m.DLQ, m.Retries, m.Handoffs, m.CacheLookups, m.BatchInputs, m.CatchUp, m.Redos, m.DeadPinsReleased, m.LogSampledOut)
	}
	return m
}
