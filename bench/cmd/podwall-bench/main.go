// Command podwall-bench runs podwall's netns load harness (package bench/load) and its
// memory measurement, and writes generated manifests for scale tests. It needs root for
// load and rss. `make bench-load` runs load and rss with the defaults below.
//
//	podwall-bench load [--podwall bin/podwall] [--podwall-alt BIN] [--n 20000] [--concurrency 64] [--reps 5]
//	                   [--threads 2] [--queues 1,2] [--stream 1GiB] [--stream-reps 3]
//	                   [--saturation 1024] [--filters none,kernel,podwall]
//	                   [--profile DIR] [--profile-seconds 5] [--latency 2000]
//	                   [--latency-inflight 1,4] [--json FILE]
//	podwall-bench rss [--podwall bin/podwall] [--sizes 0/0,1000/100,10000/1000]
//	                  [--formats list,docs] [--settle 3s] [--json FILE]
//	podwall-bench manifests --pods 1000 --policies 100 [--seed 42] -o FILE
//	podwall-bench report FILE.json   (the tables of a saved load report)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/podwall/podwall/bench/load"
	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy/manifests"
	"github.com/podwall/podwall/policy/synth"
)

func main() { os.Exit(run()) }

func run() int {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: podwall-bench load|rss|manifests|report [flags]  (-h for flags)")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "load":
		err = runLoad(ctx, os.Args[2:])
	case "rss":
		err = runRSS(ctx, os.Args[2:])
	case "manifests":
		err = runManifests(os.Args[2:])
	case "report":
		err = runReport(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: want load, rss, manifests or report", os.Args[1])
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "podwall-bench:", err)
		return 1
	}
	return 0
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func sweep() {
	if removed, err := lab.Sweep(lab.DefaultPrefix, 0); err != nil {
		logf("sweep: %v", err)
	} else if len(removed) > 0 {
		logf("swept stale lab namespaces: %v", removed)
	}
}

func runLoad(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	c := load.Config{Logf: logf}
	fs.StringVar(&c.Binary, "podwall", "bin/podwall", "podwall binary")
	fs.StringVar(&c.Alt, "podwall-alt", "", "a second podwall binary, measured as podwall-alt in the same rounds (to compare two builds)")
	fs.IntVar(&c.Count, "n", 20000, "connections per run")
	fs.IntVar(&c.Concurrency, "concurrency", 64, "connects in flight")
	fs.IntVar(&c.Reps, "reps", 5, "rounds (every variant once per round)")
	fs.IntVar(&c.Threads, "threads", runtime.NumCPU(), "load generator threads")
	queues := fs.String("queues", "1,"+strconv.Itoa(runtime.NumCPU()), "podwall --queues values, comma-separated")
	stream := fs.String("stream", "1GiB", "bytes per throughput run (0: none)")
	fs.IntVar(&c.StreamReps, "stream-reps", 3, "throughput runs per filter and round")
	fs.IntVar(&c.Saturation, "saturation", 1024, "connects in flight of the pressure run (0: none)")
	fs.StringVar(&c.ProfileDir, "profile", "", "directory for a CPU profile of the agent under cold load")
	fs.IntVar(&c.ProfileSeconds, "profile-seconds", 5, "length of the profile (the agent allows at most 30)")
	fs.IntVar(&c.Latency, "latency", 2000, "connections per latency run, made a few at a time after each throughput run (0: no latency phase)")
	inflight := fs.String("latency-inflight", "1,4", "connects in flight of the latency runs, comma-separated (one run each)")
	jsonOut := fs.String("json", "", "also write the report as JSON here")
	filters := fs.String("filters", "none,kernel,podwall", "filters to measure, comma-separated")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c.Filters = strings.Split(*filters, ",")
	var err error
	if c.StreamBytes, err = load.ParseBytes(*stream); err != nil {
		return fmt.Errorf("--stream: %w", err)
	}
	var errs []error
	for _, q := range strings.Split(*queues, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(q))
		if err != nil || n < 1 || n > 64 {
			errs = append(errs, fmt.Errorf("--queues: bad value %q", q))
			continue
		}
		c.Queues = append(c.Queues, n)
	}
	for _, k := range strings.Split(*inflight, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(k))
		if err != nil || n < 1 || n > 64 {
			errs = append(errs, fmt.Errorf("--latency-inflight: bad value %q (want 1-64)", k))
			continue
		}
		c.LatencyInFlight = append(c.LatencyInFlight, n)
	}
	if c.Latency < 0 || c.Latency > load.ConnPorts {
		errs = append(errs, fmt.Errorf("--latency: want 0-%d, got %d", load.ConnPorts, c.Latency))
	}
	if c.Count < 1 || c.Count > load.ConnPorts {
		errs = append(errs, fmt.Errorf("--n: want 1-%d, got %d", load.ConnPorts, c.Count))
	}
	if c.Concurrency < 1 || c.Reps < 1 {
		errs = append(errs, errors.New("--concurrency and --reps must be positive"))
	}
	if err := errors.Join(append(errs, load.CheckRoot())...); err != nil {
		return err
	}
	sweep()
	rep, err := load.Load(ctx, c)
	if rep != nil && len(rep.Runs) > 0 {
		fmt.Println()
		rep.Print(os.Stdout)
		if *jsonOut != "" {
			if jerr := writeJSON(*jsonOut, rep); jerr != nil {
				err = errors.Join(err, jerr)
			}
		}
	}
	return err
}

