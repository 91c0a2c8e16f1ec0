package policy_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/synth"
)

// Decide is the per-packet path: it must never allocate.
func TestDecideDoesNotAllocate(t *testing.T) {
	s := synth.Generate(synth.Config{Pods: 500, Policies: 80, Seed: 1})
	snap, err := policy.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	flows := []flow.Flow{
		{Src: synth.PodIPv4(1), Dst: synth.PodIPv4(2), Proto: flow.TCP, Port: 8080},
		{Src: synth.PodIPv6(3), Dst: synth.PodIPv6(4), Proto: flow.UDP, Port: 53},
		{Src: netip.MustParseAddr("192.0.2.1"), Dst: synth.PodIPv4(5), Proto: flow.TCP, Port: 9090},
		{Src: synth.PodIPv4(6), Dst: netip.MustParseAddr("198.51.100.7"), Proto: flow.ICMP},
	}
	for _, f := range flows {
		if n := testing.AllocsPerRun(200, func() { snap.Decide(f) }); n != 0 {
			t.Errorf("Decide(%v) allocates %v times per call, want 0", f, n)
		}
	}
}

// flowsOf returns a deterministic sample of flows between the pods of s and a few outsiders.
func flowsOf(s policy.State, r *rand.Rand, n int) []flow.Flow {
	outsiders := []netip.Addr{netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("10.244.3.17"), netip.MustParseAddr("2001:db8::9")}
	protos := []flow.Proto{flow.TCP, flow.TCP, flow.UDP, flow.SCTP, flow.ICMP}
	ports := []uint16{53, 80, 3306, 5000, 8080, 8300, 9090, 9091}
	return sampleFlows(r, n, s, outsiders, protos, ports)
}

// sampleFlows returns n random flows of one family between the addresses of the pods of s and
// the outsiders, on one of protos and, for protocols with ports, one of ports.
func sampleFlows(r *rand.Rand, n int, s policy.State, outsiders []netip.Addr, protos []flow.Proto, ports []uint16) []flow.Flow {
	var addrs []netip.Addr
	for _, p := range s.Pods {
		addrs = append(addrs, p.IPs...)
	}
	addrs = append(addrs, outsiders...)
	var out []flow.Flow
	for len(out) < n {
		a, b := addrs[r.IntN(len(addrs))], addrs[r.IntN(len(addrs))]
		if a.Is4() != b.Is4() {
			continue
		}
		f := flow.Flow{Src: a, Dst: b, Proto: protos[r.IntN(len(protos))]}
		if f.Proto.HasPorts() {
			f.Port = ports[r.IntN(len(ports))]
		}
		out = append(out, f)
	}
	return out
}

// around returns flows between the given addresses and every pod, both ways, on the ports
// and protocols the synthetic policies use.
func around(s policy.State, addrs []netip.Addr) []flow.Flow {
	var out []flow.Flow
	for _, a := range addrs {
		for _, p := range s.Pods {
			for _, b := range p.IPs {
				if a.Is4() != b.Is4() {
					continue
				}
				for _, pp := range []struct {
					proto flow.Proto
					port  uint16
				}{{flow.TCP, 8080}, {flow.TCP, 3306}, {flow.TCP, 9090}, {flow.TCP, 8200}, {flow.UDP, 53}, {flow.ICMP, 0}} {
					out = append(out, flow.Flow{Src: a, Dst: b, Proto: pp.proto, Port: pp.port},
						flow.Flow{Src: b, Dst: a, Proto: pp.proto, Port: pp.port})
				}
			}
		}
	}
	return out
}

func sameDecisions(t *testing.T, step string, got, want *policy.Snapshot, flows []flow.Flow) {
	t.Helper()
	bad := 0
	for _, f := range flows {
		g, w := got.Decide(f), want.Decide(f)
		if g.Verdict != w.Verdict || g.Egress.Code != w.Egress.Code || g.Ingress.Code != w.Ingress.Code {
			bad++
			if bad <= 3 {
				t.Errorf("%s: %v: incremental says %v (%v/%v), full compile says %v (%v/%v)\n  %s\n  %s", step, f,
					g.Verdict, g.Egress.Code, g.Ingress.Code, w.Verdict, w.Egress.Code, w.Ingress.Code,
					got.Explain(f).Reason, want.Explain(f).Reason)
			}
		}
	}
	if bad > 3 {
		t.Errorf("%s: %d flows differ in all", step, bad)
	}
}

