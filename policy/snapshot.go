package policy

import (
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/podwall/podwall/policy/flow"
)

// Snapshot is a compiled view of policy: it judges flows. It is never modified once
// Compiler.Snapshot has returned it, so it is safe for concurrent use and can be published
// with one atomic pointer store.
type Snapshot struct {
	gen     uint64
	node    string
	byIP    map[netip.Addr]*podEntry // live, non-hostNetwork pods by each address
	byKey   map[string]*podEntry     // every pod by namespace/name
	nodeIPs map[netip.Addr]string    // node addresses (Node objects, hostNetwork pods) → node
	groups  []groupTables            // ClusterNetworkPolicy groups by id (podEntry.groups)
	// podNodeAddrs says whether a pod's address (byIP) is a node address too (nodeIPs):
	// without, a flow between two pods is never a pod's own-node traffic.
	podNodeAddrs bool
	combos       []comboTables // ClusterNetworkPolicy combos by id (podEntry.combos)

	problems  []Problem  // objects rejected alone (invalid.go)
	conflicts []Conflict // addresses several live pods claim (conflict.go)

	sortedOnce sync.Once
	sorted     []*podEntry
}

// Generation numbers snapshots of one Compiler; a later snapshot has a larger number.
func (s *Snapshot) Generation() uint64 { return s.gen }

// Node returns the node whose pods are local in this snapshot.
func (s *Snapshot) Node() string { return s.node }

// PodByIP returns the live pod owning an address, or nil.
func (s *Snapshot) PodByIP(a netip.Addr) *Pod {
	if e := s.byIP[a]; e != nil {
		return e.pod
	}
	return nil
}

// Pod returns a pod by namespace and name, or nil.
func (s *Snapshot) Pod(namespace, name string) *Pod {
	if e := s.byKey[namespace+"/"+name]; e != nil {
		return e.pod
	}
	return nil
}

// NodeOf returns the node an address belongs to, or "".
func (s *Snapshot) NodeOf(a netip.Addr) string { return s.nodeIPs[a] }

// Pods returns every pod sorted by namespace and name. The pods are shared: do not modify
// them.
func (s *Snapshot) Pods() []*Pod {
	return podsOf(s.entries())
}

func podsOf(es []*podEntry) []*Pod {
	out := make([]*Pod, len(es))
	for i, e := range es {
		out[i] = e.pod
	}
	return out
}

func (s *Snapshot) entries() []*podEntry {
	s.sortedOnce.Do(func() {
		s.sorted = make([]*podEntry, 0, len(s.byKey))
		for _, e := range s.byKey {
			s.sorted = append(s.sorted, e)
		}
		slices.SortFunc(s.sorted, func(a, b *podEntry) int {
			if c := strings.Compare(a.pod.Namespace, b.pod.Namespace); c != 0 {
				return c
			}
			return strings.Compare(a.pod.Name, b.pod.Name)
		})
	})
	return s.sorted
}

// LocalIsolated returns the addresses of the local pods judged for ingress and for egress
// by some policy — a NetworkPolicy isolating them or a ClusterNetworkPolicy of either tier
// selecting them with rules of that direction: what the datapath must send to userspace.
// Traffic of the other pods is allowed whatever it is. Sorted.
func (s *Snapshot) LocalIsolated() (ingress, egress []netip.Addr) {
	for a, e := range s.byIP {
		if !e.local {
			continue
		}
		if e.ingress != nil || s.clusterJudges(e, Ingress, AdminTier, BaselineTier) {
			ingress = append(ingress, a)
		}
		if e.egress != nil || s.clusterJudges(e, Egress, AdminTier, BaselineTier) {
			egress = append(egress, a)
		}
	}
	slices.SortFunc(ingress, netip.Addr.Compare)
	slices.SortFunc(egress, netip.Addr.Compare)
	return ingress, egress
}

// LocalNodeJudged returns the addresses of the local pods whose traffic with their own node
// a policy can deny, for ingress (traffic from the node: the node's output hook) and for
// egress (traffic to the node: its input hook): those whose Admin tier, or — when no
// NetworkPolicy isolates them for that direction, which would allow it — Baseline tier has
// a rule that can match a node address. Traffic between a pod and its own node never
// crosses the forward hook. Sorted.
func (s *Snapshot) LocalNodeJudged() (ingress, egress []netip.Addr) {
	for a, e := range s.byIP {
		if !e.local {
			continue
		}
		if s.nodeJudged(e, Ingress) {
			ingress = append(ingress, a)
		}
		if s.nodeJudged(e, Egress) {
			egress = append(egress, a)
		}
	}
	slices.SortFunc(ingress, netip.Addr.Compare)
	slices.SortFunc(egress, netip.Addr.Compare)
	return ingress, egress
}

