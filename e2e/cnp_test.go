package e2e

import (
	"fmt"
	"maps"
	"os/exec"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	"sigs.k8s.io/network-policy-api/conformance"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/policy/policytest"
)

// The houses of the upstream conformance fixtures (conformance/base/manifests.yaml), two pods
// each, NAME-0 and NAME-1 (placed by a layout), in namespace network-policy-conformance-<house>
// labelled conformance-house=<house>; tests name them <house>/NAME-i.
var houses = map[string]string{"gryffindor": "harry-potter", "slytherin": "draco-malfoy", "hufflepuff": "cedric-diggory",
	"ravenclaw": "luna-lovegood"}

// conformanceObjects reads the policies of one upstream fixture: ClusterNetworkPolicies as
// v1alpha2 (upstream writes v1beta1, the same schema) and NetworkPolicies.
func conformanceObjects(t *testing.T, path string) (cnps []*cnpv1alpha2.ClusterNetworkPolicy, nps []*networkingv1.NetworkPolicy) {
	raw, err := conformance.Manifests.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(raw), "\n---") {
		switch {
		case strings.Contains(doc, "kind: ClusterNetworkPolicy"):
			c := &cnpv1alpha2.ClusterNetworkPolicy{}
			if err := yaml.Unmarshal([]byte(doc), c); err != nil {
				t.Fatal(err)
			}
			c.APIVersion = cnpv1alpha2.GroupVersion.String()
			cnps = append(cnps, c)
		case strings.Contains(doc, "kind: NetworkPolicy"):
			np := &networkingv1.NetworkPolicy{}
			if err := yaml.Unmarshal([]byte(doc), np); err != nil {
				t.Fatal(err)
			}
			nps = append(nps, np)
		}
	}
	return cnps, nps
}

// layout is where the conformance pods run: on two nodes, NAME-0 on node-1 and NAME-1 on
// node-2, so that a probe between a -0 and a -1 pod has its egress judged on one node and its
// ingress on the other (the forward hook of each); on one node, every pod on node-1, so that
// every probe is between local pods and both of its directions are judged by node-1's forward
// hook and agent.
type layout struct {
	name  string
	nodes int
}

var (
	oneNode  = layout{"one node", 1}
	twoNodes = layout{"two nodes", 2}
	// layouts are the layouts the conformance cases run on.
	layouts = []layout{oneNode, twoNodes}
)

// node returns the node of pod NAME-i.
func (l layout) node(i int) string { return fmt.Sprintf("node-%d", i%l.nodes+1) }

// newHouses builds the lab of the conformance fixtures in layout l, its pods serving TCP and
// UDP on 80, 8080, 53 and 5353 and SCTP on 9003 and 9005, and returns the objects of its
// namespaces and pods.
func newHouses(t *testing.T, l layout) (*env, []any) {
	e := newEnv(t)
	for i := range l.nodes {
		e.AddNode(l.node(i), i+1)
	}
	var objs []any
	for house, sts := range houses {
		ns := "network-policy-conformance-" + house
		e.AddPods(l.node(0), ns+"/"+sts+"-0")
		e.AddPods(l.node(1), ns+"/"+sts+"-1")
		objs = append(objs, policytest.Namespace(ns, map[string]string{"conformance-house": house}))
		for _, i := range []string{"-0", "-1"} {
			objs = append(objs, e.podObject(ns+"/"+sts+i, map[string]string{"conformance-house": house}))
		}
	}
	e.Serve(80, 8080, 53, 5353)
	for _, p := range e.Pods {
		for _, port := range []uint16{9003, 9005} {
			if _, err := p.ServeSCTP(port); err != nil {
				t.Fatal(err)
			}
		}
	}
	for key, p := range maps.Clone(e.Pods) { // the tests' short names
		e.Pods[strings.TrimPrefix(key, "network-policy-conformance-")] = p
	}
	return e, objs
}

