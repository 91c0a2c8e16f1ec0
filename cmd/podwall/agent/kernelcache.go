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

// This file owns the userspace half of the kernel's deny cache (datapath/nft doc.go, "The
// deny cache"): observe hands every denied flow to offer, on the queue reader's goroutine,
// without waiting; one goroutine (run) writes what it was handed to the kernel in batches,
// each in one transaction; the series say how that went. A flow in the cache has its new
// packets dropped by the kernel for the TTL, so they reach neither the agent's verdict
// counters nor the decision stream: the stream marks the decision that put it there
// (decisions.Record.KernelDenyTTL) and podwall_datapath_deny_cache_hits_total counts the
// packets the kernel dropped.

// denySet is the kernel's deny cache as the adder uses it. *nft.Ruleset implements it.
type denySet interface {
	// AddDenied adds flows denied by policy generation gen, or returns nft.ErrStale when
	// the kernel sets enforce another generation.
	AddDenied(gen uint64, flows []flow.Flow) (int, error)
	// Counters reads the rule counters; DenyCached is the cache's drops.
	Counters() (nft.Counters, error)
}

// deniedFlow is a flow and the policy generation that denied it.
type deniedFlow struct {
	flow flow.Flow
	gen  uint64
}

const (
	// denyQueueLen is how many denied flows wait for the adder; beyond it offer drops
	// (counted) and those flows' repeats go on reaching the queue. A netlink transaction
	// takes about 100 µs here: a second's worth of verdicts at the agent's rate waits in
	// a few thousand entries.
	denyQueueLen = 4096
	// maxDenyBatch bounds the flows of one transaction.
	maxDenyBatch = 1024
	// denyErrorLogEvery rate-limits the log of failed additions (a full set fails every
	// batch until elements time out); the counter counts every one.
	denyErrorLogEvery = time.Minute
)

// denyCache fills the kernel's deny cache from the verdict path.
type denyCache struct {
	// ttl is Config.DenyCacheTTL: how long the kernel drops a cached flow. 0: off.
	ttl time.Duration
	ch  chan deniedFlow
	log *slog.Logger

	mu      sync.Mutex
	set     denySet // set by run; nil before (the hits series is then 0)
	lastLog time.Time

	adds, drops, stale, errs prometheus.Counter
}

var denyCacheHitsDesc = prometheus.NewDesc("podwall_datapath_deny_cache_hits_total",
	"New packets of recently denied flows that the kernel dropped from the deny cache, without queueing them (the cache rules' counters).", nil, nil)

func newDenyCache(ttl time.Duration, log *slog.Logger) *denyCache {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "podwall", Subsystem: "datapath", Name: name, Help: help})
	}
	c := &denyCache{
		ttl: ttl, log: log,
		adds:  counter("deny_cache_adds_total", "Denied flows written to the kernel's deny cache."),
		drops: counter("deny_cache_add_drops_total", "Denied flows not handed to the deny cache because its queue was full; their repeats keep reaching the agent."),
		stale: counter("deny_cache_stale_total", "Denied flows left out of the deny cache because a newer policy came into force before they reached the kernel."),
		errs:  counter("deny_cache_add_errors_total", "Deny cache transactions the kernel refused (a full set, a netlink error); their flows are not cached."),
	}
	if ttl > 0 {
		c.ch = make(chan deniedFlow, denyQueueLen)
	}
	return c
}

// offer hands f, denied by generation gen, to the adder without waiting, and reports
// whether it did: false when the cache is off, for a protocol without ports (the kernel
// cache only keys flows with ports), and when the queue is full (counted). It runs on a
// queue reader for every deny: no allocation and no wait (a non-blocking channel send, whose
// short internal lock the adder shares).
func (c *denyCache) offer(f flow.Flow, gen uint64) bool {
	if c.ch == nil || !f.Proto.HasPorts() {
		return false
	}
	select {
	case c.ch <- deniedFlow{f, gen}:
		return true
	default:
		c.drops.Inc()
		return false
	}
}

// run writes offered flows to set until ctx ends: each time one arrives, it and whatever
// else is waiting go in one transaction, so batches grow with the rate of denies and a
// lone deny is in the kernel within one netlink round trip.
func (c *denyCache) run(ctx context.Context, set denySet) {
	c.mu.Lock()
	c.set = set
	c.mu.Unlock()
	batch := make([]deniedFlow, 0, maxDenyBatch)
	flows := make([]flow.Flow, 0, maxDenyBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-c.ch:
			batch = append(batch[:0], d)
		}
	more:
		for len(batch) < maxDenyBatch {
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

// add writes one batch: the flows denied by its newest generation, with that generation,
// in one AddDenied; set checks that the generation is still the one it enforces. Flows of
// older generations are stale without asking: a verdict of generation g exists only once g
// is in force, which the agent makes it only after syncing the kernel to g (apply), so the
// kernel has moved past every older one. flows is scratch space.
func (c *denyCache) add(set denySet, batch []deniedFlow, flows []flow.Flow) {
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
	n, err := set.AddDenied(newest, flows)
	c.adds.Add(float64(n)) // a large batch may fail part way
	switch {
	case errors.Is(err, nft.ErrStale):
		c.stale.Add(float64(len(flows)))
	case err != nil:
		c.errs.Inc()
		c.mu.Lock()
		quiet := time.Since(c.lastLog) < denyErrorLogEvery
		if !quiet {
			c.lastLog = time.Now()
		}
		c.mu.Unlock()
		if !quiet {
			c.log.Warn("deny cache: flows not cached (further failures counted, logged once a minute)",
				"flows", len(flows)-n, "err", err)
		}
	}
}

func (c *denyCache) counters() []prometheus.Counter {
	return []prometheus.Counter{c.adds, c.drops, c.stale, c.errs}
}

// Describe implements prometheus.Collector.
func (c *denyCache) Describe(ch chan<- *prometheus.Desc) {
	ch <- denyCacheHitsDesc
	for _, m := range c.counters() {
		m.Describe(ch)
	}
}

// Collect implements prometheus.Collector. The hits are read from the kernel now.
func (c *denyCache) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.counters() {
		m.Collect(ch)
	}
	c.mu.Lock()
	set := c.set
	c.mu.Unlock()
	var hits uint64
	if set != nil {
		k, err := set.Counters()
		if err != nil {
			return // no series rather than a failed scrape
		}
		hits = k.DenyCached
	}
	ch <- prometheus.MustNewConstMetric(denyCacheHitsDesc, prometheus.CounterValue, float64(hits))
}
