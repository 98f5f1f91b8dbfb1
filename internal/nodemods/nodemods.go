// Package nodemods installs the pinned npm packages of a test's Node.js
// program (a package.json and its package-lock.json) into a cache shared by
// test runs: one directory per lock file's content, `npm ci` once, under a
// file lock, so concurrent test processes do not race. test/jsclient,
// test/nodeconsumer and the benchmark's matrix-js-sdk row use it.
package nodemods

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

var files = []string{"package.json", "package-lock.json"}

// CacheRoot is where the modules of the program named name are kept: the
// directory in the environment variable env when set, else
// $XDG_CACHE_HOME/rtc-sessions/<name>, else ~/.cache/rtc-sessions/<name>.
func CacheRoot(name, env string) (string, error) {
	if d := os.Getenv(env); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "rtc-sessions", name), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("cache directory: %w", err)
	}
	return filepath.Join(home, ".cache", "rtc-sessions", name), nil
}

// Dir is the directory below root for the package files in src (installed
// or not).
func Dir(src, root string) (string, [][]byte, error) {
	h := sha256.New()
	var contents [][]byte
	for _, name := range files {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			return "", nil, fmt.Errorf("read %s: %w", name, err)
		}
		contents = append(contents, b)
		h.Write(b)
		h.Write([]byte{0})
	}
	return filepath.Join(root, hex.EncodeToString(h.Sum(nil))[:16]), contents, nil
}

// Install runs `npm ci` for the package files in src into their directory
// below root, unless a previous run did, and returns that directory.
func Install(src, root string) (string, error) {
	if _, err := exec.LookPath("npm"); err != nil {
		return "", fmt.Errorf("npm not found (Debian's nodejs and npm; .ci/run installs them): %w", err)
	}
	dir, contents, err := Dir(src, root)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("cache directory: %w", err)
	}
	done := filepath.Join(dir, ".installed")
	if _, err := os.Stat(done); err == nil {
		return dir, nil
	}
	// One install at a time per machine (test processes of other packages
	// or runs may race for the same directory).
	lock, err := os.OpenFile(filepath.Join(root, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("cache lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("cache lock: %w", err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	if _, err := os.Stat(done); err == nil {
		return dir, nil
	}
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("cache directory: %w", err)
	}
	for i, name := range files {
		if err := os.WriteFile(filepath.Join(dir, name), contents[i], 0o644); err != nil {
			return "", fmt.Errorf("cache directory: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts")
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("npm ci in %s: %w\n%s", dir, err, out.String())
	}
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		return "", fmt.Errorf("cache directory: %w", err)
	}
	return dir, nil
}
