package policy

import (
	"fmt"
	"net/netip"

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
