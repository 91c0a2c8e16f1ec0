package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/podwall/podwall/conntrack"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/datapath/nft"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/decisions"
	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/flows"
)

// Config is what an Agent enforces, where from, and how. The command line fills it
// (cmd/podwall, `podwall run --help`); the zero values of the optional fields are the flags'
// defaults.
type Config struct {
	// Node is this node's name: pods whose spec.nodeName is Node are local.
	Node string
	// Source delivers the policy states. A Source that is also a prometheus.Collector (the
	// Kubernetes source) has its series registered with the agent's.
	Source policy.Source
	// QueueNum is the first NFQUEUE queue, Queues their number (one reader each).
	QueueNum, Queues uint16
	// FailOpen is the single failure policy (datapath/doc.go).
	FailOpen bool
	// CacheSize is the number of flows in the verdict cache.
	CacheSize int
	// MetricsAddr serves /metrics, /healthz and /readyz; DebugAddr the debug pages (empty:
	// off).
	MetricsAddr, DebugAddr string
	// PodInterfaces are name prefixes of pod interfaces, for anti-spoofing.
	PodInterfaces []string
	// KeepEstablished turns revocation of established connections off.
	KeepEstablished bool
	// RevokeMark is the connection mark bit that flags a revoked connection (revoke.go);
	// 0 means conntrack.DefaultMark.
	RevokeMark uint32
	// DenyCacheTTL is how long the kernel drops new packets of a flow the agent has just
	// denied, without queueing them (kernelcache.go); 0 turns the deny cache off. Whole
	// milliseconds, at most nft.MaxDenyCacheTTL.
	DenyCacheTTL time.Duration
	// AllowCacheTTL is how long the kernel accepts new connections of a flow (source,
	// destination, protocol, destination port) the agent has just allowed, without queueing
	// them (kernelcache.go); 0, the default, turns the allow cache off. Whole milliseconds,
	// at most nft.MaxAllowCacheTTL. The connections it accepts are not seen by the decision
	// stream, the verdict counters or the flow history.
	AllowCacheTTL time.Duration
	// PodCIDRs are this node's pod ranges, added to those of its Node object
	// (spec.podCIDRs): a new connection from or to an address of them that no local pod
	// of the policy in force has is held until the policy knows it (window.go).
	PodCIDRs []netip.Prefix
	// HoldTimeout bounds that hold; then the failure policy decides. 0 means
	// datapath.DefaultHoldTimeout; at most MaxHoldTimeout.
	HoldTimeout time.Duration
	// FlowHistory is the number of distinct flows /debug/flows keeps (0: flows.DefaultSize).
	FlowHistory int
	// FlowLog, when set, is the flow log (flows.File, opened by New): every FlowLogInterval
	// (0: flows.DefaultInterval) one line per flow judged, rotated past FlowLogMaxSize bytes
	// keeping FlowLogMaxFiles rotated files.
	FlowLog         string
	FlowLogInterval time.Duration
	FlowLogMaxSize  int64
	FlowLogMaxFiles int
	Log             *slog.Logger
}

// MaxHoldTimeout bounds Config.HoldTimeout: a held packet occupies a slot of the kernel's
// queue and of its reader's table.
const MaxHoldTimeout = time.Minute

// Agent is one running podwall.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	compiler *policy.Compiler
	inForce  inForce
	staged   staged // staged policies (staged.go)

	// Set in Run, in this order; nil before.
	queues  *datapath.Queues[policy.Decision]
	ruleset *nft.Ruleset // set under mu once programmed

	revoker *conntrack.Revoker
	mu      sync.Mutex // serialises applying states
	ready   atomic.Bool
	lastErr atomic.Pointer[string]
	// damage says what is wrong with the kernel table while it is being restored (heal.go).
	damage   atomic.Pointer[string]
	restores prometheus.Counter

	reg      *prometheus.Registry
	metrics  *verdictMetrics
	datapath *datapath.Collector
	stream   decisions.Hub   // the live decision stream (observe.go)
	deny     *kernelCache    // fills the kernel's deny cache (kernelcache.go)
	allow    *kernelCache    // fills the kernel's allow cache (kernelcache.go)
	table    *tableCounters  // the kernel table's counters as series (tablecounters.go)
	reported map[string]bool // problems and conflicts logged (problems.go); under mu
	cover    *coverage       // warns about pod interfaces anti-spoofing misses (window.go)
	flows    *flows.Recorder
	flowLog  *flows.File                  // nil without Config.FlowLog
	state    atomic.Pointer[policy.State] // the state in force (/debug/state)
}

