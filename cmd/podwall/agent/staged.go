package agent

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"weak"

	"github.com/prometheus/client_golang/prometheus"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/decisions"
	"github.com/podwall/podwall/policy/explain"
)

// Staged policies (SPEC §2c): a NetworkPolicy or ClusterNetworkPolicy annotated
// podwall.io/staged: "true" is compiled and evaluated, never enforced. apply hands the
// enforced state (policy.Staged) to the agent's compiler and, only while staged policies
// exist, the proposed state (the enforced policies plus the staged ones) to a second,
// incremental compiler; the snapshot it makes is published right after the enforced one.
// For every queued packet, observe decides the flow under the proposal too (one more
// Decide: Decide + staged ≤ 2× Decide, BenchmarkDecideStaged) and counts it — unless the
// proposal cannot judge the flow otherwise than the decision that made the verdict
// (proposal.same: no staged policy, nor an enforced one a staged one replaces, selects its
// local pods for the direction judged), whose verdict is then the staged one too
// (BenchmarkDecideStagedElsewhere: about 1.05× Decide). The decision stream carries the
// staged verdict when it differs from the enforced one or a staged policy took part
// (decisions.StagedRecord), and so does the flow history and log (flows.Seen.Staged names
// the proposal: byID). The verdict given stays the enforced one.
//
// So that staged evaluation sees them, the pods only staged policies isolate are queued
// too (queued): their new connections reach userspace and are allowed there.
type staged struct {
	compiler *policy.Compiler // nil while no staged policy exists
	pending  *proposal        // made by split, published by publish; under the apply lock
	cur      atomic.Pointer[proposal]
	metrics  *stagedMetrics
	ids      uint32 // the last proposal's id; under the apply lock
}

// proposal is the staged proposal in force with what the hot path needs of it.
type proposal struct {
	*explain.Proposal
	ref weak.Pointer[explain.Proposal] // made once, so records take it without allocating
	id  uint32                         // names it in the flow history (flows.Seen.Staged); never 0
	// gen is the generation of the enforced snapshot published with the proposal; touched
	// marks, by that snapshot's pods, the directions (1<<policy.Direction) of the local pods
	// the proposal may judge otherwise (see same); all says it may judge any flow
	// otherwise. Set by publish.
	gen     uint64
	touched map[*policy.Pod]uint8
	all     bool
	cluster bool // a ClusterNetworkPolicy is staged
	// byPolicy are the series of the staged policies, each as a one-element list;
	// isolating the series of the staged policies isolating each local pod, per direction
	// (no duplicates). Both are made once per proposal (index), so count only looks up.
	byPolicy  map[policy.PolicyRef][]*series
	isolating map[*policy.Pod]*[2][]*series // by the snapshot's own pods: a pointer hash
}

// series are a staged policy's two series of podwall_policy_staged_verdicts_total: plain
// atomic counters by verdict, incremented directly (no interface call), read by Collect.
type series struct {
	policy string
	n      [2]atomic.Uint64 // [verdict]
}

// split returns the state to enforce and compiles the proposal of s's staged policies, if
// it has any, for publish. Called under the apply lock.
func (st *staged) split(node string, s policy.State) policy.State {
	enforced, proposed, has := policy.Staged(s)
	if !has {
		st.compiler, st.pending = nil, nil
		return s
	}
	if st.compiler == nil {
		st.compiler = policy.NewCompiler(node)
	}
	if err := st.compiler.Replace(proposed); err != nil { // nil today (Replace's doc); never blocks enforcing
		st.compiler, st.pending = nil, nil
		return enforced
	}
	p := &proposal{Proposal: &explain.Proposal{Snap: st.compiler.Snapshot(), Staged: policy.StagedRefs(proposed)}}
	p.ref = weak.Make(p.Proposal)
	p.cluster = slices.ContainsFunc(s.ClusterPolicies, func(c *cnpv1alpha2.ClusterNetworkPolicy) bool { return policy.IsStaged(&c.ObjectMeta) })
	if st.ids++; st.ids == 0 {
		st.ids++
	}
	p.id = st.ids
	st.index(p)
	st.pending = p
	return enforced
}

// publish puts the proposal split made in force (none when the state had no staged policy)
// with enforced, the snapshot made of the same state and just put in force.
func (st *staged) publish(enforced *policy.Snapshot) {
	if p := st.pending; p != nil {
		p.gen = enforced.Generation()
		p.touched, p.all = touchedBy(enforced, p)
	}
	old := st.cur.Swap(st.pending)
	if old == nil {
		return
	}
	for ref := range old.byPolicy {
		if st.pending == nil || len(st.pending.byPolicy[ref]) == 0 {
			st.metrics.remove(ref.String())
		}
	}
}

