package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/policy"
)

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
