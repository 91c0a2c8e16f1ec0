package policy_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

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

// Decide with ClusterNetworkPolicies — one table per combo of a pod's groups and direction,
// rebuilt as policies change — judges every flow as the straightforward reference does
// (Compiler.DecideReference: each policy whose subject selects the pod, by priority and
// name, each rule in order), with the same tier, policy, rule and Pass steps, on random
// clusters changed one step at a time: policies replaced, edited, added and deleted,
// priorities tied, rules enforced fail-closed (domainNames) inserted, pods, namespaces and
// nodes relabelled, NetworkPolicies replaced. Some pods have two names for one port.
func TestClusterDecideEqualsReference(t *testing.T) {
	var seen [policy.ClusterDenied + 1]int
	passes := [2]int{}
	for seed := range uint64(4) {
		s := synth.Generate(synth.Config{Pods: 400, Policies: 50, ClusterPolicies: 30, Nodes: 4, Seed: 20 + seed})
		clusterReferenceSteps(t, s, seed, 30, clusterChange, &seen, &passes)
	}
	t.Logf("judgements by code %v; Admin Pass steps %d, Baseline %d", seen, passes[0], passes[1])
	for _, c := range []policy.Code{policy.ClusterAccepted, policy.ClusterDenied, policy.Allowed, policy.NoRuleAllows, policy.NotIsolated, policy.OwnNode} {
		if seen[c] < 20 {
			t.Errorf("only %d judgements %v: the sample misses a path", seen[c], c)
		}
	}
	if passes[0] < 20 || passes[1] < 20 {
		t.Errorf("Pass steps: %d Admin, %d Baseline: the sample misses a path", passes[0], passes[1])
	}
}

// The same with tables past one word of rules and cluster peer bits past the 128 a pod entry
// holds inline: 70 policies of one subject (every namespace), each rule naming one more peer
// out of a few hundred.
func TestClusterDecideEqualsReferenceWide(t *testing.T) {
	var seen [policy.ClusterDenied + 1]int
	passes := [2]int{}
	s := synth.Generate(synth.Config{Pods: 300, Policies: 30, Nodes: 3, Seed: 5})
	r := rand.New(rand.NewPCG(5, 5))
	for i := range 70 {
		s.ClusterPolicies = append(s.ClusterPolicies, widePolicy(r, fmt.Sprintf("wide-%d", i)))
	}
	change := func(r *rand.Rand, s *policy.State, step int) (string, func(*policy.Compiler) error) {
		i := r.IntN(len(s.ClusterPolicies))
		s.ClusterPolicies[i] = widePolicy(r, s.ClusterPolicies[i].Name)
		return "replace " + s.ClusterPolicies[i].Name, func(c *policy.Compiler) error { return c.Replace(*s) }
	}
	c := clusterReferenceSteps(t, s, 0, 8, change, &seen, &passes)
	if words, bits := c.ClusterTableShape(); words < 2 || bits <= 128 {
		t.Errorf("widest table %d words, %d cluster peer bits: the test misses what it is for", words, bits)
	}
	if seen[policy.ClusterAccepted] < 20 || seen[policy.ClusterDenied] < 20 || passes[0] < 20 {
		t.Errorf("judgements by code %v, Admin Pass steps %d: the sample misses a path", seen, passes[0])
	}
}

// widePolicy is synth.ClusterPolicy selecting every pod, with one more peer per rule: the
// pods of one app, tier and version in one namespace (a few hundred such peers).
func widePolicy(r *rand.Rand, name string) *cnpv1alpha2.ClusterNetworkPolicy {
	p := synth.ClusterPolicy(r, name)
	p.Spec.Subject = cnpv1alpha2.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{}}
	peer := func() *cnpv1alpha2.NamespacedPod {
		return &cnpv1alpha2.NamespacedPod{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": fmt.Sprintf("ns-%d", r.IntN(3))}},
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{
				"app":  []string{"web", "api", "db", "cache", "queue", "auth", "search", "billing", "mail", "report"}[r.IntN(10)],
				"tier": []string{"frontend", "backend", "data"}[r.IntN(3)], "version": fmt.Sprintf("v%d", r.IntN(3))}},
		}
	}
	for i := range p.Spec.Ingress {
		p.Spec.Ingress[i].From = append(p.Spec.Ingress[i].From, cnpv1alpha2.ClusterNetworkPolicyIngressPeer{Pods: peer()})
	}
	for i := range p.Spec.Egress {
		p.Spec.Egress[i].To = append(p.Spec.Egress[i].To, cnpv1alpha2.ClusterNetworkPolicyEgressPeer{Pods: peer()})
	}
	return p
}

