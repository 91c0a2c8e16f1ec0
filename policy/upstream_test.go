package policy

// The upstream Kubernetes NetworkPolicy conformance cases (kubernetes
// test/e2e/network/netpol/network_policy.go, the "Netpol" describe blocks for TCP, UDP and
// SCTP, Kubernetes v1.34), ported to compile-time truth tables.
//
// Each subtest is named after the upstream It() text. It lists the policies upstream
// creates, the port and protocol upstream probes, and the truth table upstream asserts over
// the 9 × 9 pairs of the x/y/z × a/b/c model. Cases that change the cluster while running
// (update or delete a policy, relabel a pod or namespace) compile the state before and
// after as separate steps and check each step's tables.
//
// Adaptations, all deliberate:
//   - Every table is probed over IPv4 and IPv6: each model pod is dual-stack.
//   - Upstream ignores loopback (CNIs disagree); SPEC §2 says a pod may always talk to
//     itself, so the diagonal is expected allowed (see reachability.get).
//   - The ipBlock cases use the real model addresses. Upstream takes the server's primary
//     address; here each ipBlock rule lists one block per family so that both tables hold,
//     and the "allow egress access to server in CIDR block" case adds single-family steps
//     (an IPv4-only block allows nothing over IPv6). makeLargeCIDRForIP's /4 around the
//     pod address is 0.0.0.0/4 and f000::/4 for the model's 10.244/16 and fd00:10:244::/56.
//   - Upstream probes through Services' cluster DNS names; the engine judges the real pod
//     addresses after DNAT, which is what is probed here.

import (
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/policy/policytest"
)

// upstreamCase is one upstream It(): one or more steps, each a complete cluster state.
type upstreamCase struct {
	name  string // the upstream It() text
	steps []upstreamStep
}

// upstreamStep is the cluster at one point of an upstream case.
type upstreamStep struct {
	desc     string       // what changed since the previous step, like upstream's ginkgo.By
	relabel  func(*model) // label changes applied to a fresh model
	policies []*networkingv1.NetworkPolicy
	probes   []tableProbe
}

// tableProbe is one ValidateOrFail: a port/protocol and the expected table.
type tableProbe struct {
	port     string // "80/TCP"
	want     *reachability
	families []string // nil: IPv4 and IPv6
}

// Selector shorthands of the upstream cases.
func podIs(name string) *metav1.LabelSelector { return policytest.Selector("pod", name) }
func nsIs(name string) *metav1.LabelSelector  { return policytest.Selector(metadataNameLabel, name) }

func runUpstream(t *testing.T, cases []upstreamCase) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for i, st := range c.steps {
				run := func(t *testing.T) {
					m := newModel()
					if st.relabel != nil {
						st.relabel(m)
					}
					snap := mustCompile(t, m.state(st.policies...))
					for _, p := range st.probes {
						proto, port := probe(p.port)
						fams := p.families
						if fams == nil {
							fams = []string{"IPv4", "IPv6"}
						}
						checkReachabilityFamilies(t, snap, m, proto, port, p.want, fams...)
					}
				}
				if len(c.steps) == 1 {
					run(t)
					continue
				}
				desc := st.desc
				if desc == "" {
					desc = "initial"
				}
				t.Run(stepName(i, desc), run)
			}
		})
	}
}

func stepName(i int, desc string) string {
	return "step " + string(rune('1'+i)) + ": " + desc
}

func steps(s ...upstreamStep) []upstreamStep { return s }

func oneStep(probes []tableProbe, policies ...*networkingv1.NetworkPolicy) []upstreamStep {
	return []upstreamStep{{policies: policies, probes: probes}}
}

func probes(p ...tableProbe) []tableProbe { return p }

func pols(p ...*networkingv1.NetworkPolicy) []*networkingv1.NetworkPolicy { return p }

