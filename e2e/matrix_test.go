package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/policy/policytest"
)

// matrixPods is upstream's e2e model: namespaces x, y, z (labelled ns=<name>), pods a, b, c in
// each (labelled pod=<name>). They alternate between node-1 and node-2, so every table mixes
// same-node and cross-node pairs: node-1 holds x/a x/c y/b z/a z/c, node-2 x/b y/a y/c z/b.
var matrixPods = []string{"x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"}

// matrixPorts are every matrix pod's named container ports, as upstream names them.
var matrixPorts = []corev1.ContainerPort{
	{Name: "serve-80-tcp", ContainerPort: 80, Protocol: corev1.ProtocolTCP},
	{Name: "serve-80-udp", ContainerPort: 80, Protocol: corev1.ProtocolUDP},
	{Name: "serve-81-tcp", ContainerPort: 81, Protocol: corev1.ProtocolTCP},
	{Name: "serve-81-udp", ContainerPort: 81, Protocol: corev1.ProtocolUDP},
}

// matrixCase is one set of policies and the reachability the spec gives them: a full table
// per port ("80/TCP" → table) and single probes for other ports. The diagonal is always
// allowed: a pod's traffic to itself never leaves it.
type matrixCase struct {
	name     string
	policies []*networkingv1.NetworkPolicy
	tables   map[string]string
	probes   []probe
}