// CNPAdminTierIntegration of the upstream suite on real packets, TCP and UDP, IPv4 and IPv6,
// on one node and on two: an Admin Deny overrides the NetworkPolicy that allows gryffindor ↔
// slytherin; each Pass edit, applied live, hands a direction to the NetworkPolicy; with the
// NetworkPolicy deleted the Baseline Deny decides. Hufflepuff, which no ClusterNetworkPolicy
// names, is judged by the NetworkPolicy alone.
func TestClusterNetworkPolicyIntegration(t *testing.T) {
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) { clusterNetworkPolicyIntegration(t, l) })
	}
}

func clusterNetworkPolicyIntegration(t *testing.T, l layout) {
	e, objs := newHouses(t, l)
	cnps, nps := conformanceObjects(t, "base/api_integration/standard-anp-np-banp.yaml")
	if len(cnps) != 2 || len(nps) != 1 {
		t.Fatalf("fixture: %d ClusterNetworkPolicies, %d NetworkPolicies; want 2 and 1", len(cnps), len(nps))
	}
	state := func() []any {
		out := append([]any(nil), objs...)
		for _, c := range cnps {
			out = append(out, c)
		}
		for _, np := range nps {
			out = append(out, np)
		}
		return out
	}
	e.write(state()...)
	e.start()

	const (
		g0, g1 = "gryffindor/harry-potter-0", "gryffindor/harry-potter-1"
		s0, s1 = "slytherin/draco-malfoy-0", "slytherin/draco-malfoy-1"
		h0, h1 = "hufflepuff/cedric-diggory-0", "hufflepuff/cedric-diggory-1"
	)
	// into lists the probes slytherin → gryffindor, out gryffindor → slytherin, and control
	// hufflepuff ↔ gryffindor, on TCP 80 and 8080 and UDP 53, between -0 and -1 pods and
	// between two -0 pods (on two nodes: across nodes and on one).
	probes := func(into, out bool) []probe {
		var ps []probe
		for _, pair := range [][2]string{{s0, g0}, {s1, g0}, {s0, g1}} {
			for _, pp := range []probe{{port: 80}, {port: 8080}, {port: 53, proto: "UDP"}} {
				ps = append(ps, probe{from: pair[0], to: pair[1], port: pp.port, proto: pp.proto, allow: into},
					probe{from: pair[1], to: pair[0], port: pp.port, proto: pp.proto, allow: out})
			}
		}
		// The NetworkPolicy isolates gryffindor: hufflepuff only while it is gone.
		noNP := len(nps) == 0
		return append(ps, probe{from: h0, to: g0, port: 80, allow: noNP}, probe{from: g1, to: h1, port: 53, proto: "UDP", allow: noNP},
			probe{from: h1, to: g0, port: 8080, allow: noNP}, probe{from: h0, to: s1, port: 80, allow: true})
	}
	edit := func(f func()) {
		t.Helper()
		cnps = []*cnpv1alpha2.ClusterNetworkPolicy{cnps[0].DeepCopy(), cnps[1].DeepCopy()}
		f()
		start := time.Now()
		e.rewrite(state()...)
		t.Logf("applied in %v", time.Since(start).Round(time.Millisecond))
	}
	t.Run("Should Deny traffic from slytherin to gryffindor respecting admin CNP", func(t *testing.T) {
		e.sub(t).check(probes(false, false)...)
	})
	t.Run("Should support a 'pass-ingress' policy for admin CNP and respect the match for network policy", func(t *testing.T) {
		edit(func() { cnps[0].Spec.Ingress[0].Action = cnpv1alpha2.ClusterNetworkPolicyRuleActionPass })
		e.sub(t).check(probes(true, false)...)
	})
	t.Run("Should support a 'pass-egress' policy for admin CNP and respect the match for network policy", func(t *testing.T) {
		edit(func() { cnps[0].Spec.Egress[0].Action = cnpv1alpha2.ClusterNetworkPolicyRuleActionPass })
		e.sub(t).check(probes(true, true)...)
	})
	// The Pass → Deny edit back, live: the connections it now denies are cut, whichever node
	// their client is on; the one it still allows keeps working.
	t.Run("a Pass edited back to Deny revokes the connections it denies", func(t *testing.T) {
		e := e.sub(t)
		ct := e.conntrackOf(l.node(0)) // harry-potter-0's node judges its ingress
		var hs []*held
		for _, fam := range []string{"IPv4", "IPv6"} {
			hs = append(hs,
				e.hold("cut", fam, s0, g0, "tcp", 80),
				e.hold("cut", fam, s1, g0, "udp", 53),
				e.hold("kept", fam, g0, s0, "tcp", 8080))
		}
		cnps = []*cnpv1alpha2.ClusterNetworkPolicy{cnps[0].DeepCopy(), cnps[1].DeepCopy()}
		cnps[0].Spec.Ingress[0].Action = cnpv1alpha2.ClusterNetworkPolicyRuleActionDeny
		edited := time.Now()
		e.write(state()...)
		cuts := ct.waitGone(e, edited, hs)
		var lat []time.Duration
		for _, d := range cuts {
			lat = append(lat, d)
		}
		t.Logf("edit -> conntrack entry deleted, %d connections: %s", len(lat), quantiles(lat))
		e.checkHeld(hs)
		e.check(probes(false, true)...)
	})
	t.Run("Should support a 'pass-ingress' policy for admin CNP and respect the match for baseline cluster network policy", func(t *testing.T) {
		edit(func() { nps = nil })
		e.sub(t).check(probes(false, false)...)
	})
}

