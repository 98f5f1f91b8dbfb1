// Package rtcctl is the rtcctl command line: it lists the live sessions,
// tails the session events, shows ended sessions, inspects what the
// aggregator holds for a room, its workers and its dead-letter queue, asks the
// ingest to reconcile a room, prints a room's subjects, decodes payloads, and
// runs the offline simulator. It follows the nats CLI's conventions (connection
// flags, NATS_URL, NATS contexts) and is built with kong.
package rtcctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/rtcsessions/rtc-sessions/internal/rtcctl/safetext"
	"github.com/rtcsessions/rtc-sessions/internal/simulate"
	"github.com/rtcsessions/rtc-sessions/internal/version"
)

// ErrUsage is returned for bad command lines (exit status 2).
var ErrUsage = errors.New("usage")

// CLI is rtcctl's command line.
type CLI struct {
	ConnFlags
	Version versionFlag `name:"version" help:"Print the version, commit and Go version, and exit."`

	Sessions sessionsCmd `cmd:"" help:"List the live sessions (KV rtc_sessions)."`
	Tail     tailCmd     `cmd:"" help:"Follow the session events (RTC_EVENTS) as readable lines."`
	History  historyCmd  `cmd:"" help:"List ended sessions of a room or an application, with their summaries (session_ended events on RTC_EVENTS)."`
	Room     roomCmd     `cmd:"" help:"Show what the aggregator holds for a room (KV rtc_rooms)."`
	Workers  workersCmd  `cmd:"" help:"List the live aggregator workers, the partitions each owns, and each partition's lag."`
	DLQ      dlqCmd      `cmd:"" name:"dlq" help:"List, show and re-drive the inputs the aggregator could not process (RTC_DLQ)."`
	// Reconcile asks the ingest to re-read a room's call state now.
	Reconcile reconcileCmd `cmd:"" help:"Ask the ingest to re-read a room's current call state from its homeservers now (reconciliation)."`
	Simulate  simulateCmd  `cmd:"" help:"Run the session reducer offline over a JSON-lines file of Matrix events."`
	Token     tokenCmd     `cmd:"" help:"Print a room's subject token, its partition, and the subjects and keys to use with the nats CLI."`
	Decode    decodeCmd    `cmd:"" help:"Decode a payload from standard input (a session event, a live session or member, an input of RTC_RAW) to JSON."`
	Help      helpCmd      `cmd:"" help:"Show help for a command."`
	Ver       versionCmd   `cmd:"" name:"version" help:"Print the version, commit and Go version."`
}

const description = `Inspect a running rtc-sessions deployment over NATS.

Connection flags and environment variables are those of the nats CLI:
--server/NATS_URL, --context/NATS_CONTEXT (NATS context files under
~/.config/nats/context/, the selected one in ~/.config/nats/context.txt),
--creds, --nkey, --user/--password, --tlscert/--tlskey/--tlsca,
--inbox-prefix. A flag wins over the context. Exit status: 0 ok, 1 error,
2 usage.`

// runEnv is what every command's Run receives.
type runEnv struct {
	ctx            context.Context
	in             io.Reader // nil: os.Stdin
	stdout, stderr io.Writer
	conn           *ConnFlags
	perm           *permWatch // set by connect
	who            string     // the user connect authenticated as, for messages
}

type exitCode int

// codeError carries a command's own exit status (simulate's).
type codeError int

func (c codeError) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

var now = time.Now // replaced in tests

// Main runs rtcctl and returns the process exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return mainIO(ctx, args, nil, stdout, stderr)
}