// TestUpstreamNetpol: "Netpol NetworkPolicy between server and client".
func TestUpstreamNetpol(t *testing.T) {
	runUpstream(t, []upstreamCase{
		// Default deny.
		{
			name: "should support a 'default-deny-ingress' policy",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().
				expectPeer(anyPod, inNs("x"), false), nil}),
				policytest.NetworkPolicy("x", "deny-ingress", policytest.Selector(), policytest.Ingress())),
		},
		{
			name: "should support a 'default-deny-all' policy",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().
				expectPeer(anyPod, inNs("x"), false).
				expectPeer(inNs("x"), anyPod, false), nil}),
				policytest.NetworkPolicy("x", "deny-all", policytest.Selector(),
					policytest.Ingress(), policytest.Egress())),
		},

		// Pod and namespace selectors.
		{
			name: "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().
				expectAllIngress("x/a", false).
				expect("x/b", "x/a", true), nil}),
				policytest.NetworkPolicy("x", "x-a-allows-x-b", podIs("a"),
					policytest.Ingress(policytest.From(policytest.Pods(podIs("b")))))),
		},
		{
			name: "should enforce policy to allow ingress traffic for a target",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().
				expectAllIngress("x/a", true).
				expectAllIngress("x/b", false).
				expectAllIngress("x/c", false), nil}),
				policytest.NetworkPolicy("x", "deny-all", policytest.Selector(), policytest.Ingress()),
				policytest.NetworkPolicy("x", "allow-all-to-a", podIs("a"),
					policytest.Ingress(policytest.From(policytest.PodsIn(policytest.Selector(), policytest.Selector()))))),
		},
		{
			name: "should enforce policy to allow ingress traffic from pods in all namespaces",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed(), nil}),
				policytest.NetworkPolicy("x", "allow-from-another-ns", podIs("a"),
					policytest.Ingress(policytest.From(policytest.Namespaces(policytest.Selector()))))),
		},
		{
			name: "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().
				expectPeer(inNs("x"), thePod("x/a"), false).
				expectPeer(inNs("z"), thePod("x/a"), false), nil}),
				policytest.NetworkPolicy("x", "allow-client-a-via-ns-selector", podIs("a"),
					policytest.Ingress(policytest.From(policytest.Namespaces(nsIs("y")))))),
		},
		{
			name: "should enforce policy based on PodSelector with MatchExpressions",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().
				expectAllIngress("x/a", false).
				expect("x/b", "x/a", true), nil}),
				policytest.NetworkPolicy("x", "x-a-allows-x-b", podIs("a"),
					policytest.Ingress(policytest.From(policytest.Pods(policytest.Exprs(policytest.In("pod", "b"))))))),
		},
		{
			name: "should enforce policy based on NamespaceSelector with MatchExpressions",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().
				expectPeer(inNs("x"), thePod("x/a"), false).
				expectPeer(inNs("z"), thePod("x/a"), false), nil}),
				policytest.NetworkPolicy("x", "allow-ns-y-match-selector", podIs("a"), policytest.Ingress(policytest.From(
					policytest.Namespaces(policytest.Exprs(policytest.In(metadataNameLabel, "y"))))))),
		},
		{
			// Two peers: OR.
			name: "should enforce policy based on PodSelector or NamespaceSelector",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().
				expect("x/a", "x/a", false). // loopback: upstream ignores it, podwall allows it
				expect("x/c", "x/a", false), nil}),
				policytest.NetworkPolicy("x", "allow-ns-y-match-selector", podIs("a"), policytest.Ingress(policytest.From(
					policytest.Namespaces(policytest.Exprs(policytest.NotIn(metadataNameLabel, "x"))),
					policytest.Pods(podIs("b")))))),
		},
		{
			// One peer with both selectors: AND.
			name: "should enforce policy based on PodSelector and NamespaceSelector",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().
				expectAllIngress("x/a", false).
				expect("y/b", "x/a", true).
				expect("z/b", "x/a", true), nil}),
				policytest.NetworkPolicy("x", "allow-ns-y-podselector-and-nsselector", podIs("a"), policytest.Ingress(policytest.From(
					policytest.PodsIn(policytest.Exprs(policytest.NotIn(metadataNameLabel, "x")), podIs("b")))))),
		},
		{
			name: "should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().
				expectPeer(inNs("x"), thePod("x/a"), false).
				expect("y/a", "x/a", false).
				expect("z/a", "x/a", false), nil}),
				policytest.NetworkPolicy("x", "allow-ns-y-z-pod-b-c", podIs("a"), policytest.Ingress(policytest.From(
					policytest.PodsIn(policytest.Exprs(policytest.NotIn(metadataNameLabel, "x")),
						policytest.Exprs(policytest.In("pod", "b", "c"))))))),
		},
		{
			name: "should enforce policy based on any PodSelectors",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().
				expectAllIngress("x/a", false).
				expect("x/b", "x/a", true).
				expect("x/c", "x/a", true), nil}),
				policytest.NetworkPolicy("x", "allow-ns-x-pod-b-c", podIs("a"), policytest.Ingress(policytest.From(
					policytest.Pods(podIs("b")), policytest.Pods(podIs("c")))))),
		},
		{
			name: "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().
				expectAllIngress("x/a", false).
				expect("y/a", "x/a", true), nil}),
				policytest.NetworkPolicy("x", "allow-ns-y-pod-a-via-namespace-pod-selector", podIs("a"), policytest.Ingress(policytest.From(
					policytest.PodsIn(nsIs("y"), podIs("a")))))),
		},

		// Ports.
		{
			name: "should enforce policy based on Ports",
			steps: oneStep(probes(tableProbe{"81/TCP", allAllowed().
				expectPeer(inNs("x"), thePod("x/a"), false).
				expectPeer(inNs("y"), thePod("x/a"), true).
				expectPeer(inNs("z"), thePod("x/a"), false), nil}),
				policytest.NetworkPolicy("x", "allow-client-a-via-ns-selector", podIs("a"), policytest.Ingress(policytest.From(
					policytest.Namespaces(nsIs("y")), policytest.Port("81/TCP"))))),
		},
		func() upstreamCase {
			allow81 := policytest.NetworkPolicy("x", "allow-client-a-via-ns-selector", podIs("a"), policytest.Ingress(policytest.From(
				policytest.Namespaces(nsIs("y")), policytest.Port("81/TCP"))))
			allow80 := policytest.NetworkPolicy("x", "allow-client-a-via-ns-selector-80", podIs("a"), policytest.Ingress(policytest.From(
				policytest.Namespaces(nsIs("y")), policytest.Port("80/TCP"))))
			onlyFromY := allAllowed().
				expectPeer(inNs("x"), thePod("x/a"), false).
				expectPeer(inNs("y"), thePod("x/a"), true).
				expectPeer(inNs("z"), thePod("x/a"), false)
			return upstreamCase{
				name: "should enforce multiple, stacked policies with overlapping podSelectors",
				steps: steps(
					upstreamStep{
						desc:     "policy allowing namespace y on port 81",
						policies: pols(allow81),
						probes: probes(
							tableProbe{"81/TCP", onlyFromY, nil},
							tableProbe{"80/TCP", allAllowed().expectAllIngress("x/a", false), nil}),
					},
					upstreamStep{
						desc:     "add a policy to unblock port 80",
						policies: pols(allow81, allow80),
						probes:   probes(tableProbe{"80/TCP", onlyFromY, nil}),
					}),
			}
		}(),
		{
			name: "should support allow-all policy",
			steps: oneStep(probes(
				tableProbe{"80/TCP", allAllowed(), nil},
				tableProbe{"81/TCP", allAllowed(), nil}),
				policytest.NetworkPolicy("x", "allow-all", policytest.Selector(),
					policytest.Ingress(policytest.From()))),
		},

		// Named ports: resolved on the pod receiving the traffic.
		{
			name: "should allow ingress access on one named port",
			steps: oneStep(probes(
				tableProbe{"81/TCP", allAllowed(), nil},
				tableProbe{"80/TCP", allAllowed().expectPeer(anyPod, inNs("x"), false), nil}),
				policytest.NetworkPolicy("x", "allow-all", policytest.Selector(),
					policytest.Ingress(policytest.From(policytest.Port("serve-81-tcp"))))),
		},
		{
			name: "should allow ingress access from namespace on one named port",
			steps: oneStep(probes(
				tableProbe{"80/TCP", allAllowed().
					expectPeer(inNs("x"), thePod("x/a"), false).
					expectPeer(inNs("z"), thePod("x/a"), false), nil},
				tableProbe{"81/TCP", allAllowed().expectAllIngress("x/a", false), nil}),
				policytest.NetworkPolicy("x", "allow-client-a-via-ns-selector-80", podIs("a"), policytest.Ingress(policytest.From(
					policytest.Namespaces(nsIs("y")), policytest.Port("serve-80-tcp/TCP"))))),
		},
		{
			name: "should allow egress access on one named port",
			steps: oneStep(probes(
				tableProbe{"80/TCP", allAllowed(), nil},
				tableProbe{"81/TCP", allAllowed().expectPeer(inNs("x"), anyPod, false), nil}),
				policytest.NetworkPolicy("x", "allow-egress", policytest.Selector(),
					policytest.Egress(policytest.To(policytest.Port("serve-80-tcp"))))),
		},

		// Changes while running.
		{
			name: "should enforce updated policy",
			steps: steps(
				upstreamStep{
					desc: "allow all",
					policies: pols(policytest.NetworkPolicy("x", "allow-all-mutate-to-deny-all", policytest.Selector(),
						policytest.Ingress(policytest.From()))),
					probes: probes(tableProbe{"81/TCP", allAllowed(), nil}),
				},
				upstreamStep{
					desc: "update the policy to deny all",
					policies: pols(policytest.NetworkPolicy("x", "allow-all-mutate-to-deny-all", policytest.Selector(),
						policytest.Ingress())),
					probes: probes(tableProbe{"81/TCP", allAllowed().expectPeer(anyPod, inNs("x"), false), nil}),
				}),
		},
		func() upstreamCase {
			policy := policytest.NetworkPolicy("x", "allow-client-a-via-ns-selector", podIs("a"), policytest.Ingress(policytest.From(
				policytest.Namespaces(policytest.Selector("ns2", "updated")))))
			return upstreamCase{
				name: "should allow ingress access from updated namespace",
				steps: steps(
					upstreamStep{
						policies: pols(policy),
						probes:   probes(tableProbe{"80/TCP", allAllowed().expectAllIngress("x/a", false), nil}),
					},
					upstreamStep{
						desc:     "label namespace y ns2=updated",
						relabel:  func(m *model) { m.labelNamespace("y", "ns2", "updated") },
						policies: pols(policy),
						probes: probes(tableProbe{"80/TCP", allAllowed().
							expectAllIngress("x/a", false).
							expectPeer(inNs("y"), anyPod, true), nil}),
					}),
			}
		}(),
		func() upstreamCase {
			policy := policytest.NetworkPolicy("x", "allow-client-a-via-pod-selector", podIs("a"), policytest.Ingress(policytest.From(
				policytest.Pods(policytest.Selector("pod", "b", "pod2", "updated")))))
			return upstreamCase{
				name: "should allow ingress access from updated pod",
				steps: steps(
					upstreamStep{
						policies: pols(policy),
						probes:   probes(tableProbe{"80/TCP", allAllowed().expectAllIngress("x/a", false), nil}),
					},
					upstreamStep{
						desc:     "label pod x/b pod2=updated",
						relabel:  func(m *model) { m.labelPod("x/b", "pod2", "updated") },
						policies: pols(policy),
						probes: probes(tableProbe{"80/TCP", allAllowed().
							expectAllIngress("x/a", false).
							expect("x/b", "x/a", true), nil}),
					}),
			}
		}(),
		{
			name: "should deny ingress from pods on other namespaces",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().
				expectPeer(inNs("y"), inNs("x"), false).
				expectPeer(inNs("z"), inNs("x"), false), nil}),
				policytest.NetworkPolicy("x", "deny-empty-policy", policytest.Selector(),
					policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector()))))),
		},
		func() upstreamCase {
			policy := policytest.NetworkPolicy("x", "deny-ingress-via-label-selector", policytest.Selector("target", "isolated"),
				policytest.Ingress())
			return upstreamCase{
				name: "should deny ingress access to updated pod",
				steps: steps(
					upstreamStep{
						policies: pols(policy),
						probes:   probes(tableProbe{"80/TCP", allAllowed(), nil}),
					},
					upstreamStep{
						desc:     "label pod x/a target=isolated",
						relabel:  func(m *model) { m.labelPod("x/a", "target", "isolated") },
						policies: pols(policy),
						probes:   probes(tableProbe{"80/TCP", allAllowed().expectAllIngress("x/a", false), nil}),
					}),
			}
		}(),

		// Egress.
		{
			name: "should deny egress from pods based on PodSelector",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().expectAllEgress("x/a", false), nil}),
				policytest.NetworkPolicy("x", "deny-egress-pod-a", podIs("a"), policytest.Egress())),
		},
		{
			name: "should deny egress from all pods in a namespace",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().expectPeer(inNs("x"), anyPod, false), nil}),
				policytest.NetworkPolicy("x", "deny-egress-ns-x", policytest.Selector(), policytest.Egress())),
		},
		{
			name: "should work with Ingress, Egress specified together",
			steps: oneStep(probes(
				tableProbe{"80/TCP", allAllowed().
					expectAllIngress("x/a", false).
					expect("x/b", "x/a", true), nil},
				tableProbe{"81/TCP", allAllowed().
					expectAllIngress("x/a", false).
					expectAllEgress("x/a", false).
					expect("x/b", "x/a", true), nil}),
				policytest.NetworkPolicy("x", "allow-client-a-via-pod-selector", podIs("a"),
					policytest.Ingress(policytest.From(policytest.Pods(podIs("b")))),
					policytest.Egress(policytest.To(policytest.Port("80"))),
					policytest.Types(typeEgress, typeIngress))),
		},
		{
			// Egress is judged at the client: y/b's ingress allows x/a, x/a's egress does not.
			name: "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().
				expectPeer(thePod("x/a"), anyPod, false).
				expectPeer(anyPod, thePod("y/a"), false).
				expectPeer(thePod("x/a"), thePod("y/a"), true).
				expectPeer(anyPod, thePod("y/b"), false), nil}),
				policytest.NetworkPolicy("x", "allow-to-ns-y-pod-a", podIs("a"),
					policytest.Egress(policytest.To(policytest.PodsIn(nsIs("y"), podIs("a"))))),
				policytest.NetworkPolicy("y", "allow-from-xa-on-ya-match-selector", podIs("a"),
					policytest.Ingress(policytest.From(policytest.PodsIn(nsIs("x"), podIs("a"))))),
				policytest.NetworkPolicy("y", "allow-from-xa-on-yb-match-selector", podIs("b"),
					policytest.Ingress(policytest.From(policytest.PodsIn(nsIs("x"), podIs("a")))))),
		},
		{
			name: "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().
				expectAllEgress("x/a", false).
				expect("x/a", "y/a", true), nil}),
				policytest.NetworkPolicy("x", "allow-to-ns-y-pod-a", podIs("a"),
					policytest.Egress(policytest.To(policytest.PodsIn(nsIs("y"), podIs("a")))))),
		},

		// Protocols.
		{
			name: "should enforce ingress policy allowing any port traffic to a server on a specific protocol",
			steps: oneStep(probes(
				tableProbe{"80/TCP", allAllowed(), nil},
				tableProbe{"80/UDP", allAllowed().expectPeer(anyPod, thePod("x/a"), false), nil}),
				policytest.NetworkPolicy("x", "allow-ingress-by-proto", podIs("a"),
					policytest.Ingress(policytest.From(policytest.Port("/TCP"))))),
		},

		// Several policies: the union wins.
		func() upstreamCase {
			port80 := policytest.NetworkPolicy("x", "allow-ingress-port-80", policytest.Selector(),
				policytest.Ingress(policytest.From(policytest.Port("80"))))
			return upstreamCase{
				name: "should enforce multiple ingress policies with ingress allow-all policy taking precedence",
				steps: steps(
					upstreamStep{
						desc:     "policy targets port 80: port 81 is blocked",
						policies: pols(port80),
						probes:   probes(tableProbe{"81/TCP", allAllowed().expectPeer(anyPod, inNs("x"), false), nil}),
					},
					upstreamStep{
						desc: "allowing all ports",
						policies: pols(port80, policytest.NetworkPolicy("x", "allow-ingress", policytest.Selector(),
							policytest.Ingress(policytest.From()))),
						probes: probes(tableProbe{"81/TCP", allAllowed(), nil}),
					}),
			}
		}(),
		func() upstreamCase {
			port80 := policytest.NetworkPolicy("x", "allow-egress-port-80", policytest.Selector(),
				policytest.Egress(policytest.To(policytest.Port("80"))))
			return upstreamCase{
				name: "should enforce multiple egress policies with egress allow-all policy taking precedence",
				steps: steps(
					upstreamStep{
						desc:     "policy targets port 80: port 81 is blocked",
						policies: pols(port80),
						probes:   probes(tableProbe{"81/TCP", allAllowed().expectPeer(inNs("x"), anyPod, false), nil}),
					},
					upstreamStep{
						desc: "allowing all ports",
						policies: pols(port80, policytest.NetworkPolicy("x", "allow-egress", policytest.Selector(),
							policytest.Egress(policytest.To()))),
						probes: probes(tableProbe{"81/TCP", allAllowed(), nil}),
					}),
			}
		}(),
		{
			name: "should stop enforcing policies after they are deleted",
			steps: steps(
				upstreamStep{
					desc: "deny all traffic into and out of x",
					policies: pols(policytest.NetworkPolicy("x", "deny-all", policytest.Selector(),
						policytest.Ingress(), policytest.Egress())),
					probes: probes(tableProbe{"80/TCP", allAllowed().
						expectPeer(inNs("x"), anyPod, false).
						expectPeer(anyPod, inNs("x"), false), nil}),
				},
				upstreamStep{
					desc:   "policies deleted",
					probes: probes(tableProbe{"80/TCP", allAllowed(), nil}),
				}),
		},

		// ipBlock: matches pod addresses too.
		func() upstreamCase {
			toYB := func(blocks ...string) *networkingv1.NetworkPolicy {
				var peers []policytest.Elem
				for _, b := range blocks {
					peers = append(peers, policytest.CIDR(b))
				}
				return policytest.NetworkPolicy("x", "allow-client-a-via-cidr-egress-rule", podIs("a"),
					policytest.Egress(policytest.To(peers...)))
			}
			onlyToYB := func() *reachability {
				return allAllowed().expectAllEgress("x/a", false).expect("x/a", "y/b", true)
			}
			nothingFromXA := allAllowed().expectAllEgress("x/a", false)
			return upstreamCase{
				name: "should allow egress access to server in CIDR block",
				steps: steps(
					upstreamStep{
						desc:     "dual-stack: y/b's IPv4 /32 and IPv6 /128",
						policies: pols(toYB(modelIP("y/b", "v4", 32), modelIP("y/b", "v6", 128))),
						probes:   probes(tableProbe{"80/TCP", onlyToYB(), nil}),
					},
					upstreamStep{
						desc:     "IPv4 block only: nothing over IPv6",
						policies: pols(toYB(modelIP("y/b", "v4", 32))),
						probes: probes(
							tableProbe{"80/TCP", onlyToYB(), []string{"IPv4"}},
							tableProbe{"80/TCP", nothingFromXA, []string{"IPv6"}}),
					},
					upstreamStep{
						desc:     "IPv6 block only: nothing over IPv4",
						policies: pols(toYB(modelIP("y/b", "v6", 128))),
						probes: probes(
							tableProbe{"80/TCP", onlyToYB(), []string{"IPv6"}},
							tableProbe{"80/TCP", nothingFromXA, []string{"IPv4"}}),
					}),
			}
		}(),
		{
			name: "should enforce except clause while egress access to server in CIDR block",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().expect("x/a", "x/b", false), nil}),
				policytest.NetworkPolicy("x", "allow-client-a-via-cidr-egress-rule", podIs("a"), policytest.Egress(policytest.To(
					policytest.CIDR(modelIP("x/a", "v4", 4), modelIP("x/b", "v4", 32)),
					policytest.CIDR(modelIP("x/a", "v6", 4), modelIP("x/b", "v6", 128)))))),
		},
		{
			// Upstream updates the policy in place (same name), so the second step has only
			// the /32 rule.
			name: "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
			steps: steps(
				upstreamStep{
					desc: "large block except x/b",
					policies: pols(policytest.NetworkPolicy("x", "allow-client-a-via-cidr-egress-rule", podIs("a"), policytest.Egress(policytest.To(
						policytest.CIDR(modelIP("x/a", "v4", 4), modelIP("x/b", "v4", 32)),
						policytest.CIDR(modelIP("x/a", "v6", 4), modelIP("x/b", "v6", 128)))))),
					probes: probes(tableProbe{"80/TCP", allAllowed().expect("x/a", "x/b", false), nil}),
				},
				upstreamStep{
					desc: "update the policy to allow x/b's own address",
					policies: pols(policytest.NetworkPolicy("x", "allow-client-a-via-cidr-egress-rule", podIs("a"), policytest.Egress(policytest.To(
						policytest.CIDR(modelIP("x/b", "v4", 32)),
						policytest.CIDR(modelIP("x/b", "v6", 128)))))),
					probes: probes(tableProbe{"80/TCP", allAllowed().
						expectAllEgress("x/a", false).
						expect("x/a", "x/b", true), nil}),
				}),
		},
		func() upstreamCase {
			allowEgress := policytest.NetworkPolicy("x", "allow-egress-for-target", podIs("a"),
				policytest.Egress(policytest.To()))
			return upstreamCase{
				name: "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector",
				steps: steps(
					upstreamStep{
						desc:     "policy allowing all egress of x/a",
						policies: pols(allowEgress),
						probes:   probes(tableProbe{"80/TCP", allAllowed(), nil}),
					},
					upstreamStep{
						desc: "add a policy denying all ingress of x/a",
						policies: pols(allowEgress,
							policytest.NetworkPolicy("x", "deny-ingress-via-label-selector", podIs("a"),
								policytest.Ingress())),
						probes: probes(tableProbe{"80/TCP", allAllowed().expectAllIngress("x/a", false), nil}),
					}),
			}
		}(),

		// A rule for another protocol must not open TCP (a security hole if it did).
		{
			name: "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
			steps: oneStep(probes(
				tableProbe{"81/TCP", allAllowed().expectPeer(anyPod, inNs("x"), false), nil},
				// Not probed upstream: SCTP on port 81 is what the policy does allow.
				tableProbe{"81/SCTP", allAllowed().
					expectPeer(anyPod, inNs("x"), false).
					expectAllIngress("x/a", true), nil}),
				policytest.NetworkPolicy("x", "deny-ingress", policytest.Selector(), policytest.Ingress()),
				policytest.NetworkPolicy("x", "allow-only-sctp-ingress-on-port-81", podIs("a"),
					policytest.Ingress(policytest.From(policytest.Port("81/SCTP"))))),
		},
		{
			name: "should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP",
			steps: oneStep(probes(tableProbe{"81/TCP", allAllowed().expectAllIngress("x/a", false), nil}),
				policytest.NetworkPolicy("x", "allow-only-sctp-ingress-on-port-80", podIs("a"),
					policytest.Ingress(policytest.From(policytest.Port("80/SCTP"))))),
		},
		{
			name: "should not allow access by TCP when a policy specifies only UDP",
			steps: oneStep(probes(tableProbe{"81/TCP", allAllowed().expectAllIngress("x/a", false), nil}),
				policytest.NetworkPolicy("x", "allow-only-udp-ingress-on-port-81", podIs("a"),
					policytest.Ingress(policytest.From(policytest.Port("81/UDP"))))),
		},

		// kubernetes.io/metadata.name, set on every namespace by the API server.
		{
			name: "should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().
				expectPeer(inNs("x"), thePod("x/a"), false).
				expectPeer(inNs("z"), thePod("x/a"), false), nil}),
				policytest.NetworkPolicy("x", "allow-client-a-via-ns-selector-for-immutable-ns-label", podIs("a"), policytest.Ingress(policytest.From(
					policytest.Namespaces(policytest.Selector(metadataNameLabel, "y")))))),
		},
		{
			name: "should enforce policy based on NamespaceSelector with MatchExpressions using default ns label",
			steps: oneStep(probes(tableProbe{"80/TCP", allAllowed().
				expectPeer(thePod("x/a"), inNs("y"), false), nil}),
				policytest.NetworkPolicy("x", "allow-ns-y-match-selector-for-immutable-ns-label", podIs("a"), policytest.Egress(policytest.To(
					policytest.Namespaces(policytest.Exprs(policytest.NotIn(metadataNameLabel, "y"))))))),
		},
	})
}

