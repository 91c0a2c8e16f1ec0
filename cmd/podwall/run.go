package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/datapath/nft"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/manifests"
)

type runOpts struct {
	manifests     string
	nodeName      string
	queues        int
	queueNum      int
	failOpen      bool
	cacheSize     int
	metricsAddr   string
	debugAddr     string
	podInterfaces string
	logFormat     string
}

func newRunCmd() *cobra.Command {
	var o runOpts
	cmd := &cobra.Command{
		Use:   "run --manifests PATH [--node-name NODE]",
		Short: "Enforce NetworkPolicy for the pods of this node (the agent)",
		Long: `run enforces NetworkPolicy in the network namespace it runs in, for the pods whose
spec.nodeName is --node-name. Sources: --manifests (a file or directory, reloaded on change).

Failure policy (--fail-open, default false = fail closed): when podwall cannot judge a packet
of an isolated pod — malformed headers, a full queue, the agent stopped — the packet is
dropped; with --fail-open it is accepted. On exit the kernel table stays in place when failing
closed (isolated pods stay protected while the agent restarts) and is removed when failing open.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd.Context()) },
	}
	f := cmd.Flags()
	f.StringVar(&o.manifests, "manifests", "", "file or directory of Kubernetes YAML/JSON, reloaded on change")
	f.StringVar(&o.nodeName, "node-name", "", "this node's name (default $NODE_NAME, then the hostname)")
	f.IntVar(&o.queues, "queues", runtime.NumCPU(), "number of NFQUEUE queues (one reader each, fanout by CPU)")
	f.IntVar(&o.queueNum, "queue-num", 100, "first NFQUEUE number")
	f.BoolVar(&o.failOpen, "fail-open", false, "accept instead of drop what cannot be judged (see above)")
	f.IntVar(&o.cacheSize, "cache-size", 65536, "flows in the verdict cache")
	f.StringVar(&o.metricsAddr, "metrics-addr", ":9090", "listen address for /metrics, /healthz, /readyz")
	f.StringVar(&o.debugAddr, "debug-addr", "127.0.0.1:9091", "listen address for /debug/ (empty: off)")
	f.StringVar(&o.podInterfaces, "pod-interfaces", "veth,cali,lxc", "comma-separated name prefixes of pod interfaces, for anti-spoofing")
	f.StringVar(&o.logFormat, "log-format", "text", "text or json")
	return cmd
}

func (o *runOpts) validate() error {
	var errs []error
	if o.manifests == "" {
		errs = append(errs, errors.New("--manifests is required"))
	}
	if o.queues < 1 || o.queues > 64 {
		errs = append(errs, fmt.Errorf("--queues: want 1-64, got %d", o.queues))
	}
	if o.queueNum < 0 || o.queueNum+o.queues > 65535 {
		errs = append(errs, fmt.Errorf("--queue-num: %d+%d queues exceed 65535", o.queueNum, o.queues))
	}
	if o.cacheSize < 1 {
		errs = append(errs, fmt.Errorf("--cache-size: want at least 1, got %d", o.cacheSize))
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format: want text or json, got %q", o.logFormat))
	}
	return errors.Join(errs...)
}

func nodeName(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if n := os.Getenv("NODE_NAME"); n != "" {
		return n, nil
	}
	return os.Hostname()
}

// engine is the datapath's Decider over the current snapshot, published by one atomic
// pointer store.
type engine struct {
	snap atomic.Pointer[policy.Snapshot]
}

func (e *engine) Generation() uint64 { return e.snap.Load().Generation() }

func (e *engine) Decide(f datapath.Flow) (bool, uint64) {
	s := e.snap.Load()
	d := s.Decide(policy.Flow{Src: f.Src, Dst: f.Dst, Proto: policy.Protocol(f.Proto), Port: f.Port})
	return d.LocalVerdict() == policy.Allow, s.Generation()
}

// agent is one running podwall.
type agent struct {
	o        *runOpts
	node     string
	log      *slog.Logger
	engine   engine
	compiler *policy.Compiler
	ruleset  *nft.Ruleset
	queues   *datapath.Queues

	mu         sync.Mutex // serialises applying states
	ready      atomic.Bool
	lastErr    atomic.Pointer[string]
	metrics    *agentMetrics
	compiledAt time.Time
}

func (o *runOpts) run(ctx context.Context) error {
	if err := o.validate(); err != nil {
		return err
	}
	node, err := nodeName(o.nodeName)
	if err != nil {
		return fmt.Errorf("--node-name: %w", err)
	}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, nil)
	if o.logFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, nil)
	}
	a := &agent{o: o, node: node, log: slog.New(h), compiler: policy.NewCompiler(node)}
	a.engine.snap.Store(a.compiler.Snapshot()) // empty until the first state: allows all
	a.metrics = newAgentMetrics(a)
	return a.run(ctx)
}

func (a *agent) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	servers, err := a.listen()
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()

	// The first state is loaded before anything reaches the kernel, so the ruleset is
	// programmed with the right sets at once.
	first := make(chan error, 1)
	go func() {
		err := manifests.Watch(ctx, a.o.manifests, func(s policy.State, err error) {
			a.apply(s, err)
			select {
			case first <- err:
			default:
			}
		})
		if err != nil && ctx.Err() == nil {
			a.log.Error("manifests watch stopped", "err", err)
			cancel()
		}
	}()
	select {
	case <-ctx.Done():
		return nil
	case <-first:
	}

	if a.queues, err = datapath.Start(ctx, datapath.Config{
		QueueNum: uint16(a.o.queueNum), Queues: uint16(a.o.queues), FailOpen: a.o.failOpen,
		CacheSize: a.o.cacheSize, Log: a.log, Observe: a.metrics.observe,
	}, &a.engine); err != nil {
		return err
	}
	defer a.queues.Close()
	if a.ruleset, err = nft.New(nft.Config{
		QueueNum: uint16(a.o.queueNum), QueueCount: uint16(a.o.queues), FailOpen: a.o.failOpen,
		PodInterfacePrefixes: splitList(a.o.podInterfaces),
	}); err != nil {
		return err
	}
	if err := a.ruleset.Program(); err != nil {
		return err
	}
	defer func() {
		keep := !a.o.failOpen
		if err := a.ruleset.Close(keep); err != nil {
			a.log.Error("closing ruleset", "err", err)
		}
		a.log.Info("stopped", "table_kept", keep)
	}()
	if err := a.sync(); err != nil {
		return err
	}
	a.ready.Store(true)
	a.log.Info("ready", "node", a.node, "queues", a.o.queues, "queue_mode", a.ruleset.Mode().String(),
		"generation", a.engine.Generation(), "fail_open", a.o.failOpen)
	<-ctx.Done()
	a.ready.Store(false)
	return nil
}

// apply compiles a new state and, once the datapath runs, syncs it. A broken state keeps
// the last good one in force.
func (a *agent) apply(s policy.State, loadErr error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if loadErr != nil {
		a.fail(loadErr)
		return
	}
	start := time.Now()
	if err := a.compiler.Replace(s); err != nil {
		a.fail(err)
		return
	}
	snap := a.compiler.Snapshot()
	a.engine.snap.Store(snap)
	a.metrics.compiled(time.Since(start), snap, len(s.Pods), len(s.Policies))
	if a.ruleset != nil {
		if err := a.sync(); err != nil {
			a.fail(err)
			return
		}
	}
	a.lastErr.Store(nil)
	a.log.Info("policy applied", "generation", snap.Generation(), "pods", len(s.Pods),
		"policies", len(s.Policies), "took", time.Since(start))
}

func (a *agent) fail(err error) {
	msg := err.Error()
	a.lastErr.Store(&msg)
	a.metrics.sourceErrors.Inc()
	a.log.Error("keeping the last good policy", "err", err)
}

// sync makes the kernel sets equal to the current snapshot's isolated local pods.
func (a *agent) sync() error {
	in, eg := a.engine.snap.Load().LocalIsolated()
	return a.ruleset.Sync(in, eg)
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// listen starts the metrics and debug listeners. Binding happens here, so a busy port fails
// the start instead of a background goroutine.
func (a *agent) listen() ([]*http.Server, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if a.queues != nil && a.queues.Stats().ReaderFailures > 0 {
			http.Error(w, "a queue reader stopped", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			msg := "not ready: first policy not compiled or datapath not programmed"
			if e := a.lastErr.Load(); e != nil {
				msg += ": " + *e
			}
			http.Error(w, msg, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ok generation=%d\n", a.engine.Generation())
	})
	servers := []*http.Server{}
	add := func(addr string, h http.Handler) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", addr, err)
		}
		s := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, s)
		go s.Serve(ln)
		return nil
	}
	if err := add(a.o.metricsAddr, mux); err != nil {
		return nil, err
	}
	if a.o.debugAddr != "" {
		dmux := http.NewServeMux()
		dmux.HandleFunc("/debug/pprof/", pprof.Index)
		dmux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		dmux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		dmux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		if err := add(a.o.debugAddr, dmux); err != nil {
			servers[0].Close()
			return nil, err
		}
	}
	return servers, nil
}

// agentMetrics are the agent's Prometheus series (namespace podwall).
type agentMetrics struct {
	reg            *prometheus.Registry
	verdicts       *prometheus.CounterVec
	byVerdict      [2][2]prometheus.Counter // [allow][cache hit]
	decideSeconds  prometheus.Histogram
	compileSeconds prometheus.Histogram
	generation     prometheus.Gauge
	pods, policies prometheus.Gauge
	sourceErrors   prometheus.Counter
}

func newAgentMetrics(a *agent) *agentMetrics {
	m := &agentMetrics{
		reg: prometheus.NewRegistry(),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "podwall", Subsystem: "datapath",
			Name: "verdicts_total", Help: "Verdicts given to queued packets, by verdict and whether the flow cache answered."},
			[]string{"verdict", "cache"}),
		decideSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "podwall", Subsystem: "datapath",
			Name: "decide_seconds", Help: "Time from receiving a queued packet to its verdict.",
			Buckets: prometheus.ExponentialBuckets(250e-9, 2, 16)}),
		compileSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "podwall", Subsystem: "policy",
			Name: "compile_seconds", Help: "Time to compile a new policy snapshot.",
			Buckets: prometheus.ExponentialBuckets(1e-4, 2, 16)}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "podwall", Subsystem: "policy",
			Name: "generation", Help: "Generation of the policy snapshot in force."}),
		pods: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "podwall", Subsystem: "policy",
			Name: "pods", Help: "Pods in the policy snapshot in force."}),
		policies: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "podwall", Subsystem: "policy",
			Name: "policies", Help: "NetworkPolicies in the policy snapshot in force."}),
		sourceErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "podwall", Subsystem: "source",
			Name: "errors_total", Help: "Rejected source states (bad manifests); the last good policy stays in force."}),
	}
	for allow, v := range []string{"deny", "allow"} {
		for hit, c := range []string{"miss", "hit"} {
			m.byVerdict[allow][hit] = m.verdicts.WithLabelValues(v, c)
		}
	}
	stat := func(name, help string, f func(datapath.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "podwall", Subsystem: "datapath", Name: name, Help: help},
			func() float64 {
				if a.queues == nil {
					return 0
				}
				return float64(f(a.queues.Stats()))
			})
	}
	m.reg.MustRegister(m.verdicts, m.decideSeconds, m.compileSeconds, m.generation, m.pods, m.policies, m.sourceErrors,
		stat("packets_total", "Packets received from the queues.", func(s datapath.Stats) uint64 { return s.Packets }),
		stat("malformed_total", "Queued packets that could not be decoded (given the failure policy's verdict).", func(s datapath.Stats) uint64 { return s.Malformed }),
		stat("enobufs_total", "Netlink receive buffer overruns: queued packets the kernel could not deliver.", func(s datapath.Stats) uint64 { return s.ENOBUFS }),
		stat("flowcache_hits_total", "Verdict cache hits.", func(s datapath.Stats) uint64 { return s.Cache.Hits }),
		stat("flowcache_misses_total", "Verdict cache misses.", func(s datapath.Stats) uint64 { return s.Cache.Misses }),
		stat("flowcache_evictions_total", "Verdict cache evictions.", func(s datapath.Stats) uint64 { return s.Cache.Evictions }),
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}),
	)
	return m
}

func (m *agentMetrics) observe(r *datapath.Record) {
	allow, hit := 0, 0
	if r.Allow {
		allow = 1
	}
	if r.CacheHit {
		hit = 1
	}
	m.byVerdict[allow][hit].Inc()
	m.decideSeconds.Observe(r.Latency.Seconds())
}

func (m *agentMetrics) compiled(d time.Duration, s *policy.Snapshot, pods, policies int) {
	m.compileSeconds.Observe(d.Seconds())
	m.generation.Set(float64(s.Generation()))
	m.pods.Set(float64(pods))
	m.policies.Set(float64(policies))
}
