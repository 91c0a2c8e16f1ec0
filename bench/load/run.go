package load

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/cmd/podwall/scrape"
	"github.com/podwall/podwall/datapath"
)

// Config says what Load measures.
type Config struct {
	// Binary is the podwall binary.
	Binary string
	// Count is the connections of one run, Concurrency the connects in flight.
	Count, Concurrency int
	// Reps is how many times every variant runs; the report gives medians.
	Reps int
	// Queues lists the --queues values podwall runs with, e.g. {1, runtime.NumCPU()}.
	Queues []int
	// StreamBytes is the size of one bulk transfer (0: no throughput test); StreamReps
	// the transfers per filter and round (default 1).
	StreamBytes int64
	StreamReps  int
	// Saturation, when positive, adds one podwall cold run with this many connects in
	// flight, to look for queue drops under pressure.
	Saturation int
	// ProfileDir, when set, receives a CPU profile of the agent (and its summary) taken
	// during an extra cold run of ProfileSeconds.
	ProfileDir     string
	ProfileSeconds int
	// Filters limits the filters measured ("none", "kernel", "podwall"); empty: those
	// three. "rawq", "rawq-single" and "rawq-poll" add the RawQueue experiment, one run per
	// round with new ports, for each of Queues.
	Filters []string
	// Threads is the number of load generator threads (default: one per CPU).
	Threads int
	// Alt, when set, is a second podwall binary measured as filter "podwall-alt" in the
	// same rounds as Binary (every variant of podwall, throughput and latency), to compare
	// two builds side by side; Filters need not name it.
	Alt string
	// Latency, when positive, adds a latency phase: after each throughput run of a variant,
	// in the same round, Latency connections of the same variant made a few at a time from
	// one generator thread, once for each value of LatencyInFlight (default {1}), so that
	// the connect latency is the cost of one connection and not queueing behind the others
	// (Report.Latency, Report.LatencySummaries).
	Latency         int
	LatencyInFlight []int
	// Logf receives progress lines.
	Logf func(format string, args ...any)
}

// Variant is one way of filtering the node plus one connection pattern.
type Variant struct {
	// Filter is "none", "kernel" or "podwall" (or "podwall-alt", Config.Alt, "podwall-ac",
	// podwall with its allow cache, or one of the experiments).
	Filter string
	// Queues is podwall's --queues.
	Queues int
	// NewFlows gives every connection of a run its own destination port, so that podwall's
	// flow cache (keyed by addresses, protocol and destination port) misses on each: a
	// cold cache. Otherwise all connections go to one port: after the first, a warm cache.
	NewFlows bool
}

// Name names the variant in the report.
func (v Variant) Name() string {
	switch v.Filter {
	case "rawq":
		return fmt.Sprintf("raw reader q%d batch", v.Queues)
	case "rawq-single":
		return fmt.Sprintf("raw reader q%d 1/send", v.Queues)
	case "rawq-poll":
		return fmt.Sprintf("raw reader q%d poller", v.Queues)
	case "gonfq":
		return fmt.Sprintf("go-nfqueue q%d accept", v.Queues)
	case "gonfq-nodl":
		return fmt.Sprintf("go-nfqueue q%d no deadline", v.Queues)
	}
	if isPodwall(v.Filter) {
		return fmt.Sprintf("%s q%d %s", v.Filter, v.Queues, map[bool]string{true: "cold", false: "warm"}[v.NewFlows])
	}
	return fmt.Sprintf("%s, %s", map[string]string{"none": "no filter", "kernel": "kernel-only"}[v.Filter],
		map[bool]string{true: "new ports", false: "one port"}[v.NewFlows])
}

// Baseline returns the kernel-only variant with the same connection pattern.
func (v Variant) Baseline() Variant { return Variant{Filter: "kernel", NewFlows: v.NewFlows} }

// Run is one measured run of a variant.
type Run struct {
	Variant     Variant
	Rep         int
	Concurrency int
	OK, Failed  int
	Errors      map[string]int `json:",omitempty"`
	Rate        float64        // successful connections per second
	P50, P99    time.Duration  // connect latency
	Busy        float64        // fraction of all CPUs busy during the run (whole machine)
	// Packets judged per connection: podwall's podwall_datapath_packets_total, or the
	// kernel baseline's accept-rule counter, over successful connections.
	PerConn float64
	// podwall only.
	QueueDrops           uint64  // nfnetlink_queue queue_dropped + queue_user_dropped
	ENOBUFS              uint64  // podwall_datapath_enobufs_total
	Hits, Misses         uint64  // flow cache
	DecideP50, DecideP99 float64 // seconds, from podwall_datapath_decide_seconds
	AgentCPU             float64 // agent CPU seconds per connection
	// RawQueue only: its recv(2) and send(2) calls.
	RawReads, RawSends uint64 `json:",omitempty"`
}