// A priority change, applied live, reorders the Admin tier: an Accept of slytherin → gryffindor
// TCP 80 below the fixture's Deny (priority 20 against 10) changes nothing; moved above it
// (priority 5), that port opens and the rest stays denied; moved back, it closes again. Each
// flip is timed from the write of the manifests to both agents reporting the new generation
// (what "enforced" means: snapshot in force, kernel sets synced), over 20 flips.
func TestClusterNetworkPolicyPriority(t *testing.T) {
	e, objs := newHouses(t, twoNodes)
	cnps, _ := conformanceObjects(t, "base/api_integration/standard-anp-np-banp.yaml")
	admin := cnps[0] // pass-example: Admin, priority 10, Deny both ways with slytherin
	accept := &cnpv1alpha2.ClusterNetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "accept-slytherin-80"},
		Spec: cnpv1alpha2.ClusterNetworkPolicySpec{
			Tier: cnpv1alpha2.AdminTier, Priority: 20,
			Subject: cnpv1alpha2.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{
				MatchLabels: map[string]string{"conformance-house": "gryffindor"}}},
			Ingress: []cnpv1alpha2.ClusterNetworkPolicyIngressRule{{
				Name:   "accept-80",
				Action: cnpv1alpha2.ClusterNetworkPolicyRuleActionAccept,
				From: []cnpv1alpha2.ClusterNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{
					MatchLabels: map[string]string{"conformance-house": "slytherin"}}}},
				Protocols: []cnpv1alpha2.ClusterNetworkPolicyProtocol{{
					TCP: &cnpv1alpha2.ClusterNetworkPolicyProtocolTCP{DestinationPort: &cnpv1alpha2.Port{Number: 80}}}},
			}},
		},
	}
	state := func() []any { return append(append([]any(nil), objs...), admin, accept) }
	e.write(state()...)
	e.start()

	const g0, s0, s1 = "gryffindor/harry-potter-0", "slytherin/draco-malfoy-0", "slytherin/draco-malfoy-1"
	probes := func(port80 bool) []probe {
		return []probe{{from: s0, to: g0, port: 80, allow: port80}, {from: s1, to: g0, port: 80, allow: port80},
			{from: s0, to: g0, port: 8080, allow: false}}
	}
	e.check(probes(false)...)
	var took []time.Duration
	for i := range 20 {
		accept = accept.DeepCopy()
		accept.Spec.Priority = 5
		if i%2 == 1 {
			accept.Spec.Priority = 20
		}
		start := time.Now()
		e.rewrite(state()...)
		took = append(took, time.Since(start))
		if i < 2 || i >= 18 { // the probes cost seconds: the first and last flips of each way
			e.check(probes(accept.Spec.Priority == 5)...)
		}
	}
	t.Logf("priority flip -> enforced on both nodes, %d flips: %s", len(took), quantiles(took))
}

