package ingest

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rtcsessions/rtc-sessions/internal/rawevent"
)

// Reasons an event is rejected (the "reason" label of
// rtc_ingest_events_rejected_total). The set is closed so that the label has
// a bounded cardinality.
const (
	RejectMalformed  = "malformed"    // not JSON, or not a valid client event envelope
	RejectTooLarge   = "too_large"    // larger than rawevent.MaxEventBytes
	RejectNotObject  = "not_object"   // an element of "events" that is not a JSON object
	RejectEncode     = "encode"       // could not be encoded for RTC_RAW (should not happen)
	RejectOutOfRange = "out_of_range" // a timestamp or duration outside the canonical JSON integer range
	RejectTooComplex = "too_complex"  // nested deeper or holding a longer array than the transaction limits
)

// Metrics are the ingest's Prometheus collectors. Every counter is labelled
// by homeserver (the name of its registration) and source.
type Metrics struct {
	Received     *prometheus.CounterVec
	Forwarded    *prometheus.CounterVec
	Filtered     *prometheus.CounterVec
	Duplicates   *prometheus.CounterVec
	Rejected     *prometheus.CounterVec
	Refused      *prometheus.CounterVec // events a homeserver may not deliver (relay.go), by reason
	PublishFail  *prometheus.CounterVec
	PublishTime  *prometheus.HistogramVec
	Transactions *prometheus.CounterVec
	InFlight     prometheus.Gauge
	SyncErrors   *prometheus.CounterVec
	AuthFailures *prometheus.CounterVec // appservice requests refused, by homeserver and reason
	TxnReused    *prometheus.CounterVec // transaction ids seen again, by homeserver and result
	BodyBytes    prometheus.Gauge       // transaction body bytes reserved from the budget
	LogDropped   prometheus.Counter     // warnings the log sampler dropped

	// Reconciliation (reconcile.go).
	ReconcilePasses    *prometheus.CounterVec // passes and on-demand requests, by trigger
	ReconcileRooms     *prometheus.CounterVec // rooms read and published, by homeserver
	ReconcileStored    *prometheus.CounterVec // events the reconciliation stored new in RTC_RAW, by homeserver
	ReconcileFailures  *prometheus.CounterVec // rooms no homeserver could read or publish, by homeserver and reason
	ReconcileSkipped   prometheus.Counter     // rooms left to a later pass by max_rooms_per_pass
	ReconcileRoomsPass prometheus.Gauge       // rooms the last pass tried
	ReconcilePassTime  prometheus.Histogram   // duration of a pass or request
}

// allHomeservers labels a reconciliation failure of no one homeserver
// (listing the rooms with live sessions).
const allHomeservers = "all"

// Labels of the appservice metrics. Every label set is closed: the
// homeserver label takes the configured names plus unknownHomeserver.
const (
	unknownHomeserver = "unknown" // a token that matches no homeserver, or none

	authMissingToken  = "missing_token"  // 401: no token at all
	authUnknownToken  = "unknown_token"  // 403: a token of no configured homeserver
	authTokenMismatch = "token_mismatch" // 403: header and access_token query disagree

	txnSameContent      = "same_content"      // a retry: answered without publishing again
	txnDifferentContent = "different_content" // a reused id with new events: stored
)

// NewMetrics creates the collectors and registers them with reg (which may
// be nil in tests that do not look at metrics).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	hs := []string{"homeserver", "source"}
	m := &Metrics{
		Received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtc_ingest_events_received_total", Help: "Matrix events received, before filtering.",
		}, hs),
		Forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtc_ingest_events_forwarded_total", Help: "Events stored in RTC_RAW (PubAck received), by type.",
		}, append(hs, "type")),
		Filtered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtc_ingest_events_filtered_total", Help: "Events dropped because their type is not forwarded.",
		}, hs),
		Duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtc_ingest_events_duplicate_total", Help: "Events JetStream already had (PubAck.Duplicate).",
		}, hs),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtc_ingest_events_rejected_total", Help: "Malformed events dropped, by reason.",
		}, append(hs, "reason")),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtc_ingest_events_refused_total",
			Help: "Events not published because the homeserver that delivered them may not speak for their users (homeservers[].relay), by reason.",
		}, append(hs, "reason")),
		PublishFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtc_ingest_publish_failures_total", Help: "Publishes that got no PubAck (NATS unavailable, timeout).",
		}, hs),
		PublishTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rtc_ingest_publish_seconds", Help: "Time from publish to PubAck.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"homeserver"}),
		Transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtc_ingest_appservice_transactions_total", Help: "Appservice transactions answered, by HTTP status.",
		}, []string{"homeserver", "code"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rtc_ingest_publish_in_flight", Help: "Publishes waiting for their PubAck.",
		}),
		SyncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtc_ingest_sync_errors_total", Help: "Failed /sync requests of the sync source.",
		}, []string{"homeserver"}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtc_ingest_appservice_auth_failures_total",
			Help: "Appservice requests refused for their token, by homeserver (unknown: no token matched) and reason.",
		}, []string{"homeserver", "reason"}),
		TxnReused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtc_ingest_appservice_txn_reused_total",
			Help: "Transactions whose id was already completed: same_content (a retry, not published again) or different_content (stored).",
		}, []string{"homeserver", "result"}),
		BodyBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rtc_ingest_appservice_body_bytes_in_flight", Help: "Transaction body bytes reserved from appservice.body_budget_bytes.",
		}),
		LogDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rtc_ingest_log_sampled_out_total", Help: "Warnings not logged by the log sampler (each event is still counted in its metric).",
		}),
		ReconcilePasses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtc_ingest_reconcile_passes_total", Help: "Reconciliation passes (start, periodic) and on-demand requests (request).",
		}, []string{"trigger"}),
		ReconcileRooms: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtc_ingest_reconcile_rooms_total", Help: "Rooms whose current call state was read and published, by the homeserver that answered.",
		}, []string{"homeserver"}),
		ReconcileStored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtc_ingest_reconcile_events_stored_total", Help: "State events the reconciliation stored new in RTC_RAW (not duplicates within its window).",
		}, []string{"homeserver"}),
		ReconcileFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtc_ingest_reconcile_failures_total", Help: "Rooms no homeserver could read or publish, by the last homeserver tried and reason.",
		}, []string{"homeserver", "reason"}),
		ReconcileSkipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rtc_ingest_reconcile_rooms_skipped_total", Help: "Candidate rooms left to a later pass by reconcile.max_rooms_per_pass.",
		}),
		ReconcileRoomsPass: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rtc_ingest_reconcile_pass_rooms", Help: "Rooms the last reconciliation pass tried.",
		}),
		ReconcilePassTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rtc_ingest_reconcile_pass_seconds", Help: "Duration of a reconciliation pass or on-demand request.",
			Buckets: []float64{.01, .05, .1, .5, 1, 5, 10, 30, 60, 120, 300, 600},
		}),
	}
	if reg != nil {
		reg.MustRegister(m.collectors()...)
	}
	return m
}