// Stream is one bulk throughput run.
type Stream struct {
	Filter string
	Rep    int
	Result StreamResult
	Gbps   float64
}

// Report is everything Load measured.
type Report struct {
	Machine    Machine
	Config     Config `json:"-"`
	Count      int
	Conc       int
	Reps       int
	Threads    int
	StreamSize int64
	Runs       []Run
	Streams    []Stream
	Saturation *Run   `json:",omitempty"`
	Profile    string `json:",omitempty"`
	// Latency holds the runs of the latency phase (Config.Latency connections each, from
	// one generator thread; Run.Concurrency is the connects in flight), LatencySummaries
	// their medians and the ratios to kernel-only paired by round. Empty without the phase.
	LatencyCount     int              `json:",omitempty"`
	Latency          []Run            `json:",omitempty"`
	LatencySummaries []LatencySummary `json:",omitempty"`
}

// Load builds the lab and measures every variant Reps times, interleaved: in each round the
// filters run in a rotated order, so that drift in the machine's load (it is shared) falls
// on all variants alike.
func Load(ctx context.Context, c Config) (*Report, error) {
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	if len(c.Queues) == 0 {
		c.Queues = []int{1}
	}
	env, err := NewEnv(c.Binary, nil)
	if err != nil {
		return nil, err
	}
	defer env.Close()
	env.Threads = cmp.Or(c.Threads, runtime.NumCPU())
	env.Alt = c.Alt
	if err := sysctl(env.Client.NS, "net/ipv4/ip_local_port_range", "1024 65535"); err != nil {
		return nil, err
	}
	rep := &Report{Machine: ReadMachine(), Config: c, Count: c.Count, Conc: c.Concurrency, Reps: c.Reps,
		Threads: env.Threads, StreamSize: c.StreamBytes}
	if c.Latency > 0 {
		rep.LatencyCount = c.Latency
		if len(c.LatencyInFlight) == 0 {
			c.LatencyInFlight = []int{1}
		}
	}
	defer func() { rep.LatencySummaries = rep.latencySummaries() }()

	type state struct {
		filter string
		queues int
	}
	var states []state
	want := func(f string) bool {
		return slices.Contains(c.Filters, f) || len(c.Filters) == 0 && (f == "none" || f == "kernel" || f == "podwall")
	}
	for _, f := range []string{"none", "kernel"} {
		if want(f) {
			states = append(states, state{f, 0})
		}
	}
	for _, f := range []string{"podwall", "podwall-alt", "podwall-ac", "rawq", "rawq-single", "rawq-poll", "gonfq", "gonfq-nodl"} {
		if want(f) || f == "podwall-alt" && c.Alt != "" {
			for _, q := range c.Queues {
				states = append(states, state{f, q})
			}
		}
	}
	streamQueues := slices.Max(c.Queues)
	for r := range c.Reps {
		for i := range states {
			st := states[(i+r)%len(states)]
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			if err := env.SetFilter(ctx, st.filter, st.queues); err != nil {
				return rep, err
			}
			patterns := []bool{true, false}
			if r%2 == 1 {
				patterns = []bool{false, true}
			}
			if strings.HasPrefix(st.filter, "rawq") || strings.HasPrefix(st.filter, "gonfq") {
				patterns = []bool{true} // no cache: one pattern says it all
			}
			for _, newFlows := range patterns {
				v := Variant{Filter: st.filter, Queues: st.queues, NewFlows: newFlows}
				run, err := env.Measure(ctx, v, c.Count, c.Concurrency)
				if err != nil {
					return rep, fmt.Errorf("%s: %w", v.Name(), err)
				}
				run.Rep = r
				rep.Runs = append(rep.Runs, run)
				c.Logf("round %d/%d %-22s %6.0f conn/s  p50 %-6s p99 %-6s busy %3.0f%%  pkts/conn %.3f  drops %d  failed %d %v%s",
					r+1, c.Reps, v.Name(), run.Rate, us(run.P50), us(run.P99), run.Busy*100, run.PerConn, run.QueueDrops, run.Failed, run.Errors, rawNote(run))
				if c.Latency <= 0 {
					continue
				}
				for _, k := range c.LatencyInFlight {
					run, err := env.MeasureLatency(ctx, v, c.Latency, k)
					if err != nil {
						return rep, fmt.Errorf("%s, latency with %d in flight: %w", v.Name(), k, err)
					}
					run.Rep = r
					rep.Latency = append(rep.Latency, run)
					c.Logf("round %d/%d %-22s latency, %d in flight: p50 %-6s p99 %-6s (%.0f conn/s)  pkts/conn %.3f  cache %d/%d  failed %d %v",
						r+1, c.Reps, v.Name(), k, us(run.P50), us(run.P99), run.Rate, run.PerConn, run.Hits, run.Misses, run.Failed, run.Errors)
				}
			}
		}
		// Throughput: the three filters back to back, so that they meet the same load.
		if c.StreamBytes == 0 {
			continue
		}
		filters := []string{"none", "kernel", "podwall"}
		for i := range filters {
			f := filters[(i+r)%len(filters)]
			if err := env.SetFilter(ctx, f, streamQueues); err != nil {
				return rep, err
			}
			for range max(c.StreamReps, 1) {
				if err := env.conntrackFlush(); err != nil {
					return rep, err
				}
				res, err := env.sink.Stream(env.Client.NS, env.ServerAddr(StreamPort).String(), c.StreamBytes, 2*time.Minute)
				if err != nil {
					return rep, fmt.Errorf("stream with %s: %w", f, err)
				}
				rep.Streams = append(rep.Streams, Stream{Filter: f, Rep: r, Result: res, Gbps: res.Gbps()})
				c.Logf("round %d/%d stream %-14s %6.2f Gbit/s (%d MiB in %v)", r+1, c.Reps, f, res.Gbps(), res.Bytes>>20, res.Elapsed.Round(time.Millisecond))
			}
		}
	}

	if c.Saturation > 0 {
		if err := env.SetFilter(ctx, "podwall", streamQueues); err != nil {
			return rep, err
		}
		v := Variant{Filter: "podwall", Queues: streamQueues, NewFlows: true}
		run, err := env.Measure(ctx, v, c.Count, c.Saturation)
		if err != nil {
			return rep, fmt.Errorf("saturation: %w", err)
		}
		rep.Saturation = &run
		c.Logf("saturation %s, %d in flight: %.0f conn/s, p99 %v, per-conn %.2f, drops %d, ENOBUFS %d, failed %d",
			v.Name(), c.Saturation, run.Rate, run.P99, run.PerConn, run.QueueDrops, run.ENOBUFS, run.Failed)
	}
	if c.ProfileDir != "" {
		path, err := env.profile(ctx, streamQueues, c)
		if err != nil {
			return rep, fmt.Errorf("profile: %w", err)
		}
		rep.Profile = path
		c.Logf("CPU profile of the agent: %s", path)
	}
	if err := env.SetFilter(ctx, "none", 0); err != nil {
		return rep, err
	}
	return rep, nil
}

