// Command rtcctl inspects a running rtc-sessions deployment: live sessions,
// session events, a room's aggregator state; and runs the offline simulator.
// See docs/rtcctl.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/rtcsessions/rtc-sessions/internal/rtcctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := rtcctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
