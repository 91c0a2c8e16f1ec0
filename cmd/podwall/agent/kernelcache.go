package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podwall/podwall/datapath/nft"
	"github.com/podwall/podwall/policy/flow"
)

// This file owns the userspace half of the kernel's verdict caches (datapath/nft doc.go,
// "The deny cache" and "The allow cache"): observe hands every denied flow, and with the
// allow cache on every allowed flow, to offer, on the queue reader's goroutine, without
// waiting; one goroutine per cache (run) writes what it was handed to the kernel in
// batches, each in one transaction; the series say how that went. A flow in a cache has its
// new packets dropped (accepted) by the kernel for the TTL, so they reach neither the
// agent's verdict counters nor the decision stream: the stream marks the decision that put
// it there (decisions.Record.KernelDenyTTL, KernelAllowTTL) and
// podwall_datapath_deny_cache_hits_total (allow_cache_hits_total) counts the packets the
// kernel answered.

// cacheSet is the kernel's verdict caches as the adders use them. *nft.Ruleset implements
// it.
type cacheSet interface {
	// AddDenied adds flows denied by policy generation gen, AddAllowed flows allowed by
	// it, or they return nft.ErrStale when the kernel sets enforce another generation.
	AddDenied(gen uint64, flows []flow.Flow) (int, error)
	AddAllowed(gen uint64, flows []flow.Flow) (int, error)
}

// cachedVerdict is a flow and the policy generation that decided it.
type cachedVerdict struct {
	flow flow.Flow
	gen  uint64
}

const (
	// cacheQueueLen is how many flows wait for an adder; beyond it offer drops (counted)
	// and those flows' repeats go on reaching the queue. A netlink transaction takes about
	// 100 µs here: a second's worth of verdicts at the agent's rate waits in a few
	// thousand entries.
	cacheQueueLen = 4096
	// maxCacheBatch bounds the flows of one transaction.
	maxCacheBatch = 1024
	// cacheErrorLogEvery rate-limits the log of failed additions (a full set fails every
	// batch until elements time out); the counter counts every one.
	cacheErrorLogEvery = time.Minute
)

// kernelCache fills one of the kernel's verdict caches from the verdict path.
type kernelCache struct {
	// kind is "deny" or "allow": the metric names' and the log's word.
	kind string
	// ttl is Config.DenyCacheTTL (AllowCacheTTL): how long the kernel answers a cached
	// flow. 0: off.
	ttl time.Duration
	ch  chan cachedVerdict
	log *slog.Logger
	// write hands one batch to the kernel. hits reads the cache's hits from the table's
	// counters, exported as hitsDesc by tableCounters with the table's other counters.
	write    func(s cacheSet, gen uint64, flows []flow.Flow) (int, error)
	hits     func(nft.Counters) uint64
	hitsDesc *prometheus.Desc

	mu      sync.Mutex // guards lastLog
	lastLog time.Time

	adds, drops, stale, errs prometheus.Counter
}

func newDenyCache(ttl time.Duration, log *slog.Logger) *kernelCache {
	return newKernelCache(ttl, log, "deny", "denied", "dropped", cacheSet.AddDenied,
		func(c nft.Counters) uint64 { return c.DenyCached })
}

func newAllowCache(ttl time.Duration, log *slog.Logger) *kernelCache {
	return newKernelCache(ttl, log, "allow", "allowed", "accepted", cacheSet.AddAllowed,
		func(c nft.Counters) uint64 { return c.AllowCached })
}

