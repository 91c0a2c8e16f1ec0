package explain

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
)

// Query is one question, as a --batch input line: {"from","to","port","protocol"}. From and
// To are ns/pod (the pod's primary address, status.podIP) or an IP address. Protocol
// defaults to TCP; Port is required for TCP, UDP and SCTP and ignored for the others.
type Query struct {
	From     string      `json:"from"`
	To       string      `json:"to"`
	Port     json.Number `json:"port,omitempty"`
	Protocol string      `json:"protocol,omitempty"`
}

// Answer is the reply to a Query: the query's own fields, the verdict and why. Error is set
// (and the verdict fields are empty) when the query could not be judged.
type Answer struct {
	From     string      `json:"from"`
	To       string      `json:"to"`
	Port     json.Number `json:"port,omitempty"`
	Protocol string      `json:"protocol,omitempty"`
	Verdict  string      `json:"verdict,omitempty"` // "allow" or "deny"
	Reason   string      `json:"reason,omitempty"`
	Src      string      `json:"src,omitempty"` // the source address judged
	Dst      string      `json:"dst,omitempty"` // the destination address judged
	Egress   *Judgement  `json:"egress,omitempty"`
	Ingress  *Judgement  `json:"ingress,omitempty"`
	// Staged is the verdict the enforced policies plus the staged ones would give (SPEC
	// §2c); set on every judged answer when staged policies exist, nil otherwise.
	Staged *Staged `json:"staged,omitempty"`
	Error  string  `json:"error,omitempty"`
}

// Judgement is one judged direction: egress at the source pod, ingress at the destination
// pod.
type Judgement struct {
	Verdict string `json:"verdict"` // "allow" or "deny"
	// Code is policy.Code spelled out: no-pod, self, own-node, not-isolated, allowed,
	// no-rule-allows, cluster-accepted, cluster-denied.
	Code string `json:"code"`
	// Pod is the pod judged (namespace/name): the source for egress, the destination for
	// ingress; empty when that end is not a pod.
	Pod string `json:"pod,omitempty"`
	// Local reports whether the node of the snapshot judges this direction (Pod runs there);
	// the other node's agent enforces a direction that is not local. Always false for
	// explain, which has no node.
	Local bool `json:"local"`
	// Policies are the policies that made this direction's verdict: the allowing ones when
	// Code is "allowed", the isolating ones when it is "no-rule-allows", the deciding
	// ClusterNetworkPolicy (cnp/NAME) when it is "cluster-accepted" or "cluster-denied".
	Policies []string `json:"policies,omitempty"`
	// AllowedBy lists every rule that allows the flow; IsolatedBy every policy isolating Pod
	// for this direction.
	AllowedBy  []Rule   `json:"allowedBy,omitempty"`
	IsolatedBy []string `json:"isolatedBy,omitempty"`
	Reason     string   `json:"reason"`
	// Tier is the tier that decided: "Admin" or "Baseline" (codes cluster-accepted and
	// cluster-denied), "NetworkPolicy" when a ClusterNetworkPolicy Pass rule sent the flow
	// there (allowed, no-rule-allows, own-node); empty otherwise — so a cluster without
	// ClusterNetworkPolicies writes what it always did.
	Tier string `json:"tier,omitempty"`
	// Cluster lists the ClusterNetworkPolicy rules that judged this direction, in order:
	// the Pass rules that sent it on to the next tier, then the rule that decided, if one
	// did.
	Cluster []ClusterRule `json:"cluster,omitempty"`
}

// ClusterRule names one ClusterNetworkPolicy rule and what it did.
type ClusterRule struct {
	Policy   string `json:"policy"` // cnp/NAME
	Rule     int    `json:"rule"`   // index into spec.ingress or spec.egress
	Name     string `json:"name,omitempty"`
	Tier     string `json:"tier"` // "Admin" or "Baseline"
	Priority int32  `json:"priority"`
	Action   string `json:"action"` // "Accept", "Deny" or "Pass"
	// Tie names a policy of the same tier and priority that selects the pod too: their
	// order is podwall's (by name), the API leaves it open.
	Tie string `json:"tie,omitempty"`
}

// Rule names one rule: an index into spec.ingress or spec.egress of Policy (namespace/name).
type Rule struct {
	Policy string `json:"policy"`
	Rule   int    `json:"rule"`
}

