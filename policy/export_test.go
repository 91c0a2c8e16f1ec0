package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/podwall/podwall/policy/flow"
)

// DecideByPolicy is Decide the straightforward way, the reference the rule tables are tested
// against: the policies isolating the pod are tried in turn, sorted by name, and each one's
// rules in order, until one allows the flow.
func (s *Snapshot) DecideByPolicy(f flow.Flow) Decision {
	src, dst := s.byIP[f.Src], s.byIP[f.Dst]
	var d Decision
	d.Egress = s.judgeByPolicy(Egress, src, dst, f.Dst, dst, f)
	d.Ingress = s.judgeByPolicy(Ingress, dst, src, f.Src, dst, f)
	d.Verdict = Allow
	if d.Egress.Verdict == Deny || d.Ingress.Verdict == Deny {
		d.Verdict = Deny
	}
	return d
}

func (s *Snapshot) judgeByPolicy(dir Direction, pod, remote *podEntry, raddr netip.Addr, dst *podEntry, f flow.Flow) Judgement {
	if pod == nil {
		return Judgement{Verdict: Allow, Code: NoPod}
	}
	j := Judgement{Verdict: Allow, Pod: pod.pod, Local: pod.local}
	switch {
	case pod == remote:
		j.Code = Self
		return j
	case pod.pod.Node != "" && s.nodeIPs[raddr] == pod.pod.Node:
		j.Code = OwnNode
		return j
	}
	pols := pod.egress.policies()
	if dir == Ingress {
		pols = pod.ingress.policies()
	}
	if len(pols) == 0 {
		j.Code = NotIsolated
		return j
	}
	for _, cp := range pols {
		rules := cp.rules(dir)
		for i := range rules {
			if rules[i].matches(remote, raddr, dst, f) {
				j.Code, j.Policy, j.Rule = Allowed, &cp.ref, i
				return j
			}
		}
	}
	j.Verdict, j.Code = Deny, NoRuleAllows
	return j
}

// CheckTables reports whether the compiler's cache of rule tables holds exactly the tables
// of the entries last built, each with its number of users.
func (c *Compiler) CheckTables() error {
	users := map[*ruleTable]int{}
	for _, ps := range c.pods {
		if ps.entry == nil {
			continue
		}
		for _, t := range [...]*ruleTable{ps.entry.ingress, ps.entry.egress} {
			if t != nil {
				users[t]++
			}
		}
	}
	if len(users) != len(c.tables) {
		return fmt.Errorf("%d tables cached, %d in use", len(c.tables), len(users))
	}
	for t, n := range users {
		u := c.tables[t.key]
		if u == nil || u.t != t {
			return fmt.Errorf("a table in use (policies %v) is not the one cached under its key", refs(t.pols))
		}
		if u.users != n {
			return fmt.Errorf("table of %v: %d users counted, %d in use", refs(t.pols), u.users, n)
		}
	}
	return nil
}

// DecideReference is Decide the straightforward way for every tier, the reference the
// ClusterNetworkPolicy combos and tables are tested against. s must be c's last snapshot.
// ClusterNetworkPolicies are read from c: a policy of a tier judges a pod when the pod is
// live and not on the host network, its subject's selectors match the pod's namespace
// labels and labels, and it has rules of the direction; they are tried by priority, then
// name, each one's rules in order, and the first rule that matches decides (Accept, Deny)
// or passes to the next tier (Pass). NetworkPolicy is judged policy by policy, as in
// DecideByPolicy. Flows with an address several pods claim are not covered.
func (c *Compiler) DecideReference(s *Snapshot, f flow.Flow) Decision {
	src, dst := s.byIP[f.Src], s.byIP[f.Dst]
	var d Decision
	d.Egress = c.judgeReference(s, Egress, src, dst, f.Dst, dst, f)
	d.Ingress = c.judgeReference(s, Ingress, dst, src, f.Src, dst, f)
	d.Verdict = Allow
	if d.Egress.Verdict == Deny || d.Ingress.Verdict == Deny {
		d.Verdict = Deny
	}
	return d
}

func (c *Compiler) judgeReference(s *Snapshot, dir Direction, pod, remote *podEntry, raddr netip.Addr, dst *podEntry, f flow.Flow) Judgement {
	if pod == nil {
		return Judgement{Verdict: Allow, Code: NoPod}
	}
	j := Judgement{Verdict: Allow, Pod: pod.pod, Local: pod.local}
	if pod == remote {
		j.Code = Self
		return j
	}
	if c.clusterReference(&j, AdminTier, pod, dir, remote, raddr, dst, f) {
		return j
	}
	ownNode := pod.pod.Node != "" && s.nodeIPs[raddr] == pod.pod.Node
	pols := pod.egress.policies()
	if dir == Ingress {
		pols = pod.ingress.policies()
	}
	if len(pols) > 0 {
		if ownNode {
			j.Code = OwnNode
			return j
		}
		for _, cp := range pols {
			rules := cp.rules(dir)
			for i := range rules {
				if rules[i].matches(remote, raddr, dst, f) {
					j.Code, j.Policy, j.Rule = Allowed, &cp.ref, i
					return j
				}
			}
		}
		j.Verdict, j.Code = Deny, NoRuleAllows
		return j
	}
	if c.clusterReference(&j, BaselineTier, pod, dir, remote, raddr, dst, f) {
		return j
	}
	j.Code = NotIsolated
	if ownNode {
		j.Code = OwnNode
	}
	return j
}