// Measure runs one connect load of the variant (whose filter must be installed) and reads
// the counters around it.
func (e *Env) Measure(ctx context.Context, v Variant, count, conc int) (Run, error) {
	return e.measure(ctx, v, count, conc, e.Threads)
}

// MeasureLatency is Measure with one generator thread keeping conc connects in flight
// (conc 1: one connection at a time), for the latency of a connection rather than the
// rate: with 64 in flight the connect latency is mostly the wait behind the other 63.
// Each connection's latency is from connect(2) to the socket writable, as in Measure.
func (e *Env) MeasureLatency(ctx context.Context, v Variant, count, conc int) (Run, error) {
	return e.measure(ctx, v, count, conc, 1)
}

func (e *Env) measure(ctx context.Context, v Variant, count, conc, threads int) (Run, error) {
	if v.Filter != e.filter {
		return Run{}, fmt.Errorf("load: filter %q installed, variant wants %q", e.filter, v.Filter)
	}
	ports := 1
	if v.NewFlows {
		ports = ConnPorts
		if count > ConnPorts {
			return Run{}, fmt.Errorf("load: %d connections exceed the %d distinct ports", count, ConnPorts)
		}
		if err := e.BumpGeneration(ctx); err != nil {
			return Run{}, err
		}
	} else if e.agent != nil {
		// Warm the cache: the first connection to the port misses, the rest hit.
		if _, err := Connect(e.Client.NS, ConnectLoad{Dst: e.ServerAddr(ConnPort), Count: 16, Concurrency: 1, Deadline: 10 * time.Second}); err != nil {
			return Run{}, err
		}
	}
	if err := e.conntrackFlush(); err != nil {
		return Run{}, err
	}

	var (
		m0         scrape.Samples
		q0         []datapath.QueueStat
		agentCPU0  float64
		kernelAcc0 uint64
		err        error
	)
	queued := e.agent != nil || e.raw != nil || e.gonfq != nil
	if queued {
		if q0, err = queueStats(e.Node.NS); err != nil {
			return Run{}, err
		}
	}
	if e.agent != nil {
		if m0, err = e.agent.Metrics(ctx); err != nil {
			return Run{}, err
		}
		if agentCPU0, err = ProcCPU(e.agent.Pid()); err != nil {
			return Run{}, err
		}
	}
	if e.filter == "kernel" {
		if kernelAcc0, err = e.KernelAccepts(); err != nil {
			return Run{}, err
		}
	}
	var raw0 RawQueueStats
	if e.raw != nil {
		raw0 = e.raw.Stats()
		agentCPU0 = e.raw.CPU()
	}
	if e.gonfq != nil {
		raw0 = e.gonfq.Stats()
	}
	cpu0, _ := ReadCPU()
	res, err := Connect(e.Client.NS, ConnectLoad{Dst: e.ServerAddr(ConnPort), Ports: ports, Count: count, Concurrency: conc,
		Threads: threads, Timeout: 5 * time.Second, Deadline: 2 * time.Minute})
	if err != nil {
		return Run{}, err
	}
	cpu1, _ := ReadCPU()
	run := Run{Variant: v, Concurrency: conc, OK: res.OK, Failed: res.Failed, Rate: res.Rate(),
		P50: res.Quantile(0.50), P99: res.Quantile(0.99), Busy: cpu1.BusySince(cpu0)}
	if len(res.Errors) > 0 {
		run.Errors = res.Errors
	}
	if queued {
		q1, err := queueStats(e.Node.NS)
		if err != nil {
			return run, err
		}
		run.QueueDrops = queueDrops(q1) - queueDrops(q0)
	}
	if e.agent != nil {
		m1, err := e.agent.Metrics(ctx)
		if err != nil {
			return run, err
		}
		cpu, err := ProcCPU(e.agent.Pid())
		if err != nil {
			return run, err
		}
		d := m1.Sub(m0)
		run.PerConn = perConn(d.Sum("podwall_datapath_packets_total"), res.OK)
		run.ENOBUFS = uint64(d.Sum("podwall_datapath_enobufs_total"))
		run.Hits = uint64(d.Sum("podwall_datapath_flowcache_hits_total"))
		run.Misses = uint64(d.Sum("podwall_datapath_flowcache_misses_total"))
		h := d.Histogram("podwall_datapath_decide_seconds")
		// No packet judged (the allow cache took every connection): 0, which prints as "-".
		run.DecideP50, run.DecideP99 = finite(scrape.Quantile(0.5, h)), finite(scrape.Quantile(0.99, h))
		run.AgentCPU = (cpu - agentCPU0) / float64(max(res.OK, 1))
	}
	if e.raw != nil {
		d := e.raw.Stats()
		run.PerConn = perConn(float64(d.Packets-raw0.Packets), res.OK)
		run.ENOBUFS = d.ENOBUFS - raw0.ENOBUFS
		run.RawReads, run.RawSends = d.Reads-raw0.Reads, d.Sends-raw0.Sends
		run.AgentCPU = (e.raw.CPU() - agentCPU0) / float64(max(res.OK, 1))
	}
	if e.gonfq != nil {
		d := e.gonfq.Stats()
		run.PerConn = perConn(float64(d.Packets-raw0.Packets), res.OK)
		run.ENOBUFS = d.ENOBUFS - raw0.ENOBUFS
	}
	if e.filter == "kernel" {
		acc, err := e.KernelAccepts()
		if err != nil {
			return run, err
		}
		run.PerConn = perConn(float64(acc-kernelAcc0), res.OK)
	}
	return run, nil
}