// cnpE2EStep is one t.Run of an upstream test: the rule swaps it makes first (the suite's
// PATCHes, applied live), then its probes.
type cnpE2EStep struct {
	name   string
	edit   func([]*cnpv1alpha2.ClusterNetworkPolicy)
	probes []probe
}

// swap exchanges two rules of a direction of the named policy.
type swap struct {
	policy  string
	ingress bool
	i, j    int
}

func swaps(ss ...swap) func([]*cnpv1alpha2.ClusterNetworkPolicy) {
	return func(cnps []*cnpv1alpha2.ClusterNetworkPolicy) {
		for _, s := range ss {
			for _, c := range cnps {
				if c.Name != s.policy {
					continue
				}
				if s.ingress {
					c.Spec.Ingress[s.i], c.Spec.Ingress[s.j] = c.Spec.Ingress[s.j], c.Spec.Ingress[s.i]
				} else {
					c.Spec.Egress[s.i], c.Spec.Egress[s.j] = c.Spec.Egress[s.j], c.Spec.Egress[s.i]
				}
			}
		}
	}
}

// CNPAdminTierGress and CNPBaselineTierGress of the upstream suite on real packets: every
// probe of theirs (TCP, UDP, and SCTP by crafted INITs), over IPv4 and IPv6, on one node and
// on two, each rule swap applied live.
func TestClusterNetworkPolicyGress(t *testing.T) {
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) { clusterNetworkPolicyGress(t, l) })
	}
}

func clusterNetworkPolicyGress(t *testing.T, l layout) {
	for _, tc := range []struct {
		name, fixture string
		steps         []cnpE2EStep
	}{
		{"CNPAdminTierGress", "base/admin_tier/standard-gress-rules-combined.yaml", adminGressSteps},
		{"CNPBaselineTierGress", "base/baseline_tier/standard-gress-rules-combined.yaml", baselineGressSteps},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, objs := newHouses(t, l)
			cnps, _ := conformanceObjects(t, tc.fixture)
			state := func() []any {
				out := append([]any(nil), objs...)
				for _, c := range cnps {
					out = append(out, c)
				}
				return out
			}
			e.write(state()...)
			e.start()
			for _, st := range tc.steps {
				t.Run(st.name, func(t *testing.T) {
					if st.edit != nil {
						for i := range cnps {
							cnps[i] = cnps[i].DeepCopy()
						}
						st.edit(cnps)
						e.rewrite(state()...)
					}
					e.sub(t).check(st.probes...)
				})
			}
		})
	}
}

