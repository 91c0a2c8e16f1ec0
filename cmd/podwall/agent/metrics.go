package agent

import (
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flows"
)

// verdictMetrics are the agent's own series (namespace podwall): what it counts of each
// verdict it observes and of each policy state it applies. Every series is listed in
// cmd/podwall/README.md.
//
// The per-verdict series are counted off the queue readers: observe writes each verdict,
// with what the metrics need of its decision (flows.Seen: cache hit, latency, the judged
// directions), in place into the flow recorder's ring it hands every verdict to anyway, and
// the recorder's goroutine counts it (take) in plain numbers (taken) before recording it. A
// scrape (Collect) and a new policy index first have the recorder take what waits
// (flushThen), so a scrape counts every verdict observed before it and a verdict counts for
// the policies of the generation that decided it. When the recorder cannot take a verdict
// (its ring full: it drains every 5 ms, a reader would have to hand over more than 1.6
// million verdicts a second), the reader counts it itself in its own shard — atomic adds
// to memory no other reader writes — summed when scraped: one add counts the verdict and
// both of its directions (shard.outcomes), two the decide_seconds histogram, one each
// per-policy series, which the policy index finds by the pod the judgement names (a pointer
// hash). Measured (BenchmarkObserve over BenchmarkDecide, medians of 15 alternating rounds;
// bench/README.md): counting on the reader 1.35×, off it 1.09× — the reader's part is the
// fill of its slot and one atomic store — with the recorder's goroutine spending 65 ns a
// verdict in place of 57 (recording and counting): 10 % less CPU a verdict in all.
type verdictMetrics struct {
	// shards are what the readers count themselves, [Queue-queueNum]; the last is for any
	// other queue.
	shards   []shard
	queueNum uint16
	// taken is what the flow recorder counts (take); flush is the recorder's Flush: it
	// counts what the queue readers handed over and not yet counted, then calls its
	// argument, under the recorder's lock — which guards taken. Set once the recorder
	// exists.
	taken tally
	flush func(then func())

	verdicts, directions, decideSeconds *prometheus.Desc

	// policyVerdicts counts judgements per policy; index maps policies and local pods to
	// its series for the snapshot in force, prev for the one before (see indexPolicies).
	policyVerdicts *prometheus.CounterVec
	index, prev    atomic.Pointer[policyIndex]

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

// An outcome is what podwall_datapath_direction_verdicts_total counts of one direction: a
// verdict with its code, numbered from 1 (0: not counted — not judged on this node, or not
// a combination that happens). outcomes lists them; outcomeOf numbers them.
type outcome struct {
	verdict policy.Verdict
	code    policy.Code
}

var (
	outcomes = []outcome{{}, // 0: not counted
		{policy.Allow, policy.Self}, {policy.Allow, policy.OwnNode}, {policy.Allow, policy.NotIsolated},
		{policy.Allow, policy.Allowed}, {policy.Deny, policy.NoRuleAllows},
		{policy.Allow, policy.ClusterAccepted}, {policy.Deny, policy.ClusterDenied}}
	outcomeOf = func() (o [2][numCodes]uint8) {
		for i, oc := range outcomes[1:] {
			o[oc.verdict][oc.code] = uint8(i + 1)
		}
		return o
	}()
)

const numOutcomes = 8

// decideBuckets are the upper bounds of podwall_datapath_decide_seconds: 250 ns doubling to
// 8.192 ms (prometheus.ExponentialBuckets(250e-9, 2, 16)), in nanoseconds.
const (
	firstBucketNanos = 250
	numBuckets       = 16
)

// shard is what one queue reader counts. Its fields are only added to, atomically: the
// reader that owns it is the only writer but for a verdict of a queue outside the agent's
// range (the last shard) — no cache line moves between readers — and Collect reads them.
type shard struct {
	// outcomes counts verdicts [verdict][cache hit][egress outcome][ingress outcome]:
	// podwall_datapath_verdicts_total and direction_verdicts_total in one add.
	outcomes [2][2][numOutcomes][numOutcomes]atomic.Uint64
	// buckets counts decide_seconds by bucket, the last beyond the last bound (not
	// cumulative); sum is the sum of the latencies in nanoseconds.
	buckets [numBuckets + 1]atomic.Uint64
	sum     atomic.Int64
	_       [64]byte // the next shard's first line is its own
}

// tally is a shard that one goroutine counts in and reads, with plain numbers: the flow
// recorder's (take, Collect, both under the recorder's lock).
type tally struct {
	outcomes [2][2][numOutcomes][numOutcomes]uint64
	buckets  [numBuckets + 1]uint64
	sum      int64
}

func newVerdictMetrics(queueNum, queues uint16) *verdictMetrics {
	m := &verdictMetrics{
		shards:   make([]shard, int(queues)+1),
		queueNum: queueNum,
		verdicts: prometheus.NewDesc("podwall_datapath_verdicts_total",
			"Verdicts given to queued packets, by verdict and whether the flow cache answered.",
			[]string{"verdict", "cache"}, nil),
		directions: prometheus.NewDesc("podwall_datapath_direction_verdicts_total",
			"Directions of queued packets judged on this node (egress of a local source pod, ingress of a local destination pod), by direction, verdict and code (why).",
			[]string{"direction", "verdict", "code"}, nil),
		decideSeconds: prometheus.NewDesc("podwall_datapath_decide_seconds",
			"Time from receiving a queued packet to its verdict.", nil, nil),
		policyVerdicts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "podwall", Subsystem: "policy",
			Name: "verdicts_total", Help: "Directions judged on this node by a NetworkPolicy (allow counts the policy of the first allowing rule, deny every policy isolating the pod) or a ClusterNetworkPolicy (cnp/NAME: the policy whose Accept or Deny rule decided). Series exist while the policy selects a local pod."},
			[]string{"policy", "direction", "verdict"}),
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
	m.index.Store(&policyIndex{})
	return m
}

