package ingest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/telemetry"
)

const usage = `usage:
  ingest [serve] [--config FILE]                 run the appservice listener and sync sources
  ingest replay [--config FILE] [--homeserver NAME] [--now] FILE.jsonl
                                                 publish a JSON-lines file of Matrix events to RTC_RAW
  ingest push --config FILE --to URL [--live] [--speed N] FILE.jsonl
                                                 act as the configured homeservers: send the file to an
                                                 ingest as appservice transactions (demo, smoke tests)
The configuration is YAML (configs/ingest.yaml) overridden by RTC_INGEST_* variables.
`

// Main is the ingest command line; it returns the exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && (args[0] == "serve" || args[0] == "replay" || args[0] == "push" || args[0] == "help" ||
		args[0] == "-h" || args[0] == "--help") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("ingest "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	cfgPath := fs.String("config", "", "YAML configuration file (default: built-in defaults)")
	hsName := fs.String("homeserver", "replay", "replay: the homeserver name to stamp on the events")
	now := fs.Bool("now", false, "replay: stamp received_at with the current time instead of origin_server_ts")
	to := fs.String("to", "", "push: the ingest's appservice base URL")
	live := fs.Bool("live", false, "push: shift the file's timestamps to now and keep its pacing")
	speed := fs.Float64("speed", 1, "push --live: play this many times faster")
	switch cmd {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := LoadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if cmd != "serve" {
		cfg.Log.Format = "console"
		if cfg.Log.Level == "info" {
			cfg.Log.Level = "warn"
		}
	}
	log, err := telemetry.NewLogger(cfg.Log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	defer func() { _ = log.Sync() }()

	switch cmd {
	case "serve":
		if fs.NArg() > 0 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		if err := Run(ctx, cfg, log, telemetry.NewRegistry(), nil); err != nil {
			log.Error("ingest failed", zap.Error(err))
			return 1
		}
		return 0
	case "replay":
		if fs.NArg() != 1 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		return replayCmd(ctx, cfg, fs.Arg(0), *hsName, *now, stdout, stderr, log)
	default: // push
		if fs.NArg() != 1 || *to == "" {
			fmt.Fprint(stderr, usage)
			return 2
		}
		hss, err := cfg.Secrets()
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		tokens := map[string]string{}
		for _, h := range hss {
			if h.HSToken != "" {
				tokens[h.Name] = h.HSToken
			}
		}
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		defer f.Close()
		if err := Push(ctx, f, PushOptions{URL: *to, Tokens: tokens, Live: *live, Speed: *speed,
			RetryFor: 30 * time.Second, Out: stdout}); err != nil {
			fmt.Fprintln(stderr, "push:", err)
			return 1
		}
		return 0
	}
}

func replayCmd(ctx context.Context, cfg Config, path, hs string, now bool, stdout, stderr io.Writer, log *zap.Logger) int {
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	defer f.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	nc, err := ConnectNATS(cctx, cfg.NATS, log)
	cancel()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer nc.Close()
	m := NewMetrics(nil)
	pub, err := NewPublisher(nc, cfg.Publish.PublisherConfig(), m, log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	cctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	err = EnsureRaw(cctx, pub, cfg, log, nil)
	cancel()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	var stamp func() int64
	if now {
		stamp = func() int64 { return time.Now().UnixMilli() }
	}
	st, err := Replay(ctx, f, path, pub, hs, stamp, stderr, m, log)
	fmt.Fprintf(stdout, "replay %s: %d lines, %d stored, %d duplicates, %d filtered, %d malformed\n",
		path, st.Lines, st.Stored, st.Duplicates, st.Filtered, st.Malformed)
	if err != nil {
		if !errors.Is(err, ErrMalformedLines) {
			fmt.Fprintln(stderr, err)
		}
		return 1
	}
	return 0
}
