package policy_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/policytest"
	"github.com/podwall/podwall/policy/synth"
)

// Pools the crowded policies draw from, so that many policies name the same peers and
// overlapping ports and blocks. Pod addresses are synth's: 10.244.0.0/16, fd00:10:244::/112.
var (
	crowdSelectors = []*metav1.LabelSelector{
		policytest.Selector(), policytest.Selector("app", "web"), policytest.Selector("app", "db"), policytest.Selector("app", "api"), policytest.Selector("tier", "backend"),
		policytest.Exprs(policytest.In("app", "web", "db", "cache")), policytest.Exprs(policytest.NotIn("version", "v0")),
	}
	crowdPeers = []func(*rand.Rand) policytest.Elem{
		func(r *rand.Rand) policytest.Elem {
			return policytest.Pods(crowdSelectors[r.IntN(len(crowdSelectors))])
		},
		func(r *rand.Rand) policytest.Elem {
			return policytest.Namespaces(policytest.Selector("team", []string{"red", "blue"}[r.IntN(2)]))
		},
		func(r *rand.Rand) policytest.Elem {
			return policytest.PodsIn(policytest.Selector("env", "prod"), crowdSelectors[r.IntN(len(crowdSelectors))])
		},
		func(*rand.Rand) policytest.Elem {
			return policytest.CIDR("10.244.0.0/16", "10.244.1.0/24", "10.244.0.64/26")
		},
		func(*rand.Rand) policytest.Elem { return policytest.CIDR("10.244.0.0/20") },
		func(*rand.Rand) policytest.Elem { return policytest.CIDR("10.244.0.0/24", "10.244.0.128/25") },
		func(r *rand.Rand) policytest.Elem {
			b := 16 * r.IntN(16)
			return policytest.CIDR(fmt.Sprintf("10.244.0.%d/28", b), fmt.Sprintf("10.244.0.%d/30", b+4*r.IntN(4)))
		},
		func(*rand.Rand) policytest.Elem { return policytest.CIDR("0.0.0.0/0", "10.0.0.0/8") },
		func(*rand.Rand) policytest.Elem { return policytest.CIDR("fd00:10:244::/112", "fd00:10:244::80/121") },
		func(*rand.Rand) policytest.Elem { return policytest.CIDR("fd00:10:244::/120") },
		func(*rand.Rand) policytest.Elem { return policytest.CIDR("::/0", "fd00::/8") },
		func(*rand.Rand) policytest.Elem { return policytest.CIDR("192.0.2.0/24") },
		// Many distinct peers, a few pods each, so that some classes name far more peers
		// than a pod belongs to.
		func(r *rand.Rand) policytest.Elem {
			return policytest.Pods(policytest.Selector("shard", strconv.Itoa(r.IntN(60))))
		},
		func(r *rand.Rand) policytest.Elem {
			return policytest.Pods(policytest.Selector("shard", strconv.Itoa(r.IntN(60))))
		},
	}
	crowdPorts = []string{
		"8080", "5000/TCP", "3306", "53/UDP", "/UDP", "/TCP", "/SCTP", "80/SCTP",
		"8000-8100/TCP", "8050-8400", "9000-9095", "9091", "http", "metrics/TCP", "dns/UDP", "http/UDP",
	}
)

// crowdPolicy is a random policy drawn from the pools above: 0–3 ingress and 0-2 egress
// rules of 1–3 peers (none, everywhere, one time in ten) and 1–2 ports (none, every port, one
// time in six), and random policyTypes.
func crowdPolicy(r *rand.Rand, ns, name string) *networkingv1.NetworkPolicy {
	elems := func() []policytest.Elem {
		var e []policytest.Elem
		if r.IntN(10) > 0 {
			for range r.IntN(3) + 1 {
				e = append(e, crowdPeers[r.IntN(len(crowdPeers))](r))
			}
		}
		if r.IntN(6) > 0 {
			for range r.IntN(2) + 1 {
				e = append(e, policytest.Port(crowdPorts[r.IntN(len(crowdPorts))]))
			}
		}
		return e
	}
	var tweaks []policytest.Tweak
	for range r.IntN(4) {
		tweaks = append(tweaks, policytest.Ingress(policytest.From(elems()...)))
	}
	for range r.IntN(3) {
		tweaks = append(tweaks, policytest.Egress(policytest.To(elems()...)))
	}
	switch r.IntN(4) {
	case 0:
		tweaks = append(tweaks, policytest.Types()) // the default: Ingress, plus Egress with egress rules
	case 1:
		tweaks = append(tweaks, policytest.Types(networkingv1.PolicyTypeIngress))
	case 2:
		tweaks = append(tweaks, policytest.Types(networkingv1.PolicyTypeEgress))
	case 3:
		tweaks = append(tweaks, policytest.Types(networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress))
	}
	return policytest.NetworkPolicy(ns, name, crowdSelectors[r.IntN(len(crowdSelectors))], tweaks...)
}

