package policy_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/synth"
)

// With ClusterNetworkPolicies too, Decide never allocates: Pass steps and the deciding rule
// are pointers into the snapshot.
func TestClusterDecideDoesNotAllocate(t *testing.T) {
	s := synth.Generate(synth.Config{Pods: 500, Policies: 80, ClusterPolicies: 20, Seed: 1})
	snap, err := policy.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	codes := map[policy.Code]bool{}
	for _, f := range flowsOf(s, rand.New(rand.NewPCG(3, 4)), 2000) {
		d := snap.Decide(f)
		codes[d.Egress.Code], codes[d.Ingress.Code] = true, true
		if n := testing.AllocsPerRun(20, func() { snap.Decide(f) }); n != 0 {
			t.Fatalf("Decide(%v) allocates %v times per call, want 0", f, n)
		}
	}
	for _, c := range []policy.Code{policy.ClusterAccepted, policy.ClusterDenied, policy.Allowed, policy.NoRuleAllows} {
		if !codes[c] {
			t.Errorf("no sampled flow decided by %v: the sample misses a path", c)
		}
	}
}

// ClusterNetworkPolicies replaced, added and deleted one at a time, nodes relabelled and
// pods moved: the incremental compiler decides as one that compiles each state whole.
func TestClusterIncrementalEqualsFullCompile(t *testing.T) {
	s := synth.Generate(synth.Config{Pods: 300, Policies: 40, ClusterPolicies: 15, Nodes: 3, Seed: 7})
	r := rand.New(rand.NewPCG(8, 9))
	c := policy.NewCompiler("node-0")
	if err := c.Replace(s); err != nil {
		t.Fatal(err)
	}
	flows := flowsOf(s, r, 1500)
	for i := range 3 { // pod ↔ node traffic, host-network pods' addresses included
		node := netip.AddrFrom4([4]byte{172, 18, 0, byte(i)})
		flows = append(flows, flow.Flow{Src: synth.PodIPv4(i), Dst: node, Proto: flow.TCP, Port: 10250},
			flow.Flow{Src: node, Dst: synth.PodIPv4(i + 3), Proto: flow.TCP, Port: 8080})
	}
	for step := range 40 {
		var what string
		switch k := r.IntN(5); {
		case k <= 1:
			i := r.IntN(len(s.ClusterPolicies))
			s.ClusterPolicies[i] = synth.ClusterPolicy(r, s.ClusterPolicies[i].Name)
			what = "replace " + s.ClusterPolicies[i].Name
		case k == 2:
			p := synth.ClusterPolicy(r, fmt.Sprintf("added-%d", step))
			s.ClusterPolicies = append(s.ClusterPolicies, p)
			what = "add " + p.Name
		case k == 3 && len(s.ClusterPolicies) > 1:
			i := r.IntN(len(s.ClusterPolicies))
			what = "delete " + s.ClusterPolicies[i].Name
			s.ClusterPolicies = append(s.ClusterPolicies[:i:i], s.ClusterPolicies[i+1:]...)
		default:
			i := r.IntN(len(s.Nodes))
			s.Nodes[i].Labels = map[string]string{"zone": []string{"a", "b", "c"}[r.IntN(3)]}
			what = "relabel " + s.Nodes[i].Name
		}
		if err := c.Replace(s); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		whole, err := policy.Compile(s)
		if err != nil {
			t.Fatal(err)
		}
		sameDecisions(t, what, c.Snapshot(), whole, flows)
		if err := c.CheckTables(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
}