func rawNote(r Run) string {
	if r.RawReads == 0 {
		return ""
	}
	return fmt.Sprintf("  recv/conn %.2f send/conn %.2f", float64(r.RawReads)/float64(max(r.OK, 1)), float64(r.RawSends)/float64(max(r.OK, 1)))
}

func perConn(packets float64, conns int) float64 {
	if conns == 0 {
		return math.NaN()
	}
	return packets / float64(conns)
}

// queueStats reads the NFQUEUE instances bound in namespace ns.
func queueStats(ns *lab.NS) (qs []datapath.QueueStat, err error) {
	err = ns.Do(func() error { qs, err = datapath.ReadQueueStats(); return err })
	return qs, err
}

func queueDrops(qs []datapath.QueueStat) uint64 {
	var n uint64
	for _, q := range qs {
		n += q.Dropped + q.UserDropped
	}
	return n
}

// conntrackFlush empties the conntrack tables of the node and the server, so every run
// starts from the same state (the previous run's connections linger in CLOSE for 10 s).
func (e *Env) conntrackFlush() error {
	for _, ns := range []*lab.NS{e.Node.NS, e.Server.NS} {
		if out, err := ns.Exec(context.Background(), "conntrack", "-F").CombinedOutput(); err != nil {
			return fmt.Errorf("load: conntrack -F in %s: %w: %s", ns.Name(), err, out)
		}
	}
	return nil
}

