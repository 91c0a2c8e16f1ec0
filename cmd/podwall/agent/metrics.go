package agent

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podwall/podwall/policy"
)

// verdictMetrics are the agent's own series (namespace podwall): what it counts of each
// verdict it observes and of each policy state it applies. Every series is listed in
// cmd/podwall/README.md. The hot-path ones are resolved once, so that counting a verdict
// allocates nothing.
type verdictMetrics struct {
	verdicts  *prometheus.CounterVec
	byVerdict [2][2]prometheus.Counter // [policy.Verdict][cache hit]
	// directions counts the directions this node judged; byDirection[dir][verdict][code]
	// is nil for combinations that cannot happen.
	directions  *prometheus.CounterVec
	byDirection [2][2][numCodes]prometheus.Counter
	// policyVerdicts counts judgements per policy; index maps policies and local pods to
	// its series for the snapshot in force (see indexPolicies).
	policyVerdicts *prometheus.CounterVec
	index, prev    atomic.Pointer[policyIndex]
	// tally holds what observe handed over and is not counted yet (tally.go); Collect
	// counts it first. Set by newFlows.
	tally *tally

	decideSeconds  prometheus.Histogram
	compileSeconds prometheus.Histogram
	generation     prometheus.Gauge
	pods, policies prometheus.Gauge
	sourceErrors   prometheus.Counter
}

const numCodes = int(policy.ClusterDenied) + 1

var (
	directionNames = [2]string{policy.Egress: "egress", policy.Ingress: "ingress"}
	verdictNames   = [2]string{policy.Deny: "deny", policy.Allow: "allow"}
)

func newVerdictMetrics() *verdictMetrics {
	m := &verdictMetrics{
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "podwall", Subsystem: "datapath",
			Name: "verdicts_total", Help: "Verdicts given to queued packets, by verdict and whether the flow cache answered."},
			[]string{"verdict", "cache"}),
		directions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "podwall", Subsystem: "datapath",
			Name: "direction_verdicts_total", Help: "Directions of queued packets judged on this node (egress of a local source pod, ingress of a local destination pod), by direction, verdict and code (why)."},
			[]string{"direction", "verdict", "code"}),
		policyVerdicts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "podwall", Subsystem: "policy",
			Name: "verdicts_total", Help: "Directions judged on this node by a NetworkPolicy (allow counts the policy of the first allowing rule, deny every policy isolating the pod) or a ClusterNetworkPolicy (cnp/NAME: the policy whose Accept or Deny rule decided). Series exist while the policy selects a local pod."},
			[]string{"policy", "direction", "verdict"}),
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
	for v, vn := range verdictNames {
		for hit, c := range []string{"miss", "hit"} {
			m.byVerdict[v][hit] = m.verdicts.WithLabelValues(vn, c)
		}
	}
	for d, dn := range directionNames {
		for _, c := range []policy.Code{policy.Self, policy.OwnNode, policy.NotIsolated, policy.Allowed} {
			m.byDirection[d][policy.Allow][c] = m.directions.WithLabelValues(dn, "allow", c.String())
		}
		m.byDirection[d][policy.Deny][policy.NoRuleAllows] = m.directions.WithLabelValues(dn, "deny", policy.NoRuleAllows.String())
		m.byDirection[d][policy.Allow][policy.ClusterAccepted] = m.directions.WithLabelValues(dn, "allow", policy.ClusterAccepted.String())
		m.byDirection[d][policy.Deny][policy.ClusterDenied] = m.directions.WithLabelValues(dn, "deny", policy.ClusterDenied.String())
	}
	m.index.Store(&policyIndex{byRef: map[*policy.PolicyRef]*policySeries{}, byPod: map[*policy.Pod][2][]*policySeries{}})
	return m
}

// count counts one verdict with the decision that made it (zero for a malformed packet):
// the tally's work (tally.go; tallied set: under its lock), or a queue reader's when its
// ring is full. No lock; no allocation on a reader.
func (m *verdictMetrics) count(o *observed, tallied bool) {
	v, hit := policy.Deny, 0
	if o.allow {
		v = policy.Allow
	}
	if o.hit {
		hit = 1
	}
	m.byVerdict[v][hit].Inc()
	m.decideSeconds.Observe(o.latency.Seconds())
	if o.malformed {
		return
	}
	idx := m.index.Load()
	if idx.gen != o.gen {
		if prev := m.prev.Load(); prev != nil && prev.gen == o.gen {
			idx = prev // counted after the next snapshot's index was made
		}
	}
	m.judged(idx, policy.Egress, &o.egress, tallied)
	m.judged(idx, policy.Ingress, &o.ingress, tallied)
}