// A Compiler fed one change at a time must decide exactly like a fresh compile of the same
// objects: the incremental path is an optimisation, never a second semantics.
func TestIncrementalEqualsFullCompile(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	state := synth.Generate(synth.Config{Pods: 300, Policies: 60, Seed: 7})
	c := policy.NewCompiler("")
	if err := c.Replace(state); err != nil {
		t.Fatal(err)
	}
	c.Snapshot()
	flows := flowsOf(state, r, 3000)
	for step := range 60 {
		var what string
		var focus []netip.Addr // addresses of the changed pod, or nil
		switch k := r.IntN(9); k {
		case 0: // relabel a pod
			i := r.IntN(len(state.Pods))
			p := state.Pods[i]
			l := map[string]string{}
			for k, v := range p.Labels {
				l[k] = v
			}
			l["app"] = []string{"web", "api", "db", "cache"}[r.IntN(4)]
			l["tier"] = []string{"frontend", "backend"}[r.IntN(2)]
			p.Labels = l
			state.Pods[i] = p
			c.SetPod(p)
			focus = p.IPs
			what = "relabel pod " + p.Key()
		case 1: // delete a pod
			i := r.IntN(len(state.Pods))
			p := state.Pods[i]
			state.Pods = append(state.Pods[:i:i], state.Pods[i+1:]...)
			c.DeletePod(p.Namespace, p.Name)
			focus = p.IPs
			what = "delete pod " + p.Key()
		case 2: // add a pod reusing a free address
			p := state.Pods[r.IntN(len(state.Pods))]
			p.Name = fmt.Sprintf("new-%d", step)
			p.IPs = []netip.Addr{synth.PodIPv4(1000 + step), synth.PodIPv6(1000 + step)}
			state.Pods = append(state.Pods, p)
			c.SetPod(p)
			focus = p.IPs
			what = "add pod " + p.Key()
		case 3: // replace a policy
			i := r.IntN(len(state.Policies))
			np := synth.Policy(r, state.Policies[i].Namespace, state.Policies[i].Name)
			state.Policies[i] = np
			if err := c.SetPolicy(np); err != nil {
				t.Fatal(err)
			}
			what = "update policy " + np.Name
		case 4: // delete a policy
			i := r.IntN(len(state.Policies))
			np := state.Policies[i]
			state.Policies = append(state.Policies[:i:i], state.Policies[i+1:]...)
			c.DeletePolicy(np.Namespace, np.Name)
			what = "delete policy " + np.Name
		case 5: // relabel a namespace
			i := r.IntN(len(state.Namespaces))
			n := state.Namespaces[i]
			n.Labels = map[string]string{"team": []string{"red", "blue", "gold"}[r.IntN(3)], "env": "prod"}
			state.Namespaces[i] = n
			c.SetNamespace(n)
			what = "relabel namespace " + n.Name
		case 6: // a pod terminates
			i := r.IntN(len(state.Pods))
			state.Pods[i].Phase = "Succeeded"
			c.SetPod(state.Pods[i])
			focus = state.Pods[i].IPs
			what = "terminate pod " + state.Pods[i].Key()
		case 7: // a policy becomes invalid: enforced fail-closed
			i := r.IntN(len(state.Policies))
			np := state.Policies[i].DeepCopy()
			np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{
				From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "010.0.0.0/8"}}}})
			state.Policies[i] = np
			if err := c.SetPolicy(np); err == nil {
				t.Fatalf("SetPolicy of an invalid policy: no error")
			}
			what = "break policy " + np.Name
		case 8: // a pod claims another live pod's addresses
			i, j := r.IntN(len(state.Pods)), r.IntN(len(state.Pods))
			p := state.Pods[i]
			p.IPs = slices.Clone(state.Pods[j].IPs)
			state.Pods[i] = p
			c.SetPod(p)
			focus = p.IPs
			what = "pod " + p.Key() + " claims the addresses of " + state.Pods[j].Key()
		}
		inc := c.Snapshot()
		full, err := policy.Compile(state)
		if err != nil {
			t.Fatal(err)
		}
		sameDecisions(t, fmt.Sprintf("step %d (%s)", step, what), inc, full, append(flows, around(state, focus)...))
		if t.Failed() {
			return
		}
	}
}

// Snapshots are immutable: a later change must not alter what an earlier snapshot says.
func TestSnapshotIsImmutable(t *testing.T) {
	state := synth.Generate(synth.Config{Pods: 200, Policies: 40, Seed: 3})
	c := policy.NewCompiler("")
	if err := c.Replace(state); err != nil {
		t.Fatal(err)
	}
	before := c.Snapshot()
	flows := flowsOf(state, rand.New(rand.NewPCG(3, 3)), 2000)
	want := make([]policy.Verdict, len(flows))
	for i, f := range flows {
		want[i] = before.Decide(f).Verdict
	}
	for _, np := range state.Policies {
		c.DeletePolicy(np.Namespace, np.Name)
	}
	for _, p := range state.Pods[:50] {
		c.DeletePod(p.Namespace, p.Name)
	}
	after := c.Snapshot()
	if after.Generation() <= before.Generation() {
		t.Errorf("generation did not grow: %d then %d", before.Generation(), after.Generation())
	}
	for i, f := range flows {
		if got := before.Decide(f).Verdict; got != want[i] {
			t.Fatalf("old snapshot changed its verdict on %v: %v, was %v", f, got, want[i])
		}
		if got := after.Decide(f).Verdict; got != policy.Allow {
			t.Fatalf("with no policy left, %v is %v", f, got)
		}
	}
}

