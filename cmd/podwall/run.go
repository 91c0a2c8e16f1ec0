package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/podwall/podwall/conntrack"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/datapath/nft"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/decisions"
	"github.com/podwall/podwall/policy/flow"
)

type runOpts struct {
	manifests     string
	kubeconfig    string
	nodeName      string
	queues        int
	queueNum      int
	failOpen      bool
	cacheSize     int
	metricsAddr   string
	debugAddr     string
	podInterfaces string
	logFormat     string

	keepEstablished bool
}

func newRunCmd() *cobra.Command {
	var o runOpts
	cmd := &cobra.Command{
		Use:   "run [--kubeconfig FILE | --manifests PATH] [--node-name NODE]",
		Short: "Enforce NetworkPolicy for the pods of this node (the agent)",
		Long: `run enforces NetworkPolicy in the network namespace it runs in, for the pods whose
spec.nodeName is --node-name. Sources: the Kubernetes API (--kubeconfig, or in a pod the
in-cluster config), or --manifests (a file or directory, reloaded on change).

Failure policy (--fail-open, default false = fail closed): when podwall cannot judge a packet
of an isolated pod — malformed headers, a full queue, the agent stopped — the packet is
dropped; with --fail-open it is accepted. On exit the kernel table stays in place when failing
closed (isolated pods stay protected while the agent restarts) and is removed when failing open.

Established connections that a policy change denies are revoked: their conntrack entries are
deleted, so their next packet is judged again (--keep-established keeps them).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd.Context()) },
	}
	f := cmd.Flags()
	o.addSourceFlags(f)
	f.StringVar(&o.nodeName, "node-name", "", "this node's name (default $NODE_NAME, then the hostname)")
	f.IntVar(&o.queues, "queues", runtime.NumCPU(), "number of NFQUEUE queues (one reader each, fanout by CPU)")
	f.IntVar(&o.queueNum, "queue-num", 100, "first NFQUEUE number")
	f.BoolVar(&o.failOpen, "fail-open", false, "accept instead of drop what cannot be judged (see above)")
	f.IntVar(&o.cacheSize, "cache-size", 65536, "flows in the verdict cache")
	f.StringVar(&o.metricsAddr, "metrics-addr", ":9090", "listen address for /metrics, /healthz, /readyz")
	f.StringVar(&o.debugAddr, "debug-addr", "127.0.0.1:9091", "listen address for /debug/ (empty: off)")
	f.StringVar(&o.podInterfaces, "pod-interfaces", "veth,cali,lxc", "comma-separated name prefixes of pod interfaces, for anti-spoofing")
	f.StringVar(&o.logFormat, "log-format", "text", "text or json")
	o.addRevokeFlags(f)
	return cmd
}

func (o *runOpts) validate() error {
	var errs []error
	errs = append(errs, o.validateSource())
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

func (e *engine) Decide(f flow.Flow) (bool, uint64) {
	s := e.snap.Load()
	d := s.Decide(f)
	return d.LocalVerdict() == policy.Allow, s.Generation()
}

// agent is one running podwall.
type agent struct {
	o        *runOpts
	node     string
	log      *slog.Logger
	engine   engine
	compiler *policy.Compiler
	source   policy.Source
	ruleset  *nft.Ruleset // set under mu once programmed
	queues   *datapath.Queues
	revoker  *conntrack.Revoker // nil with --keep-established

	mu      sync.Mutex // serialises applying states
	ready   atomic.Bool
	lastErr atomic.Pointer[string]
	metrics *agentMetrics
	stream  decisions.Hub // the live decision stream (observe.go)
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
	if a.source, err = o.newSource(a.log); err != nil {
		return err
	}
	a.engine.snap.Store(a.compiler.Snapshot()) // empty until the first state: allows all
	a.metrics = newAgentMetrics(a)
	a.metrics.reg.MustRegister(a.sourceMetrics()...)
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

	// The first good state is loaded before anything reaches the kernel, so the ruleset is
	// programmed with the right sets at once. Until then a table left by an earlier run
	// goes on enforcing the failure policy with no reader (fail closed: new connections of
	// isolated pods are dropped; fail open: bypassed), and a broken first state never
	// empties its sets.
	first := make(chan struct{}, 1)
	go func() {
		err := a.source.Run(ctx, func(s policy.State, err error) {
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
	if a.queues, err = datapath.Start(ctx, datapath.Config{
		QueueNum: uint16(a.o.queueNum), Queues: uint16(a.o.queues), FailOpen: a.o.failOpen,
		CacheSize: a.o.cacheSize, Log: a.log, Observe: a.observe,
	}, &a.engine); err != nil {
		return err
	}
	defer a.queues.Close()
	rs, err := nft.New(nft.Config{
		QueueNum: uint16(a.o.queueNum), QueueCount: uint16(a.o.queues), FailOpen: a.o.failOpen,
		PodInterfacePrefixes: splitList(a.o.podInterfaces),
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
	snap := a.engine.snap.Load()
	in, eg := snap.LocalIsolated()
	if err := rs.ProgramSync(in, eg); err != nil {
		a.mu.Unlock()
		return err
	}
	a.ruleset = rs
	a.afterApply(nil, snap)
	a.mu.Unlock()
	defer func() {
		keep := !a.o.failOpen
		if err := a.ruleset.Close(keep); err != nil {
			a.log.Error("closing ruleset", "err", err)
		}
		a.log.Info("stopped", "table_kept", keep)
	}()
	a.ready.Store(true)
	a.log.Info("ready", "node", a.node, "queues", a.o.queues, "queue_mode", a.ruleset.Mode().String(),
		"generation", a.engine.Generation(), "fail_open", a.o.failOpen)
	<-ctx.Done()
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
func (a *agent) apply(s policy.State, loadErr error) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if loadErr != nil {
		a.fail(loadErr)
		return false
	}
	start := time.Now()
	if err := a.compiler.Replace(s); err != nil {
		a.fail(err)
		return false
	}
	snap := a.compiler.Snapshot()
	if a.ruleset != nil {
		in, eg := snap.LocalIsolated()
		if err := a.ruleset.Sync(in, eg); err != nil {
			a.fail(err)
			return false
		}
	}
	old := a.engine.snap.Swap(snap)
	a.metrics.compiled(time.Since(start), snap, len(s.Pods), len(s.Policies))
	if a.ruleset != nil {
		a.afterApply(old, snap)
	}
	a.lastErr.Store(nil)
	a.log.Info("policy applied", "generation", snap.Generation(), "pods", len(s.Pods),
		"policies", len(s.Policies), "took", time.Since(start))
	return true
}

func (a *agent) fail(err error) {
	msg := err.Error()
	a.lastErr.Store(&msg)
	a.metrics.sourceErrors.Inc()
	a.log.Error("keeping the last good policy", "err", err)
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
