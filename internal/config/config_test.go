package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type sample struct {
	Name string `yaml:"name"`
	NATS struct {
		URLs []string      `yaml:"urls"`
		Wait time.Duration `yaml:"wait"`
	} `yaml:"nats"`
	Count int  `yaml:"count"`
	On    bool `yaml:"on"`
}

func TestLoadFileThenEnv(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte("name: file\ncount: 3\nnats:\n  wait: 2s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := sample{Name: "default", Count: 1}
	t.Setenv("T_NATS_URLS", "nats://a:1, nats://b:2")
	t.Setenv("T_ON", "true")
	if err := Load(path, "T", &s); err != nil {
		t.Fatal(err)
	}
	if s.Name != "file" || s.Count != 3 || !s.On || s.NATS.Wait != 2*time.Second ||
		len(s.NATS.URLs) != 2 || s.NATS.URLs[1] != "nats://b:2" {
		t.Fatalf("got %+v", s)
	}
}

func TestUnknownFieldRejected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	_ = os.WriteFile(path, []byte("nmae: typo\n"), 0o600)
	var s sample
	err := Load(path, "T", &s)
	if err == nil || !strings.Contains(err.Error(), "nmae") {
		t.Fatalf("want error naming the unknown field, got %v", err)
	}
}

func TestEnvErrorsReportedTogether(t *testing.T) {
	env := map[string]string{"T_COUNT": "x", "T_ON": "maybe", "T_NATS_WAIT": "soon"}
	var s sample
	err := ApplyEnv("T", &s, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err == nil {
		t.Fatal("want error")
	}
	for _, k := range []string{"T_COUNT", "T_ON", "T_NATS_WAIT"} {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("error does not name %s: %v", k, err)
		}
	}
}

func TestEmptyFileKeepsDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	_ = os.WriteFile(path, nil, 0o600)
	s := sample{Name: "default"}
	if err := Load(path, "T", &s); err != nil || s.Name != "default" {
		t.Fatalf("got %+v, %v", s, err)
	}
}

// Inner is embedded inline, as the aggregator embeds topology.Config in its
// topology section.
type Inner struct {
	Size int           `yaml:"size"`
	Age  time.Duration `yaml:"age"`
}

type withInline struct {
	Section struct {
		Mode  string `yaml:"mode"`
		Inner `yaml:",inline"`
	} `yaml:"section"`
}

// TestInlineStruct: the fields of an inline embedded struct are the
// section's own, in the file and in the environment.
func TestInlineStruct(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("section:\n  mode: x\n  size: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var s withInline
	t.Setenv("T_SECTION_AGE", "2s")
	if err := Load(path, "T", &s); err != nil {
		t.Fatal(err)
	}
	if s.Section.Mode != "x" || s.Section.Size != 3 || s.Section.Age != 2*time.Second {
		t.Fatalf("got %+v", s.Section)
	}
}