// clusterReferenceSteps compiles s, then changes it steps-1 times (change), and checks after
// each step that Decide judges a sample of flows as the reference does; it counts the codes
// and Pass steps seen and returns the compiler.
func clusterReferenceSteps(t *testing.T, s policy.State, seed uint64, steps int,
	change func(*rand.Rand, *policy.State, int) (string, func(*policy.Compiler) error),
	seen *[policy.ClusterDenied + 1]int, passes *[2]int) *policy.Compiler {
	t.Helper()
	s.Pods = append(s.Pods, policy.Pod{Namespace: "ns-0", Name: "node-agent", Node: "node-1", HostNetwork: true,
		IPs: []netip.Addr{netip.MustParseAddr("172.18.0.201")}, Labels: map[string]string{"app": "web"}, Phase: "Running"})
	for i := 0; i < len(s.Pods); i += 5 { // a second name on the http port: two named classes for one flow
		p := &s.Pods[i]
		if len(p.Ports) == 0 {
			continue
		}
		p.Ports = append(slices.Clone(p.Ports), policy.NamedPort{Name: "metrics", Proto: flow.TCP, Port: p.Ports[0].Port})
	}
	r := rand.New(rand.NewPCG(seed, 12))
	c := policy.NewCompiler("node-0")
	if err := c.Replace(s); err != nil {
		t.Fatal(err)
	}
	flows := flowsOf(s, r, 1200)
	for i := range 4 { // pod ↔ node, the host-network pod included
		node := netip.AddrFrom4([4]byte{172, 18, 0, byte(i)})
		flows = append(flows, flow.Flow{Src: synth.PodIPv4(i), Dst: node, Proto: flow.TCP, Port: 10250},
			flow.Flow{Src: node, Dst: synth.PodIPv4(i + 4), Proto: flow.TCP, Port: 8080},
			flow.Flow{Src: synth.PodIPv4(i + 1), Dst: netip.MustParseAddr("172.18.0.201"), Proto: flow.UDP, Port: 53})
	}
	for step := range steps {
		what := "compile"
		if step > 0 {
			var apply func(*policy.Compiler) error
			what, apply = change(r, &s, step)
			if err := apply(c); err != nil {
				t.Fatalf("seed %d step %d (%s): %v", seed, step, what, err)
			}
		}
		inc := c.Snapshot()
		if err := c.CheckCombos(); err != nil {
			t.Fatalf("seed %d step %d (%s): %v", seed, step, what, err)
		}
		ref := policy.NewCompiler("node-0")
		if err := ref.Replace(s); err != nil {
			t.Fatal(err)
		}
		full := ref.Snapshot()
		bad := 0
		for _, f := range flows {
			got, want := inc.Decide(f), ref.DecideReference(full, f)
			for _, d := range []struct {
				dir       policy.Direction
				got, want policy.Judgement
			}{{policy.Egress, got.Egress, want.Egress}, {policy.Ingress, got.Ingress, want.Ingress}} {
				seen[d.got.Code]++
				if d.got.AdminPass != nil {
					passes[0]++
				}
				if d.got.BaselinePass != nil {
					passes[1]++
				}
				if !sameJudgement(d.got, d.want) || !sameStep(d.got.AdminPass, d.want.AdminPass) || !sameStep(d.got.BaselinePass, d.want.BaselinePass) {
					if bad++; bad <= 3 {
						t.Errorf("seed %d step %d (%s): %v %v: Decide says %s, the reference %s", seed, step, what, f, d.dir,
							clusterJudgementString(d.got), clusterJudgementString(d.want))
					}
				}
			}
		}
		if bad > 0 {
			t.Fatalf("seed %d step %d (%s): %d judgements differ", seed, step, what, bad)
		}
	}
	return c
}

func sameStep(a, b *policy.RuleRef) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func clusterJudgementString(j policy.Judgement) string {
	s := judgementString(j)
	if j.AdminPass != nil {
		s += fmt.Sprintf(" after Admin Pass %v", *j.AdminPass)
	}
	if j.BaselinePass != nil {
		s += fmt.Sprintf(" after Baseline Pass %v", *j.BaselinePass)
	}
	return s
}

