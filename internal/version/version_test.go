package version

import (
	"os"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
)

func buildInfo(mainVersion string, settings map[string]string) func() (*debug.BuildInfo, bool) {
	return func() (*debug.BuildInfo, bool) {
		bi := &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Path: "github.com/rtcsessions/rtc-sessions", Version: mainVersion}}
		for k, v := range settings {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: k, Value: v})
		}
		return bi, true
	}
}

func TestResolve(t *testing.T) {
	vcs := map[string]string{"vcs.revision": "0123456789abcdef0123456789abcdef01234567", "vcs.time": "2026-11-30T10:00:00Z", "vcs.modified": "true"}
	noInfo := func() (*debug.BuildInfo, bool) { return nil, false }
	tests := []struct {
		name              string
		ldVersion, ldComm string
		read              func() (*debug.BuildInfo, bool)
		want              Info
	}{
		{"ldflags win over build info", "v1.2.3", "feedface", buildInfo("v0.9.0", vcs),
			Info{Version: "v1.2.3", Commit: "feedface", Time: "2026-11-30T10:00:00Z", Modified: true, GoVersion: "go1.99.1"}},
		{"build info of a vcs build", "", "", buildInfo("(devel)", vcs),
			Info{Version: "devel", Commit: "0123456789abcdef0123456789abcdef01234567", Time: "2026-11-30T10:00:00Z", Modified: true, GoVersion: "go1.99.1"}},
		{"go install module@version", "", "", buildInfo("v0.4.0", nil),
			Info{Version: "v0.4.0", Commit: Unknown, GoVersion: "go1.99.1"}},
		{"dirty describe", "v1.2.3-4-gabcdef0-dirty", "abc", buildInfo("(devel)", map[string]string{"vcs.modified": "false"}),
			Info{Version: "v1.2.3-4-gabcdef0-dirty", Commit: "abc", Modified: true, GoVersion: "go1.99.1"}},
		{"nothing known", "", "", noInfo, Info{Version: "devel", Commit: Unknown}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := resolve(tc.ldVersion, tc.ldComm, tc.read)
			if got.Platform == "" {
				t.Error("no platform")
			}
			if tc.want.GoVersion == "" { // from the runtime
				if !strings.HasPrefix(got.GoVersion, "go") {
					t.Errorf("go version %q", got.GoVersion)
				}
				tc.want.GoVersion = got.GoVersion
			}
			tc.want.Platform = got.Platform
			if got != tc.want {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	i := Info{Version: "v1.2.3", Commit: "abc", Time: "2026-11-30T10:00:00Z", Modified: true, GoVersion: "go1.26.0", Platform: "linux/amd64"}
	if got, want := i.String(), "v1.2.3 (commit abc, 2026-11-30T10:00:00Z, modified) go1.26.0 linux/amd64"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := Line("rtcctl"); !strings.HasPrefix(got, "rtcctl version ") || !strings.Contains(got, Get().GoVersion) {
		t.Errorf("Line: %q", got)
	}
}

// TestStampedByBuilds keeps the -X flags of `make build` and the Dockerfile
// pointing at the variables above: a renamed package or variable would make
// -X silently set nothing.
func TestStampedByBuilds(t *testing.T) {
	const pkg = "github.com/rtcsessions/rtc-sessions/internal/version"
	for _, file := range []string{"../../Makefile", "../../Dockerfile"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		for _, v := range []string{"version", "commit"} {
			re := regexp.MustCompile(`-X[ =]'?` + regexp.QuoteMeta(pkg+"."+v) + `=`)
			if !re.MatchString(text) && !strings.Contains(text, "$(VERSION_PKG)."+v+"=") && !strings.Contains(text, "${VERSION_PKG}."+v+"=") {
				t.Errorf("%s does not stamp %s.%s with -X", file, pkg, v)
			}
		}
		if !strings.Contains(text, pkg) {
			t.Errorf("%s does not name %s", file, pkg)
		}
	}
}
