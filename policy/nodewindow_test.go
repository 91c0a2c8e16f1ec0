package policy

import (
	"testing"

	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
)

// A pod the policy does not know yet is held at its node's input or output hook only in a
// direction some ClusterNetworkPolicy could deny between a pod and its node — whatever that
// policy's subject, since the new pod's labels are not known — and in no direction when no
// rule can match a node address.
func TestNodeWindow(t *testing.T) {
	for _, tc := range []struct {
		name            string
		cnps            []*cnpv1alpha2.ClusterNetworkPolicy
		ingress, egress bool
	}{
		{"no ClusterNetworkPolicy", nil, false, false},
		{"pods and namespaces peers only", []*cnpv1alpha2.ClusterNetworkPolicy{cnp("pods-only", `
tier: Admin
priority: 1
subject: {namespaces: {}}
egress: [{action: Deny, to: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}]}]
ingress: [{action: Deny, from: [{namespaces: {matchLabels: {tenant: bar}}}]}]
`)}, false, false},
		{"egress Deny to nodes, of a subject no pod has", []*cnpv1alpha2.ClusterNetworkPolicy{cnp("deny-nodes", `
tier: Admin
priority: 1
subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: nobody-yet}}}}
egress: [{action: Deny, to: [{nodes: {}}]}]
`)}, false, true},
		{"Baseline egress Deny to a network", []*cnpv1alpha2.ClusterNetworkPolicy{cnp("no-internet", `
tier: Baseline
priority: 1
subject: {namespaces: {}}
egress: [{action: Deny, to: [{networks: ["0.0.0.0/0"]}]}]
`)}, false, true},
		{"ingress Deny enforced fail-closed", []*cnpv1alpha2.ClusterNetworkPolicy{cnp("fail-closed", `
tier: Admin
priority: 1
subject: {namespaces: {}}
ingress: [{action: Deny, from: []}]
`)}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := compileWorld(t, cnpCluster(nil, tc.cnps...))
			if in, eg := w.snap.NodeWindow(); in != tc.ingress || eg != tc.egress {
				t.Errorf("NodeWindow() = ingress %v, egress %v; want %v, %v", in, eg, tc.ingress, tc.egress)
			}
		})
	}
}
