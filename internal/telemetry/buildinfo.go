package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rtcsessions/rtc-sessions/internal/version"
)

// BuildInfo is the rtc_build_info gauge: always 1, its labels say which build
// serves (version, commit, Go version), so that dashboards and alerts can
// tell versions apart during a rollout.
func BuildInfo(i version.Info) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "rtc_build_info",
		Help: "Build information of this binary: constant 1 with version, commit and go_version labels.",
		ConstLabels: prometheus.Labels{
			"version":    i.Version,
			"commit":     i.Commit,
			"go_version": i.GoVersion,
		},
	})
	g.Set(1)
	return g
}