// A policy is validated as it comes in, new or changed in metadata or spec; the compiler does
// not validate again one it holds unchanged. A change of metadata alone recompiles nothing,
// but invalid metadata makes the policy invalid whatever the spec: enforced fail-closed.
func TestPolicyMetadataChange(t *testing.T) {
	state := synth.Generate(synth.Config{Pods: 20, Policies: 4, Seed: 9})
	c := policy.NewCompiler("")
	if err := c.Replace(state); err != nil {
		t.Fatal(err)
	}
	before := c.Snapshot()
	if err := c.Replace(state); err != nil || c.Snapshot() != before {
		t.Fatalf("the same state again: err %v, new snapshot %v", err, c.Snapshot() != before)
	}

	relabelled := state.Policies[0].DeepCopy()
	relabelled.Labels = map[string]string{"team": "red"}
	state.Policies[0] = relabelled
	if err := c.Replace(state); err != nil || c.Snapshot() != before {
		t.Fatalf("new labels only: err %v, new snapshot %v", err, c.Snapshot() != before)
	}

	bad := relabelled.DeepCopy()
	bad.Labels = map[string]string{"not a key!": "x"}
	if err := c.SetPolicy(bad); err == nil || !strings.Contains(err.Error(), "metadata.labels") {
		t.Errorf("SetPolicy with invalid labels: %v, want metadata.labels refused", err)
	}
	state.Policies[0] = bad
	if err := c.Replace(state); err != nil {
		t.Errorf("Replace with an invalid policy: %v, want it applied fail-closed", err)
	}
	ps := c.Snapshot().Problems()
	if len(ps) != 1 || ps[0].Name != bad.Name || !strings.Contains(ps[0].Fields(), "metadata.labels") {
		t.Errorf("problems %v, want the policy's metadata.labels", ps)
	}
}

// Of two policies of one name in a state, the last is in force, as if each were set in turn,
// whether or not the compiler held one of them already.
func TestReplaceSameNameLastWins(t *testing.T) {
	state := synth.Generate(synth.Config{Pods: 100, Policies: 10, Seed: 5})
	held := state.Policies[0]
	other := held.DeepCopy() // allows all, both ways, to the pods it selects
	other.Spec = networkingv1.NetworkPolicySpec{
		Ingress: []networkingv1.NetworkPolicyIngressRule{{}},
		Egress:  []networkingv1.NetworkPolicyEgressRule{{}},
	}
	withOther := state
	withOther.Policies = append([]*networkingv1.NetworkPolicy{other}, state.Policies[1:]...)
	flows := flowsOf(state, rand.New(rand.NewPCG(5, 5)), 3000)
	for _, tc := range []struct {
		name     string
		policies []*networkingv1.NetworkPolicy
		want     policy.State
	}{
		{"held, then other", append(slices.Clone(state.Policies), other), withOther},
		{"other, then held", append([]*networkingv1.NetworkPolicy{other}, state.Policies...), state},
	} {
		c := policy.NewCompiler("")
		if err := c.Replace(state); err != nil {
			t.Fatal(err)
		}
		c.Snapshot()
		s := state
		s.Policies = tc.policies
		if err := c.Replace(s); err != nil {
			t.Fatal(err)
		}
		want, err := policy.Compile(tc.want)
		if err != nil {
			t.Fatal(err)
		}
		sameDecisions(t, tc.name, c.Snapshot(), want, flows)
	}
}

// LocalIsolation lists exactly the local pods some policy isolates, with those policies.
func TestLocalIsolation(t *testing.T) {
	state := synth.Generate(synth.Config{Pods: 300, Policies: 60, Seed: 11})
	c := policy.NewCompiler("node-1")
	if err := c.Replace(state); err != nil {
		t.Fatal(err)
	}
	snap := c.Snapshot()
	seen := 0
	snap.LocalIsolation(func(p *policy.Pod, egress, ingress []policy.PolicyRef) {
		seen++
		if p.Node != "node-1" {
			t.Errorf("%s is on %s, not local", p.Key(), p.Node)
		}
		x := snap.Explain(flow.Flow{Src: p.IPs[0], Dst: netip.MustParseAddr("192.0.2.1"), Proto: flow.TCP, Port: 1})
		y := snap.Explain(flow.Flow{Src: netip.MustParseAddr("192.0.2.1"), Dst: p.IPs[0], Proto: flow.TCP, Port: 1})
		if fmt.Sprint(egress) != fmt.Sprint(x.Egress.Isolating) || fmt.Sprint(ingress) != fmt.Sprint(y.Ingress.Isolating) {
			t.Errorf("%s: isolated by %v/%v, Explain says %v/%v", p.Key(), egress, ingress, x.Egress.Isolating, y.Ingress.Isolating)
		}
	})
	in, eg := snap.LocalIsolated()
	want := map[netip.Addr]bool{}
	for _, a := range append(in, eg...) {
		want[snap.PodByIP(a).IPs[0]] = true
	}
	if seen != len(want) || seen == 0 {
		t.Errorf("LocalIsolation visited %d pods, LocalIsolated names %d", seen, len(want))
	}
}
