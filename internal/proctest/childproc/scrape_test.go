package childproc

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TestScrapeKeys: Scrape names every series as the text exposition writes
// it, so that callers look series up by the line they see on /metrics.
func TestScrapeKeys(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "t_total", Help: "h"}, []string{"kind", "hs"})
	c.WithLabelValues("a", "hs1").Add(3)
	c.WithLabelValues(`q"uo\te`, "hs2").Inc()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "t_gauge", Help: "h"})
	g.Set(-2.5)
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "t_seconds", Help: "h", Buckets: []float64{0.005, 0.1, 1}}, []string{"hs"})
	h.WithLabelValues("hs1").Observe(0.05)
	h.WithLabelValues("hs1").Observe(2)
	s := prometheus.NewSummary(prometheus.SummaryOpts{Name: "t_summary", Help: "h", Objectives: map[float64]float64{0.5: 0.05, 0.99: 0.001}})
	s.Observe(1)
	reg.MustRegister(c, g, h, s)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	got, err := Scrape(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	// The reference: every sample line of the exposition split at its
	// last space.
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	want := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		want[line[:i]] = v
	}
	if len(want) != 13 {
		t.Fatalf("the exposition has %d series, want 13: %v", len(want), want)
	}
	for k, v := range want {
		if gv, ok := got[k]; !ok || gv != v {
			t.Errorf("%s: got %v (present %v), want %v", k, gv, ok, v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("Scrape found %d series, the exposition has %d: %v", len(got), len(want), got)
	}
	for _, k := range []string{`t_total{hs="hs1",kind="a"}`, `t_seconds_bucket{hs="hs1",le="+Inf"}`, `t_summary{quantile="0.99"}`, "t_gauge"} {
		if _, ok := got[k]; !ok {
			t.Errorf("no series %s", k)
		}
	}
}
