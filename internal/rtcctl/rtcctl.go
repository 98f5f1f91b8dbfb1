// Package rtcctl is the rtcctl command line: it lists the live sessions,
// tails the session events, inspects what the aggregator holds for a room,
// and runs the offline simulator.
package rtcctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rtcsessions/rtc-sessions/internal/simulate"
)

const usage = `usage: rtcctl COMMAND [flags]

commands:
  sessions [--json]                         the live sessions (KV rtc_sessions)
  tail [--since TIME | --all] [--room ROOM_ID] [--app APP] [--kind KIND] [--json] [--max N]
                                            follow the session events (RTC_EVENTS); TIME is RFC 3339
                                            or a duration back from now (10m); default: from now
  room ROOM_ID [--json]                     what the aggregator holds for a room (KV rtc_rooms)
  simulate [--until MS] [--sessions] FILE.jsonl
                                            run the reducer offline over a JSON-lines file

common flags:
  --nats URL     NATS server (default nats://127.0.0.1:4222, the aggregator's embedded server)
  --creds FILE   NATS credentials file
`

// ErrUsage is returned for bad command lines (exit status 2).
var ErrUsage = errors.New("usage")

// Main runs rtcctl and returns the process exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	var err error
	switch cmd {
	case "simulate":
		return simulate.Run(ctx, args, stdout, stderr)
	case "sessions":
		err = sessionsCmd(ctx, args, stdout, stderr)
	case "tail":
		err = tailCmd(ctx, args, stdout, stderr)
	case "room":
		err = roomCmd(ctx, args, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "rtcctl: unknown command %q\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil, errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return 0
	case errors.Is(err, ErrUsage), errors.Is(err, flag.ErrHelp):
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "rtcctl:", err)
		}
		fmt.Fprint(stderr, usage)
		return 2
	default:
		fmt.Fprintln(stderr, "rtcctl:", err)
		return 1
	}
}

// common holds the connection flags every NATS command takes.
type common struct {
	url, creds string
	json       bool
}

func newFlags(name string, stderr io.Writer) (*flag.FlagSet, *common) {
	fs := flag.NewFlagSet("rtcctl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := &common{}
	fs.StringVar(&c.url, "nats", "nats://127.0.0.1:4222", "NATS server URL")
	fs.StringVar(&c.creds, "creds", "", "NATS credentials file")
	fs.BoolVar(&c.json, "json", false, "JSON output")
	return fs, c
}

// parse parses flags that may come before or after the positional
// arguments (rtcctl room ROOM_ID --json).
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUsage, err)
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func (c *common) connect(ctx context.Context) (*nats.Conn, jetstream.JetStream, error) {
	opts := []nats.Option{nats.Name("rtcctl"), nats.Timeout(5 * time.Second)}
	if c.creds != "" {
		opts = append(opts, nats.UserCredentials(c.creds))
	}
	nc, err := nats.Connect(c.url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", redact(c.url), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	_ = ctx
	return nc, js, nil
}

func redact(url string) string {
	if at := strings.LastIndex(url, "@"); at >= 0 {
		if s := strings.Index(url, "://"); s >= 0 && s < at {
			return url[:s+3] + "***" + url[at:]
		}
	}
	return url
}

// fmtMS renders a Matrix millisecond timestamp (0: "-").
func fmtMS(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}

// parseSince accepts RFC 3339 or a duration back from now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%w: --since %q: want RFC 3339 (2025-01-02T15:04:05Z) or a duration (10m)", ErrUsage, s)
	}
	return now.Add(-d), nil
}