// proposal returns the proposal in force, nil when no staged policy exists.
func (st *staged) proposal() *explain.Proposal {
	if p := st.cur.Load(); p != nil {
		return p.Proposal
	}
	return nil
}

// byID returns the proposal in force when its id is id, nil otherwise (flows.Config.Proposal:
// the flow history spells out staged verdicts of the proposal in force only).
func (st *staged) byID(id uint32) *explain.Proposal {
	if p := st.cur.Load(); p != nil && p.id == id {
		return p.Proposal
	}
	return nil
}

// queued returns the local pod addresses the datapath must queue: those s (the snapshot to
// enforce) isolates and those the proposal isolates, so that staged evaluation sees the
// traffic of pods only staged policies select.
func (st *staged) queued(s *policy.Snapshot) (ingress, egress []netip.Addr) {
	ingress, egress = s.LocalIsolated()
	if st.pending == nil {
		return ingress, egress
	}
	pin, peg := st.pending.Snap.LocalIsolated()
	return union(ingress, pin), union(egress, peg)
}

func union(a, b []netip.Addr) []netip.Addr {
	out := append(slices.Clip(a), b...)
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// touchedBy returns, by enforced's pods, the directions of the local pods that p may judge
// otherwise than enforced does: those whose policies for that direction, in enforced or in
// p, include a staged one (by name: a staged policy replacing an enforced one of its name
// touches the pods of both). all is set when p may judge any flow otherwise: when a
// ClusterNetworkPolicy is staged (its subjects are not listed per pod) or enforced has
// addresses several pods claim (a flow is judged for every claimant).
//
// Why the others are judged alike: both snapshots are compiled from one state (split), with
// the same pods, namespaces and nodes, and the same policies but the staged ones and those
// they replace; the judgement of a pod for a direction reads only the policies selecting
// it for that direction (its NetworkPolicies, then, were none isolating it, nothing: no
// ClusterNetworkPolicy differs) and the remote end, which both snapshots know alike.
// TestStagedSameAsDeciding checks it flow by flow.
func touchedBy(enforced *policy.Snapshot, p *proposal) (touched map[*policy.Pod]uint8, all bool) {
	if p.cluster || len(enforced.Conflicts()) > 0 {
		return nil, true
	}
	touched = map[*policy.Pod]uint8{}
	mark := func(pod *policy.Pod, egress, ingress []policy.PolicyRef) {
		if pod == nil {
			return
		}
		for dir, refs := range [2][]policy.PolicyRef{policy.Egress: egress, policy.Ingress: ingress} {
			if slices.ContainsFunc(refs, func(r policy.PolicyRef) bool { return p.Staged[r.String()] }) {
				touched[pod] |= 1 << dir
			}
		}
	}
	enforced.LocalIsolation(mark)
	p.Snap.LocalIsolation(func(pod *policy.Pod, egress, ingress []policy.PolicyRef) {
		mark(enforced.Pod(pod.Namespace, pod.Name), egress, ingress)
	})
	return touched, false
}

// same reports whether p judges r's flow as the decision that made r's verdict does, so
// that its staged verdict is r's: r was decided by the enforced snapshot published with p,
// and p touches the direction of neither of its local pods (touchedBy).
func (p *proposal) same(r *datapath.Record[policy.Decision]) bool {
	if p.all || r.Gen != p.gen {
		return false
	}
	for dir, j := range [2]*policy.Judgement{policy.Egress: &r.Decision.Egress, policy.Ingress: &r.Decision.Ingress} {
		if j.Local && j.Pod != nil && p.touched[j.Pod]&(1<<dir) != 0 {
			return false
		}
	}
	return true
}

// observe decides r's flow under the proposal in force, counts the staged verdict and fills
// rec's StagedRecord (rec nil: no stream subscriber). It returns the proposal's id (0: no
// staged decision) and the staged verdict, for the flow history. A flow the proposal judges
// as r's decision does (same) has r's verdict, decided again by no one and counted by no
// staged policy (none took part). It allocates nothing.
func (st *staged) observe(r *datapath.Record[policy.Decision], rec *decisions.Record) (id uint32, allow bool) {
	p := st.cur.Load()
	if p == nil || r.Malformed != nil {
		return 0, false
	}
	var v policy.Verdict
	if p.same(r) {
		v = r.Decision.LocalVerdict()
	} else {
		d := p.Snap.Decide(r.Flow)
		v = d.LocalVerdict()
		st.metrics.count(p, &d, v)
	}
	if rec != nil {
		rec.Staged = decisions.StagedRecord{Set: true, Allow: v == policy.Allow, Proposal: p.ref}
	}
	return p.id, v == policy.Allow
}

// stagedMetrics is podwall_policy_staged_verdicts_total{policy,verdict}: per queued packet
// decided under the proposal, once for each staged policy that made this node's staged
// verdict — the allowing policy of the first rule, every staged policy isolating the pod
// of a denied direction, the ClusterNetworkPolicy whose rule decided.
type stagedMetrics struct {
	desc     *prometheus.Desc
	mu       sync.Mutex         // guards byPolicy: apply adds and removes series, Collect reads them
	byPolicy map[string]*series // the series of the staged policies, kept across proposals
}

func newStagedMetrics() *stagedMetrics {
	return &stagedMetrics{byPolicy: map[string]*series{},
		desc: prometheus.NewDesc("podwall_policy_staged_verdicts_total",
			"Queued packets this node would have given the verdict were the staged policies (podwall.io/staged: \"true\") enforced, per staged policy that made that verdict (each counted once per packet).",
			[]string{"policy", "verdict"}, nil)}
}

// of returns the series of the staged policy named name, made at its first use.
func (m *stagedMetrics) of(name string) *series {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.byPolicy[name]
	if c == nil {
		c = &series{policy: name}
		m.byPolicy[name] = c
	}
	return c
}

// remove removes the series of a policy no longer staged.
func (m *stagedMetrics) remove(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.byPolicy, name)
}