// crowdedCluster is a synthetic cluster of three namespaces with crowd policies besides
// synth's: each pod is selected by tens of policies. Its pods are labelled shard=0…59.
func crowdedCluster(seed uint64, r *rand.Rand) policy.State {
	s := synth.Generate(synth.Config{Pods: 150, Policies: 30, Namespaces: 3, Nodes: 3, Seed: seed})
	for i, n := range s.Namespaces {
		if i%2 == 0 {
			n.Labels["env"] = "prod"
		}
	}
	for i, p := range s.Pods {
		p.Labels["shard"] = strconv.Itoa(i % 60)
	}
	for i := range 120 {
		s.Policies = append(s.Policies, crowdPolicy(r, s.Namespaces[r.IntN(len(s.Namespaces))].Name, fmt.Sprintf("crowd-%03d", i)))
	}
	return s
}

// crowdFlows returns flows between the pods of s and a few outsiders on the ports the crowd
// policies name, their edges and their neighbours.
func crowdFlows(s policy.State, r *rand.Rand, n int) []flow.Flow {
	outsiders := []netip.Addr{netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("10.244.1.200"),
		netip.MustParseAddr("10.244.15.1"), netip.MustParseAddr("2001:db8::9"), netip.MustParseAddr("fd00:10:244::1:1")}
	protos := []flow.Proto{flow.TCP, flow.TCP, flow.TCP, flow.UDP, flow.UDP, flow.SCTP, flow.ICMP, flow.ICMPv6}
	ports := []uint16{53, 80, 3306, 5000, 6379, 7999, 8000, 8080, 8100, 8101, 8400, 8401, 9000, 9090, 9091, 9092, 9095, 9096}
	return sampleFlows(r, n, s, outsiders, protos, ports)
}

// sameJudgement reports whether two judgements say the same, comparing pods and policies by
// name (they may come from different snapshots).
func sameJudgement(a, b policy.Judgement) bool {
	if a.Verdict != b.Verdict || a.Code != b.Code || a.Local != b.Local || a.Rule != b.Rule ||
		(a.Pod == nil) != (b.Pod == nil) || (a.Policy == nil) != (b.Policy == nil) {
		return false
	}
	return (a.Pod == nil || a.Pod.Key() == b.Pod.Key()) && (a.Policy == nil || *a.Policy == *b.Policy)
}

func judgementString(j policy.Judgement) string {
	if j.Policy != nil {
		return fmt.Sprintf("%v %v by %v rule %d", j.Verdict, j.Code, *j.Policy, j.Rule)
	}
	return fmt.Sprintf("%v %v", j.Verdict, j.Code)
}

