package k8s

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/rtcsessions/rtc-sessions/internal/aggregator"
	"github.com/rtcsessions/rtc-sessions/internal/api"
	"github.com/rtcsessions/rtc-sessions/internal/config"
	"github.com/rtcsessions/rtc-sessions/internal/ingest"
)

// TestSyncBotsOnlyInIngestSync: the appservice Deployment (any number of
// replicas) runs no sync bot; rtc-ingest-sync runs the bots, no listener,
// with the same partitions as the aggregator, through the real loader.
func TestSyncBotsOnlyInIngestSync(t *testing.T) {
	as, err := ingest.LoadConfig("base/config/ingest.yaml")
	if err != nil {
		onlyMissingSecrets(t, err)
	}
	for _, h := range as.Homeservers {
		if h.Sync.Enabled {
			t.Errorf("base/config/ingest.yaml: homeserver %s has a sync bot: every rtc-ingest replica would run it; put it in components/ingest-sync", h.Name)
		}
	}
	sync, err := ingest.LoadConfig("components/ingest-sync/config/ingest-sync.yaml")
	if err != nil {
		onlyMissingSecrets(t, err)
	}
	if sync.Appservice.ListenAddr != "" {
		t.Errorf("ingest-sync: appservice.listen_addr %q: want none", sync.Appservice.ListenAddr)
	}
	bots := 0
	for _, h := range sync.Homeservers {
		if h.Sync.Enabled {
			bots++
		}
	}
	if bots == 0 || !filepath.IsAbs(sync.Sync.StateDir) {
		t.Errorf("ingest-sync: %d sync bots, state_dir %q: want at least one bot and an absolute directory (a mounted volume)", bots, sync.Sync.StateDir)
	}
	agg := aggregator.DefaultConfig()
	if err := config.Load("base/config/aggregator.yaml", aggregator.EnvPrefix, &agg); err != nil {
		t.Fatal(err)
	}
	if sync.Topology.Partitions != agg.Topology.Partitions {
		t.Errorf("ingest-sync partitions %d != aggregator partitions %d", sync.Topology.Partitions, agg.Topology.Partitions)
	}
}

// envOf lists the literal environment variables of every container in the
// Deployments (strategic-merge patches) of file.
func envOf(t *testing.T, file string) map[string]map[string]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var doc struct {
			Kind     string
			Metadata struct{ Name string }
			Spec     struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Env []struct{ Name, Value string }
						}
					}
				}
			}
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, c := range doc.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				if strings.HasPrefix(e.Name, "RTC_") {
					if out[doc.Metadata.Name] == nil {
						out[doc.Metadata.Name] = map[string]string{}
					}
					out[doc.Metadata.Name][e.Name] = e.Value
				}
			}
		}
	}
}

// TestOverlayEnvironmentIsReal: every RTC_* variable an overlay sets is one
// the service reads (a misspelt one would be ignored silently) and its value
// is accepted.
func TestOverlayEnvironmentIsReal(t *testing.T) {
	files := []string{"overlays/dev/deployments.yaml", "overlays/production/deployments.yaml", "overlays/production/ingest-sync.yaml"}
	seen := 0
	for _, file := range files {
		for deploy, env := range envOf(t, file) {
			var prefix string
			var dst any
			switch deploy {
			case "rtc-aggregator":
				c := aggregator.DefaultConfig()
				prefix, dst = aggregator.EnvPrefix, &c
			case "rtc-ingest", "rtc-ingest-sync":
				c := ingest.DefaultConfig()
				prefix, dst = ingest.EnvPrefix, &c
			case "rtc-api":
				c := api.DefaultConfig()
				prefix, dst = api.EnvPrefix, &c
			default:
				t.Fatalf("%s: unexpected Deployment %s", file, deploy)
			}
			read := map[string]bool{}
			lookup := func(name string) (string, bool) {
				read[name] = true
				v, ok := env[name]
				return v, ok
			}
			if err := config.ApplyEnv(prefix, dst, lookup); err != nil {
				t.Errorf("%s: %s: %v", file, deploy, err)
			}
			for name := range env {
				seen++
				if !read[name] {
					t.Errorf("%s: %s sets %s, which the service does not read", file, deploy, name)
				}
			}
		}
	}
	if seen == 0 {
		t.Fatal("the overlays set no RTC_* variable: the test reads the wrong files")
	}
}