// clusterChange changes s at random, one object or two, and says how and how to tell a
// compiler (Replace, unless said otherwise).
func clusterChange(r *rand.Rand, s *policy.State, step int) (string, func(*policy.Compiler) error) {
	what := clusterChange1(r, s, step)
	if what != "" {
		return what, func(c *policy.Compiler) error { return c.Replace(*s) }
	}
	// One policy deleted, then another made: the group of the first may go and the second's
	// take its id.
	cnps := s.ClusterPolicies
	i := r.IntN(len(cnps))
	gone, p := cnps[i].Name, synth.ClusterPolicy(r, fmt.Sprintf("swapped-%d", step))
	s.ClusterPolicies = append(append(cnps[:i:i], cnps[i+1:]...), p)
	return "delete " + gone + " then add " + p.Name, func(c *policy.Compiler) error {
		c.DeleteClusterPolicy(gone)
		return c.SetClusterPolicy(p)
	}
}

func clusterChange1(r *rand.Rand, s *policy.State, step int) string {
	cnps := s.ClusterPolicies
	switch k := r.IntN(12); {
	case k <= 1: // a new policy under an old name: new tier, subject, rules
		i := r.IntN(len(cnps))
		cnps[i] = synth.ClusterPolicy(r, cnps[i].Name)
		return "replace " + cnps[i].Name
	case k == 2: // an edit: new rules and priority, same tier and subject
		i := r.IntN(len(cnps))
		p := synth.ClusterPolicy(r, cnps[i].Name)
		p.Spec.Tier, p.Spec.Subject = cnps[i].Spec.Tier, cnps[i].Spec.Subject
		cnps[i] = p
		return "edit " + p.Name
	case k == 3:
		p := synth.ClusterPolicy(r, fmt.Sprintf("added-%d", step))
		s.ClusterPolicies = append(cnps, p)
		return "add " + p.Name
	case k == 4 && len(cnps) > 2:
		i := r.IntN(len(cnps))
		s.ClusterPolicies = append(cnps[:i:i], cnps[i+1:]...)
		return "delete " + cnps[i].Name
	case k == 5: // a priority tie
		i, j := r.IntN(len(cnps)), r.IntN(len(cnps))
		p := cnps[i].DeepCopy()
		p.Spec.Priority = cnps[j].Spec.Priority
		cnps[i] = p
		return fmt.Sprintf("tie %s with %s", p.Name, cnps[j].Name)
	case k == 6: // a pod relabelled: its groups and peers change
		i := r.IntN(len(s.Pods))
		l := maps.Clone(s.Pods[i].Labels)
		l["app"] = []string{"web", "api", "db", "cache"}[r.IntN(4)]
		l["tier"] = []string{"frontend", "backend", "data"}[r.IntN(3)]
		s.Pods[i].Labels = l
		return "relabel pod " + s.Pods[i].Name
	case k == 7: // a namespace relabelled: subjects by namespace change
		i := r.IntN(len(s.Namespaces))
		l := maps.Clone(s.Namespaces[i].Labels)
		l["team"] = []string{"red", "blue", "green", "gold"}[r.IntN(4)]
		l["env"] = []string{"prod", "staging", "dev"}[r.IntN(3)]
		s.Namespaces[i].Labels = l
		return "relabel namespace " + s.Namespaces[i].Name
	case k == 8 && r.IntN(2) == 0: // a rule enforced fail-closed: Deny or Pass all, or an Accept of nothing
		i := r.IntN(len(cnps))
		p := cnps[i].DeepCopy()
		rule := cnpv1alpha2.ClusterNetworkPolicyEgressRule{
			Action: []cnpv1alpha2.ClusterNetworkPolicyRuleAction{"Accept", "Deny", "Pass"}[r.IntN(3)],
			To:     []cnpv1alpha2.ClusterNetworkPolicyEgressPeer{{DomainNames: []cnpv1alpha2.DomainName{"example.com"}}}}
		at := r.IntN(len(p.Spec.Egress) + 1)
		p.Spec.Egress = slices.Insert(p.Spec.Egress, at, rule)
		cnps[i] = p
		return fmt.Sprintf("%s egress rule %d: %s domainNames", p.Name, at, rule.Action)
	case k == 8:
		i := r.IntN(len(s.Nodes))
		s.Nodes[i].Labels = map[string]string{"zone": []string{"a", "b", "c"}[r.IntN(3)]}
		return "relabel " + s.Nodes[i].Name
	case k == 9:
		i := r.IntN(len(s.Policies))
		s.Policies[i] = synth.Policy(r, s.Policies[i].Namespace, s.Policies[i].Name)
		return "replace NetworkPolicy " + s.Policies[i].Name
	}
	return ""
}
