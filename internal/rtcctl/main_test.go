package rtcctl

import (
	"fmt"
	"os"
	"testing"
)

// TestMain keeps the tests away from the developer's NATS setup: no NATS_*
// variables, and a HOME without NATS contexts (a test that needs one makes
// its own).
func TestMain(m *testing.M) {
	for _, v := range []string{"NATS_URL", "NATS_CONTEXT", "NATS_CREDS", "NATS_NKEY", "NATS_USER", "NATS_PASSWORD",
		"NATS_CERT", "NATS_KEY", "NATS_CA", "NATS_INBOX_PREFIX", "NATS_TIMEOUT", "XDG_CONFIG_HOME"} {
		os.Unsetenv(v)
	}
	home, err := os.MkdirTemp("", "rtcctl-home")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("HOME", home)
	code := m.Run()
	os.RemoveAll(home)
	os.Exit(code)
}
