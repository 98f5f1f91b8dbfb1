// Command aggregator computes MatrixRTC sessions from RTC_RAW and publishes
// them to RTC_EVENTS and the rtc_sessions bucket. With no NATS url
// configured it starts an embedded nats-server, so that `go run
// ./cmd/aggregator` alone is a working service. See docs/aggregator.md.
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

	"github.com/rtcsessions/rtc-sessions/internal/aggregator"
	"github.com/rtcsessions/rtc-sessions/internal/config"
	"github.com/rtcsessions/rtc-sessions/internal/telemetry"
	"github.com/rtcsessions/rtc-sessions/internal/version"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "aggregator:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("aggregator", flag.ContinueOnError)
	path := fs.String("config", "", "YAML configuration file (default: built-in defaults; env RTC_AGG_* overrides)")
	showVersion := fs.Bool("version", false, "print the version, commit and Go version, and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if *showVersion {
		_, err := fmt.Fprintln(stdout, version.Line("aggregator"))
		return err
	}

	cfg := aggregator.DefaultConfig()
	if err := config.Load(*path, aggregator.EnvPrefix, &cfg); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	log, err := telemetry.NewLogger(cfg.Log)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err = aggregator.Run(ctx, cfg, log, telemetry.NewRegistry())
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error("aggregator failed", zap.Error(err))
		return err
	}
	return nil
}
