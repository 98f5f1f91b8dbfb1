package childproc

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// JetStreamReady connects to the NATS server at url and asks JetStream
// for the account info: nil once the server stores messages.
func JetStreamReady(url string) error {
	nc, err := nats.Connect(url, nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream account info: %w", err)
	}
	return nil
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

// HTTPOK is nil when GET url answers 200 (a /readyz or /healthz probe).
func HTTPOK(url string) error {
	resp, err := httpClient.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// Scrape reads the Prometheus text exposition at url into series ("name"
// or `name{label="v",...}`, as the exposition writes them; a histogram's
// name_bucket{...,le="x"}, name_sum and name_count) -> value.
func Scrape(url string) (map[string]float64, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", url, err)
	}
	out := map[string]float64{}
	for name, mf := range families {
		for _, m := range mf.GetMetric() {
			labels := m.GetLabel()
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[seriesKey(name, labels, "", 0)] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[seriesKey(name, labels, "", 0)] = m.GetGauge().GetValue()
			case dto.MetricType_UNTYPED:
				out[seriesKey(name, labels, "", 0)] = m.GetUntyped().GetValue()
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				for _, q := range s.GetQuantile() {
					out[seriesKey(name, labels, "quantile", q.GetQuantile())] = q.GetValue()
				}
				out[seriesKey(name+"_sum", labels, "", 0)] = s.GetSampleSum()
				out[seriesKey(name+"_count", labels, "", 0)] = float64(s.GetSampleCount())
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					out[seriesKey(name+"_bucket", labels, "le", b.GetUpperBound())] = float64(b.GetCumulativeCount())
				}
				out[seriesKey(name+"_sum", labels, "", 0)] = h.GetSampleSum()
				out[seriesKey(name+"_count", labels, "", 0)] = float64(h.GetSampleCount())
			}
		}
	}
	return out, nil
}

// seriesKey writes a series as the text exposition does: name{l1="v1",...},
// with the bucket bound or quantile (extra = bound; extra "" for none) last.
func seriesKey(name string, labels []*dto.LabelPair, extra string, bound float64) string {
	if len(labels) == 0 && extra == "" {
		return name
	}
	var b strings.Builder
	b.WriteString(name)
	sep := "{"
	for _, l := range labels {
		fmt.Fprintf(&b, "%s%s=%q", sep, l.GetName(), l.GetValue())
		sep = ","
	}
	if extra != "" {
		f := strconv.FormatFloat(bound, 'g', -1, 64)
		if math.IsInf(bound, +1) {
			f = "+Inf"
		}
		fmt.Fprintf(&b, "%s%s=%q", sep, extra, f)
	}
	b.WriteByte('}')
	return b.String()
}
