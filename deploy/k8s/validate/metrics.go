package validate

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"
)

var (
	constRe      = regexp.MustCompile(`const\s+(\w+)\s*=\s*"([a-z_:]+)"`)
	nsNameRe     = regexp.MustCompile(`Namespace:\s*(\w+),\s*Name:\s*"([a-z_]+)"`)
	fullNameRe   = regexp.MustCompile(`Name:\s*"(rtc_[a-z_]+)"`)
	histogramRe  = regexp.MustCompile(`(?s)HistogramOpts\{[^}]*?Name:\s*"([a-z_]+)"`)
	collectorsRe = regexp.MustCompile(`collectors\.New(Go|Process)Collector`)
)

// Metrics is the set of metric names the Go code exports, found by reading
// its source (a grep, not a build): prometheus.*Opts literals with a full
// Name or a Namespace constant plus Name, histograms with their _bucket,
// _sum and _count series, and the Go and process collectors' names when the
// code registers them.
type Metrics struct {
	Names     map[string]bool
	goColl    bool
	procColl  bool
	FilesRead int
}

// ScanMetrics reads every non-test .go file under the directories dirs.
func ScanMetrics(dirs ...string) (*Metrics, error) {
	m := &Metrics{Names: map[string]bool{}}
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("read %s: %w", path, err)
			}
			m.FilesRead++
			m.scan(string(b))
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("scan %s: %w", dir, err)
		}
	}
	return m, nil
}

func (m *Metrics) scan(src string) {
	consts := map[string]string{}
	for _, c := range constRe.FindAllStringSubmatch(src, -1) {
		consts[c[1]] = c[2]
	}
	for _, n := range nsNameRe.FindAllStringSubmatch(src, -1) {
		if ns, ok := consts[n[1]]; ok {
			m.Names[ns+"_"+n[2]] = true
		}
	}
	for _, n := range fullNameRe.FindAllStringSubmatch(src, -1) {
		m.Names[n[1]] = true
	}
	for _, h := range histogramRe.FindAllStringSubmatch(src, -1) {
		// The literal's Name is either full or behind a Namespace constant.
		for name := range m.Names {
			if name == h[1] || strings.HasSuffix(name, "_"+h[1]) {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					m.Names[name+s] = true
				}
			}
		}
	}
	for _, c := range collectorsRe.FindAllStringSubmatch(src, -1) {
		switch c[1] {
		case "Go":
			m.goColl = true
		case "Process":
			m.procColl = true
		}
	}
}

// Known reports whether name is exported by the code: one of its own
// metrics, or one of the Go or process collectors' when registered.
func (m *Metrics) Known(name string) bool {
	switch {
	case m.Names[name]:
		return true
	case m.goColl && strings.HasPrefix(name, "go_"):
		return true
	case m.procColl && strings.HasPrefix(name, "process_"):
		return true
	}
	return false
}

// External are series that Prometheus or kube-state-metrics provide, not the
// code; a rule or panel may use only these besides the code's own.
var External = map[string]bool{
	"up":                    true, // Prometheus, per scrape target
	"kube_pod_status_ready": true, // kube-state-metrics
}

// grafanaVars replaces the dashboard's variables by values PromQL accepts.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "5m",
	"$__interval", "1m",
	"$__range", "1h",
	"${datasource}", "prometheus",
	"$namespace", "rtc-sessions",
)

// ExprMetrics parses a PromQL expression (Grafana variables substituted) and
// returns the metric names its selectors use.
func ExprMetrics(p parser.Parser, expr string) ([]string, error) {
	e, err := p.ParseExpr(grafanaVars.Replace(expr))
	if err != nil {
		return nil, fmt.Errorf("parse %q: %w", expr, err)
	}
	var names []string
	var missing error
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		switch s := node.(type) {
		case *parser.VectorSelector:
			if s.Name == "" {
				missing = fmt.Errorf("%q: a selector without a metric name (%s)", expr, s)
			}
			names = append(names, s.Name)
		case *parser.MatrixSelector:
			// its VectorSelector is visited on its own
		}
		return nil
	})
	return names, missing
}