// index creates the series of p's staged policies and maps local pods to the staged
// policies isolating them.
func (st *staged) index(p *proposal) {
	p.byPolicy = map[policy.PolicyRef][]*series{}
	p.isolating = map[*policy.Pod]*[2][]*series{}
	seriesOf := func(ref policy.PolicyRef) *series {
		if !p.Staged[ref.String()] {
			return nil
		}
		if p.byPolicy[ref] == nil {
			p.byPolicy[ref] = []*series{st.metrics.of(ref.String())}
		}
		return p.byPolicy[ref][0]
	}
	for _, ref := range p.Snap.LocalClusterPolicies() {
		seriesOf(ref)
	}
	p.Snap.LocalIsolation(func(pod *policy.Pod, egress, ingress []policy.PolicyRef) {
		var iso [2][]*series
		for dir, refs := range [2][]policy.PolicyRef{policy.Egress: egress, policy.Ingress: ingress} {
			for _, ref := range refs {
				if c := seriesOf(ref); c != nil && !slices.Contains(iso[dir], c) {
					iso[dir] = append(iso[dir], c)
				}
			}
		}
		if iso[0] != nil || iso[1] != nil {
			p.isolating[pod] = &iso
		}
	})
}

// count counts the staged verdict v of decision d once per staged policy that made it: the
// series each judged direction names (made), those of the egress direction, then those of
// the ingress one the egress did not count. The series are resolved when the proposal is
// indexed: a packet costs one map lookup per direction and an increment per series.
func (m *stagedMetrics) count(p *proposal, d *policy.Decision, v policy.Verdict) {
	eg, in := p.made(&d.Egress, policy.Egress, v), p.made(&d.Ingress, policy.Ingress, v)
	for _, c := range eg {
		c.n[v].Add(1)
	}
	for _, c := range in {
		if !slices.Contains(eg, c) {
			c.n[v].Add(1)
		}
	}
}

// made returns the series of the staged policies that made verdict v in direction dir (j).
func (p *proposal) made(j *policy.Judgement, dir policy.Direction, v policy.Verdict) []*series {
	if !j.Local || (v == policy.Deny && j.Verdict != policy.Deny) {
		return nil
	}
	switch j.Code {
	case policy.Allowed, policy.ClusterAccepted, policy.ClusterDenied:
		if j.Policy != nil {
			return p.byPolicy[*j.Policy]
		}
	case policy.NoRuleAllows:
		if iso := p.isolating[j.Pod]; iso != nil {
			return iso[dir]
		}
	}
	return nil
}

// Describe implements prometheus.Collector.
func (m *stagedMetrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.desc }

// Collect implements prometheus.Collector.
func (m *stagedMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.byPolicy {
		for v, vn := range verdictNames {
			ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(c.n[v].Load()), c.policy, vn)
		}
	}
}