// JudgementOf spells out one direction of an explanation.
func JudgementOf(d *policy.DirExplanation) *Judgement {
	j := &Judgement{Verdict: d.Verdict.String(), Code: d.Code.String(), Local: d.Local, Reason: d.Reason}
	if d.Pod != nil {
		j.Pod = d.Pod.Key()
	}
	for _, p := range d.Isolating {
		j.IsolatedBy = append(j.IsolatedBy, p.String())
	}
	for _, a := range d.Allowing {
		j.AllowedBy = append(j.AllowedBy, Rule{a.Policy.String(), a.Rule})
	}
	for _, c := range d.Cluster {
		r := ClusterRule{Policy: c.Rule.Policy.String(), Rule: c.Rule.Rule, Name: c.Name, Tier: c.Rule.Policy.Tier.String(),
			Priority: c.Priority, Action: c.Action.String()}
		if c.Tie != nil {
			r.Tie = c.Tie.String()
		}
		j.Cluster = append(j.Cluster, r)
	}
	switch d.Code {
	case policy.Allowed, policy.NoRuleAllows, policy.OwnNode:
		if len(d.Cluster) > 0 { // passed on by the Admin tier
			j.Tier = policy.NetworkPolicyTier.String()
		}
	case policy.ClusterAccepted, policy.ClusterDenied:
		j.Tier = d.Policy.Tier.String()
		j.Policies = []string{d.Policy.String()}
	}
	switch d.Code {
	case policy.Allowed:
		for _, a := range j.AllowedBy {
			if !slices.Contains(j.Policies, a.Policy) {
				j.Policies = append(j.Policies, a.Policy)
			}
		}
	case policy.NoRuleAllows:
		j.Policies = j.IsolatedBy
	}
	return j
}

// Judge answers q from s. A query that cannot be judged gets an Answer with Error set.
func Judge(s *policy.Snapshot, q Query) Answer {
	return JudgeStaged(s, nil, q)
}

// JudgeStaged answers q from s, the enforced snapshot, and, when p is not nil, adds what the
// staged policies of p would make of it (Answer.Staged). The enforced answer is Judge's.
func JudgeStaged(s *policy.Snapshot, p *Proposal, q Query) Answer {
	a := Answer{From: q.From, To: q.To, Port: q.Port, Protocol: q.Protocol}
	f, err := ParseFlow(s, q)
	if err != nil {
		a.Error = err.Error()
		return a
	}
	x := s.Explain(f)
	a.Verdict, a.Reason = x.Verdict.String(), x.Reason
	a.Src, a.Dst = f.Src.String(), f.Dst.String()
	a.Egress, a.Ingress = JudgementOf(&x.Egress), JudgementOf(&x.Ingress)
	if p != nil {
		sx := p.Snap.Explain(f)
		a.Staged, _ = p.Of(&sx)
	}
	return a
}

// ParseFlow resolves q's endpoints in s and checks its port and protocol. A pod endpoint
// is the pod's primary address (status.podIP), except that when the other endpoint is an
// address, or a pod without an address of that family, the pod's address of the other
// endpoint's family is used (SPEC §4): an error only when the two have no family in common.
func ParseFlow(s *policy.Snapshot, q Query) (flow.Flow, error) {
	var f flow.Flow
	from, err := resolve(s, q.From)
	if err != nil {
		return f, fmt.Errorf("from: %w", err)
	}
	to, err := resolve(s, q.To)
	if err != nil {
		return f, fmt.Errorf("to: %w", err)
	}
	if f.Src, f.Dst, err = pair(from, to); err != nil {
		return f, err
	}
	proto := q.Protocol
	if proto == "" {
		proto = "TCP"
	}
	if f.Proto, err = flow.ParseProto(proto); err != nil {
		return f, fmt.Errorf("protocol: %w", err)
	}
	if q.Port != "" {
		n, err := strconv.Atoi(q.Port.String())
		if err != nil || n < 0 || n > 65535 {
			return f, fmt.Errorf("port: want 0-65535, got %s", q.Port)
		}
		f.Port = uint16(n)
	}
	if f.Proto.HasPorts() && f.Port == 0 {
		return f, fmt.Errorf("port: %s needs a port (1-65535)", f.Proto)
	}
	if !f.Proto.HasPorts() {
		f.Port = 0
	}
	return f, nil
}

