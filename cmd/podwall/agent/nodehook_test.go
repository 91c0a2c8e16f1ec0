package agent

import (
	"net/netip"
	"slices"
	"testing"

	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
)

// The own-node sets the agent syncs are the pods a ClusterNetworkPolicy can cut off from
// their own node, and the datapath's Decider judges what the input and output chains queue
// as the policy says: an Admin egress Deny to nodes denies web → its node and nothing else;
// ingress peers are namespaces and pods, so only a rule the API fails closed (a Deny with no
// peers) can deny the node → pod direction, and then it does.
func TestOwnNodeSets(t *testing.T) {
	a, s := testAgent(t)
	node := netip.MustParseAddr("172.18.0.2")
	s.Nodes = append(s.Nodes, policy.Node{Name: "node-1", IPs: []netip.Addr{node}, Labels: map[string]string{"role": "worker"}})
	a.setState(t, s)
	ranges := []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}
	if w := window(a.inForce.Load(), ranges); len(w.NodeIngress)+len(w.NodeEgress)+len(w.NodeIngressRanges)+len(w.NodeEgressRanges) != 0 {
		t.Errorf("own-node sets without ClusterNetworkPolicy: %v %v, windows %v %v, want empty",
			w.NodeIngress, w.NodeEgress, w.NodeIngressRanges, w.NodeEgressRanges)
	}

	webAddrs := []netip.Addr{webIP, netip.MustParseAddr("fd00:10:244:1::10")} // web's two families
	decide := func(src, dst netip.Addr) policy.Verdict {
		d, _, _ := a.inForce.Decide(flow.Flow{Src: src, Dst: dst, Proto: flow.TCP, Port: 10250})
		return d.LocalVerdict()
	}
	cnp := func(name, spec string) *cnpv1alpha2.ClusterNetworkPolicy {
		c := &cnpv1alpha2.ClusterNetworkPolicy{}
		if err := yaml.Unmarshal([]byte(spec), &c.Spec); err != nil {
			t.Fatal(err)
		}
		c.Name = name
		return c
	}
	s.ClusterPolicies = []*cnpv1alpha2.ClusterNetworkPolicy{cnp("web-no-node", `
tier: Admin
priority: 1
subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: web}}}}
egress: [{action: Deny, to: [{nodes: {matchLabels: {role: worker}}}]}]
`)}
	a.setState(t, s)
	w := window(a.inForce.Load(), ranges)
	if !slices.Equal(w.NodeEgress, webAddrs) || len(w.NodeIngress) != 0 {
		t.Errorf("own-node sets: ingress %v egress %v, want egress %v only", w.NodeIngress, w.NodeEgress, webAddrs)
	}
	// A pod the policy does not know yet could be a subject: held at the input hook, not
	// at output (no rule can deny the node → pod direction).
	if !slices.Equal(w.NodeEgressRanges, ranges) || len(w.NodeIngressRanges) != 0 {
		t.Errorf("own-node windows: ingress %v egress %v, want egress %v only", w.NodeIngressRanges, w.NodeEgressRanges, ranges)
	}
	if v := decide(webIP, node); v != policy.Deny {
		t.Errorf("web -> its node: %v, want deny", v)
	}
	if v := decide(apiIP, node); v != policy.Allow {
		t.Errorf("api -> its node: %v, want allow", v)
	}
	if v := decide(node, webIP); v != policy.Allow {
		t.Errorf("node -> web: %v, want allow (no ingress rule can name a node)", v)
	}

	s.ClusterPolicies = []*cnpv1alpha2.ClusterNetworkPolicy{cnp("web-in-fail-closed", `
tier: Admin
priority: 1
subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: web}}}}
ingress: [{action: Deny, from: []}]
`)}
	a.setState(t, s)
	w = window(a.inForce.Load(), ranges)
	if !slices.Equal(w.NodeIngress, webAddrs) || len(w.NodeEgress) != 0 {
		t.Errorf("own-node sets: ingress %v egress %v, want ingress %v only", w.NodeIngress, w.NodeEgress, webAddrs)
	}
	if !slices.Equal(w.NodeIngressRanges, ranges) || len(w.NodeEgressRanges) != 0 {
		t.Errorf("own-node windows: ingress %v egress %v, want ingress %v only", w.NodeIngressRanges, w.NodeEgressRanges, ranges)
	}
	if v := decide(node, webIP); v != policy.Deny {
		t.Errorf("node -> web under a fail-closed ingress Deny: %v, want deny", v)
	}
}
