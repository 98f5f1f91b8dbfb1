// Command rtcbench is the operator-grade benchmark of rtc-sessions: it builds
// a standalone nats-server and cmd/aggregator, runs them as processes with
// JetStream file storage on 127.0.0.1 and prints one table in which every
// figure stands next to a baseline measured in the same run.
// Run it from the module root (make bench does). See internal/bench.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rtcsessions/rtc-sessions/internal/bench"
)

func main() {
	code, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "rtcbench:", err)
	}
	os.Exit(code)
}

func run() (int, error) {
	o := bench.DefaultOptions()
	only := flag.String("only", "", "comma-separated scenarios to run: "+strings.Join(bench.ScenarioNames(), ", ")+
		" (default: all; pipeline includes raw)")
	quick := flag.Bool("quick", false, "smaller sizes (10,000 live sessions, fewer messages, 8 s steady phase): about half the time")
	binDir := flag.String("bin-dir", "", "directory with prebuilt nats-server and aggregator binaries (default: build them)")
	workDir := flag.String("work-dir", "", "where scenario data directories go (default: the system temp dir)")
	flag.BoolVar(&o.Keep, "keep", false, "keep every scenario's data directory and process logs")
	flag.StringVar(&o.ProfileDir, "profile", "", "write CPU profiles of nats-server and the aggregator during the measured phases of pipeline and latency into this directory")
	flag.IntVar(&o.Partitions, "partitions", o.Partitions, "RTC_RAW partitions of the generated aggregator configuration")
	flag.IntVar(&o.RawMsgs, "raw-msgs", o.RawMsgs, "messages of the raw publish baseline")
	flag.IntVar(&o.PipelineRooms, "pipeline-rooms", o.PipelineRooms, "rooms of the pipeline workload (x devices x join/refresh/leave)")
	flag.IntVar(&o.PipelineDevices, "pipeline-devices", o.PipelineDevices, "devices per room of the pipeline workload")
	flag.IntVar(&o.SteadyRate, "rate", o.SteadyRate, "inputs/s of the steady phase (latency, CPU per input)")
	flag.DurationVar(&o.SteadyDuration, "steady", o.SteadyDuration, "length of the steady phase")
	flag.IntVar(&o.LiveRooms, "live-sessions", o.LiveRooms, "live sessions (one room each) of the memory and KV figures")
	flag.IntVar(&o.LiveDevices, "live-devices", o.LiveDevices, "members per live session")
	flag.IntVar(&o.LiveRate, "live-rate", o.LiveRate, "joins/s while filling the live sessions (0: as fast as the server stores them, a backlog)")
	flag.IntVar(&o.CallDevices, "call-devices", o.CallDevices, "devices of the big call")
	flag.IntVar(&o.Refreshes, "refreshes", o.Refreshes, "refreshes timed in the big call and in the small room")
	flag.IntVar(&o.TakeoverRate, "takeover-rate", o.TakeoverRate, "inputs/s while aggregators are killed")
	flag.Parse()
	if *quick {
		q := bench.DefaultOptions()
		q.Quick()
		applyQuick(&o, q) // a size flag given explicitly wins over -quick

	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	o.Log = os.Stderr
	o.WorkDir = *workDir
	var names []string
	if *only != "" {
		for _, n := range strings.Split(*only, ",") {
			names = append(names, strings.TrimSpace(n))
		}
	}

	start := time.Now()
	if *binDir != "" {
		o.Bins = bench.Binaries{NATSServer: *binDir + "/nats-server", Aggregator: *binDir + "/aggregator"}
	} else {
		mod, err := bench.ModuleDir(ctx)
		if err != nil {
			return 2, err
		}
		dir, err := os.MkdirTemp(*workDir, "rtcbench-bin-")
		if err != nil {
			return 2, fmt.Errorf("build directory: %w", err)
		}
		defer os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, "building nats-server (go.mod version) and cmd/aggregator ...")
		if o.Bins, err = bench.Build(ctx, mod, dir); err != nil {
			return 2, err
		}
	}
	rep, err := bench.Run(ctx, o, names)
	if err != nil {
		return 2, err
	}
	fmt.Printf("\n%s, %s, took %s\nmachine: %s; 1-min load average at each scenario's start: %s\n\n",
		strings.Join(append([]string{"rtcbench"}, os.Args[1:]...), " "), time.Now().UTC().Format("2006-01-02 15:04 MST"),
		time.Since(start).Round(time.Second), bench.Machine(), strings.Join(rep.Load, ", "))
	if err := bench.WriteTable(os.Stdout, rep.Rows); err != nil {
		return 2, err
	}
	for _, r := range rep.Rows {
		if r.Verdict == bench.Failed {
			return 1, nil
		}
	}
	return 0, nil
}

// applyQuick copies the quick sizes into o, except those set by a flag.
func applyQuick(o *bench.Options, q bench.Options) {
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["raw-msgs"] {
		o.RawMsgs = q.RawMsgs
	}
	if !set["pipeline-rooms"] {
		o.PipelineRooms = q.PipelineRooms
	}
	if !set["steady"] {
		o.SteadyDuration = q.SteadyDuration
	}
	if !set["live-sessions"] {
		o.LiveRooms = q.LiveRooms
	}
	if !set["refreshes"] {
		o.Refreshes = q.Refreshes
	}
}