// New returns an Agent for cfg. It touches neither the kernel nor the network: Run does.
func New(cfg Config) (*Agent, error) {
	var errs []error
	if cfg.Node == "" {
		errs = append(errs, errors.New("agent: no node name"))
	}
	if cfg.Source == nil {
		errs = append(errs, errors.New("agent: no policy source"))
	}
	if cfg.Queues == 0 {
		errs = append(errs, errors.New("agent: at least one queue"))
	}
	if ttl := cfg.DenyCacheTTL; ttl < 0 || ttl > nft.MaxDenyCacheTTL || ttl%time.Millisecond != 0 {
		errs = append(errs, fmt.Errorf("agent: deny cache TTL %v: want 0 (off) to %v in whole milliseconds", ttl, nft.MaxDenyCacheTTL))
	}
	if ttl := cfg.AllowCacheTTL; ttl < 0 || ttl > nft.MaxAllowCacheTTL || ttl%time.Millisecond != 0 {
		errs = append(errs, fmt.Errorf("agent: allow cache TTL %v: want 0 (off) to %v in whole milliseconds", ttl, nft.MaxAllowCacheTTL))
	}
	for _, p := range cfg.PodCIDRs {
		if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			errs = append(errs, fmt.Errorf("agent: pod CIDR %v: want an IPv4 or IPv6 prefix", p))
		}
	}
	if cfg.HoldTimeout < 0 || cfg.HoldTimeout > MaxHoldTimeout {
		errs = append(errs, fmt.Errorf("agent: hold timeout %v: want 0 (default %v) to %v", cfg.HoldTimeout, datapath.DefaultHoldTimeout, MaxHoldTimeout))
	}
	if cfg.FlowHistory < 0 {
		errs = append(errs, fmt.Errorf("agent: flow history %d: want ≥ 0", cfg.FlowHistory))
	}
	if cfg.FlowLog != "" && (cfg.FlowLogMaxSize <= 0 || cfg.FlowLogMaxFiles < 0 || cfg.FlowLogInterval < 0) {
		errs = append(errs, fmt.Errorf("agent: flow log: maximum size %d (want > 0), files %d (want ≥ 0), interval %v (want ≥ 0)",
			cfg.FlowLogMaxSize, cfg.FlowLogMaxFiles, cfg.FlowLogInterval))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	a := &Agent{cfg: cfg, log: cfg.Log, compiler: policy.NewCompiler(cfg.Node), reg: prometheus.NewRegistry()}
	a.inForce.Store(a.compiler.Snapshot()) // empty until the first state: allows all
	a.staged.metrics = newStagedMetrics()
	a.metrics = newVerdictMetrics(cfg.QueueNum, cfg.Queues)
	a.datapath = datapath.NewCollector(cfg.QueueNum, cfg.Queues)
	a.revoker = conntrack.NewRevoker(conntrack.Config{Log: a.log, OnSweep: a.swept, Mark: cfg.RevokeMark})
	a.deny = newDenyCache(cfg.DenyCacheTTL, a.log)
	a.allow = newAllowCache(cfg.AllowCacheTTL, a.log)
	a.table = &tableCounters{caches: []*kernelCache{a.deny, a.allow}}
	a.restores = newRestores()
	a.cover = newCoverage(cfg.PodInterfaces, a.log)
	if err := a.newFlows(); err != nil {
		return nil, err
	}
	a.reg.MustRegister(a.staged.metrics)
	a.reg.MustRegister(a.metrics, a.datapath, a.revoker, &a.stream, a.deny, a.allow, a.table, problemCollector{&a.inForce}, a.cover, a.flows, a.restores,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if c, ok := cfg.Source.(prometheus.Collector); ok {
		a.reg.MustRegister(c)
	}
	return a, nil
}

// inForce holds the snapshot in force, published by one atomic pointer store, and the one
// before it: the datapath's Decider. Its decision is the policy.Decision, which the flow
// cache keeps with the verdict and observe counts and streams, so a packet is decided once.
type inForce struct {
	atomic.Pointer[policy.Snapshot]
	prev atomic.Pointer[policy.Snapshot]
	// ranges are this node's pod ranges (window.go), stored before each swap.
	ranges atomic.Pointer[[]netip.Prefix]
}

// Generation implements datapath.Decider.
func (p *inForce) Generation() uint64 { return p.Load().Generation() }

// Decide implements datapath.Decider: the decision on f and this node's verdict.
func (p *inForce) Decide(f flow.Flow) (policy.Decision, bool, uint64) {
	s := p.Load()
	d := s.Decide(f)
	return d, d.LocalVerdict() == policy.Allow, s.Generation()
}

// swap puts s in force and keeps the snapshot it replaces.
func (p *inForce) swap(s *policy.Snapshot) { p.prev.Store(p.Swap(s)) }

// of returns the snapshot of generation gen: the one in force or the one before (a verdict
// observed just after a swap), else the one in force.
func (p *inForce) of(gen uint64) *policy.Snapshot {
	s := p.Load()
	if s.Generation() != gen {
		if prev := p.prev.Load(); prev != nil && prev.Generation() == gen {
			return prev
		}
	}
	return s
}

// Run enforces policy until ctx ends. It returns an error when it cannot start (a busy
// listen address, no conntrack, the kernel refusing the table); once started it returns nil
// when ctx ends, or when the source stops for good.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	servers, err := a.listen()
	if err != nil {
		return err
	}
	defer a.runFlows(ctx)()
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()

	// The first good state is loaded before anything reaches the kernel, so the ruleset is
	// programmed with the right sets at once. Until then a table left by an earlier run
	// goes on enforcing the failure policy with no reader (fail closed: new connections of
	// isolated pods are dropped; fail open: bypassed), and a broken first state never
	// empties its sets.
	first := make(chan struct{}, 1)
	go func() {
		err := a.cfg.Source.Run(ctx, func(s policy.State, err error) {
			if a.apply(s, err) {
				select {
				case first <- struct{}{}:
				default:
				}
			}
		})
		if err != nil && ctx.Err() == nil {
			a.log.Error("policy source stopped", "err", err)
			cancel()
		}
	}()
	select {
	case <-ctx.Done():
		return nil
	case <-first:
	}

	stopRevoker, err := a.startRevoker(ctx)
	if err != nil {
		return err
	}
	defer stopRevoker()
	if a.queues, err = datapath.Start(ctx, datapath.Config[policy.Decision]{
		QueueNum: a.cfg.QueueNum, Queues: a.cfg.Queues, FailOpen: a.cfg.FailOpen,
		CacheSize: a.cfg.CacheSize, Log: a.log, Observe: a.observe, HoldTimeout: a.cfg.HoldTimeout,
	}, &a.inForce); err != nil {
		return err
	}
	defer a.queues.Close()
	a.datapath.Attach(a.queues)
	rs, err := nft.New(nft.Config{
		QueueNum: a.cfg.QueueNum, QueueCount: a.cfg.Queues, FailOpen: a.cfg.FailOpen,
		PodInterfacePrefixes: a.cfg.PodInterfaces, DenyCacheTTL: a.cfg.DenyCacheTTL, AllowCacheTTL: a.cfg.AllowCacheTTL,
		RevokedMark: a.revoker.Mark(),
	})
	if err != nil {
		return err
	}
	// The readers are bound: every packet queued from now on is judged by the snapshot in
	// force. Program the table (or take over the one an earlier run left) and its sets in
	// one transaction, under mu so that no state applied meanwhile is skipped: the hook
	// never runs with sets that differ from the engine's snapshot. Then sweep conntrack
	// for what the first policy denies (connections made before or between runs).
	a.mu.Lock()
	snap, err := a.programInForce(rs)
	if err != nil {
		a.mu.Unlock()
		return err
	}
	a.ruleset = rs
	a.afterApply(snap)
	a.mu.Unlock()
	a.table.attach(rs)
	go a.cover.run(ctx)
	// The verdict caches' adders: flows that observe handed over meanwhile wait in their
	// queues and go in now, if their generation is still the one the sets enforce.
	cacheCtx, stopCaches := context.WithCancel(ctx)
	var caches sync.WaitGroup
	if a.deny.on() {
		caches.Go(func() { a.deny.run(cacheCtx, rs) })
	}
	if a.allow.on() {
		caches.Go(func() { a.allow.run(cacheCtx, rs) })
	}
	defer func() {
		stopCaches()
		caches.Wait()
		keep := !a.cfg.FailOpen
		if err := a.ruleset.Close(keep); err != nil {
			a.log.Error("closing ruleset", "err", err)
		}
		a.log.Info("stopped", "table_kept", keep)
	}()
	a.ready.Store(true)
	a.log.Info("ready", "node", a.cfg.Node, "queues", a.cfg.Queues, "queue_mode", a.ruleset.Mode().String(),
		"generation", a.inForce.Generation(), "fail_open", a.cfg.FailOpen, "deny_cache_ttl", a.cfg.DenyCacheTTL, "allow_cache_ttl", a.cfg.AllowCacheTTL)
	a.guardTable(ctx) // until ctx ends
	a.ready.Store(false)
	return nil
}

