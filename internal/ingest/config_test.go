package ingest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigErrorsReportedTogether(t *testing.T) {
	c := DefaultConfig()
	c.Topology.Mode = "maybe"
	c.Publish.MaxInFlight = 0
	c.Homeservers = []HomeserverConfig{{Name: "hs1"}, {Name: "hs1", HSTokenFile: "x"}, {Name: "bad name!", URL: "ftp://x"}}
	c.Homeservers[0].Sync.Enabled = true
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"topology.mode", "max_in_flight", "used twice", "bad name!", "ftp://x", "sync needs url", "access_token_file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestExampleConfigsLoad(t *testing.T) {
	for _, p := range []string{"../../configs/ingest.yaml", "../../configs/demo/ingest.yaml"} {
		c, err := LoadConfig(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if len(c.Homeservers) == 0 {
			t.Errorf("%s: no homeservers", p)
		}
	}
}

func TestSecretsDuplicateToken(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "tok")
	_ = os.WriteFile(f, []byte("same\n"), 0o600)
	c := DefaultConfig()
	c.Homeservers = []HomeserverConfig{{Name: "a", HSTokenFile: f}, {Name: "b", HSTokenFile: f}, {Name: "c", HSTokenFile: filepath.Join(dir, "missing")}}
	_, err := c.Secrets()
	if err == nil || !strings.Contains(err.Error(), "same hs_token as a") || !strings.Contains(err.Error(), "homeserver c") {
		t.Fatalf("got %v", err)
	}
	if strings.Contains(err.Error(), "same\n") {
		t.Fatal("secret leaked into the error")
	}
}
