package manifests

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/explain"
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

// A ClusterNetworkPolicy that decodes but fails the CRD's validation is rejected alone, as
// the API path rejects it: a Problem naming file:line, the object and the field; the policy
// is in the State, and the compiler enforces it fail-closed (it denies all of its subject's
// traffic in the directions it has rules for), while the files' other objects apply.
func TestLoadInvalidClusterNetworkPolicyAlone(t *testing.T) {
	const objects = `apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: prod}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: dev}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: dev, labels: {app: api}}
status: {podIP: 10.0.0.3}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-deny, namespace: dev}
spec: {podSelector: {matchLabels: {app: api}}, policyTypes: [Ingress]}
---
`
	for _, tc := range []struct {
		name, doc string
		line      int
		namespace string
		want      string // in the Problem's fields
	}{
		{"priority out of range", `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: p}
spec:
  tier: Admin
  priority: 1001
  subject: {namespaces: {matchLabels: {team: a}}}
  ingress: [{action: Accept, from: [{namespaces: {}}]}]
`, 29, "", "spec.priority: Invalid value: 1001: must be between 0 and 1000"},
		{"unknown tier", `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: t}
spec:
  tier: Platform
  priority: 1
  subject: {namespaces: {matchLabels: {team: a}}}
  ingress: [{action: Accept, from: [{namespaces: {}}]}]
`, 29, "", `spec.tier: Unsupported value: "Platform"`},
		{"not a masked network", `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: net}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {matchLabels: {team: a}}}
  ingress: [{action: Accept, from: [{namespaces: {}}]}]
  egress: [{action: Accept, to: [{networks: ["10.0.0.1/8"]}]}]
`, 29, "", `spec.egress[0].to[0].networks[0]: Invalid value: "10.0.0.1/8"`},
		{"namespaced", `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: x, namespace: prod}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {matchLabels: {team: a}}}
  ingress: [{action: Accept, from: [{namespaces: {}}]}]
`, 29, "prod", "metadata.namespace: Forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"all.yaml": objects + tc.doc})
			st, err := Load(dir)
			if err != nil {
				t.Fatalf("Load: %v; want the policy rejected alone", err)
			}
			if len(st.Problems) != 1 {
				t.Fatalf("problems %v, want 1", st.Problems)
			}
			p := st.Problems[0]
			if p.Kind != policy.KindClusterNetworkPolicy || p.Namespace != tc.namespace || p.Where != fmt.Sprintf("%s:%d", filepath.Join(dir, "all.yaml"), tc.line) {
				t.Errorf("problem names %s at %s, want the ClusterNetworkPolicy at all.yaml:%d", p.Object(), p.Where, tc.line)
			}
			if !strings.Contains(p.Fields(), tc.want) {
				t.Errorf("problem %q does not say %q", p, tc.want)
			}
			if !strings.Contains(p.String(), "enforced fail-closed") {
				t.Errorf("problem %q does not say what podwall does with it", p)
			}
			if len(st.ClusterPolicies) != 1 || len(st.Policies) != 1 || len(st.Pods) != 3 || len(st.Namespaces) != 2 {
				t.Fatalf("state: %d ClusterPolicies, %d Policies, %d Pods, %d Namespaces; want 1, 1, 3, 2",
					len(st.ClusterPolicies), len(st.Policies), len(st.Pods), len(st.Namespaces))
			}
			snap, err := policy.Compile(st)
			if err != nil {
				t.Fatal(err)
			}
			// Read as written, each policy accepts every ingress of prod's pods; enforced
			// fail-closed it denies it, and its egress (no egress rules, bar "net"'s) stays open.
			// The NetworkPolicy beside it still applies.
			for _, c := range []struct {
				from, to, verdict, reason string
			}{
				{"dev/web", "prod/db", "deny", "cnp/"},
				{"prod/db", "dev/web", "allow", ""},
				{"dev/web", "dev/api", "deny", "isolated for ingress by api-deny"},
			} {
				if tc.name == "not a masked network" && c.from == "prod/db" {
					c.verdict, c.reason = "deny", "cnp/"
				}
				a := explain.Judge(snap, explain.Query{From: c.from, To: c.to, Port: "80"})
				if a.Error != "" || a.Verdict != c.verdict || !strings.Contains(a.Reason, c.reason) {
					t.Errorf("%s -> %s: %s %q (error %q), want %s naming %q", c.from, c.to, a.Verdict, a.Reason, a.Error, c.verdict, c.reason)
				}
			}
			if cp := snap.ClusterProblems(); len(cp) != 1 || !strings.Contains(cp[0], "enforced fail-closed") {
				t.Errorf("ClusterProblems %q, want the invalid policy reported", cp)
			}
		})
	}
}

// A ClusterNetworkPolicy that does not decode (an unknown or misspelt field, a value of the
// wrong type), one of an apiVersion podwall does not read, or one without a name refuses
// the load, naming file, object and field: what it protects cannot be known.
func TestLoadClusterNetworkPolicyErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"unknown field", `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: u}
spec: {tier: Admin, priority: 1, subject: {namespaces: {}}, egres: []}
`, []string{"cnp.yaml:1: ClusterNetworkPolicy u", `unknown field "spec.egres"`}},
		{"misspelt subject field", `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: s}
spec: {tier: Admin, priority: 1, subject: {namespace: {matchLabels: {team: a}}}, ingress: [{action: Deny, from: [{namespaces: {}}]}]}
`, []string{"cnp.yaml:1: ClusterNetworkPolicy s", `unknown field "spec.subject.namespace"`}},
		{"wrong type", `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: w}
spec: {tier: Admin, priority: high, subject: {namespaces: {}}}
`, []string{"cnp.yaml:1: ClusterNetworkPolicy w", "priority"}},
		{"no name", `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {}
spec: {tier: Admin, priority: 1, subject: {namespaces: {}}}
`, []string{"cnp.yaml:1: document 1 (ClusterNetworkPolicy)", "metadata.name: Required value"}},
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