// The probes of the upstream tests, transcribed like policy/cnpconformance_test.go.
var adminGressSteps = []cnpE2EStep{
	{name: "Should support an 'allow-gress' policy across different protocols", probes: []probe{
		{from: "gryffindor/harry-potter-0", to: "ravenclaw/luna-lovegood-0", port: 80, allow: true},
		{from: "gryffindor/harry-potter-1", to: "ravenclaw/luna-lovegood-0", port: 53, proto: "UDP", allow: true},
		{from: "gryffindor/harry-potter-0", to: "ravenclaw/luna-lovegood-0", port: 9003, proto: "SCTP", allow: true},
		{from: "ravenclaw/luna-lovegood-0", to: "gryffindor/harry-potter-0", port: 80, allow: true},
		{from: "ravenclaw/luna-lovegood-1", to: "gryffindor/harry-potter-0", port: 53, proto: "UDP", allow: true},
		{from: "ravenclaw/luna-lovegood-1", to: "gryffindor/harry-potter-0", port: 9003, proto: "SCTP", allow: true},
	}},
	{name: "Should support an 'allow-gress' policy across different protocols at the specified ports", probes: []probe{
		{from: "gryffindor/harry-potter-0", to: "hufflepuff/cedric-diggory-1", port: 8080, allow: true},
		{from: "gryffindor/harry-potter-1", to: "hufflepuff/cedric-diggory-1", port: 80, allow: false},
		{from: "gryffindor/harry-potter-0", to: "hufflepuff/cedric-diggory-1", port: 5353, proto: "UDP", allow: true},
		{from: "gryffindor/harry-potter-1", to: "hufflepuff/cedric-diggory-1", port: 53, proto: "UDP", allow: false},
		{from: "gryffindor/harry-potter-0", to: "hufflepuff/cedric-diggory-1", port: 9003, proto: "SCTP", allow: true},
		{from: "gryffindor/harry-potter-1", to: "hufflepuff/cedric-diggory-1", port: 9005, proto: "SCTP", allow: false},
		{from: "hufflepuff/cedric-diggory-0", to: "gryffindor/harry-potter-1", port: 80, allow: true},
		{from: "hufflepuff/cedric-diggory-1", to: "gryffindor/harry-potter-1", port: 8080, allow: false},
		{from: "hufflepuff/cedric-diggory-0", to: "gryffindor/harry-potter-1", port: 5353, proto: "UDP", allow: true},
		{from: "hufflepuff/cedric-diggory-1", to: "gryffindor/harry-potter-1", port: 53, proto: "UDP", allow: false},
		{from: "hufflepuff/cedric-diggory-0", to: "gryffindor/harry-potter-1", port: 9003, proto: "SCTP", allow: true},
		{from: "hufflepuff/cedric-diggory-1", to: "gryffindor/harry-potter-1", port: 9005, proto: "SCTP", allow: false},
	}},
	{name: "Should support an 'deny-gress' policy across different protocols", edit: swaps(swap{"gress-rules", false, 0, 1}, swap{"gress-rules", true, 0, 1}), probes: []probe{
		{from: "gryffindor/harry-potter-0", to: "ravenclaw/luna-lovegood-1", port: 80, allow: false},
		{from: "gryffindor/harry-potter-1", to: "ravenclaw/luna-lovegood-1", port: 53, proto: "UDP", allow: false},
		{from: "gryffindor/harry-potter-0", to: "ravenclaw/luna-lovegood-1", port: 9003, proto: "SCTP", allow: false},
		{from: "ravenclaw/luna-lovegood-0", to: "gryffindor/harry-potter-1", port: 80, allow: false},
		{from: "ravenclaw/luna-lovegood-1", to: "gryffindor/harry-potter-1", port: 53, proto: "UDP", allow: false},
		{from: "ravenclaw/luna-lovegood-1", to: "gryffindor/harry-potter-1", port: 9003, proto: "SCTP", allow: false},
	}},
	{name: "Should support a 'deny-gress' policy across different protocols at the specified ports", probes: []probe{
		{from: "gryffindor/harry-potter-0", to: "slytherin/draco-malfoy-0", port: 80, allow: false},
		{from: "gryffindor/harry-potter-1", to: "slytherin/draco-malfoy-0", port: 8080, allow: true},
		{from: "gryffindor/harry-potter-0", to: "slytherin/draco-malfoy-0", port: 53, proto: "UDP", allow: false},
		{from: "gryffindor/harry-potter-1", to: "slytherin/draco-malfoy-0", port: 5353, proto: "UDP", allow: true},
		{from: "gryffindor/harry-potter-0", to: "slytherin/draco-malfoy-0", port: 9003, proto: "SCTP", allow: false},
		{from: "gryffindor/harry-potter-1", to: "slytherin/draco-malfoy-0", port: 9005, proto: "SCTP", allow: true},
		{from: "slytherin/draco-malfoy-0", to: "gryffindor/harry-potter-0", port: 80, allow: false},
		{from: "slytherin/draco-malfoy-1", to: "gryffindor/harry-potter-0", port: 8080, allow: true},
		{from: "slytherin/draco-malfoy-0", to: "gryffindor/harry-potter-0", port: 53, proto: "UDP", allow: false},
		{from: "slytherin/draco-malfoy-1", to: "gryffindor/harry-potter-0", port: 5353, proto: "UDP", allow: true},
		{from: "slytherin/draco-malfoy-0", to: "gryffindor/harry-potter-0", port: 9003, proto: "SCTP", allow: false},
		{from: "slytherin/draco-malfoy-1", to: "gryffindor/harry-potter-0", port: 9005, proto: "SCTP", allow: true},
	}},
	{name: "Should support an 'pass-gress' policy across different protocols", edit: swaps(swap{"gress-rules", false, 0, 2}, swap{"gress-rules", true, 0, 2}), probes: []probe{
		{from: "gryffindor/harry-potter-0", to: "ravenclaw/luna-lovegood-0", port: 80, allow: true},
		{from: "gryffindor/harry-potter-0", to: "ravenclaw/luna-lovegood-0", port: 5353, proto: "UDP", allow: true},
		{from: "gryffindor/harry-potter-0", to: "ravenclaw/luna-lovegood-0", port: 9003, proto: "SCTP", allow: true},
		{from: "ravenclaw/luna-lovegood-0", to: "gryffindor/harry-potter-0", port: 80, allow: true},
		{from: "ravenclaw/luna-lovegood-1", to: "gryffindor/harry-potter-0", port: 53, proto: "UDP", allow: true},
		{from: "ravenclaw/luna-lovegood-1", to: "gryffindor/harry-potter-0", port: 9003, proto: "SCTP", allow: true},
	}},
	{name: "Should support a 'pass-gress' policy across different protocols at the specified ports", edit: swaps(swap{"gress-rules", false, 3, 4}, swap{"gress-rules", true, 3, 4}), probes: []probe{
		{from: "gryffindor/harry-potter-0", to: "slytherin/draco-malfoy-0", port: 80, allow: true},
		{from: "gryffindor/harry-potter-1", to: "slytherin/draco-malfoy-0", port: 8080, allow: true},
		{from: "gryffindor/harry-potter-0", to: "slytherin/draco-malfoy-0", port: 53, proto: "UDP", allow: true},
		{from: "gryffindor/harry-potter-1", to: "slytherin/draco-malfoy-0", port: 5353, proto: "UDP", allow: true},
		{from: "gryffindor/harry-potter-0", to: "slytherin/draco-malfoy-0", port: 9003, proto: "SCTP", allow: true},
		{from: "gryffindor/harry-potter-1", to: "slytherin/draco-malfoy-0", port: 9005, proto: "SCTP", allow: true},
		{from: "slytherin/draco-malfoy-0", to: "gryffindor/harry-potter-0", port: 80, allow: true},
		{from: "slytherin/draco-malfoy-1", to: "gryffindor/harry-potter-0", port: 8080, allow: true},
		{from: "slytherin/draco-malfoy-0", to: "gryffindor/harry-potter-0", port: 53, proto: "UDP", allow: true},
		{from: "slytherin/draco-malfoy-1", to: "gryffindor/harry-potter-0", port: 5353, proto: "UDP", allow: true},
		{from: "slytherin/draco-malfoy-0", to: "gryffindor/harry-potter-0", port: 9003, proto: "SCTP", allow: true},
		{from: "slytherin/draco-malfoy-1", to: "gryffindor/harry-potter-0", port: 9005, proto: "SCTP", allow: true},
	}},
}