// collectors lists every collector of the ingest.
func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Received, m.Forwarded, m.Filtered, m.Duplicates, m.Rejected, m.Refused, m.PublishFail,
		m.PublishTime, m.Transactions, m.InFlight, m.SyncErrors, m.AuthFailures, m.TxnReused, m.BodyBytes, m.LogDropped,
		m.ReconcilePasses, m.ReconcileRooms, m.ReconcileStored, m.ReconcileFailures, m.ReconcileSkipped,
		m.ReconcileRoomsPass, m.ReconcilePassTime}
}

// initReconcile creates the reconciliation series at 0 for the homeservers
// that can be reconciled.
func (m *Metrics) initReconcile(homeservers []string) {
	for _, t := range []string{TriggerStart, TriggerPeriodic, TriggerRequest} {
		m.ReconcilePasses.WithLabelValues(t)
	}
	m.ReconcileFailures.WithLabelValues(allHomeservers, ReconcileLiveRooms)
	src := string(rawevent.SourceReconcile)
	for _, hs := range homeservers {
		m.ReconcileRooms.WithLabelValues(hs)
		m.ReconcileStored.WithLabelValues(hs)
		for _, reason := range reconcileReasons {
			m.ReconcileFailures.WithLabelValues(hs, reason)
		}
		m.Received.WithLabelValues(hs, src)
		m.Duplicates.WithLabelValues(hs, src)
		m.PublishFail.WithLabelValues(hs, src)
	}
}

// initAppservice creates every series of the appservice's labelled
// counters at 0, so that rate() and alerts see them before the first
// failure.
func (m *Metrics) initAppservice(homeservers []string) {
	for _, hs := range append([]string{unknownHomeserver}, homeservers...) {
		for _, reason := range []string{authMissingToken, authUnknownToken, authTokenMismatch} {
			m.AuthFailures.WithLabelValues(hs, reason)
		}
	}
	src := string(rawevent.SourceAppservice)
	for _, hs := range homeservers {
		for _, result := range []string{txnSameContent, txnDifferentContent} {
			m.TxnReused.WithLabelValues(hs, result)
		}
		m.Received.WithLabelValues(hs, src)
		m.Filtered.WithLabelValues(hs, src)
		m.Duplicates.WithLabelValues(hs, src)
		m.PublishFail.WithLabelValues(hs, src)
		m.SyncErrors.WithLabelValues(hs)
		for _, reason := range []string{RejectMalformed, RejectTooLarge, RejectNotObject, RejectEncode, RejectOutOfRange, RejectTooComplex} {
			m.Rejected.WithLabelValues(hs, src, reason)
		}
		for _, code := range []string{"200", "400", "413", "429", "503"} {
			m.Transactions.WithLabelValues(hs, code)
		}
	}
}

// initRelay creates the relay rule's series at 0 for every listed
// homeserver and every source it can deliver through.
func (m *Metrics) initRelay(homeservers []string) {
	for _, hs := range homeservers {
		for _, src := range []rawevent.Source{rawevent.SourceAppservice, rawevent.SourceSync, rawevent.SourceSyncState, rawevent.SourceReconcile} {
			for _, reason := range refuseReasons {
				m.Refused.WithLabelValues(hs, string(src), reason)
			}
		}
	}
}

func (m *Metrics) received(hs string, src rawevent.Source, n int) {
	m.Received.WithLabelValues(hs, string(src)).Add(float64(n))
}

func (m *Metrics) filtered(hs string, src rawevent.Source) {
	m.Filtered.WithLabelValues(hs, string(src)).Inc()
}

func (m *Metrics) rejected(hs string, src rawevent.Source, reason string) {
	m.Rejected.WithLabelValues(hs, string(src), reason).Inc()
}
