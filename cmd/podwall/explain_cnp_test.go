package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podwall/podwall/policy/explain"
)

// clusterPolicies are the README's two examples plus a node rule, on the seeds' 3-tier app:
// the Admin tier protects monitoring (only prometheus) and passes DNS to NetworkPolicy; a
// Baseline default deny that namespaces open with NetworkPolicy (prod's db-policy does);
// web may not reach its node's kubelet.
const clusterPolicies = `apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
---
apiVersion: v1
kind: Pod
metadata: {name: prometheus, namespace: monitoring, labels: {app: prometheus}}
spec: {nodeName: node-1, containers: [{name: p, image: prom}]}
status: {phase: Running, podIP: 10.244.1.20, podIPs: [{ip: 10.244.1.20}, {ip: "fd00:10:244:1::20"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: grafana, namespace: monitoring, labels: {app: grafana}}
spec: {nodeName: node-1, containers: [{name: g, image: grafana}]}
status: {phase: Running, podIP: 10.244.1.21}
---
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {kubernetes.io/os: linux}}
status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: protect-monitoring}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}
  ingress:
  - name: from-prometheus
    action: Accept
    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: prometheus}}}}]
  - name: nobody-else
    action: Deny
    from: [{namespaces: {}}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: dns-to-networkpolicy}
spec:
  tier: Admin
  priority: 20
  subject: {namespaces: {}}
  ingress:
  - {name: dns, action: Pass, from: [{namespaces: {}}], protocols: [{udp: {destinationPort: {number: 53}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: no-kubelet-from-web}
spec:
  tier: Admin
  priority: 30
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: web}}}}
  egress:
  - {action: Deny, to: [{nodes: {}}], protocols: [{tcp: {destinationPort: {number: 10250}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: default-deny}
spec:
  tier: Baseline
  priority: 100
  subject: {namespaces: {}}
  ingress:
  - {action: Deny, from: [{namespaces: {}}]}
`

