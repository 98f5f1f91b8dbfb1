// Command rtcapi is the read-only HTTP API of rtc-sessions: live sessions,
// the history of ended sessions and session events (Server-Sent Events),
// with a live-calls page at /. See docs/api.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/api"
	"github.com/rtcsessions/rtc-sessions/internal/telemetry"
	"github.com/rtcsessions/rtc-sessions/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses: 0 ok, 1 error, 2 usage or configuration error.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "--version" || args[0] == "-version" || args[0] == "version") {
		fmt.Fprintln(stdout, version.Line("rtcapi"))
		return exitOK
	}
	fs := flag.NewFlagSet("rtcapi", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", os.Getenv("RTC_API_CONFIG"), "YAML configuration file (default: built-in defaults; env RTC_API_CONFIG)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: rtcapi [-config FILE] | --version\n\n"+
			"Serve the read-only HTTP API of rtc-sessions and its live-calls page.\n"+
			"The configuration is YAML (configs/rtcapi.yaml), overridden by RTC_API_*\n"+
			"variables (the YAML path in upper case: RTC_API_NATS_URLS for nats.urls).\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "rtcapi: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitUsage
	}
	cfg, err := api.LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "rtcapi: %v\n", err)
		return exitUsage
	}
	if _, err := api.NewAuthenticator(cfg.Auth); err != nil { // a missing token file is a configuration error
		fmt.Fprintf(stderr, "rtcapi: %v\n", err)
		return exitUsage
	}
	log, err := telemetry.NewLogger(cfg.Log)
	if err != nil {
		fmt.Fprintf(stderr, "rtcapi: %v\n", err)
		return exitUsage
	}
	defer func() { _ = log.Sync() }()
	log.Info("rtcapi starting", zap.String("version", version.Line("rtcapi")), zap.String("listen", cfg.Listen))
	if err := api.Run(ctx, cfg, log, nil, nil); err != nil {
		log.Error("rtcapi failed", zap.Error(err))
		return exitError
	}
	return exitOK
}