// newKernelCache returns the adder of cache kind; verdict ("denied") and answer ("dropped")
// are the words of its metrics' help.
func newKernelCache(ttl time.Duration, log *slog.Logger, kind, verdict, answer string,
	write func(cacheSet, uint64, []flow.Flow) (int, error), hits func(nft.Counters) uint64) *kernelCache {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "podwall", Subsystem: "datapath", Name: kind + "_cache_" + name, Help: help})
	}
	c := &kernelCache{
		kind: kind, ttl: ttl, log: log, write: write, hits: hits,
		hitsDesc: prometheus.NewDesc("podwall_datapath_"+kind+"_cache_hits_total",
			"New packets of recently "+verdict+" flows that the kernel "+answer+" from the "+kind+" cache, without queueing them (the cache rules' counters).", nil, nil),
		adds:  counter("adds_total", "Flows "+verdict+" by the agent written to the kernel's "+kind+" cache."),
		drops: counter("add_drops_total", "Flows "+verdict+" by the agent not handed to the "+kind+" cache because its queue was full; their repeats keep reaching the agent."),
		stale: counter("stale_total", "Flows "+verdict+" by the agent left out of the "+kind+" cache because a newer policy came into force before they reached the kernel."),
		errs:  counter("add_errors_total", "Transactions of the "+kind+" cache the kernel refused (a full set, a netlink error); their flows are not cached."),
	}
	if ttl > 0 {
		c.ch = make(chan cachedVerdict, cacheQueueLen)
	}
	return c
}

// on reports whether the cache is on.
func (c *kernelCache) on() bool { return c.ch != nil }

// offer hands f, decided by generation gen, to the adder without waiting, and reports
// whether it did: false when the cache is off, for a protocol without ports (the kernel
// caches only key flows with ports), and when the queue is full (counted). It runs on a
// queue reader for every verdict the cache takes: no allocation and no wait (a non-blocking
// channel send, whose short internal lock the adder shares).
func (c *kernelCache) offer(f flow.Flow, gen uint64) bool {
	if c.ch == nil || !f.Proto.HasPorts() {
		return false
	}
	select {
	case c.ch <- cachedVerdict{f, gen}:
		return true
	default:
		c.drops.Inc()
		return false
	}
}

// run writes offered flows to set until ctx ends: each time one arrives, it and whatever
// else is waiting go in one transaction, so batches grow with the rate of verdicts and a
// lone one is in the kernel within one netlink round trip.
func (c *kernelCache) run(ctx context.Context, set cacheSet) {
	batch := make([]cachedVerdict, 0, maxCacheBatch)
	flows := make([]flow.Flow, 0, maxCacheBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-c.ch:
			batch = append(batch[:0], d)
		}
	more:
		for len(batch) < maxCacheBatch {
			select {
			case d := <-c.ch:
				batch = append(batch, d)
			default:
				break more
			}
		}
		c.add(set, batch, flows[:0])
	}
}

// add writes one batch: the flows decided by its newest generation, with that generation,
// in one write; set checks that the generation is still the one it enforces. Flows of
// older generations are stale without asking: a verdict of generation g exists only once g
// is in force, which the agent makes it only after syncing the kernel to g (apply), so the
// kernel has moved past every older one. flows is scratch space.
func (c *kernelCache) add(set cacheSet, batch []cachedVerdict, flows []flow.Flow) {
	var newest uint64
	for _, d := range batch {
		newest = max(newest, d.gen)
	}
	for _, d := range batch {
		if d.gen == newest {
			flows = append(flows, d.flow)
		}
	}
	c.stale.Add(float64(len(batch) - len(flows)))
	n, err := c.write(set, newest, flows)
	c.adds.Add(float64(n)) // a large batch may fail part way
	switch {
	case errors.Is(err, nft.ErrStale):
		c.stale.Add(float64(len(flows)))
	case err != nil:
		c.errs.Inc()
		c.mu.Lock()
		quiet := time.Since(c.lastLog) < cacheErrorLogEvery
		if !quiet {
			c.lastLog = time.Now()
		}
		c.mu.Unlock()
		if !quiet {
			c.log.Warn(c.kind+" cache: flows not cached (further failures counted, logged once a minute)",
				"flows", len(flows)-n, "err", err)
		}
	}
}

func (c *kernelCache) counters() []prometheus.Counter {
	return []prometheus.Counter{c.adds, c.drops, c.stale, c.errs}
}

// Describe implements prometheus.Collector: the adder's series (the hits are tableCounters').
func (c *kernelCache) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.counters() {
		m.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (c *kernelCache) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.counters() {
		m.Collect(ch)
	}
}