func matrixCases(e *env) []matrixCase {
	yb4 := netip.PrefixFrom(e.Pods["y/b"].IPv4, 32).String()
	yb6 := netip.PrefixFrom(e.Pods["y/b"].IPv6, 128).String()
	return []matrixCase{
		// A policy selecting every pod of x with Ingress and no rules isolates them all:
		// nothing reaches x, x still reaches everyone (egress is not isolated).
		{
			name: "default deny ingress",
			policies: []*networkingv1.NetworkPolicy{
				policytest.NetworkPolicy("x", "deny-ingress", policytest.Selector(), policytest.Ingress())},
			tables: map[string]string{"80/TCP": `
				x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a  .   X   X   .   .   .   .   .   .
				x/b  X   .   X   .   .   .   .   .   .
				x/c  X   X   .   .   .   .   .   .   .
				y/a  X   X   X   .   .   .   .   .   .
				y/b  X   X   X   .   .   .   .   .   .
				y/c  X   X   X   .   .   .   .   .   .
				z/a  X   X   X   .   .   .   .   .   .
				z/b  X   X   X   .   .   .   .   .   .
				z/c  X   X   X   .   .   .   .   .   .`},
		},
		// A podSelector peer alone means pods of the policy's own namespace. A rule without
		// ports allows every protocol: UDP as TCP.
		{
			name: "allow same namespace",
			policies: []*networkingv1.NetworkPolicy{
				policytest.NetworkPolicy("x", "same-ns", policytest.Selector(),
					policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector()))))},
			tables: map[string]string{"80/TCP": sameNamespaceX, "81/UDP": sameNamespaceX},
		},
		// A namespaceSelector peer alone: every pod of the selected namespaces.
		{
			name: "namespaceSelector",
			policies: []*networkingv1.NetworkPolicy{
				policytest.NetworkPolicy("x", "from-y", policytest.Selector("pod", "a"),
					policytest.Ingress(policytest.From(policytest.Namespaces(policytest.Selector("ns", "y")))))},
			tables: map[string]string{"80/TCP": `
				x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a  .   .   .   .   .   .   .   .   .
				x/b  X   .   .   .   .   .   .   .   .
				x/c  X   .   .   .   .   .   .   .   .
				y/a  .   .   .   .   .   .   .   .   .
				y/b  .   .   .   .   .   .   .   .   .
				y/c  .   .   .   .   .   .   .   .   .
				z/a  X   .   .   .   .   .   .   .   .
				z/b  X   .   .   .   .   .   .   .   .
				z/c  X   .   .   .   .   .   .   .   .`},
		},
		// Both selectors in one peer: pods labelled pod=b AND in namespace y or z.
		{
			name: "podSelector AND namespaceSelector",
			policies: []*networkingv1.NetworkPolicy{
				policytest.NetworkPolicy("x", "b-in-y-or-z", policytest.Selector("pod", "a"), policytest.Ingress(policytest.From(
					policytest.PodsIn(policytest.Exprs(policytest.In("ns", "y", "z")), policytest.Selector("pod", "b")))))},
			tables: map[string]string{"80/TCP": `
				x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a  .   .   .   .   .   .   .   .   .
				x/b  X   .   .   .   .   .   .   .   .
				x/c  X   .   .   .   .   .   .   .   .
				y/a  X   .   .   .   .   .   .   .   .
				y/b  .   .   .   .   .   .   .   .   .
				y/c  X   .   .   .   .   .   .   .   .
				z/a  X   .   .   .   .   .   .   .   .
				z/b  .   .   .   .   .   .   .   .   .
				z/c  X   .   .   .   .   .   .   .   .`},
		},
		// The same selectors as two peers: every pod of y and z, OR pods labelled pod=b of x.
		{
			name: "podSelector OR namespaceSelector",
			policies: []*networkingv1.NetworkPolicy{
				policytest.NetworkPolicy("x", "y-z-or-b", policytest.Selector("pod", "a"), policytest.Ingress(policytest.From(
					policytest.Namespaces(policytest.Exprs(policytest.In("ns", "y", "z"))), policytest.Pods(policytest.Selector("pod", "b")))))},
			tables: map[string]string{"80/TCP": `
				x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a  .   .   .   .   .   .   .   .   .
				x/b  .   .   .   .   .   .   .   .   .
				x/c  X   .   .   .   .   .   .   .   .
				y/a  .   .   .   .   .   .   .   .   .
				y/b  .   .   .   .   .   .   .   .   .
				y/c  .   .   .   .   .   .   .   .   .
				z/a  .   .   .   .   .   .   .   .   .
				z/b  .   .   .   .   .   .   .   .   .
				z/c  .   .   .   .   .   .   .   .   .`},
		},
		// A named port resolves against the receiving pod's container ports, with its
		// protocol: serve-80-tcp is 80/TCP only, so 81/TCP and 80/UDP to x/a are denied.
		{
			name: "named port",
			policies: []*networkingv1.NetworkPolicy{
				policytest.NetworkPolicy("x", "serve-80-tcp", policytest.Selector("pod", "a"),
					policytest.Ingress(policytest.From(policytest.Port("serve-80-tcp/TCP"))))},
			tables: map[string]string{
				"80/TCP": allAllowed(matrixPods...),
				"81/TCP": onlyDiagonalToXA,
				"80/UDP": onlyDiagonalToXA,
			},
		},
		// Egress is judged at the source: x/a may reach pods labelled pod=b in any namespace
		// (empty namespaceSelector = all namespaces), any protocol; everyone reaches x/a.
		{
			name: "egress to pods",
			policies: []*networkingv1.NetworkPolicy{
				policytest.NetworkPolicy("x", "to-b", policytest.Selector("pod", "a"),
					policytest.Egress(policytest.To(policytest.PodsIn(policytest.Selector(), policytest.Selector("pod", "b")))))},
			tables: map[string]string{"80/TCP": `
				x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a  .   .   X   X   .   X   X   .   X
				x/b  .   .   .   .   .   .   .   .   .
				x/c  .   .   .   .   .   .   .   .   .
				y/a  .   .   .   .   .   .   .   .   .
				y/b  .   .   .   .   .   .   .   .   .
				y/c  .   .   .   .   .   .   .   .   .
				z/a  .   .   .   .   .   .   .   .   .
				z/b  .   .   .   .   .   .   .   .   .
				z/c  .   .   .   .   .   .   .   .   .`},
			probes: []probe{
				{from: "x/a", to: "z/b", port: 81, proto: "UDP", allow: true},
				{from: "x/a", to: "y/b", port: 81, proto: "UDP", allow: true},
				{from: "x/a", to: "z/a", port: 81, proto: "UDP", allow: false},
				{from: "x/a", to: "y/c", port: 81, proto: "UDP", allow: false},
			},
		},
		// ipBlock matches pod addresses too; except carves one pod (y/b, same node as x/a) out
		// of the pod range, in each family.
		{
			name: "ipBlock with except",
			policies: []*networkingv1.NetworkPolicy{
				policytest.NetworkPolicy("x", "pod-range-but-yb", policytest.Selector("pod", "a"), policytest.Ingress(policytest.From(
					policytest.CIDR("10.244.0.0/16", yb4), policytest.CIDR("fd00:10:244::/56", yb6))))},
			tables: map[string]string{"80/TCP": `
				x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a  .   .   .   .   .   .   .   .   .
				x/b  .   .   .   .   .   .   .   .   .
				x/c  .   .   .   .   .   .   .   .   .
				y/a  .   .   .   .   .   .   .   .   .
				y/b  X   .   .   .   .   .   .   .   .
				y/c  .   .   .   .   .   .   .   .   .
				z/a  .   .   .   .   .   .   .   .   .
				z/b  .   .   .   .   .   .   .   .   .
				z/c  .   .   .   .   .   .   .   .   .`},
			probes: []probe{
				{from: "y/b", to: "x/a", port: 81, proto: "UDP", allow: false},
				{from: "z/b", to: "x/a", port: 81, proto: "UDP", allow: true},
			},
		},
		// One policy with both directions on y/b: in only from y/a, out only to z. A flow
		// passes only when the source's egress and the destination's ingress both allow it:
		// y/a → y/b passes, y/b → y/a does not.
		{
			name: "ingress and egress",
			policies: []*networkingv1.NetworkPolicy{
				policytest.NetworkPolicy("y", "b-both-ways", policytest.Selector("pod", "b"),
					policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("pod", "a")))),
					policytest.Egress(policytest.To(policytest.Namespaces(policytest.Selector("ns", "z")))))},
			tables: map[string]string{"80/TCP": `
				x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a  .   .   .   .   X   .   .   .   .
				x/b  .   .   .   .   X   .   .   .   .
				x/c  .   .   .   .   X   .   .   .   .
				y/a  .   .   .   .   .   .   .   .   .
				y/b  X   X   X   X   .   X   .   .   .
				y/c  .   .   .   .   X   .   .   .   .
				z/a  .   .   .   .   X   .   .   .   .
				z/b  .   .   .   .   X   .   .   .   .
				z/c  .   .   .   .   X   .   .   .   .`},
		},
		// Deny all egress of z but DNS: port entries without peers, 53 over UDP and TCP, to
		// anyone; nothing else leaves z.
		{
			name: "deny egress but DNS",
			policies: []*networkingv1.NetworkPolicy{
				policytest.NetworkPolicy("z", "dns-only", policytest.Selector(),
					policytest.Egress(policytest.To(policytest.Port("53/UDP"), policytest.Port("53/TCP"))))},
			tables: map[string]string{
				"80/TCP": `
				x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a  .   .   .   .   .   .   .   .   .
				x/b  .   .   .   .   .   .   .   .   .
				x/c  .   .   .   .   .   .   .   .   .
				y/a  .   .   .   .   .   .   .   .   .
				y/b  .   .   .   .   .   .   .   .   .
				y/c  .   .   .   .   .   .   .   .   .
				z/a  X   X   X   X   X   X   .   X   X
				z/b  X   X   X   X   X   X   X   .   X
				z/c  X   X   X   X   X   X   X   X   .`,
				"53/UDP": allAllowed(matrixPods...),
				"53/TCP": allAllowed(matrixPods...),
			},
			probes: []probe{
				{from: "z/a", to: "x/b", port: 81, proto: "UDP", allow: false},
				{from: "z/b", to: "z/a", port: 81, proto: "UDP", allow: false},
			},
		},
	}
}

