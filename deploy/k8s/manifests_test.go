// Package k8s holds the Kubernetes manifests; this test keeps them in step
// with the code: the embedded configurations must load through the real
// loaders and validate, and every file kustomize names must exist and parse.
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

// onlyMissingSecrets passes when every validation problem is a secret file
// that exists only inside the cluster.
func onlyMissingSecrets(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		if line != "" && !strings.Contains(line, "/run/secrets/") {
			t.Errorf("configuration problem: %s", line)
		}
	}
}

func TestAggregatorConfigLoads(t *testing.T) {
	cfg := aggregator.DefaultConfig()
	if err := config.Load("base/config/aggregator.yaml", aggregator.EnvPrefix, &cfg); err != nil {
		t.Fatal(err)
	}
	onlyMissingSecrets(t, cfg.Validate())
	if len(cfg.NATS.URLs) == 0 || cfg.Topology.Replicas != 3 {
		t.Fatalf("the cluster config must use the NATS cluster with R3: %+v", cfg.NATS.URLs)
	}
}

func TestIngestConfigLoads(t *testing.T) {
	cfg, err := ingest.LoadConfig("base/config/ingest.yaml")
	if err != nil {
		onlyMissingSecrets(t, err)
	}
	agg := aggregator.DefaultConfig()
	if err := config.Load("base/config/aggregator.yaml", aggregator.EnvPrefix, &agg); err != nil {
		t.Fatal(err)
	}
	if err == nil && cfg.Topology.Partitions != agg.Topology.Partitions {
		t.Fatalf("ingest partitions %d != aggregator partitions %d", cfg.Topology.Partitions, agg.Topology.Partitions)
	}
}

// TestAPIConfigLoads: rtcapi's cluster configuration loads and validates,
// and every token file it names is in the mounted Secret's directory.
func TestAPIConfigLoads(t *testing.T) {
	cfg, err := api.LoadConfig("base/config/rtcapi.yaml")
	if err != nil {
		onlyMissingSecrets(t, err)
	}
	if len(cfg.NATS.URLs) == 0 || cfg.Auth.AllowAnonymous || len(cfg.Auth.Tokens) == 0 {
		t.Fatalf("the cluster config must use the NATS cluster, tokens and no anonymous access: %+v", cfg)
	}
	for _, tok := range cfg.Auth.Tokens {
		if !strings.HasPrefix(tok.File, "/run/secrets/rtc-api/") {
			t.Errorf("token %s: file %s is not in the Secret rtc-api-tokens (mounted at /run/secrets/rtc-api)", tok.Name, tok.File)
		}
	}
}

func TestKustomizationFilesParse(t *testing.T) {
	var k struct {
		Resources          []string `yaml:"resources"`
		ConfigMapGenerator []struct {
			Files []string `yaml:"files"`
		} `yaml:"configMapGenerator"`
	}
	b, err := os.ReadFile("base/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	for _, g := range k.ConfigMapGenerator {
		for _, f := range g.Files {
			_, path, _ := strings.Cut(f, "=")
			if _, err := os.Stat(filepath.Join("base", path)); err != nil {
				t.Errorf("configMapGenerator: %v", err)
			}
		}
	}
	kinds := map[string]int{}
	for _, r := range k.Resources {
		b, err := os.ReadFile(filepath.Join("base", r))
		if err != nil {
			t.Fatalf("resource %s: %v", r, err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var doc struct {
				APIVersion string `yaml:"apiVersion"`
				Kind       string `yaml:"kind"`
				Metadata   struct {
					Name string `yaml:"name"`
				} `yaml:"metadata"`
			}
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", r, err)
			}
			if doc.APIVersion == "" || doc.Kind == "" || doc.Metadata.Name == "" {
				t.Errorf("%s: a document without apiVersion, kind or name", r)
			}
			kinds[doc.Kind]++
		}
	}
	for _, want := range []string{"Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy", "Service"} {
		if kinds[want] == 0 {
			t.Errorf("no %s", want)
		}
	}
}