// shard returns the shard of the reader of queue q.
func (m *verdictMetrics) shard(q uint16) *shard {
	if i := int(q) - int(m.queueNum); i >= 0 && i < len(m.shards)-1 {
		return &m.shards[i]
	}
	return &m.shards[len(m.shards)-1]
}

// take counts a verdict the flow recorder took from a queue reader (flows.Config.Count),
// on the recorder's goroutine, under its lock: in taken, with plain additions.
func (m *verdictMetrics) take(s *flows.Seen) {
	t := &m.taken
	v, hit := outcomeKey(s.Allow, s.CacheHit)
	eg, in := judgedOutcome(&s.Judged[policy.Egress]), judgedOutcome(&s.Judged[policy.Ingress])
	t.outcomes[v][hit][eg][in]++
	t.buckets[bucket(s.Latency)]++
	t.sum += int64(s.Latency)
	m.countPolicies(s, eg, in)
}

// malformed counts the verdict on a packet that could not be judged, on its queue
// reader.
func (m *verdictMetrics) malformed(r *datapath.Record[policy.Decision]) {
	sh := m.shard(r.Queue)
	v, hit := outcomeKey(r.Allow, r.CacheHit)
	sh.latency(r.Latency)
	sh.outcomes[v][hit][0][0].Add(1)
}

// count counts one verdict with the decision that made it in sh, on its queue reader,
// when the flow recorder could not take it (observe). No allocation, no lock.
func (m *verdictMetrics) count(sh *shard, s *flows.Seen) {
	v, hit := outcomeKey(s.Allow, s.CacheHit)
	sh.latency(s.Latency)
	eg, in := judgedOutcome(&s.Judged[policy.Egress]), judgedOutcome(&s.Judged[policy.Ingress])
	sh.outcomes[v][hit][eg][in].Add(1)
	m.countPolicies(s, eg, in)
}

// countPolicies counts s's judged directions (outcomes eg and in) in the series of the
// policies that made them.
func (m *verdictMetrics) countPolicies(s *flows.Seen, eg, in uint8) {
	if eg == 0 && in == 0 {
		return
	}
	idx := m.index.Load()
	if idx.gen != s.Gen {
		if prev := m.prev.Load(); prev != nil && prev.gen == s.Gen {
			idx = prev // decided before the index of the snapshot in force was made
		}
	}
	if eg != 0 {
		idx.count(policy.Egress, &s.Judged[policy.Egress], idx.gen == s.Gen)
	}
	if in != 0 {
		idx.count(policy.Ingress, &s.Judged[policy.Ingress], idx.gen == s.Gen)
	}
}