func (c *Compiler) clusterReference(j *Judgement, tier Tier, pod *podEntry, dir Direction, remote *podEntry, raddr netip.Addr, dst *podEntry, f flow.Flow) bool {
	p := pod.pod
	if !livePod(p) {
		return false
	}
	var pols []*compiledPolicy
	for _, cs := range c.cnps.byName {
		ci := cs.cp.cluster
		if ci.tier == tier && len(cs.cp.rules(dir)) > 0 &&
			ci.subNS.Matches(c.nsLabels(p.Namespace)) && ci.subPods.Matches(labels.Set(p.Labels)) {
			pols = append(pols, cs.cp)
		}
	}
	slices.SortFunc(pols, func(a, b *compiledPolicy) int {
		return cmp.Or(cmp.Compare(a.cluster.priority, b.cluster.priority), strings.Compare(a.ref.Name, b.ref.Name))
	})
	for _, cp := range pols {
		rules := cp.rules(dir)
		for i := range rules {
			if !rules[i].matches(remote, raddr, dst, f) {
				continue
			}
			switch cp.cluster.actions[dir][i] {
			case ActionAccept:
				j.Code = ClusterAccepted
			case ActionDeny:
				j.Verdict, j.Code = Deny, ClusterDenied
			default:
				step := &RuleRef{cp.ref, i}
				if tier == AdminTier {
					j.AdminPass = step
				} else {
					j.BaselinePass = step
				}
				return false
			}
			j.Policy, j.Rule = &cp.ref, i
			return true
		}
	}
	return false
}

// CheckCombos reports whether the compiler's ClusterNetworkPolicy combos, and the tables
// they share, are exactly those the entries last built name, each with its number of users,
// and each entry's combos hold its groups.
func (c *Compiler) CheckCombos() error {
	users := map[uint32]int{}
	for _, ps := range c.pods {
		e := ps.entry
		if e == nil {
			continue
		}
		for tier, gs := range [2][]uint32{e.groups[:e.admin], e.groups[e.admin:]} {
			id := e.combos[tier]
			if (id == 0) != (len(gs) == 0) {
				return fmt.Errorf("%s: groups %v, combo %d", e.pod.Key(), gs, id)
			}
			if id == 0 {
				continue
			}
			users[id]++
			cb := c.cnps.comboByID[id]
			if cb == nil {
				return fmt.Errorf("%s: combo %d is forgotten", e.pod.Key(), id)
			}
			var ids []uint32
			for _, g := range cb.groups {
				if c.cnps.byID[g.id] != g {
					return fmt.Errorf("%s: combo %d holds a forgotten group", e.pod.Key(), id)
				}
				ids = append(ids, g.id)
			}
			slices.Sort(ids)
			if !slices.Equal(ids, slices.Sorted(slices.Values(gs))) {
				return fmt.Errorf("%s: groups %v, combo %d holds %v", e.pod.Key(), gs, id, ids)
			}
		}
	}
	live, tableUsers := 0, map[string]int{}
	for id, cb := range c.cnps.comboByID {
		if cb == nil {
			continue
		}
		live++
		for _, k := range cb.tables {
			if k != "" {
				tableUsers[k]++
			}
		}
		if cb.users != users[uint32(id)] {
			return fmt.Errorf("combo %d: %d users counted, %d entries", id, cb.users, users[uint32(id)])
		}
	}
	if live != len(c.cnps.combos) || live != len(users) {
		return fmt.Errorf("%d combos by id, %d by key, %d in use", live, len(c.cnps.combos), len(users))
	}
	if len(tableUsers) != len(c.cnps.tables) {
		return fmt.Errorf("%d combo tables cached, %d in use", len(c.cnps.tables), len(tableUsers))
	}
	for k, n := range tableUsers {
		if u := c.cnps.tables[k]; u == nil || u.users != n {
			return fmt.Errorf("a combo table in use is not cached, or with another count than %d", n)
		}
	}
	return nil
}

// ClusterTableShape returns the most words of rules a combo table of the last snapshot has,
// and how many cluster peer bits the compiler gave out.
func (c *Compiler) ClusterTableShape() (words, peerBits int) {
	for _, ct := range c.last.combos {
		for _, t := range ct {
			if t != nil {
				words = max(words, int(t.words))
			}
		}
	}
	return words, len(c.cnps.bitUses)
}
