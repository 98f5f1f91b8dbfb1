package e2etest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// RTCCtlJSON runs rtcctl (bin, the binary operators use) against the
// nats-server at server with args, and decodes its standard output into v.
func RTCCtlJSON(ctx context.Context, bin, server string, v any, args ...string) error {
	cmd := exec.CommandContext(ctx, bin, append([]string{"--server", server}, args...)...)
	// Only --server: a developer's NATS context or credentials must not
	// reach it.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NATS_") && !strings.HasPrefix(kv, "RTC_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("rtcctl %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), v); err != nil {
		return fmt.Errorf("rtcctl %s: decode its output: %w\n%s", strings.Join(args, " "), err, stdout.String())
	}
	return nil
}