// podwall explain answers over manifests holding ClusterNetworkPolicies: verdicts of every
// tier, reasons naming tier, policy, rule and action, Pass steps, in --batch, -o json, text
// and --matrix; a pod endpoint takes the family of an address on the other side.
func TestExplainClusterNetworkPolicies(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"cluster.yaml", "db-policy.yaml"} {
		b, err := os.ReadFile(filepath.Join(example, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "cnp.yaml"), []byte(clusterPolicies), 0o644); err != nil {
		t.Fatal(err)
	}
	type want struct {
		verdict, code, tier, reason string
	}
	cases := []struct {
		q       string
		ingress want
		egress  *want
	}{
		{`{"from":"monitoring/prometheus","to":"monitoring/grafana","port":3000}`,
			want{"allow", "cluster-accepted", "Admin", `accepted by cnp/protect-monitoring rule 0 ("from-prometheus", Admin priority 10)`}, nil},
		{`{"from":"prod/web","to":"monitoring/grafana","port":3000}`,
			want{"deny", "cluster-denied", "Admin", `denied by cnp/protect-monitoring rule 1 ("nobody-else", Admin priority 10)`}, nil},
		{`{"from":"prod/web","to":"prod/api","port":5000}`, // no NetworkPolicy isolates api: the Baseline decides
			want{"deny", "cluster-denied", "Baseline", `denied by cnp/default-deny rule 0 (Baseline priority 100)`}, nil},
		{`{"from":"prod/api","to":"prod/db","port":3306}`, // db is isolated: NetworkPolicy decides, the Baseline is not reached
			want{"allow", "allowed", "", "ingress of prod/db allowed by prod/db-policy rule 0"}, nil},
		{`{"from":"prod/web","to":"prod/db","port":53,"protocol":"UDP"}`,
			want{"deny", "no-rule-allows", "NetworkPolicy", `cnp/dns-to-networkpolicy rule 0 ("dns", Admin priority 20) Pass → prod/db is isolated for ingress by db-policy`}, nil},
		{`{"from":"prod/web","to":"prod/api","port":53,"protocol":"UDP"}`,
			want{"deny", "cluster-denied", "Baseline", `cnp/dns-to-networkpolicy rule 0 ("dns", Admin priority 20) Pass → ingress of prod/api UDP/53 from prod/web denied by cnp/default-deny rule 0`}, nil},
		{`{"from":"prod/web","to":"172.18.0.2","port":10250}`, // its own node, cut by the Admin tier
			want{"allow", "no-pod", "", "not a pod"}, &want{"deny", "cluster-denied", "Admin", "egress of prod/web TCP/10250 to node node-1 (172.18.0.2) denied by cnp/no-kubelet-from-web rule 0"}},
		{`{"from":"fd00:10:244:1::99","to":"monitoring/prometheus","port":9090}`, // namespaces peers are pods: an address matches none
			want{"allow", "not-isolated", "", "monitoring/prometheus is not isolated for ingress"}, nil},
	}
	var in strings.Builder
	for _, c := range cases {
		in.WriteString(c.q + "\n")
	}
	in.WriteString(`{"from":"monitoring/grafana","to":"fd00:10:244:1::10","port":80}` + "\n") // grafana has no IPv6 address
	out, stderr, err := runExplain(t, in.String(), "--manifests", dir, "--batch")
	if err == nil {
		t.Error("a bad query, exit status 0")
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	var answers []explain.Answer
	for sc.Scan() {
		var a explain.Answer
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("bad line %q: %v", sc.Text(), err)
		}
		answers = append(answers, a)
	}
	if len(answers) != len(cases)+1 {
		t.Fatalf("%d answers to %d queries:\n%s\n%s", len(answers), len(cases)+1, out, stderr)
	}
	check := func(i int, dir string, j *explain.Judgement, w want) {
		if j == nil || j.Verdict != w.verdict || j.Code != w.code || j.Tier != w.tier || !strings.Contains(j.Reason, w.reason) {
			t.Errorf("%s: %s %+v, want %+v", cases[i].q, dir, j, w)
		}
	}
	for i, c := range cases {
		check(i, "ingress", answers[i].Ingress, c.ingress)
		if c.egress != nil {
			check(i, "egress", answers[i].Egress, *c.egress)
		}
	}
	if a := answers[5]; a.Ingress == nil || len(a.Ingress.Cluster) != 2 || a.Ingress.Cluster[0].Action != "Pass" || a.Ingress.Cluster[1].Policy != "cnp/default-deny" {
		t.Errorf("the Pass step and the Baseline Deny are not both in cluster: %+v", a.Ingress)
	}
	if a := answers[7]; a.Dst != "fd00:10:244:1::20" { // from an IPv6 address: prometheus's IPv6 address
		t.Errorf("to monitoring/prometheus from an IPv6 address: dst %q, want fd00:10:244:1::20", a.Dst)
	}
	if a := answers[len(cases)]; !strings.Contains(a.Error, "no IP family in common") {
		t.Errorf("grafana (IPv4 only) to an IPv6 address: %+v, want no common family", a)
	}

	// Text and matrix show the same verdicts.
	text, _, err := runExplain(t, "", "--manifests", dir, "--from", "prod/web", "--to", "prod/api", "--port", "53", "--protocol", "UDP")
	if err != nil || !strings.Contains(text, "DENY") || !strings.Contains(text, "Pass → ingress of prod/api UDP/53 from prod/web denied by cnp/default-deny") {
		t.Errorf("text: %v\n%s", err, text)
	}
	matrix, _, err := runExplain(t, "", "--manifests", dir, "--matrix", "--ports", "3000/TCP")
	if err != nil || !strings.Contains(matrix, "monitoring/grafana") {
		t.Errorf("matrix: %v\n%s", err, matrix)
	}
}
