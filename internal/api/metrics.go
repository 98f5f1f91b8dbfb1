package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	sseClients prometheus.Gauge
	sseEvents  prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, live *liveMirror) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rtcapi_http_requests_total",
			Help: "HTTP requests by route and status code."}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rtcapi_http_request_duration_seconds",
			Help:    "Time to answer a request (for /v1/events: until the stream ended), by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10}}, []string{"route"}),
		sseClients: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rtcapi_sse_clients", Help: "Open event streams (GET /v1/events)."}),
		sseEvents:  prometheus.NewCounter(prometheus.CounterOpts{Name: "rtcapi_sse_events_total", Help: "Session events sent on event streams."}),
	}
	reg.MustRegister(m.requests, m.duration, m.sseClients, m.sseEvents,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rtcapi_live_sessions", Help: "Live sessions in this replica's mirror of rtc_sessions."},
			func() float64 { n, _ := live.counts(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rtcapi_live_participants", Help: "Participants (devices) of the live sessions."},
			func() float64 { _, n := live.counts(); return float64(n) }))
	return m
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and SetWriteDeadline.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) instrument(route string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h(sw, r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		s.metrics.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
		s.metrics.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// slots bounds concurrent event streams.
type slots struct{ ch chan struct{} }

func newSlots(n int) *slots { return &slots{ch: make(chan struct{}, n)} }

func (s *slots) TryAcquire() bool {
	select {
	case s.ch <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s *slots) Release() { <-s.ch }
