package ingest

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rtcsessions/rtc-sessions/pkg/events"
)

// Reasons an event is rejected (the "reason" label of
// rtc_ingest_events_rejected_total). The set is closed so that the label has
// a bounded cardinality.
const (
	RejectMalformed = "malformed"  // not JSON, or not a valid client event envelope
	RejectTooLarge  = "too_large"  // larger than events.MaxEventBytes
	RejectNotObject = "not_object" // an element of "events" that is not a JSON object
	RejectEncode    = "encode"     // could not be encoded for RTC_RAW (should not happen)
)

// Metrics are the ingest's Prometheus collectors. Every counter is labelled
// by homeserver (the name of its registration) and source.
type Metrics struct {
	Received     *prometheus.CounterVec
	Forwarded    *prometheus.CounterVec
	Filtered     *prometheus.CounterVec
	Duplicates   *prometheus.CounterVec
	Rejected     *prometheus.CounterVec
	PublishFail  *prometheus.CounterVec
	PublishTime  *prometheus.HistogramVec
	Transactions *prometheus.CounterVec
	InFlight     prometheus.Gauge
	SyncErrors   *prometheus.CounterVec
}

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
	}
	if reg != nil {
		reg.MustRegister(m.Received, m.Forwarded, m.Filtered, m.Duplicates, m.Rejected, m.PublishFail,
			m.PublishTime, m.Transactions, m.InFlight, m.SyncErrors)
	}
	return m
}

func (m *Metrics) received(hs string, src events.Source, n int) {
	m.Received.WithLabelValues(hs, string(src)).Add(float64(n))
}

func (m *Metrics) filtered(hs string, src events.Source) {
	m.Filtered.WithLabelValues(hs, string(src)).Inc()
}

func (m *Metrics) rejected(hs string, src events.Source, reason string) {
	m.Rejected.WithLabelValues(hs, string(src), reason).Inc()
}
