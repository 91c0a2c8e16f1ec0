package agent

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podwall/podwall/datapath/nft"
)

// tableCounters exports the series that are the kernel table's rule counters, read once per
// scrape (one netlink dump of the table's chains): the packets the new-pod window's rules
// and the own-node chains queued (window.go), and each verdict cache's hits
// (kernelcache.go).
type tableCounters struct {
	caches []*kernelCache // whose hits series it exports

	mu  sync.Mutex
	set interface{ Counters() (nft.Counters, error) } // the ruleset once programmed; nil before
}

// windowQueuedDesc is the window rules' counter.
var windowQueuedDesc = prometheus.NewDesc("podwall_datapath_window_queued_total",
	"New packets the kernel queued by the new-pod window's rules (from or to an unknown address of the node's pod ranges).", nil, nil)

// nodeQueuedDesc is the own-node chains' counter, by direction.
var nodeQueuedDesc = prometheus.NewDesc("podwall_datapath_node_queued_total",
	"New packets the kernel queued between a local pod and its own node (egress: input hook, pod to node; ingress: output hook, node to pod).",
	[]string{"direction"}, nil)

// attach makes Collect read the counters of set.
func (t *tableCounters) attach(set interface{ Counters() (nft.Counters, error) }) {
	t.mu.Lock()
	t.set = set
	t.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (t *tableCounters) Describe(ch chan<- *prometheus.Desc) {
	ch <- windowQueuedDesc
	ch <- nodeQueuedDesc
	for _, c := range t.caches {
		ch <- c.hitsDesc
	}
}

// Collect implements prometheus.Collector: every series 0 before the table is programmed,
// none when the kernel cannot be read (rather than a failed scrape).
func (t *tableCounters) Collect(ch chan<- prometheus.Metric) {
	t.mu.Lock()
	set := t.set
	t.mu.Unlock()
	var k nft.Counters
	if set != nil {
		var err error
		if k, err = set.Counters(); err != nil {
			return
		}
	}
	ch <- prometheus.MustNewConstMetric(windowQueuedDesc, prometheus.CounterValue, float64(k.Window))
	ch <- prometheus.MustNewConstMetric(nodeQueuedDesc, prometheus.CounterValue, float64(k.NodeEgress), "egress")
	ch <- prometheus.MustNewConstMetric(nodeQueuedDesc, prometheus.CounterValue, float64(k.NodeIngress), "ingress")
	for _, c := range t.caches {
		ch <- prometheus.MustNewConstMetric(c.hitsDesc, prometheus.CounterValue, float64(c.hits(k)))
	}
}
