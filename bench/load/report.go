package load

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Summary is the median of a variant's runs.
type Summary struct {
	Variant       Variant
	Runs          int
	Rate, RateMin float64
	RateMax       float64
	P50, P99      time.Duration
	Ratio         float64 // Rate ÷ the kernel-only baseline's Rate, same pattern
	// Paired is the median over rounds of the same ratio taken within a round, where
	// the two ran seconds apart: less exposed to the machine's drift than Ratio.
	Paired               float64
	PerConn              float64
	Failed               int // over all runs
	QueueDrops, ENOBUFS  uint64
	DecideP50, DecideP99 float64
	AgentCPU             float64
	Busy                 float64
}

// Summaries returns one Summary per variant, in the order variants first ran.
func (r *Report) Summaries() []Summary {
	var order []Variant
	by := map[Variant][]Run{}
	for _, run := range r.Runs {
		if _, ok := by[run.Variant]; !ok {
			order = append(order, run.Variant)
		}
		by[run.Variant] = append(by[run.Variant], run)
	}
	slices.SortStableFunc(order, func(a, b Variant) int { return rank(a) - rank(b) })
	var out []Summary
	for _, v := range order {
		runs := by[v]
		s := Summary{Variant: v, Runs: len(runs)}
		col := func(f func(Run) float64) []float64 {
			xs := make([]float64, len(runs))
			for i, run := range runs {
				xs[i] = f(run)
			}
			return xs
		}
		rates := col(func(x Run) float64 { return x.Rate })
		s.Rate, s.RateMin, s.RateMax = median(rates), slices.Min(rates), slices.Max(rates)
		s.P50 = time.Duration(median(col(func(x Run) float64 { return float64(x.P50) })))
		s.P99 = time.Duration(median(col(func(x Run) float64 { return float64(x.P99) })))
		s.PerConn = median(col(func(x Run) float64 { return x.PerConn }))
		s.DecideP50 = median(col(func(x Run) float64 { return x.DecideP50 }))
		s.DecideP99 = median(col(func(x Run) float64 { return x.DecideP99 }))
		s.AgentCPU = median(col(func(x Run) float64 { return x.AgentCPU }))
		s.Busy = median(col(func(x Run) float64 { return x.Busy }))
		for _, run := range runs {
			s.Failed += run.Failed
			s.QueueDrops += run.QueueDrops
			s.ENOBUFS += run.ENOBUFS
		}
		out = append(out, s)
	}
	for i := range out {
		base := out[i].Variant.Baseline()
		for _, b := range out {
			if b.Variant == base && b.Rate > 0 {
				out[i].Ratio = out[i].Rate / b.Rate
			}
		}
		var ratios []float64
		for _, run := range by[out[i].Variant] {
			for _, b := range by[base] {
				if b.Rep == run.Rep && b.Rate > 0 {
					ratios = append(ratios, run.Rate/b.Rate)
				}
			}
		}
		out[i].Paired = median(ratios)
	}
	return out
}

func rank(v Variant) int {
	r := map[string]int{"none": 0, "kernel": 1, "podwall": 2, "podwall-alt": 2, "podwall-ac": 2, "rawq": 3, "rawq-single": 4, "rawq-poll": 5, "gonfq": 6, "gonfq-nodl": 7}[v.Filter]*1000 + v.Queues*2
	if !v.NewFlows {
		r++
	}
	return r
}

