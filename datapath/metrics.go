package datapath

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the datapath's series (namespace podwall, subsystem datapath; every
// series is listed in cmd/podwall/README.md): the readers' counters, read from Queues.Stats,
// and the kernel's own counters of the queues [first, first+n), read at scrape time from
// /proc (ReadQueueStats). Until Attach the readers' counters are 0.
type Collector struct {
	first, n uint16
	q        atomic.Pointer[statser]
}

// statser is what Collector reads of Queues, whatever their decision type.
type statser interface{ Stats() Stats }

// NewCollector returns the collector of queues first … first+n-1.
func NewCollector(first, n uint16) *Collector { return &Collector{first: first, n: n} }

// Attach makes c report the counters of q, a *Queues.
func (c *Collector) Attach(q interface{ Stats() Stats }) {
	s := statser(q)
	c.q.Store(&s)
}

func datapathDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName("podwall", "datapath", name), help, labels, nil)
}

// readerCounters are the counters of Stats, in the order Collect reads them.
var readerCounters = []struct {
	desc *prometheus.Desc
	get  func(*Stats) uint64
}{
	{datapathDesc("packets_total", "Packets received from the queues."), func(s *Stats) uint64 { return s.Packets }},
	{datapathDesc("malformed_total", "Queued packets that could not be judged: unreadable headers (dropped in both failure modes), later fragments and unreadable queue messages (the failure policy's verdict)."), func(s *Stats) uint64 { return s.Malformed }},
	{datapathDesc("enobufs_total", "Netlink receive buffer overruns: queued packets the kernel could not deliver."), func(s *Stats) uint64 { return s.ENOBUFS }},
	{datapathDesc("verdict_errors_total", "Verdicts the kernel did not take (the packet then meets the queue's failure policy)."), func(s *Stats) uint64 { return s.VerdictErrors }},
	{datapathDesc("reader_failures_total", "Queue readers stopped by a receive error; /healthz fails while this is above 0."), func(s *Stats) uint64 { return s.ReaderFailures }},
	{datapathDesc("held_total", "Packets held because the policy did not know the pod address of their flow yet (the new-pod window)."), func(s *Stats) uint64 { return s.Held }},
	{datapathDesc("held_released_total", "Held packets judged once a policy that knows their pod was in force."), func(s *Stats) uint64 { return s.Released }},
	{datapathDesc("held_expired_total", "Held packets given the failure policy's verdict: no policy knew their pod within the hold timeout, or the agent stopped."), func(s *Stats) uint64 { return s.Expired }},
	{datapathDesc("held_overflow_total", "Packets given the failure policy's verdict at once because their reader held the most it may."), func(s *Stats) uint64 { return s.HeldOverflow }},
	{datapathDesc("flowcache_hits_total", "Verdict cache hits."), func(s *Stats) uint64 { return s.Cache.Hits }},
	{datapathDesc("flowcache_misses_total", "Verdict cache misses."), func(s *Stats) uint64 { return s.Cache.Misses }},
	{datapathDesc("flowcache_evictions_total", "Verdict cache evictions."), func(s *Stats) uint64 { return s.Cache.Evictions }},
}

var (
	queueLenDesc = datapathDesc("queue_length",
		"Packets waiting in the kernel's NFQUEUE queue for a verdict (queue_total).", "queue")
	queueDroppedDesc = datapathDesc("queue_dropped_total",
		"Packets the kernel dropped because the queue was full (queue_dropped); failing open they are accepted and not counted.", "queue")
	queueUserDroppedDesc = datapathDesc("queue_user_dropped_total",
		"Packets the kernel could not hand to the agent because its netlink socket was full (queue_user_dropped).", "queue")
	holdingDesc = datapathDesc("held",
		"Packets held now, waiting for the policy to know their pod.")
	queueQueuedDesc = datapathDesc("queue_queued_total",
		"Packets the kernel queued since the queue was bound (id_sequence; wraps at 2^32).", "queue")
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, rc := range readerCounters {
		ch <- rc.desc
	}
	ch <- holdingDesc
	ch <- queueLenDesc
	ch <- queueDroppedDesc
	ch <- queueUserDroppedDesc
	ch <- queueQueuedDesc
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	var s Stats
	if q := c.q.Load(); q != nil {
		s = (*q).Stats()
	}
	for _, rc := range readerCounters {
		ch <- prometheus.MustNewConstMetric(rc.desc, prometheus.CounterValue, float64(rc.get(&s)))
	}
	ch <- prometheus.MustNewConstMetric(holdingDesc, prometheus.GaugeValue, float64(s.Holding))
	stats, err := ReadQueueStats()
	if err != nil {
		return // no series rather than a failed scrape
	}
	for _, qs := range stats {
		if qs.Queue < c.first || qs.Queue-c.first >= c.n {
			continue // not ours
		}
		q := strconv.Itoa(int(qs.Queue))
		ch <- prometheus.MustNewConstMetric(queueLenDesc, prometheus.GaugeValue, float64(qs.Len), q)
		ch <- prometheus.MustNewConstMetric(queueDroppedDesc, prometheus.CounterValue, float64(qs.Dropped), q)
		ch <- prometheus.MustNewConstMetric(queueUserDroppedDesc, prometheus.CounterValue, float64(qs.UserDropped), q)
		ch <- prometheus.MustNewConstMetric(queueQueuedDesc, prometheus.CounterValue, float64(qs.IDSequence), q)
	}
}