func (m *verdictMetrics) judged(idx *policyIndex, dir policy.Direction, j *judged, tallied bool) {
	if !j.local || int(j.code) >= numCodes {
		return
	}
	if c := m.byDirection[dir][j.verdict][j.code]; c != nil {
		c.Inc()
	}
	switch j.code {
	case policy.Allowed:
		if c := idx.policy(j.policy, tallied); c != nil {
			c[dir][policy.Allow].Inc()
		}
	case policy.NoRuleAllows:
		for _, c := range idx.isolation(j.pod, tallied)[dir] {
			c[dir][policy.Deny].Inc()
		}
	case policy.ClusterAccepted, policy.ClusterDenied:
		if c := idx.policy(j.policy, tallied); c != nil {
			c[dir][j.verdict].Inc()
		}
	}
}

// policy returns the series of the policy ref names, nil when it selects no local pod.
func (idx *policyIndex) policy(ref *policy.PolicyRef, tallied bool) *policySeries {
	if !tallied {
		return idx.byPolicy[*ref]
	}
	c, ok := idx.byRef[ref]
	if !ok {
		c = idx.byPolicy[*ref]
		idx.byRef[ref] = c
	}
	return c
}

// isolation returns the series of the policies isolating pod, per direction.
func (idx *policyIndex) isolation(pod *policy.Pod, tallied bool) [2][]*policySeries {
	if !tallied {
		return idx.isolating[podKey{pod.Namespace, pod.Name}]
	}
	c, ok := idx.byPod[pod]
	if !ok {
		c = idx.isolating[podKey{pod.Namespace, pod.Name}]
		idx.byPod[pod] = c
	}
	return c
}

// policyIndex maps the snapshot of generation gen to its per-policy series: the policies
// that select a local pod, and for each local pod and direction the policies isolating it.
// A new one is built for each snapshot in force; a verdict is counted with the index of the
// generation that decided it, this one or the one before, else with this one (keys are
// names, so that still works): in the instant between the snapshot swap and the index
// swap, and for a verdict counted after two newer snapshots.
type policyIndex struct {
	gen       uint64
	byPolicy  map[policy.PolicyRef]*policySeries
	isolating map[podKey][2][]*policySeries
	// byRef and byPod are what byPolicy and isolating hold, by the pointers verdicts carry
	// (policy.Judgement's Policy and Pod): one pointer hashed instead of two strings. The
	// tally fills them as verdicts name them, under its lock; a reader counting on its own
	// looks up by name.
	byRef map[*policy.PolicyRef]*policySeries
	byPod map[*policy.Pod][2][]*policySeries
}

type podKey struct{ namespace, name string }

// policySeries are one policy's counters, [direction][verdict].
type policySeries [2][2]prometheus.Counter

// indexPolicies builds the index for s, creates the series of the policies that appeared
// and deletes those of the policies that no longer select a local pod. Called by compiled,
// under the agent's apply lock.
func (m *verdictMetrics) indexPolicies(s *policy.Snapshot) {
	idx := &policyIndex{gen: s.Generation(), byPolicy: map[policy.PolicyRef]*policySeries{}, isolating: map[podKey][2][]*policySeries{},
		byRef: map[*policy.PolicyRef]*policySeries{}, byPod: map[*policy.Pod][2][]*policySeries{}}
	series := func(ref policy.PolicyRef) *policySeries {
		if ps := idx.byPolicy[ref]; ps != nil {
			return ps
		}
		ps := new(policySeries)
		for d, dn := range directionNames {
			for v, vn := range verdictNames {
				ps[d][v] = m.policyVerdicts.WithLabelValues(ref.String(), dn, vn)
			}
		}
		idx.byPolicy[ref] = ps
		return ps
	}
	for _, ref := range s.LocalClusterPolicies() {
		series(ref)
	}
	s.LocalIsolation(func(p *policy.Pod, egress, ingress []policy.PolicyRef) {
		var iso [2][]*policySeries
		for _, ref := range egress {
			iso[policy.Egress] = append(iso[policy.Egress], series(ref))
		}
		for _, ref := range ingress {
			iso[policy.Ingress] = append(iso[policy.Ingress], series(ref))
		}
		idx.isolating[podKey{p.Namespace, p.Name}] = iso
	})
	old := m.index.Swap(idx)
	m.prev.Store(old)
	for ref := range old.byPolicy {
		if idx.byPolicy[ref] == nil {
			m.policyVerdicts.DeletePartialMatch(prometheus.Labels{"policy": ref.String()})
		}
	}
}

func (m *verdictMetrics) compiled(d time.Duration, s *policy.Snapshot, pods, policies int) {
	m.compileSeconds.Observe(d.Seconds())
	m.generation.Set(float64(s.Generation()))
	m.pods.Set(float64(pods))
	m.policies.Set(float64(policies))
	m.indexPolicies(s)
}

func (m *verdictMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.verdicts, m.directions, m.policyVerdicts, m.decideSeconds, m.compileSeconds,
		m.generation, m.pods, m.policies, m.sourceErrors}
}

// Describe implements prometheus.Collector.
func (m *verdictMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector: it counts the verdicts waiting in the tally
// first.
func (m *verdictMetrics) Collect(ch chan<- prometheus.Metric) {
	if m.tally != nil {
		m.tally.take()
	}
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}