// median returns the median of xs, ignoring NaNs; NaN when none is left.
func median(xs []float64) float64 {
	xs = slices.DeleteFunc(slices.Clone(xs), math.IsNaN)
	if len(xs) == 0 {
		return math.NaN()
	}
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// StreamSummary is the median throughput of one filter.
type StreamSummary struct {
	Filter         string
	Runs           int
	Gbps, Min, Max float64
	// Ratio is Gbps ÷ no filter's; Paired the median over rounds of the same ratio within
	// a round (the filters ran back to back there), less exposed to the machine's drift.
	Ratio, Paired float64
}

// StreamSummaries returns the throughput medians: none, kernel, podwall.
func (r *Report) StreamSummaries() []StreamSummary {
	var out []StreamSummary
	for _, f := range []string{"none", "kernel", "podwall"} {
		var xs []float64
		for _, s := range r.Streams {
			if s.Filter == f {
				xs = append(xs, s.Gbps)
			}
		}
		if len(xs) == 0 {
			continue
		}
		out = append(out, StreamSummary{Filter: f, Runs: len(xs), Gbps: median(xs), Min: slices.Min(xs), Max: slices.Max(xs)})
	}
	if len(out) == 0 || out[0].Filter != "none" {
		return out
	}
	for i := range out {
		out[i].Ratio = out[i].Gbps / out[0].Gbps
		var ratios []float64
		for round := range r.Reps {
			gbps := func(filter string) []float64 {
				var xs []float64
				for _, s := range r.Streams {
					if s.Rep == round && s.Filter == filter {
						xs = append(xs, s.Gbps)
					}
				}
				return xs
			}
			mine, none := gbps(out[i].Filter), gbps("none")
			if len(mine) > 0 && len(none) > 0 {
				ratios = append(ratios, median(mine)/median(none))
			}
		}
		out[i].Paired = median(ratios)
	}
	return out
}

// Print writes the report as aligned text tables.
func (r *Report) Print(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "podwall load harness, %s\n", m.Date)
	fmt.Fprintf(w, "machine: %d × %s, kernel %s, %s, load average at start %s\n", m.CPUs, m.CPU, m.Kernel, m.Go, m.LoadAvg)
	fmt.Fprintf(w, "lab: one node; client pod → server pod on the same node (forward hook of the node), IPv4 TCP\n")
	fmt.Fprintf(w, "load: %d connections per run, %d in flight from %d threads, %d rounds, variants interleaved; medians (range of conn/s)\n\n",
		r.Count, r.Conc, r.Threads, r.Reps)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "variant\tconn/s\t(min–max)\tp50\tp99\tvs kernel\tpaired\tpkts/conn\tdrops\tdecide p50\tdecide p99\tagent CPU/conn\tbusy\t")
	for _, s := range r.Summaries() {
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f–%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f%%\t\n",
			s.Variant.Name(), s.Rate, s.RateMin, s.RateMax, us(s.P50), us(s.P99), ratio(s.Ratio), ratio(s.Paired),
			num(s.PerConn, "%.3f"), drops(s), secs(s.DecideP50, s.Variant), secs(s.DecideP99, s.Variant),
			secs(s.AgentCPU, s.Variant), s.Busy*100)
	}
	tw.Flush()
	if ss := r.StreamSummaries(); len(ss) > 0 {
		fmt.Fprintf(w, "\nthroughput: one established connection, %s per run\n", bytesHuman(r.StreamSize))
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "filter\truns\tGbit/s\t(min–max)\tvs no filter\tpaired by round\t")
		for _, s := range ss {
			fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f–%.2f\t%s\t%s\t\n", s.Filter, s.Runs, s.Gbps, s.Min, s.Max, ratio(s.Ratio), ratio(s.Paired))
		}
		tw.Flush()
	}
	r.printLatency(w)
	if s := r.Saturation; s != nil {
		fmt.Fprintf(w, "\npressure: %s with %d in flight: %.0f conn/s, p50 %s, p99 %s, pkts/conn %.3f, queue drops %d, ENOBUFS %d, failed %d %v\n",
			s.Variant.Name(), s.Concurrency, s.Rate, us(s.P50), us(s.P99), s.PerConn, s.QueueDrops, s.ENOBUFS, s.Failed, s.Errors)
	}
	if r.Profile != "" {
		fmt.Fprintf(w, "\nagent CPU profile (cold): %s\n", r.Profile)
	}
	fmt.Fprintln(w, "\nvs kernel: conn/s ÷ kernel-only with the same port pattern; paired: the median of that ratio taken")
	fmt.Fprintln(w, "within each round (the two ran seconds apart). pkts/conn: packets judged per successful")
	fmt.Fprintln(w, "connection (podwall: podwall_datapath_packets_total; kernel-only: its accept rule's counter).")
	fmt.Fprintln(w, "drops: nfnetlink_queue queue_dropped + user_dropped, and podwall_datapath_enobufs_total.")
	fmt.Fprintln(w, "decide: podwall_datapath_decide_seconds (receive → verdict chosen, before the verdict is sent),")
	fmt.Fprintln(w, "interpolated in its ×2 buckets. agent CPU/conn: the agent's user+system CPU ÷ connections.")
	fmt.Fprintln(w, "busy: the whole machine's CPU use during the run (other work on the machine included).")
	if slices.ContainsFunc(r.Runs, func(x Run) bool {
		return strings.HasPrefix(x.Variant.Filter, "rawq") || strings.HasPrefix(x.Variant.Filter, "gonfq")
	}) {
		fmt.Fprintln(w, "raw reader: an experiment, not podwall: podwall's ruleset served by bench/load.RawQueue, a minimal")
		fmt.Fprintln(w, "accept-all NFQUEUE reader without allocations: blocking recv on a locked thread and one batch")
		fmt.Fprintln(w, "verdict per recv (batch) or one send per packet (1/send); or one send per packet from a goroutine")
		fmt.Fprintln(w, "waiting in the Go poller (poller). CPU/conn is its reader threads' (not measured for poller).")
		fmt.Fprintln(w, "go-nfqueue accept: the library's receive and verdict path (podwall binds and configures with the")
		fmt.Fprintln(w, "library but serves the queue itself), configured like podwall, handler = accept;")
		fmt.Fprintln(w, "no deadline: the same with WriteTimeout 0 (no SetWriteDeadline before each verdict).")
	}
}