// outcomeKey returns the indexes of shard.outcomes for a verdict and a cache hit.
func outcomeKey(allow, cacheHit bool) (v policy.Verdict, hit int) {
	if allow {
		v = policy.Allow
	}
	if cacheHit {
		hit = 1
	}
	return v, hit
}

// latency counts a verdict's latency in the decide_seconds histogram.
func (sh *shard) latency(l time.Duration) {
	sh.buckets[bucket(l)].Add(1)
	sh.sum.Add(int64(l))
}

// bucket returns the decide_seconds bucket of latency l.
func bucket(l time.Duration) int {
	if l <= 0 {
		return 0
	}
	return min(bits.Len64(uint64(l-1)/firstBucketNanos), numBuckets)
}

// judgedOutcome returns the outcome j counts, 0 when none.
func judgedOutcome(j *flows.Judged) uint8 {
	if !j.Local || int(j.Code) >= numCodes {
		return 0
	}
	return outcomeOf[j.Verdict][j.Code]
}

// count counts judgement j of direction dir in the series of the policies that made it.
// ours reports whether j comes from idx's own snapshot, whose pods idx is keyed by;
// otherwise j is looked up by names (a verdict decided by another generation).
func (idx *policyIndex) count(dir policy.Direction, j *flows.Judged, ours bool) {
	switch j.Code {
	case policy.Allowed:
		if c := idx.policy(j, dir, ours); c != nil {
			c[dir][policy.Allow].Inc()
		}
	case policy.NoRuleAllows:
		var iso []*policySeries
		if ours {
			if p := idx.byPod[j.Pod]; p != nil {
				iso = p.series[dir]
			}
		} else {
			iso = idx.isolating[podKey{j.Pod.Namespace, j.Pod.Name}][dir]
		}
		for _, c := range iso {
			c[dir][policy.Deny].Inc()
		}
	case policy.ClusterAccepted, policy.ClusterDenied:
		if c := idx.byPolicy[*j.Policy]; c != nil {
			c[dir][j.Verdict].Inc()
		}
	}
}

// policy returns the series of the NetworkPolicy whose rule allowed j, nil when there are
// none: from the policies isolating j's pod for dir when j is idx's own (the string
// headers of the refs are the snapshot's, so comparing them compares pointers first).
func (idx *policyIndex) policy(j *flows.Judged, dir policy.Direction, ours bool) *policySeries {
	if ours {
		if p := idx.byPod[j.Pod]; p != nil {
			for i, ref := range p.refs[dir] {
				if ref == *j.Policy {
					return p.series[dir][i]
				}
			}
		}
	}
	return idx.byPolicy[*j.Policy]
}

// policyIndex maps the snapshot of generation gen to its per-policy series: the policies
// that select a local pod, and for each local pod and direction the policies isolating it,
// by namespace and name (isolating) and by the snapshot's own pods (byPod: a pointer hash,
// for the verdicts that snapshot decided). A new one is built for each snapshot in force;
// a verdict is counted with the index of the generation that decided it, this one or the
// one before, else with this one by names (in the instant between the snapshot swap and
// the index swap).
type policyIndex struct {
	gen       uint64
	byPolicy  map[policy.PolicyRef]*policySeries
	isolating map[podKey][2][]*policySeries
	byPod     map[*policy.Pod]*podSeries
}

type podKey struct{ namespace, name string }

// podSeries are the policies isolating a local pod and their series, per direction.
type podSeries struct {
	refs   [2][]policy.PolicyRef
	series [2][]*policySeries
}

// policySeries are one policy's counters, [direction][verdict].
type policySeries [2][2]prometheus.Counter

