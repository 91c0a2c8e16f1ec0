package manifests

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/podwall/podwall/policy"
)

// ClusterNetworkPolicies and Nodes load from files, alone or in Lists.
func TestLoadClusterNetworkPolicies(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"cnp.yaml": `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: protect-monitoring}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}
  ingress:
  - {name: prometheus-only, action: Deny, from: [{namespaces: {}}]}
  egress:
  - {action: Deny, to: [{domainNames: ["*.example.com"]}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicyList
items:
- metadata: {name: default-deny}
  spec: {tier: Baseline, priority: 1000, subject: {namespaces: {}}, ingress: [{action: Deny, from: [{namespaces: {}}]}]}
`,
		"nodes.yaml": `apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {zone: a}}
status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}
`,
	})
	st := mustLoad(t, dir)
	var names []string
	for _, c := range st.ClusterPolicies {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, ","); got != "protect-monitoring,default-deny" {
		t.Errorf("ClusterPolicies %s, want protect-monitoring,default-deny", got)
	}
	if len(st.Nodes) != 1 || st.Nodes[0].Labels["zone"] != "a" || st.Nodes[0].IPs[0].String() != "172.18.0.2" {
		t.Errorf("Nodes %+v, want node-1 (zone a, 172.18.0.2)", st.Nodes)
	}
	snap, err := policy.Compile(st)
	if err != nil {
		t.Fatal(err)
	}
	// domainNames is not an error: it is enforced fail-closed and reported.
	if p := snap.ClusterProblems(); len(p) != 1 || !strings.Contains(p[0], "domainNames: not supported") {
		t.Errorf("ClusterProblems %q, want the domainNames rule reported", p)
	}
}

// An invalid ClusterNetworkPolicy refuses the load, naming file, object and field.
func TestLoadClusterNetworkPolicyErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"priority out of range", `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: p}
spec: {tier: Admin, priority: 1001, subject: {namespaces: {}}}
`, []string{"cnp.yaml:1: ClusterNetworkPolicy p: spec.priority: Invalid value: 1001: must be between 0 and 1000"}},
		{"unknown tier", `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: t}
spec: {tier: Platform, priority: 1, subject: {namespaces: {}}}
`, []string{"cnp.yaml:1: ClusterNetworkPolicy t: spec.tier: Unsupported value: \"Platform\""}},
		{"not a masked network", `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: net}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {}}
  egress: [{action: Deny, to: [{networks: ["10.0.0.1/8"]}]}]
`, []string{"cnp.yaml:1: ClusterNetworkPolicy net: spec.egress[0].to[0].networks[0]: Invalid value: \"10.0.0.1/8\""}},
		{"unknown field", `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: u}
spec: {tier: Admin, priority: 1, subject: {namespaces: {}}, egres: []}
`, []string{"cnp.yaml:1: ClusterNetworkPolicy u", `unknown field "spec.egres"`}},
		{"namespaced", `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: x, namespace: prod}
spec: {tier: Admin, priority: 1, subject: {namespaces: {}}}
`, []string{"ClusterNetworkPolicy prod/x", "metadata.namespace: Forbidden"}},
		{"the conformance suite's apiVersion", `apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: b}
spec: {tier: Admin, priority: 1, subject: {namespaces: {}}}
`, []string{`apiVersion: Unsupported value: "policy.networking.k8s.io/v1beta1"`, `"policy.networking.k8s.io/v1alpha2"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"cnp.yaml": tc.doc})
			st, err := Load(dir)
			if err == nil {
				t.Fatalf("Load succeeded with %d ClusterPolicies, want an error", len(st.ClusterPolicies))
			}
			if !strings.HasPrefix(err.Error(), filepath.Join(dir, "cnp.yaml")) {
				t.Errorf("error %q does not start with the file", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
