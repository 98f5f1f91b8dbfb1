// Command ingest forwards Matrix call-membership events from homeservers
// (appservice transactions, a bot's /sync, or a JSON-lines file) to the
// JetStream stream RTC_RAW. See docs/ingest.md.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/rtcsessions/rtc-sessions/internal/ingest"
	"github.com/rtcsessions/rtc-sessions/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is ingest.Main, plus --version (also `ingest version`).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "--version" || args[0] == "-version" || args[0] == "version") {
		fmt.Fprintln(stdout, version.Line("ingest"))
		return 0
	}
	return ingest.Main(ctx, args, stdout, stderr)
}