// TestUpstreamNetpolUDP: "Netpol [LinuxOnly] NetworkPolicy between server and client using
// UDP".
func TestUpstreamNetpolUDP(t *testing.T) {
	runUpstream(t, protocolCases("UDP"))
}

// TestUpstreamNetpolSCTP: "Netpol [Feature:SCTPConnectivity] [LinuxOnly] NetworkPolicy
// between server and client using SCTP".
func TestUpstreamNetpolSCTP(t *testing.T) {
	runUpstream(t, protocolCases("SCTP"))
}

// protocolCases are the three cases upstream repeats for UDP and for SCTP.
func protocolCases(proto string) []upstreamCase {
	return []upstreamCase{
		{
			name: "should support a 'default-deny-ingress' policy",
			steps: oneStep(probes(tableProbe{"80/" + proto, allAllowed().expectPeer(anyPod, inNs("x"), false), nil}),
				policytest.NetworkPolicy("x", "deny-all", policytest.Selector(), policytest.Ingress())),
		},
		{
			name: "should enforce policy based on Ports",
			steps: oneStep(probes(tableProbe{"81/" + proto, allAllowed().
				expectPeer(inNs("x"), thePod("x/a"), false).
				expectPeer(inNs("z"), thePod("x/a"), false), nil}),
				policytest.NetworkPolicy("x", "allow-ingress-on-port-81-ns-x", podIs("a"), policytest.Ingress(policytest.From(
					policytest.Namespaces(nsIs("y")), policytest.Port("81/"+proto))))),
		},
		{
			name: "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
			steps: oneStep(probes(tableProbe{"80/" + proto, allAllowed().
				expectAllIngress("x/a", false).
				expect("y/a", "x/a", true), nil}),
				policytest.NetworkPolicy("x", "allow-ns-y-pod-a-via-namespace-pod-selector", podIs("a"), policytest.Ingress(policytest.From(
					policytest.PodsIn(nsIs("y"), podIs("a")))))),
		},
	}
}