// Decide finds the first allowing rule in merged rule tables; trying the isolating policies
// one by one (DecideByPolicy) must give the same decision, naming the same rule, and Explain
// must list that rule first among the allowing ones. Random crowded clusters, changed one
// object at a time; the reference runs on a fresh compile, so a stale cached table shows.
func TestDecideEqualsPolicyByPolicy(t *testing.T) {
	var judged [policy.NoRuleAllows + 1]int
	notFirst := 0 // allowed by a rule other than the first of the first isolating policy
	for seed := range uint64(6) {
		r := rand.New(rand.NewPCG(seed, 11))
		state := crowdedCluster(seed, r)
		c := policy.NewCompiler("")
		if err := c.Replace(state); err != nil {
			t.Fatal(err)
		}
		for step := range 12 {
			what := "compile"
			if step > 0 {
				what = crowdChange(t, c, &state, r, step)
			}
			inc := c.Snapshot()
			if err := c.CheckTables(); err != nil {
				t.Fatalf("seed %d step %d (%s): %v", seed, step, what, err)
			}
			full, err := policy.Compile(state)
			if err != nil {
				t.Fatal(err)
			}
			bad := 0
			for _, f := range crowdFlows(state, r, 1500) {
				got, want := inc.Decide(f), full.DecideByPolicy(f)
				for _, d := range []struct {
					dir       policy.Direction
					got, want policy.Judgement
				}{{policy.Egress, got.Egress, want.Egress}, {policy.Ingress, got.Ingress, want.Ingress}} {
					judged[d.got.Code]++
					if d.got.Code == policy.Allowed && d.got.Rule > 0 {
						notFirst++
					}
					if !sameJudgement(d.got, d.want) {
						if bad++; bad <= 3 {
							t.Errorf("seed %d step %d (%s): %v %v: Decide says %s, policy by policy %s",
								seed, step, what, f, d.dir, judgementString(d.got), judgementString(d.want))
						}
					}
				}
				if got.Verdict != want.Verdict {
					t.Fatalf("seed %d step %d: %v: verdict %v, policy by policy %v", seed, step, f, got.Verdict, want.Verdict)
				}
				if step%4 == 0 {
					x := inc.Explain(f)
					for _, dx := range []policy.DirExplanation{x.Egress, x.Ingress} {
						if dx.Code == policy.Allowed && (len(dx.Allowing) == 0 || dx.Allowing[0] != (policy.RuleRef{Policy: *dx.Policy, Rule: dx.Rule})) {
							t.Errorf("seed %d step %d: %v: judged %s, Explain lists %v", seed, step, f, judgementString(dx.Judgement), dx.Allowing)
						}
						if dx.Code == policy.NoRuleAllows && len(dx.Allowing) > 0 {
							t.Errorf("seed %d step %d: %v: no rule allows, Explain lists %v", seed, step, f, dx.Allowing)
						}
					}
				}
			}
			if bad > 3 {
				t.Errorf("seed %d step %d: %d judgements differ in all", seed, step, bad)
			}
			if t.Failed() {
				return
			}
		}
	}
	// The clusters must exercise the tables: many judgements allowed and denied by policy,
	// and allowing rules deep in the tables.
	t.Logf("judgements by code: %v; allowed by a later rule of a policy: %d", judged, notFirst)
	if judged[policy.Allowed] < 5000 || judged[policy.NoRuleAllows] < 5000 || notFirst < 1000 {
		t.Errorf("too few judgements by policy: %v, %d by a later rule", judged, notFirst)
	}
}

// crowdChange changes one object of the crowded cluster in both state and c, and says what.
func crowdChange(t *testing.T, c *policy.Compiler, state *policy.State, r *rand.Rand, step int) string {
	t.Helper()
	switch r.IntN(5) {
	case 0, 1: // replace a policy
		i := r.IntN(len(state.Policies))
		np := crowdPolicy(r, state.Policies[i].Namespace, state.Policies[i].Name)
		state.Policies[i] = np
		if err := c.SetPolicy(np); err != nil {
			t.Fatal(err)
		}
		return "replace policy " + np.Name
	case 2: // delete a policy
		i := r.IntN(len(state.Policies))
		np := state.Policies[i]
		state.Policies = append(state.Policies[:i:i], state.Policies[i+1:]...)
		c.DeletePolicy(np.Namespace, np.Name)
		return "delete policy " + np.Name
	case 3: // add a policy
		np := crowdPolicy(r, state.Namespaces[r.IntN(len(state.Namespaces))].Name, fmt.Sprintf("added-%d", step))
		state.Policies = append(state.Policies, np)
		if err := c.SetPolicy(np); err != nil {
			t.Fatal(err)
		}
		return "add policy " + np.Name
	}
	i := r.IntN(len(state.Pods))
	p := state.Pods[i]
	p.Labels = map[string]string{"app": []string{"web", "api", "db"}[r.IntN(3)], "tier": "backend", "version": "v1"}
	state.Pods[i] = p
	c.SetPod(p)
	return "relabel pod " + p.Key()
}

// Decide stays allocation-free on tables with named ports, blocks and many policies.
func TestDecideCrowdedDoesNotAllocate(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	state := crowdedCluster(1, r)
	snap, err := policy.Compile(state)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range crowdFlows(state, r, 50) {
		if n := testing.AllocsPerRun(20, func() { snap.Decide(f) }); n != 0 {
			t.Errorf("Decide(%v) allocates %v times per call, want 0", f, n)
		}
	}
}