func us(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0fµs", float64(d)/1e3)
}

// finite returns x, or 0 for NaN (which JSON cannot hold).
func finite(x float64) float64 {
	if math.IsNaN(x) {
		return 0
	}
	return x
}

// usFine is us with a decimal below 100 µs.
func usFine(d time.Duration) string {
	if d > 0 && d < 100*time.Microsecond {
		return fmt.Sprintf("%.1fµs", float64(d)/1e3)
	}
	return us(d)
}

func ratio(x float64) string {
	if x == 0 || math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf("%.2f", x)
}

func num(x float64, format string) string {
	if x == 0 || math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf(format, x)
}

func secs(x float64, v Variant) string {
	if v.Filter == "none" || v.Filter == "kernel" || math.IsNaN(x) || x == 0 {
		return "-"
	}
	switch {
	case x >= 1e-3:
		return fmt.Sprintf("%.2fms", x*1e3)
	default:
		return fmt.Sprintf("%.1fµs", x*1e6)
	}
}

func drops(s Summary) string {
	if s.Variant.Filter == "none" || s.Variant.Filter == "kernel" {
		return "-"
	}
	return fmt.Sprintf("%d/%d", s.QueueDrops, s.ENOBUFS)
}

func bytesHuman(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d B", n)
}

// ParseBytes parses a size such as "2GiB", "512MiB" or "1000000".
func ParseBytes(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1e9}, {"M", 1e6}, {"k", 1e3}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.m
			break
		}
	}
	var n int64
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// LatencySummary is the latency phase of one variant at one number of connects in flight:
// medians over rounds, and the ratios to kernel-only with the same port pattern and in
// flight, paired by round.
type LatencySummary struct {
	Variant  Variant
	InFlight int
	Runs     int
	// P50 and P99 are the medians over rounds of each run's connect latency quantiles;
	// P50Min and P50Max their range.
	P50, P99       time.Duration
	P50Min, P50Max time.Duration
	// PairedP50 and PairedP99 are the medians over rounds of P50 (P99) ÷ kernel-only's in
	// the same round (0 without kernel-only runs); P50Ratios and P99Ratios the per-round
	// ratios they are the medians of.
	PairedP50, PairedP99 float64
	P50Ratios, P99Ratios []float64 `json:",omitempty"`
	Rate                 float64   // median successful connections per second of the runs
	PerConn              float64
	Failed               int // over all runs
}