// endpoint is a resolved query endpoint: an address, or a pod with its addresses (primary
// first).
type endpoint struct {
	name  string
	addrs []netip.Addr
	pod   bool
}

func resolve(s *policy.Snapshot, ep string) (endpoint, error) {
	if a, err := netip.ParseAddr(ep); err == nil {
		return endpoint{name: ep, addrs: []netip.Addr{a.Unmap()}}, nil
	}
	if _, err := Endpoint(s, ep); err != nil {
		return endpoint{}, err
	}
	ns, name, _ := strings.Cut(ep, "/")
	return endpoint{name: ep, addrs: s.Pod(ns, name).IPs, pod: true}, nil
}

// pair picks the source and destination addresses of one family: the first endpoint's first
// address whose family the other endpoint has.
func pair(from, to endpoint) (src, dst netip.Addr, err error) {
	if !from.pod && !to.pod {
		if from.addrs[0].Is4() != to.addrs[0].Is4() {
			return src, dst, fmt.Errorf("from %s and to %s are of different IP families; pass an address to pick the family", from.addrs[0], to.addrs[0])
		}
		return from.addrs[0], to.addrs[0], nil
	}
	// An address decides the family; two pods try the source's primary family first.
	order := from.addrs
	if !to.pod {
		order = to.addrs
	}
	for _, a := range append(slices.Clip(order), to.addrs...) {
		s, okS := ofFamily(from.addrs, a.Is4())
		d, okD := ofFamily(to.addrs, a.Is4())
		if okS && okD {
			return s, d, nil
		}
	}
	return src, dst, fmt.Errorf("from %s (%s) and to %s (%s) have no IP family in common", from.name, families(from.addrs), to.name, families(to.addrs))
}

func ofFamily(addrs []netip.Addr, v4 bool) (netip.Addr, bool) {
	for _, a := range addrs {
		if a.Is4() == v4 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func families(addrs []netip.Addr) string {
	var out []string
	for _, a := range addrs {
		if a.Is4() {
			out = append(out, "IPv4 "+a.String())
		} else {
			out = append(out, "IPv6 "+a.String())
		}
	}
	return strings.Join(out, ", ")
}

// Endpoint resolves ns/pod to the pod's primary address, or parses an address.
func Endpoint(s *policy.Snapshot, ep string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(ep); err == nil {
		return a.Unmap(), nil
	}
	ns, name, ok := strings.Cut(ep, "/")
	if !ok || ns == "" || name == "" {
		return netip.Addr{}, fmt.Errorf("endpoint %q: want ns/pod or an IP address", ep)
	}
	p := s.Pod(ns, name)
	if p == nil {
		return netip.Addr{}, fmt.Errorf("endpoint %q: no such pod", ep)
	}
	if len(p.IPs) == 0 {
		return netip.Addr{}, fmt.Errorf("endpoint %q: pod has no IP address (status.podIP)", ep)
	}
	return p.IPs[0], nil
}

// Verdict is how one verdict of a node reads: the pods and the two directions of x, and the
// reason and policies of the directions that gave the verdict — the local directions, all
// of them when allow, the denying ones when not. Reason falls back on x's own reason when no
// direction was judged on this node (or the policy changed under the verdict). The decision
// stream's events and the flow history's lines both read a verdict this way.
type Verdict struct {
	SrcPod, DstPod  string
	Egress, Ingress *Judgement
	Reason          string
	Policies        []string
}

// VerdictOf spells out a verdict (allow or not) given to the flow x explains.
func VerdictOf(x *policy.Explanation, allow bool) Verdict {
	var v Verdict
	if x.Src != nil {
		v.SrcPod = x.Src.Key()
	}
	if x.Dst != nil {
		v.DstPod = x.Dst.Key()
	}
	v.Egress, v.Ingress = JudgementOf(&x.Egress), JudgementOf(&x.Ingress)
	var reasons []string
	for _, j := range []*Judgement{v.Egress, v.Ingress} {
		if !j.Local || (!allow && j.Verdict != "deny") {
			continue
		}
		reasons = append(reasons, j.Reason)
		for _, p := range j.Policies {
			if !slices.Contains(v.Policies, p) {
				v.Policies = append(v.Policies, p)
			}
		}
	}
	v.Reason = strings.Join(reasons, "; ")
	if v.Reason == "" {
		v.Reason = x.Reason
	}
	return v
}