const sameNamespaceX = `
	x/a x/b x/c y/a y/b y/c z/a z/b z/c
	x/a  .   .   .   .   .   .   .   .   .
	x/b  .   .   .   .   .   .   .   .   .
	x/c  .   .   .   .   .   .   .   .   .
	y/a  X   X   X   .   .   .   .   .   .
	y/b  X   X   X   .   .   .   .   .   .
	y/c  X   X   X   .   .   .   .   .   .
	z/a  X   X   X   .   .   .   .   .   .
	z/b  X   X   X   .   .   .   .   .   .
	z/c  X   X   X   .   .   .   .   .   .`

const onlyDiagonalToXA = `
	x/a x/b x/c y/a y/b y/c z/a z/b z/c
	x/a  .   .   .   .   .   .   .   .   .
	x/b  X   .   .   .   .   .   .   .   .
	x/c  X   .   .   .   .   .   .   .   .
	y/a  X   .   .   .   .   .   .   .   .
	y/b  X   .   .   .   .   .   .   .   .
	y/c  X   .   .   .   .   .   .   .   .
	z/a  X   .   .   .   .   .   .   .   .
	z/b  X   .   .   .   .   .   .   .   .
	z/c  X   .   .   .   .   .   .   .   .`

// TestMatrix probes the x/y/z × a/b/c model under one policy set after another, in one lab:
// the manifests are rewritten between cases and every agent applies them before probing.
func TestMatrix(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddNode("node-2", 2)
	for i, key := range matrixPods {
		e.AddPods([]string{"node-1", "node-2"}[i%2], key)
	}
	var base []any
	for _, ns := range []string{"x", "y", "z"} {
		base = append(base, policytest.Namespace(ns, map[string]string{"ns": ns}))
	}
	for _, key := range matrixPods {
		base = append(base, e.podObject(key, map[string]string{"pod": key[2:]}, matrixPorts...))
	}
	e.Serve(80, 81, 53)
	e.write(base...)
	e.start()

	// Without policies, everything is allowed.
	t.Run("no policies", func(t *testing.T) {
		e.sub(t).check(parseTable(allAllowed(matrixPods...)).probes(80, "TCP")...)
	})
	for _, c := range matrixCases(e) {
		t.Run(c.name, func(t *testing.T) {
			e := e.sub(t)
			objs := append(append([]any(nil), base...), anys(c.policies)...)
			e.rewrite(objs...)
			var probes []probe
			denied := 0
			for _, key := range sortedKeys(c.tables) {
				var portNum uint16
				var protocol string
				if _, err := fmt.Sscanf(strings.Replace(key, "/", " ", 1), "%d %s", &portNum, &protocol); err != nil {
					t.Fatalf("table key %q: %v", key, err)
				}
				tab := parseTable(c.tables[key])
				probes = append(probes, tab.probes(portNum, protocol)...)
				denied += tab.denied()
			}
			probes = append(probes, c.probes...)
			for _, p := range c.probes {
				if !p.allow {
					denied++
				}
			}
			start := time.Now()
			e.check(probes...)
			t.Logf("%d probes per family, %d denied, in %v", len(probes), denied, time.Since(start).Round(time.Millisecond))
		})
	}
}

func anys[T any](xs []T) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