var baselineGressSteps = []cnpE2EStep{
	{name: "Should support an 'allow-gress' policy across different protocols", probes: []probe{
		{from: "gryffindor/harry-potter-0", to: "ravenclaw/luna-lovegood-0", port: 80, allow: true},
		{from: "gryffindor/harry-potter-1", to: "ravenclaw/luna-lovegood-0", port: 53, proto: "UDP", allow: true},
		{from: "gryffindor/harry-potter-0", to: "ravenclaw/luna-lovegood-0", port: 9003, proto: "SCTP", allow: true},
		{from: "ravenclaw/luna-lovegood-0", to: "gryffindor/harry-potter-0", port: 80, allow: true},
		{from: "ravenclaw/luna-lovegood-1", to: "gryffindor/harry-potter-0", port: 53, proto: "UDP", allow: true},
		{from: "ravenclaw/luna-lovegood-1", to: "gryffindor/harry-potter-0", port: 9003, proto: "SCTP", allow: true},
	}},
	{name: "Should support an 'allow-gress' policy across different protocols at the specified ports", probes: []probe{
		{from: "gryffindor/harry-potter-0", to: "hufflepuff/cedric-diggory-1", port: 8080, allow: true},
		{from: "gryffindor/harry-potter-1", to: "hufflepuff/cedric-diggory-1", port: 80, allow: false},
		{from: "gryffindor/harry-potter-0", to: "hufflepuff/cedric-diggory-1", port: 5353, proto: "UDP", allow: true},
		{from: "gryffindor/harry-potter-1", to: "hufflepuff/cedric-diggory-1", port: 53, proto: "UDP", allow: false},
		{from: "gryffindor/harry-potter-0", to: "hufflepuff/cedric-diggory-1", port: 9003, proto: "SCTP", allow: true},
		{from: "gryffindor/harry-potter-1", to: "hufflepuff/cedric-diggory-1", port: 9005, proto: "SCTP", allow: false},
		{from: "hufflepuff/cedric-diggory-0", to: "gryffindor/harry-potter-1", port: 80, allow: true},
		{from: "hufflepuff/cedric-diggory-1", to: "gryffindor/harry-potter-1", port: 8080, allow: false},
		{from: "hufflepuff/cedric-diggory-0", to: "gryffindor/harry-potter-1", port: 5353, proto: "UDP", allow: true},
		{from: "hufflepuff/cedric-diggory-1", to: "gryffindor/harry-potter-1", port: 53, proto: "UDP", allow: false},
		{from: "hufflepuff/cedric-diggory-0", to: "gryffindor/harry-potter-1", port: 9003, proto: "SCTP", allow: true},
		{from: "hufflepuff/cedric-diggory-1", to: "gryffindor/harry-potter-1", port: 9005, proto: "SCTP", allow: false},
	}},
	{name: "Should support an 'deny-gress' policy across different protocols", edit: swaps(swap{"default", false, 0, 1}, swap{"default", true, 0, 1}), probes: []probe{
		{from: "gryffindor/harry-potter-0", to: "ravenclaw/luna-lovegood-1", port: 80, allow: false},
		{from: "gryffindor/harry-potter-1", to: "ravenclaw/luna-lovegood-1", port: 53, proto: "UDP", allow: false},
		{from: "gryffindor/harry-potter-0", to: "ravenclaw/luna-lovegood-1", port: 9003, proto: "SCTP", allow: false},
		{from: "ravenclaw/luna-lovegood-0", to: "gryffindor/harry-potter-1", port: 80, allow: false},
		{from: "ravenclaw/luna-lovegood-1", to: "gryffindor/harry-potter-1", port: 53, proto: "UDP", allow: false},
		{from: "ravenclaw/luna-lovegood-1", to: "gryffindor/harry-potter-1", port: 9003, proto: "SCTP", allow: false},
	}},
	{name: "Should support a 'deny-gress' policy across different protocols at the specified ports", probes: []probe{
		{from: "gryffindor/harry-potter-0", to: "slytherin/draco-malfoy-0", port: 80, allow: false},
		{from: "gryffindor/harry-potter-1", to: "slytherin/draco-malfoy-0", port: 8080, allow: true},
		{from: "gryffindor/harry-potter-0", to: "slytherin/draco-malfoy-0", port: 53, proto: "UDP", allow: false},
		{from: "gryffindor/harry-potter-1", to: "slytherin/draco-malfoy-0", port: 5353, proto: "UDP", allow: true},
		{from: "gryffindor/harry-potter-0", to: "slytherin/draco-malfoy-0", port: 9003, proto: "SCTP", allow: false},
		{from: "gryffindor/harry-potter-1", to: "slytherin/draco-malfoy-0", port: 9005, proto: "SCTP", allow: true},
		{from: "slytherin/draco-malfoy-0", to: "gryffindor/harry-potter-0", port: 80, allow: false},
		{from: "slytherin/draco-malfoy-1", to: "gryffindor/harry-potter-0", port: 8080, allow: true},
		{from: "slytherin/draco-malfoy-0", to: "gryffindor/harry-potter-0", port: 53, proto: "UDP", allow: false},
		{from: "slytherin/draco-malfoy-1", to: "gryffindor/harry-potter-0", port: 5353, proto: "UDP", allow: true},
		{from: "slytherin/draco-malfoy-0", to: "gryffindor/harry-potter-0", port: 9003, proto: "SCTP", allow: false},
		{from: "slytherin/draco-malfoy-1", to: "gryffindor/harry-potter-0", port: 9005, proto: "SCTP", allow: true},
	}},
}