// latencySummaries returns one LatencySummary per variant and in-flight value of the
// latency phase, in the order of Summaries.
func (r *Report) latencySummaries() []LatencySummary {
	type key struct {
		v Variant
		k int
	}
	var order []key
	by := map[key][]Run{}
	for _, run := range r.Latency {
		k := key{run.Variant, run.Concurrency}
		if _, ok := by[k]; !ok {
			order = append(order, k)
		}
		by[k] = append(by[k], run)
	}
	slices.SortStableFunc(order, func(a, b key) int {
		if a.k != b.k {
			return a.k - b.k
		}
		return rank(a.v) - rank(b.v)
	})
	var out []LatencySummary
	for _, k := range order {
		runs := by[k]
		col := func(f func(Run) float64) []float64 {
			xs := make([]float64, len(runs))
			for i, run := range runs {
				xs[i] = f(run)
			}
			return xs
		}
		p50s := col(func(x Run) float64 { return float64(x.P50) })
		s := LatencySummary{Variant: k.v, InFlight: k.k, Runs: len(runs),
			P50: time.Duration(median(p50s)), P99: time.Duration(median(col(func(x Run) float64 { return float64(x.P99) }))),
			P50Min: time.Duration(slices.Min(p50s)), P50Max: time.Duration(slices.Max(p50s)),
			Rate: median(col(func(x Run) float64 { return x.Rate })), PerConn: median(col(func(x Run) float64 { return x.PerConn }))}
		base := key{k.v.Baseline(), k.k}
		for _, run := range runs {
			s.Failed += run.Failed
			for _, b := range by[base] {
				if b.Rep == run.Rep && b.P50 > 0 && b.P99 > 0 {
					s.P50Ratios = append(s.P50Ratios, float64(run.P50)/float64(b.P50))
					s.P99Ratios = append(s.P99Ratios, float64(run.P99)/float64(b.P99))
				}
			}
		}
		s.PairedP50, s.PairedP99 = finite(median(s.P50Ratios)), finite(median(s.P99Ratios))
		s.PerConn = finite(s.PerConn)
		out = append(out, s)
	}
	return out
}

// printLatency writes the latency phase's table.
func (r *Report) printLatency(w io.Writer) {
	ls := r.LatencySummaries
	if len(ls) == 0 {
		ls = r.latencySummaries()
	}
	if len(ls) == 0 {
		return
	}
	fmt.Fprintf(w, "\nconnect latency: %d connections per run from one thread, k in flight, after each throughput run in the same round\n", r.LatencyCount)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "variant\tk\tp50\t(min–max)\tp99\tp50 paired\tp99 paired\tpaired p50 by round\tconn/s\tpkts/conn\tfailed\t")
	for _, s := range ls {
		rounds := make([]string, len(s.P50Ratios))
		for i, x := range s.P50Ratios {
			rounds[i] = fmt.Sprintf("%.2f", x)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s–%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t%d\t\n",
			s.Variant.Name(), s.InFlight, usFine(s.P50), usFine(s.P50Min), usFine(s.P50Max), usFine(s.P99),
			ratio(s.PairedP50), ratio(s.PairedP99), strings.Join(rounds, " "), s.Rate, num(s.PerConn, "%.3f"), s.Failed)
	}
	tw.Flush()
	fmt.Fprintln(w, "p50, p99: connect(2) → writable, medians over rounds of each run's quantiles; paired: the median")
	fmt.Fprintln(w, "over rounds of the quantile ÷ kernel-only's (same port pattern, same k) in the same round.")
}
