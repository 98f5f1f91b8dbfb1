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
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/aggregator"
	"github.com/rtcsessions/rtc-sessions/internal/config"
	"github.com/rtcsessions/rtc-sessions/internal/telemetry"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "aggregator:", err)
		os.Exit(1)
	}
}

func run() error {
	path := flag.String("config", "", "YAML configuration file (default: built-in defaults; env RTC_AGG_* overrides)")
	flag.Parse()

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
