package config

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/alecthomas/kong"

	"github.com/rtcsessions/rtc-sessions/internal/version"
)

// Exit statuses of the services' command lines (those of rtcctl too).
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// VersionFlag is --version: it prints version.Line of the program and ends
// with status 0.
type VersionFlag = kong.VersionFlag

// exitCode is what kong's Exit hook panics with, so that --help and
// --version return from Parse instead of ending the process (tests call
// Parse in-process).
type exitCode int

// Parse parses args into grammar (a kong struct) for the program name. When
// a command is to run it returns its context and ok true. Otherwise the
// command line ended the program and code is its exit status: 0 after --help
// or --version (printed to stdout), 2 after a usage error (printed to stderr
// with the usage).
//
// Long flags are also accepted with one dash (-config FILE, -version), as
// the flag package accepted them: deployments written for it keep working.
func Parse(name, description string, grammar any, args []string, stdout, stderr io.Writer, opts ...kong.Option) (kctx *kong.Context, code int, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			c, isExit := r.(exitCode)
			if !isExit {
				panic(r)
			}
			kctx, code, ok = nil, int(c), false
		}
	}()
	opts = append([]kong.Option{
		kong.Name(name),
		kong.Description(description),
		kong.Writers(stdout, stderr),
		kong.Exit(func(c int) { panic(exitCode(c)) }),
		kong.Vars{"version": version.Line(name)},
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	}, opts...)
	parser, err := kong.New(grammar, opts...)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return nil, ExitError, false
	}
	kctx, err = parser.Parse(DoubleDashLongFlags(parser.Model.Node, args))
	if err != nil {
		UsageError(stderr, name, err, kctx)
		return nil, ExitUsage, false
	}
	return kctx, ExitOK, true
}

// UsageError prints err and the usage of the command kctx selected (when
// known) to w.
func UsageError(w io.Writer, name string, err error, kctx *kong.Context) {
	fmt.Fprintf(w, "%s: error: %v\n", name, err)
	var pe *kong.ParseError
	if errors.As(err, &pe) && pe.Context != nil {
		kctx = pe.Context
	}
	if kctx == nil {
		return
	}
	saved := kctx.Kong.Stdout
	kctx.Kong.Stdout = w
	defer func() { kctx.Kong.Stdout = saved }()
	_ = kctx.PrintUsage(true)
}

// DoubleDashLongFlags rewrites -name and -name=value to --name and
// --name=value for every long flag the grammar under root declares; other
// arguments, and everything after "--", are kept as they are.
func DoubleDashLongFlags(root *kong.Node, args []string) []string {
	long := map[string]bool{}
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, f := range n.Flags {
			if len(f.Name) > 1 {
				long[f.Name] = true
			}
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(root)
	out := make([]string, len(args))
	for i, a := range args {
		if a == "--" {
			copy(out[i:], args[i:])
			break
		}
		out[i] = a
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			flagName, _, _ := strings.Cut(a[1:], "=")
			if long[flagName] {
				out[i] = "-" + a
			}
		}
	}
	return out
}
