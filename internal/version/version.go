// Package version says which build a binary is: the version and commit
// stamped at build time with -ldflags (make build, the Dockerfile), or, for a
// plain `go build` / `go install`, what the Go toolchain recorded in the
// binary (module version, vcs.revision, vcs.time, vcs.modified).
//
//	go build -ldflags "-X github.com/rtcsessions/rtc-sessions/internal/version.version=v1.2.3 \
//	  -X github.com/rtcsessions/rtc-sessions/internal/version.commit=$(git rev-parse HEAD)" ./cmd/...
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Stamped with -ldflags -X; empty in a build that did not stamp them.
var (
	version string
	commit  string
)

// Unknown stands for a value neither the build flags nor the build info hold.
const Unknown = "unknown"

// Info describes the running binary.
type Info struct {
	Version   string `json:"version"`    // v1.2.3, v1.2.3-4-gabcdef0-dirty, or "devel"
	Commit    string `json:"commit"`     // full revision, or Unknown
	Time      string `json:"time"`       // commit time (vcs.time), "" when unknown
	Modified  bool   `json:"modified"`   // built from a work tree with uncommitted changes
	GoVersion string `json:"go_version"` // go1.26.0
	Platform  string `json:"platform"`   // linux/amd64
}

// Get returns the build information of the running binary.
func Get() Info { return resolve(version, commit, debug.ReadBuildInfo) }

// resolve prefers the values stamped by -ldflags and falls back to the
// build info the toolchain embeds.
func resolve(ldVersion, ldCommit string, read func() (*debug.BuildInfo, bool)) Info {
	i := Info{Version: ldVersion, Commit: ldCommit, GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := read(); ok && bi != nil {
		if bi.GoVersion != "" {
			i.GoVersion = bi.GoVersion
		}
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version // go install module@v1.2.3
		}
		if i.Commit == "" {
			i.Commit = settings["vcs.revision"]
		}
		i.Time = settings["vcs.time"]
		i.Modified = settings["vcs.modified"] == "true"
	}
	// git describe --dirty says so in the version itself.
	if strings.HasSuffix(ldVersion, "-dirty") {
		i.Modified = true
	}
	if i.Version == "" {
		i.Version = "devel"
	}
	if i.Commit == "" {
		i.Commit = Unknown
	}
	return i
}

// String is the one line `--version` prints after the program name.
func (i Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (commit %s", i.Version, i.Commit)
	if i.Time != "" {
		fmt.Fprintf(&b, ", %s", i.Time)
	}
	if i.Modified {
		b.WriteString(", modified")
	}
	fmt.Fprintf(&b, ") %s %s", i.GoVersion, i.Platform)
	return b.String()
}

// Line is what every binary prints for --version: "NAME version INFO".
func Line(program string) string { return program + " version " + Get().String() }
