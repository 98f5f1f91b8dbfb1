// Command ingest forwards Matrix call-membership events from homeservers
// (appservice transactions, a bot's /sync, or a JSON-lines file) to the
// JetStream stream RTC_RAW. Its command line is internal/ingest's Main. See
// docs/ingest.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/rtcsessions/rtc-sessions/internal/ingest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ingest.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