// apply compiles a new state and, once the datapath runs, syncs it; it reports whether
// the state is now in force. A broken state keeps the last good one in force.
//
// The kernel sets change first, then the engine's snapshot: when /readyz reports a
// generation, both enforce it. A failed sync changes nothing (one transaction), so the
// last good snapshot stays in force. In the instant between the two steps, a connection
// of a pod whose isolation changed may be judged by the old snapshot; the conntrack sweep
// that afterApply starts revokes it if the new one denies it.
//
// The same sync empties the kernel's deny cache when the generation changes, and from then
// on the ruleset refuses denies of any other generation (nft.ErrStale): a flow the old
// policy denied and the new one allows is judged anew from its next packet, never dropped
// by a leftover. That holds because the sync comes before the swap: no verdict of the new
// generation exists before the ruleset knows it.
func (a *Agent) apply(s policy.State, loadErr error) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if loadErr != nil {
		a.fail(loadErr)
		return false
	}
	start := time.Now()
	enforced := a.staged.split(a.cfg.Node, s) // s without its staged policies (staged.go)
	if err := a.compiler.Replace(enforced); err != nil {
		a.fail(err)
		return false
	}
	snap := a.compiler.Snapshot()
	ranges := a.podRanges(s)
	if a.ruleset != nil {
		in, eg := a.staged.queued(snap)
		if err := a.ruleset.SyncWindow(snap.Generation(), in, eg, window(snap, ranges)); err != nil {
			a.fail(err)
			return false
		}
	}
	a.inForce.ranges.Store(&ranges)
	a.inForce.swap(snap)
	a.staged.publish(snap)
	a.reportProblems(snap)
	a.cover.update(snap)
	a.state.Store(&s)
	a.metrics.compiled(time.Since(start), snap, len(s.Pods), len(enforced.Policies))
	if a.ruleset != nil {
		a.afterApply(snap)
	}
	a.lastErr.Store(nil)
	a.log.Info("policy applied", "generation", snap.Generation(), "pods", len(s.Pods),
		"policies", len(s.Policies), "rejected", len(snap.Problems()), "took", time.Since(start))
	return true
}

func (a *Agent) fail(err error) {
	msg := err.Error()
	a.lastErr.Store(&msg)
	a.metrics.sourceErrors.Inc()
	a.log.Error("keeping the last good policy", "err", err)
}

// MetricsHandler serves /metrics, /healthz and /readyz (what Run serves on MetricsAddr):
// GETs without a body.
func (a *Agent) MetricsHandler() http.Handler { return noBody(a.metricsMux()) }

// DebugHandler serves the debug pages (what Run serves on DebugAddr): requests addressed to
// an IP or localhost, without a body (http.go).
func (a *Agent) DebugHandler() http.Handler { return localHost(noBody(a.debugMux())) }