// LocalIsolation calls fn for every live local pod that some policy isolates, with the
// policies isolating it for egress and for ingress, sorted by name. It allocates the two
// slices for each pod: it is meant for indexes built once per snapshot.
func (s *Snapshot) LocalIsolation(fn func(p *Pod, egress, ingress []PolicyRef)) {
	for _, e := range s.byKey {
		if !e.local || (e.egress == nil && e.ingress == nil) || !livePod(e.pod) {
			continue
		}
		fn(e.pod, refs(e.egress.policies()), refs(e.ingress.policies()))
	}
}

func refs(cps []*compiledPolicy) []PolicyRef {
	out := make([]PolicyRef, len(cps))
	for i, cp := range cps {
		out[i] = cp.ref
	}
	return out
}

// Decide judges a flow (see Decision). It never allocates and never blocks.
func (s *Snapshot) Decide(f flow.Flow) Decision {
	src, dst := s.byIP[f.Src], s.byIP[f.Dst]
	if (src != nil && src.claimed) || (dst != nil && dst.claimed) {
		return s.decideClaimed(f, src, dst)
	}
	var d Decision
	d.Egress = s.judge(Egress, src, dst, f.Dst, dst, f)
	d.Ingress = s.judge(Ingress, dst, src, f.Src, dst, f)
	d.Verdict = Allow
	if d.Egress.Verdict == Deny || d.Ingress.Verdict == Deny {
		d.Verdict = Deny
	}
	return d
}

// judge decides one direction for pod (nil when that end is not a pod) whose remote end is
// remote at address raddr; dst is the destination pod, which resolves named ports. The
// tiers, in order: a pod to itself is allowed; the Admin tier's rules (priority, then
// name, then rule order) decide by Accept or Deny, or Pass on; NetworkPolicy decides for a
// pod it isolates, and always allows such a pod its own node; the Baseline tier decides by
// Accept or Deny — the traffic of a pod with its own node included, as the upstream
// conformance suite expects (CNPBaselineTierEgressNodePeers); what is left is allowed.
func (s *Snapshot) judge(dir Direction, pod, remote *podEntry, raddr netip.Addr, dst *podEntry, f flow.Flow) Judgement {
	if pod == nil {
		return Judgement{Verdict: Allow, Code: NoPod}
	}
	j := Judgement{Verdict: Allow, Pod: pod.pod, Local: pod.local}
	if pod == remote {
		j.Code = Self
		return j
	}
	if pod.combos[0] != 0 && s.cluster(&j, AdminTier, pod, dir, remote, raddr, dst, f) {
		return j
	}
	ownNode := (remote == nil || s.podNodeAddrs) && pod.pod.Node != "" && s.nodeIPs[raddr] == pod.pod.Node
	t := pod.egress
	if dir == Ingress {
		t = pod.ingress
	}
	if t != nil {
		if ownNode {
			j.Code = OwnNode
			return j
		}
		if rank := t.first(remote, raddr, dst, f); rank != noRank {
			r := &t.rules[rank]
			j.Code, j.Policy, j.Rule = Allowed, &r.cp.ref, r.index
			return j
		}
		j.Verdict, j.Code = Deny, NoRuleAllows
		return j
	}
	if pod.combos[1] != 0 && s.cluster(&j, BaselineTier, pod, dir, remote, raddr, dst, f) {
		return j
	}
	j.Code = NotIsolated
	if ownNode {
		j.Code = OwnNode
	}
	return j
}

// cluster judges a flow by the ClusterNetworkPolicies of one tier selecting pod and reports
// whether the tier decided; a Pass rule is recorded in the judgement. It looks up the table
// of the pod's combo of that tier (cnptable.go): its policies' rules in precedence order.
func (s *Snapshot) cluster(j *Judgement, tier Tier, pod *podEntry, dir Direction, remote *podEntry, raddr netip.Addr, dst *podEntry, f flow.Flow) bool {
	t := s.combos[pod.combos[tier-AdminTier]][dir]
	if t == nil {
		return false
	}
	rank := t.first(remote, raddr, dst, f)
	if rank == noRank {
		return false
	}
	best := &t.rules[rank]
	switch best.action {
	case ActionAccept:
		j.Code = ClusterAccepted
	case ActionDeny:
		j.Verdict, j.Code = Deny, ClusterDenied
	default:
		if tier == AdminTier {
			j.AdminPass = best.step
		} else {
			j.BaselinePass = best.step
		}
		return false
	}
	j.Policy, j.Rule = &best.cp.ref, best.index
	return true
}
