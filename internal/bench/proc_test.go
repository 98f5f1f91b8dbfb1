package bench

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func TestOwnedPartitions(t *testing.T) {
	withGauge := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "rtc_aggregator_owned_partitions", Help: "h"})
	g.Set(7)
	other := prometheus.NewGauge(prometheus.GaugeOpts{Name: "rtc_aggregator_owned_partitions_total", Help: "h"})
	other.Set(3)
	withGauge.MustRegister(g, other)
	without := prometheus.NewRegistry()
	without.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "rtc_other", Help: "h"}))
	tests := []struct {
		name    string
		handler http.Handler
		want    int
		ok      bool
	}{
		{"served", promhttp.HandlerFor(withGauge, promhttp.HandlerOpts{}), 7, true},
		{"not yet", promhttp.HandlerFor(without, promhttp.HandlerOpts{}), 0, false},
		{"not an exposition", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("{not text")) }), 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			a := &aggregatorProc{metrics: srv.URL + "/metrics"}
			if n, ok := a.ownedPartitions(); n != tc.want || ok != tc.ok {
				t.Errorf("ownedPartitions() = %d, %v; want %d, %v", n, ok, tc.want, tc.ok)
			}
		})
	}
	a := &aggregatorProc{metrics: "http://127.0.0.1:1/metrics"}
	if _, ok := a.ownedPartitions(); ok {
		t.Error("ok without a server")
	}
}