// sysctl writes /proc/sys/<key> inside namespace ns.
func sysctl(ns *lab.NS, key, value string) error {
	return ns.Do(func() error { return os.WriteFile("/proc/sys/"+key, []byte(value), 0) })
}

// profile runs a cold load for c.ProfileSeconds+2 s while taking a CPU profile of the agent
// through its debug listener; it writes the profile and `go tool pprof -top` of it.
func (e *Env) profile(ctx context.Context, queues int, c Config) (string, error) {
	if err := e.SetFilter(ctx, "podwall", queues); err != nil {
		return "", err
	}
	if err := e.BumpGeneration(ctx); err != nil {
		return "", err
	}
	if err := os.MkdirAll(c.ProfileDir, 0o755); err != nil {
		return "", err
	}
	secs := max(c.ProfileSeconds, 1)
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		pctx, cancel := context.WithTimeout(ctx, time.Duration(secs+10)*time.Second)
		defer cancel()
		code, b, err := e.agent.Get(pctx, "/debug/pprof/profile?seconds="+strconv.Itoa(secs))
		if err == nil && code != 200 {
			err = fmt.Errorf("pprof: %d %s", code, b)
		}
		done <- result{[]byte(b), err}
	}()
	// Cold loads of c.Count connections, each after a new policy generation, until the
	// profile window has passed.
	stop := time.Now().Add(time.Duration(secs)*time.Second + 500*time.Millisecond)
	var ok int
	var elapsed time.Duration
	for time.Now().Before(stop) {
		// An empty conntrack table keeps the revocation sweep the bump starts short.
		if err := e.conntrackFlush(); err != nil {
			return "", err
		}
		if err := e.BumpGeneration(ctx); err != nil {
			return "", err
		}
		res, err := Connect(e.Client.NS, ConnectLoad{Dst: e.ServerAddr(ConnPort), Ports: ConnPorts, Count: c.Count,
			Concurrency: c.Concurrency, Threads: e.Threads, Deadline: time.Until(stop)})
		if err != nil {
			return "", err
		}
		ok += res.OK
		elapsed += res.Elapsed
	}
	r := <-done
	if r.err != nil {
		return "", r.err
	}
	path := filepath.Join(c.ProfileDir, fmt.Sprintf("podwall-q%d-cold.pprof", queues))
	if err := os.WriteFile(path, r.b, 0o644); err != nil {
		return "", err
	}
	c.Logf("profile run: %d connections in %v (%.0f/s)", ok, elapsed.Round(time.Millisecond), float64(ok)/elapsed.Seconds())
	return path, nil
}

var errNoRoot = errors.New("load: needs root (network namespaces, nftables)")

// CheckRoot returns an error unless the process runs as root.
func CheckRoot() error {
	if os.Geteuid() != 0 {
		return errNoRoot
	}
	return nil
}
