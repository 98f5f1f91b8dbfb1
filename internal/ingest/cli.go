package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/alecthomas/kong"
	"go.uber.org/zap"

	"github.com/rtcsessions/rtc-sessions/internal/config"
	"github.com/rtcsessions/rtc-sessions/internal/telemetry"
	"github.com/rtcsessions/rtc-sessions/internal/version"
)

const description = `Forward Matrix call-membership events from homeservers to the JetStream
stream RTC_RAW.

The configuration is YAML (configs/ingest.yaml), overridden by RTC_INGEST_*
variables (the YAML path in upper case: RTC_INGEST_NATS_URLS for nats.urls).
Long flags may also be written with one dash (-config FILE). Exit status:
0 ok, 1 error, 2 usage or configuration error.`

// CLI is the ingest's command line. Each command has its own flags: a flag
// of another command is a usage error, not silently ignored.
type CLI struct {
	Config  string             `name:"config" placeholder:"FILE" env:"RTC_INGEST_CONFIG" help:"YAML configuration file (default: built-in defaults)."`
	Version config.VersionFlag `name:"version" help:"Print the version, commit and Go version, and exit."`

	Serve  serveCmd   `cmd:"" default:"1" help:"Run the appservice listener and the sync sources (the default command)."`
	Replay replayCmd  `cmd:"" help:"Publish a JSON-lines file of Matrix events to RTC_RAW."`
	Push   pushCmd    `cmd:"" help:"Act as the configured homeservers: send a JSON-lines file to an ingest as appservice transactions (demo, smoke tests)."`
	Help   helpCmd    `cmd:"" help:"Show help for a command."`
	Ver    versionCmd `cmd:"" name:"version" help:"Print the version, commit and Go version."`
}

// cliEnv is what every command's Run receives.
type cliEnv struct {
	ctx            context.Context
	stdout, stderr io.Writer
}

// cmdError carries a command's exit status with the message already
// printed (or none to print).
type cmdError int

func (c cmdError) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// Main is the ingest command line; it returns the exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cli CLI
	kctx, code, ok := config.Parse("ingest", description, &cli, args, stdout, stderr,
		kong.Bind(&cliEnv{ctx: ctx, stdout: stdout, stderr: stderr}, &cli))
	if !ok {
		return code
	}
	var ce cmdError
	switch err := kctx.Run(); {
	case err == nil:
		return config.ExitOK
	case errors.As(err, &ce):
		return int(ce)
	default:
		fmt.Fprintln(stderr, "ingest:", err)
		return config.ExitError
	}
}

// load reads the configuration and builds the logger: the service logs as
// configured, the one-shot commands warnings and errors on the console.
func (c *CLI) load(e *cliEnv, service bool) (Config, *zap.Logger, error) {
	cfg, err := LoadConfig(c.Config)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return cfg, nil, cmdError(config.ExitUsage)
	}
	if !service {
		cfg.Log.Format = "console"
		if cfg.Log.Level == "info" {
			cfg.Log.Level = "warn"
		}
	}
	log, err := telemetry.NewLogger(cfg.Log)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return cfg, nil, cmdError(config.ExitUsage)
	}
	return cfg, log, nil
}

type serveCmd struct{}

func (serveCmd) Run(c *CLI, e *cliEnv) error {
	cfg, log, err := c.load(e, true)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	if err := Run(e.ctx, cfg, log, telemetry.NewRegistry(), nil); err != nil {
		log.Error("ingest failed", zap.Error(err))
		return cmdError(config.ExitError)
	}
	return nil
}

type replayCmd struct {
	Homeserver string `name:"homeserver" default:"replay" help:"The homeserver name to stamp on the events."`
	Now        bool   `name:"now" help:"Stamp received_at with the current time instead of origin_server_ts."`
	File       string `arg:"" name:"file" help:"JSON-lines file of Matrix events (one per line, optional top-level received_at in ms)."`
}

func (r *replayCmd) Run(c *CLI, e *cliEnv) error {
	cfg, log, err := c.load(e, false)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	if code := replayFile(e.ctx, cfg, r.File, r.Homeserver, r.Now, e.stdout, e.stderr, log); code != 0 {
		return cmdError(code)
	}
	return nil
}

type pushCmd struct {
	To    string  `name:"to" required:"" placeholder:"URL" help:"The ingest's appservice base URL."`
	Live  bool    `name:"live" help:"Shift the file's timestamps to now and keep its pacing."`
	Speed float64 `name:"speed" default:"1" placeholder:"N" help:"With --live: play this many times faster."`
	File  string  `arg:"" name:"file" help:"JSON-lines file of Matrix events, sent as the homeservers of their senders (their hs_token from the configuration)."`
}

func (p *pushCmd) Run(c *CLI, e *cliEnv) error {
	cfg, log, err := c.load(e, false)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	hss, err := cfg.Secrets()
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return cmdError(config.ExitUsage)
	}
	tokens := map[string]string{}
	for _, h := range hss {
		if h.HSToken != "" {
			tokens[h.Name] = h.HSToken
		}
	}
	f, err := os.Open(p.File)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return cmdError(config.ExitUsage)
	}
	defer f.Close()
	if err := Push(e.ctx, f, PushOptions{URL: p.To, Tokens: tokens, Live: p.Live, Speed: p.Speed,
		RetryFor: 30 * time.Second, Out: e.stdout}); err != nil {
		fmt.Fprintln(e.stderr, "push:", err)
		return cmdError(config.ExitError)
	}
	return nil
}

// helpCmd is `ingest help [COMMAND]`, the same as `ingest COMMAND --help`.
type helpCmd struct {
	Command []string `arg:"" optional:"" help:"The command to show help for."`
}

func (h *helpCmd) Run(kctx *kong.Context, e *cliEnv) error {
	target, err := kong.Trace(kctx.Kong, h.Command)
	if err == nil && target.Error != nil {
		err = target.Error
	}
	if err != nil {
		config.UsageError(e.stderr, "ingest", err, kctx)
		return cmdError(config.ExitUsage)
	}
	if len(h.Command) == 0 {
		// Trace selected the default command (serve): the help of the whole
		// program is the root's.
		target.Path = target.Path[:1]
	}
	return target.PrintUsage(false)
}

type versionCmd struct{}

func (versionCmd) Run(e *cliEnv) error {
	_, err := fmt.Fprintln(e.stdout, version.Line("ingest"))
	return err
}

// replayFile publishes a JSON-lines file to RTC_RAW and prints what became
// of its lines; it returns the exit status.
func replayFile(ctx context.Context, cfg Config, path, hs string, now bool, stdout, stderr io.Writer, log *zap.Logger) int {
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
