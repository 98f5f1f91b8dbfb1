package telemetry

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rtcsessions/rtc-sessions/internal/version"
)

func TestBuildInfoOnEveryRegistry(t *testing.T) {
	i := version.Get()
	want := `# HELP rtc_build_info Build information of this binary: constant 1 with version, commit and go_version labels.
# TYPE rtc_build_info gauge
rtc_build_info{commit="` + i.Commit + `",go_version="` + i.GoVersion + `",version="` + i.Version + `"} 1
`
	if err := testutil.GatherAndCompare(NewRegistry(), strings.NewReader(want), "rtc_build_info"); err != nil {
		t.Fatal(err)
	}
	// And it is served on /metrics.
	if code, body := get(t, Handler(NewRegistry(), NewHealth()), "/metrics"); code != 200 || !strings.Contains(body, `rtc_build_info{commit="`+i.Commit+`"`) {
		t.Fatalf("/metrics: %d", code)
	}
}

func TestBuildInfoLabels(t *testing.T) {
	c := BuildInfo(version.Info{Version: "v1.2.3", Commit: "abc", GoVersion: "go1.26.0"})
	want := `# HELP rtc_build_info Build information of this binary: constant 1 with version, commit and go_version labels.
# TYPE rtc_build_info gauge
rtc_build_info{commit="abc",go_version="go1.26.0",version="v1.2.3"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
