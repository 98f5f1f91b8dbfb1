// Command aggregator computes MatrixRTC sessions from RTC_RAW and publishes
// them to RTC_EVENTS and the rtc_sessions bucket. With no NATS url
// configured it starts an embedded nats-server, so that `go run
// ./cmd/aggregator` alone is a working service. See docs/aggregator.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/aggregator"
	"github.com/rtcsessions/rtc-sessions/internal/config"
	"github.com/rtcsessions/rtc-sessions/internal/telemetry"
)

const description = `Compute MatrixRTC sessions from RTC_RAW and publish them to RTC_EVENTS and
the rtc_sessions bucket. With no NATS url configured it starts an embedded
nats-server.

The configuration is YAML (configs/aggregator.yaml), overridden by RTC_AGG_*
variables (the YAML path in upper case: RTC_AGG_NATS_URLS for nats.urls).
Long flags may also be written with one dash (-config FILE). Exit status:
0 ok, 1 error, 2 usage or configuration error.`

type cli struct {
	Config  string             `name:"config" placeholder:"FILE" env:"RTC_AGG_CONFIG" help:"YAML configuration file (default: built-in defaults)."`
	Version config.VersionFlag `name:"version" help:"Print the version, commit and Go version, and exit."`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the aggregator's command line; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c cli
	if _, code, ok := config.Parse("aggregator", description, &c, args, stdout, stderr); !ok {
		return code
	}
	cfg := aggregator.DefaultConfig()
	if err := config.Load(c.Config, aggregator.EnvPrefix, &cfg); err != nil {
		fmt.Fprintln(stderr, "aggregator:", err)
		return config.ExitUsage
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "aggregator: invalid configuration:\n%v\n", err)
		return config.ExitUsage
	}
	log, err := telemetry.NewLogger(cfg.Log)
	if err != nil {
		fmt.Fprintln(stderr, "aggregator:", err)
		return config.ExitUsage
	}
	defer func() { _ = log.Sync() }()
	if err := aggregator.Run(ctx, cfg, log, telemetry.NewRegistry()); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("aggregator failed", zap.Error(err))
		fmt.Fprintln(stderr, "aggregator:", err)
		return config.ExitError
	}
	return config.ExitOK
}