// mainIO is Main reading standard input from stdin (nil: os.Stdin).
func mainIO(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (code int) {
	// kong ends help and --version through its Exit hook: turn that into a
	// return instead of an os.Exit.
	defer func() {
		if r := recover(); r != nil {
			c, ok := r.(exitCode)
			if !ok {
				panic(r)
			}
			code = int(c)
		}
	}()
	var cli CLI
	env := &runEnv{ctx: ctx, in: stdin, stdout: stdout, stderr: stderr, conn: &cli.ConnFlags}
	parser, err := kong.New(&cli,
		kong.Name("rtcctl"),
		kong.Description(description),
		kong.Writers(stdout, stderr),
		kong.Exit(func(c int) { panic(exitCode(c)) }),
		kong.Bind(env),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.ExplicitGroups([]kong.Group{{Key: "connection", Title: "NATS connection flags (as the nats CLI's):"}}),
	)
	if err != nil {
		fmt.Fprintln(stderr, "rtcctl:", err)
		return 1
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		safetext.Fprintf(stderr, "rtcctl: error: %s\n", err)
		var pe *kong.ParseError
		if errors.As(err, &pe) && pe.Context != nil {
			printUsageTo(pe.Context, stderr)
		}
		return 2
	}
	err = kctx.Run()
	if p := env.perm.get(); p != nil {
		// The refusal is the cause of whatever the command returned (a
		// cancelled request, a timeout).
		safetext.Fprintf(stderr, "rtcctl: %s\n", p.denied())
		if p.Hint != "" {
			safetext.Fprintf(stderr, "  hint: %s\n", p.Hint)
		}
		return 1
	}
	var ce codeError
	switch {
	case err == nil, errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return 0
	case errors.As(err, &ce):
		return int(ce)
	case errors.Is(err, ErrUsage):
		safetext.Fprintf(stderr, "rtcctl: error: %s\n", strings.TrimPrefix(err.Error(), ErrUsage.Error()+": "))
		printUsageTo(kctx, stderr)
		return 2
	default:
		// Errors quote what the server and the homeservers sent (a DLQ
		// header, an ingest's reply): escaped like every output line.
		safetext.Fprintf(stderr, "rtcctl: %s\n", err)
		if hint := explain(err, env.who); hint != "" {
			safetext.Fprintf(stderr, "  hint: %s\n", hint)
		}
		return 1
	}
}

// printUsageTo prints the summary usage of the command a context selected
// to w (stderr: after an error, stdout is for results).
func printUsageTo(kctx *kong.Context, w io.Writer) {
	saved := kctx.Kong.Stdout
	kctx.Kong.Stdout = w
	defer func() { kctx.Kong.Stdout = saved }()
	_ = kctx.PrintUsage(true)
}

// versionFlag is --version.
type versionFlag bool

// BeforeReset prints the version and ends with status 0.
func (versionFlag) BeforeReset(app *kong.Kong) error {
	fmt.Fprintln(app.Stdout, version.Line("rtcctl"))
	app.Exit(0)
	return nil
}

type versionCmd struct {
	JSON bool `name:"json" help:"Print JSON."`
}

func (c *versionCmd) Run(e *runEnv) error {
	if c.JSON {
		return writeJSON(e.stdout, version.Get())
	}
	_, err := fmt.Fprintln(e.stdout, version.Line("rtcctl"))
	return err
}

// helpCmd is `rtcctl help [COMMAND...]`, the same as `rtcctl COMMAND... --help`.
type helpCmd struct {
	Command []string `arg:"" optional:"" help:"The command to show help for."`
}

func (h *helpCmd) Run(kctx *kong.Context) error {
	target, err := kong.Trace(kctx.Kong, h.Command)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if target.Error != nil {
		return fmt.Errorf("%w: no command %q: %w", ErrUsage, strings.Join(h.Command, " "), target.Error)
	}
	return target.PrintUsage(false)
}

// simulateCmd hands over to internal/simulate (exit status 1 when lines
// were skipped, which it reports itself).
type simulateCmd struct {
	Until        string `name:"until" placeholder:"MS" help:"Advance the clock to this Unix time in ms at the end, firing due timers."`
	Sessions     bool   `name:"sessions" help:"Finally print one JSON object per live session, with its members."`
	MaxLineBytes int    `name:"max-line-bytes" placeholder:"N" default:"1048576" help:"Skip (and report) lines longer than N bytes; the rest of the file is read."`
	File         string `arg:"" name:"file" help:"JSON-lines file of Matrix client-server events (one per line, optional top-level received_at in ms); - for standard input. Malformed and over-long lines are reported on stderr and skipped."`
}

func (c *simulateCmd) Run(e *runEnv) error {
	var args []string
	if c.Until != "" {
		args = append(args, "--until", c.Until)
	}
	if c.Sessions {
		args = append(args, "--sessions")
	}
	args = append(args, "--max-line-bytes", strconv.Itoa(c.MaxLineBytes))
	if code := simulate.Run(e.ctx, append(args, "--", c.File), e.stdout, e.stderr); code != 0 {
		return codeError(code)
	}
	return nil
}