func runRSS(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("rss", flag.ContinueOnError)
	binary := fs.String("podwall", "bin/podwall", "podwall binary")
	sizesFlag := fs.String("sizes", "0/0,1000/100,10000/1000", "cluster sizes, pods/policies, comma-separated")
	formats := fs.String("formats", "list,docs", "manifests formats: list (one v1 List), docs (a YAML document per object)")
	settle := fs.Duration("settle", 10*time.Second, "wait after ready before reading memory (the runtime returns freed memory gradually)")
	jsonOut := fs.String("json", "", "also write the results as JSON here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var sizes []load.Size
	for _, s := range strings.Split(*sizesFlag, ",") {
		var sz load.Size
		if _, err := fmt.Sscanf(strings.TrimSpace(s), "%d/%d", &sz.Pods, &sz.Policies); err != nil || sz.Pods < 0 || sz.Policies < 0 {
			return fmt.Errorf("--sizes: bad size %q (want pods/policies)", s)
		}
		sizes = append(sizes, sz)
	}
	if err := load.CheckRoot(); err != nil {
		return err
	}
	sweep()
	fl := strings.Split(*formats, ",")
	for _, f := range fl {
		if f != "list" && f != "docs" {
			return fmt.Errorf("--formats: unknown format %q", f)
		}
	}
	rs, err := load.MeasureRSS(ctx, *binary, sizes, fl, *settle, logf)
	if len(rs) > 0 {
		fmt.Printf("\nagent memory (synthetic clusters from policy/synth, seed 42; agent as node-0), %s\n", load.ReadMachine().Date)
		// The memory targets (README, "Against the targets"), for both manifests formats.
		load.PrintRSS(os.Stdout, rs, func(s load.Size) load.Target {
			switch {
			case s.Pods == 1000 && s.Policies == 100:
				return load.Target{Steady: 50}
			case s.Pods == 10000 && s.Policies == 1000:
				return load.Target{Steady: 150, Peak: 200}
			}
			return load.Target{}
		})
		if *jsonOut != "" {
			err = errors.Join(err, writeJSON(*jsonOut, rs))
		}
	}
	return err
}

func runManifests(args []string) error {
	fs := flag.NewFlagSet("manifests", flag.ContinueOnError)
	var c synth.Config
	fs.IntVar(&c.Pods, "pods", 1000, "pods")
	fs.IntVar(&c.Policies, "policies", 100, "NetworkPolicies")
	fs.IntVar(&c.Nodes, "nodes", 0, "nodes (default pods/100)")
	seed := fs.Uint64("seed", 42, "generator seed")
	out := fs.String("o", "", "output file (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("-o is required")
	}
	c.Seed = *seed
	return manifests.Write(*out, load.Objects(synth.Generate(c))...)
}

// runReport prints the tables of a load report saved with --json.
func runReport(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: podwall-bench report FILE.json")
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	var rep load.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", args[0], err)
	}
	rep.Print(os.Stdout)
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