// indexPolicies builds the index for s, creates the series of the policies that appeared
// and deletes those of the policies that no longer select a local pod. Called by compiled,
// under the agent's apply lock.
func (m *verdictMetrics) indexPolicies(s *policy.Snapshot) {
	idx := &policyIndex{gen: s.Generation(), byPolicy: map[policy.PolicyRef]*policySeries{},
		isolating: map[podKey][2][]*policySeries{}, byPod: map[*policy.Pod]*podSeries{}}
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
		ps := &podSeries{refs: [2][]policy.PolicyRef{policy.Egress: egress, policy.Ingress: ingress}}
		for dir, refs := range ps.refs {
			for _, ref := range refs {
				ps.series[dir] = append(ps.series[dir], series(ref))
			}
		}
		idx.isolating[podKey{p.Namespace, p.Name}] = ps.series
		idx.byPod[p] = ps
	})
	// The verdicts waiting for the flow recorder are counted with the indexes they were
	// decided under before these move on.
	var old *policyIndex
	m.flushThen(func() {
		old = m.index.Swap(idx)
		m.prev.Store(old)
	})
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
	return []prometheus.Collector{m.policyVerdicts, m.compileSeconds, m.generation, m.pods, m.policies, m.sourceErrors}
}

// Describe implements prometheus.Collector.
func (m *verdictMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.verdicts
	ch <- m.directions
	ch <- m.decideSeconds
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// flushThen counts what waits for the flow recorder, then calls then before anything more
// is counted.
func (m *verdictMetrics) flushThen(then func()) {
	if m.flush == nil {
		then()
		return
	}
	m.flush(then)
}

// Collect implements prometheus.Collector: the shards' sums, and the other series. What
// the queue readers handed to the flow recorder is counted first: a scrape counts every
// verdict observed before it.
func (m *verdictMetrics) Collect(ch chan<- prometheus.Metric) {
	var verdicts [2][2]uint64
	var directions [2][numOutcomes]uint64
	var buckets [numBuckets + 1]uint64
	var sum int64
	add := func(v policy.Verdict, hit int, eg, in int, n uint64) {
		verdicts[v][hit] += n
		directions[policy.Egress][eg] += n
		directions[policy.Ingress][in] += n
	}
	m.flushThen(func() {
		t := &m.taken
		for v := range t.outcomes {
			for hit := range t.outcomes[v] {
				for eg := range t.outcomes[v][hit] {
					for in, n := range t.outcomes[v][hit][eg] {
						add(policy.Verdict(v), hit, eg, in, n)
					}
				}
			}
		}
		for b, n := range t.buckets {
			buckets[b] += n
		}
		sum += t.sum
	})
	for i := range m.shards {
		sh := &m.shards[i]
		for v := range sh.outcomes {
			for hit := range sh.outcomes[v] {
				for eg := range sh.outcomes[v][hit] {
					for in := range sh.outcomes[v][hit][eg] {
						add(policy.Verdict(v), hit, eg, in, sh.outcomes[v][hit][eg][in].Load())
					}
				}
			}
		}
		for b := range sh.buckets {
			buckets[b] += sh.buckets[b].Load()
		}
		sum += sh.sum.Load()
	}
	for v, vn := range verdictNames {
		for hit, c := range []string{"miss", "hit"} {
			ch <- prometheus.MustNewConstMetric(m.verdicts, prometheus.CounterValue, float64(verdicts[v][hit]), vn, c)
		}
	}
	for dir, dn := range directionNames {
		for o, oc := range outcomes[1:] {
			ch <- prometheus.MustNewConstMetric(m.directions, prometheus.CounterValue, float64(directions[dir][o+1]),
				dn, verdictNames[oc.verdict], oc.code.String())
		}
	}
	cumulative := make(map[float64]uint64, numBuckets)
	var count uint64
	bound := 250e-9 // firstBucketNanos, as prometheus.ExponentialBuckets(250e-9, 2, 16) makes the bounds
	for b := range numBuckets {
		count += buckets[b]
		cumulative[bound] = count
		bound *= 2
	}
	count += buckets[numBuckets]
	ch <- prometheus.MustNewConstHistogram(m.decideSeconds, count, time.Duration(sum).Seconds(), cumulative)
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}
