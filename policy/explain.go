package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/podwall/podwall/policy/flow"
)

// RuleRef names one rule of a policy: index into spec.ingress or spec.egress.
type RuleRef struct {
	Policy PolicyRef
	Rule   int
}

func (r RuleRef) String() string { return r.Policy.String() + " rule " + strconv.Itoa(r.Rule) }

// Explanation is a Decision spelled out for people: every policy involved and the reason as
// text. Making one allocates, so the datapath never does: podwall explain and the decision
// stream's subscribers do.
type Explanation struct {
	Flow     flow.Flow
	Verdict  Verdict
	Src, Dst *Pod // nil when that end is not a pod
	Egress   DirExplanation
	Ingress  DirExplanation
	// Reason is one line: the denying direction(s), or why both directions allow.
	Reason string
}

// DirExplanation explains one direction.
type DirExplanation struct {
	Judgement
	// Isolating lists the policies that isolate the pod for this direction.
	Isolating []PolicyRef
	// Allowing lists every rule that allows the flow (Judgement names the first).
	Allowing []RuleRef
	// Cluster lists the ClusterNetworkPolicy rules that judged this direction, in order:
	// the Pass rules that sent it on, then the rule that decided when one did (Code
	// ClusterAccepted or ClusterDenied).
	Cluster []ClusterStep
	Reason  string
}

// Explain decides a flow and spells the decision out.
func (s *Snapshot) Explain(f flow.Flow) Explanation {
	d := s.Decide(f)
	src, dst := s.byIP[f.Src], s.byIP[f.Dst]
	e := Explanation{Flow: f, Verdict: d.Verdict}
	if src != nil {
		e.Src = src.pod
	}
	if dst != nil {
		e.Dst = dst.pod
	}
	e.Egress = s.explainDir(Egress, d.Egress, src, dst, f)
	e.Ingress = s.explainDir(Ingress, d.Ingress, dst, src, f)
	switch {
	case d.Egress.Verdict == Deny && d.Ingress.Verdict == Deny:
		e.Reason = e.Egress.Reason + "; " + e.Ingress.Reason
	case d.Egress.Verdict == Deny:
		e.Reason = e.Egress.Reason
	case d.Ingress.Verdict == Deny:
		e.Reason = e.Ingress.Reason
	default:
		e.Reason = e.Egress.Reason + "; " + e.Ingress.Reason
	}
	return e
}

func (s *Snapshot) explainDir(dir Direction, j Judgement, addrEntry, remote *podEntry, f flow.Flow) DirExplanation {
	x := DirExplanation{Judgement: j}
	pod := claimant(addrEntry, &j) // the pod judged, when several claim the address
	jaddr, raddr, dst := f.Src, f.Dst, remote
	if dir == Ingress {
		jaddr, raddr, dst = f.Dst, f.Src, pod
	}
	var pols []*compiledPolicy
	if pod != nil {
		x.Cluster = s.clusterSteps(pod, dir, &j)
	}
	if pod != nil && (j.Code == Allowed || j.Code == NoRuleAllows) {
		// Every rule of every isolating policy, tried in turn: Decide's table finds the
		// first of them (TestDecideEqualsPolicyByPolicy).
		pols = pod.egress.policies()
		if dir == Ingress {
			pols = pod.ingress.policies()
		}
		for _, cp := range pols {
			x.Isolating = append(x.Isolating, cp.ref)
			rules := cp.rules(dir)
			for i := range rules {
				if rules[i].matches(remote, raddr, dst, f) {
					x.Allowing = append(x.Allowing, RuleRef{cp.ref, i})
				}
			}
		}
	}
	x.Reason = passes(x.Cluster) + s.reason(dir, &x, remote, raddr, f) + claimNote(dir, addrEntry, remote, jaddr, raddr)
	if x.Code == NoRuleAllows {
		x.Reason += invalidNote(pols)
	}
	return x
}

// endpoint names the remote end of a flow: a pod, a node or an address.
func (s *Snapshot) endpoint(e *podEntry, a netip.Addr) string {
	if e != nil {
		return e.pod.Key()
	}
	if n := s.nodeIPs[a]; n != "" {
		return "node " + n + " (" + a.String() + ")"
	}
	return a.String()
}

func (s *Snapshot) reason(dir Direction, x *DirExplanation, remote *podEntry, raddr netip.Addr, f flow.Flow) string {
	towards := "to "
	if dir == Ingress {
		towards = "from "
	}
	var who string
	if x.Pod != nil {
		who = x.Pod.Key()
	}
	switch x.Code {
	case NoPod:
		end := "source"
		if dir == Ingress {
			end = "destination"
		}
		return dir.String() + " not judged: " + end + " is not a pod"
	case Self:
		return who + " to itself is always allowed"
	case OwnNode:
		return dir.String() + " " + towards + "its own node is always allowed for " + who
	case NotIsolated:
		return who + " is not isolated for " + dir.String()
	case ClusterAccepted, ClusterDenied:
		st := x.Cluster[len(x.Cluster)-1]
		verb := " accepted by "
		if x.Code == ClusterDenied {
			verb = " denied by "
		}
		return dir.String() + " of " + who + " " + flowPort(f) + " " + towards + s.endpoint(remote, raddr) + verb + st.String()
	case Allowed:
		parts := make([]string, len(x.Allowing))
		for i, r := range x.Allowing {
			parts[i] = r.String()
		}
		return dir.String() + " of " + who + " allowed by " + strings.Join(parts, ", ")
	}
	names := make([]string, len(x.Isolating))
	for i, p := range x.Isolating {
		names[i] = p.Name
	}
	return fmt.Sprintf("%s is isolated for %s by %s; no rule allows %s %s%s",
		who, dir, strings.Join(names, ", "), flowPort(f), towards, s.endpoint(remote, raddr))
}

func flowPort(f flow.Flow) string {
	if f.Proto.HasPorts() {
		return f.Proto.String() + "/" + strconv.Itoa(int(f.Port))
	}
	return f.Proto.String()
}

// matches reports whether the rule allows a flow whose remote end is remote (nil when not
// a pod) at raddr, towards the destination pod dst (nil when not a pod).
func (r *rule) matches(remote *podEntry, raddr netip.Addr, dst *podEntry, f flow.Flow) bool {
	if !r.matchesPort(dst, f) {
		return false
	}
	if r.any || r.addrs.contains(raddr) {
		return true
	}
	if remote == nil {
		return false
	}
	for _, id := range r.peers {
		if _, ok := slices.BinarySearch(remote.peers, id); ok {
			return true
		}
	}
	return false
}

func (r *rule) matchesPort(dst *podEntry, f flow.Flow) bool {
	if len(r.ports) == 0 {
		return true
	}
	for i := range r.ports {
		p := &r.ports[i]
		if p.proto != f.Proto {
			continue
		}
		switch {
		case p.all:
			return true
		case p.name == 0:
			if f.Port >= p.lo && f.Port <= p.hi {
				return true
			}
		case dst != nil:
			for _, np := range dst.ports {
				if np.name == p.name && np.proto == f.Proto && np.port == f.Port {
					return true
				}
			}
		}
	}
	return false
}