// An agent started on manifests holding a ClusterNetworkPolicy the CRD would refuse (priority
// 1001) becomes ready with the files' other objects: the invalid policy is enforced
// fail-closed alone — it denies all ingress of its subject, which as written it would accept
// — a valid ClusterNetworkPolicy and a NetworkPolicy beside it apply, and pods none selects
// stay open. It is counted, logged with its field and named by `podwall explain`; fixed, it
// applies as written.
func TestStartWithInvalidClusterNetworkPolicy(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/client", "app/server", "app/other", "app/db")
	e.Serve(80)
	acceptServer := `
tier: Admin
priority: %d
subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {name: server}}}}
ingress: [{action: Accept, from: [{namespaces: {}}]}]
`
	base := []any{
		policytest.Namespace("app", nil),
		e.podObject("app/client", map[string]string{"name": "client"}),
		e.podObject("app/server", map[string]string{"name": "server"}),
		e.podObject("app/other", map[string]string{"name": "other"}),
		e.podObject("app/db", map[string]string{"name": "db"}),
		clusterPolicy(t, "deny-other", `
tier: Admin
priority: 20
subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {name: other}}}}
ingress: [{action: Deny, from: [{namespaces: {}}]}]
`),
		policytest.NetworkPolicy("app", "db", policytest.Selector("name", "db"), policytest.Ingress()),
	}
	with := func(cnp any) []any { return append(append([]any(nil), base...), cnp) }
	e.write(with(clusterPolicy(t, "bad", fmt.Sprintf(acceptServer, 1001)))...)
	e.start() // fails the test unless the agent becomes ready

	others := []probe{
		{from: "app/client", to: "app/other", port: 80, allow: false}, // deny-other
		{from: "app/client", to: "app/db", port: 80, allow: false},    // the NetworkPolicy
		{from: "app/other", to: "app/client", port: 80, allow: true},  // nothing selects client's ingress
		{from: "app/server", to: "app/client", port: 80, allow: true}, // bad has no egress rules
	}
	e.check(append(others,
		probe{from: "app/client", to: "app/server", port: 80, allow: false},
		probe{from: "app/client", to: "app/server", port: 80, proto: "UDP", allow: false})...)
	if n := e.metric("node-1", "podwall_policy_invalid", "kind", "ClusterNetworkPolicy", "name", "bad"); n != 1 {
		t.Errorf("podwall_policy_invalid{ClusterNetworkPolicy bad} = %v, want 1", n)
	}
	if logs := e.Agents["node-1"].Logs(); !strings.Contains(logs, "spec.priority") {
		t.Errorf("the rejection is not logged with its field:\n%s", logs)
	}
	out, err := exec.Command(binary, "explain", "--manifests", e.manifests,
		"--from", "app/client", "--to", "app/server", "--port", "80").CombinedOutput()
	if err != nil {
		t.Fatalf("podwall explain: %v\n%s", err, out)
	}
	for _, want := range []string{"cnp/bad", "invalid", "spec.priority", "cluster.yaml:"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("podwall explain does not say %q:\n%s", want, out)
		}
	}

	t.Run("fixed, it applies as written", func(t *testing.T) {
		e := e.sub(t)
		e.rewrite(with(clusterPolicy(t, "bad", fmt.Sprintf(acceptServer, 10)))...)
		e.check(append(others, probe{from: "app/client", to: "app/server", port: 80, allow: true})...)
		if n := e.metric("node-1", "podwall_policy_invalid", "kind", "ClusterNetworkPolicy"); n != 0 {
			t.Errorf("podwall_policy_invalid{ClusterNetworkPolicy} = %v after the fix, want no series", n)
		}
	})
}
