package e2e

import (
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	"sigs.k8s.io/network-policy-api/conformance"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/policy/policytest"
)

// The houses of the upstream conformance fixtures (conformance/base/manifests.yaml), two pods
// each, NAME-0 on node-1 and NAME-1 on node-2, labelled conformance-house=<house>. The lab
// names namespaces by the house alone (network namespaces and interfaces have short names);
// the policies select by label, as upstream's do.
var houses = map[string]string{"gryffindor": "harry-potter", "slytherin": "draco-malfoy", "hufflepuff": "cedric-diggory"}

// conformanceObjects reads the policies of one upstream fixture, ClusterNetworkPolicies as
// v1alpha2 (upstream writes v1beta1, the same schema) and NetworkPolicies moved from
// network-policy-conformance-<house> to <house>.
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
			np.Namespace = strings.TrimPrefix(np.Namespace, "network-policy-conformance-")
			nps = append(nps, np)
		}
	}
	return cnps, nps
}

// CNPAdminTierIntegration of the upstream suite on real packets, TCP and UDP, IPv4 and IPv6,
// on two nodes: an Admin Deny overrides the NetworkPolicy that allows gryffindor ↔ slytherin;
// each Pass edit, applied live, hands a direction to the NetworkPolicy; with the
// NetworkPolicy deleted the Baseline Deny decides. Hufflepuff, which no ClusterNetworkPolicy
// names, is judged by the NetworkPolicy alone.
func TestClusterNetworkPolicyIntegration(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddNode("node-2", 2)
	var objs []any
	for house, sts := range houses {
		e.AddPods("node-1", house+"/"+sts+"-0")
		e.AddPods("node-2", house+"/"+sts+"-1")
		objs = append(objs, policytest.Namespace(house, map[string]string{"conformance-house": house}))
		for _, i := range []string{"-0", "-1"} {
			objs = append(objs, e.podObject(house+"/"+sts+i, map[string]string{"conformance-house": house}))
		}
	}
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
	e.Serve(80, 8080, 53)
	e.write(state()...)
	e.start()

	const (
		g0, g1 = "gryffindor/harry-potter-0", "gryffindor/harry-potter-1"
		s0, s1 = "slytherin/draco-malfoy-0", "slytherin/draco-malfoy-1"
		h0, h1 = "hufflepuff/cedric-diggory-0", "hufflepuff/cedric-diggory-1"
	)
	// into lists the probes slytherin → gryffindor, out gryffindor → slytherin, and control
	// hufflepuff ↔ gryffindor, on TCP 80 and 8080 and UDP 53, same node and across nodes.
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
	t.Run("Should support a 'pass-ingress' policy for admin CNP and respect the match for baseline cluster network policy", func(t *testing.T) {
		edit(func() { nps = nil })
		e.sub(t).check(probes(false, false)...)
	})
}
