package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/podwall/podwall/policy/explain"
)

// stagedDenyAll is a staged deny-all for namespace prod (SPEC §2c).
const stagedDenyAll = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
  namespace: prod
  annotations:
    podwall.io/staged: "true"
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
`

// stagedDBPolicy is a staged db-policy that also admits web on TCP 3306: it replaces the
// enforced db-policy of the same name in the staged verdict.
const stagedDBPolicy = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: db-policy
  namespace: prod
  annotations:
    podwall.io/staged: "true"
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels:
          name: api-pod
    - podSelector:
        matchLabels:
          role: web
    ports:
    - protocol: TCP
      port: 3306
`

// threeTierWith copies the 3-tier example into a directory with extra manifests.
func threeTierWith(t *testing.T, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"cluster.yaml", "db-policy.yaml"} {
		b, err := os.ReadFile(filepath.Join(example, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, m := range extra {
		if err := os.WriteFile(filepath.Join(dir, "staged"+string(rune('a'+i))+".yaml"), []byte(m), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func explainJSON(t *testing.T, dir string, args ...string) explain.Answer {
	t.Helper()
	out, _, err := runExplain(t, "", append([]string{"--manifests", dir, "-o", "json"}, args...)...)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	var a explain.Answer
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	return a
}

// A staged deny-all in prod is not enforced: web reaches api. The answer carries the staged
// verdict, deny, naming the staged policy; without staged policies there is no "staged".
func TestExplainStagedDenyAll(t *testing.T) {
	dir := threeTierWith(t, stagedDenyAll)
	a := explainJSON(t, dir, "--from", "prod/web", "--to", "prod/api", "--port", "5000")
	if a.Verdict != "allow" {
		t.Errorf("enforced verdict %q (%s), want allow: a staged policy is not enforced", a.Verdict, a.Reason)
	}
	if a.Staged == nil {
		t.Fatal("no staged verdict with a staged policy present")
	}
	if a.Staged.Verdict != "deny" || !slices.Contains(a.Staged.Policies, "prod/deny-all") || !strings.Contains(a.Staged.Reason, "deny-all") {
		t.Errorf("staged %+v, want deny naming prod/deny-all", *a.Staged)
	}
	// Every answer carries it, also one the staged policies do not change.
	a = explainJSON(t, dir, "--from", "192.0.2.10", "--to", "192.0.2.11", "--port", "80")
	if a.Staged == nil || a.Staged.Verdict != "allow" {
		t.Errorf("staged %+v on an unchanged flow, want allow", a.Staged)
	}
	// The text output has a staged line.
	text, _, err := runExplain(t, "", "--manifests", dir, "--from", "prod/web", "--to", "prod/api", "--port", "5000")
	if err != nil || !strings.Contains(text, "staged") || !strings.Contains(text, "prod/deny-all") {
		t.Errorf("text: err %v\n%s", err, text)
	}

	raw, _, err := runExplain(t, "", "--manifests", example, "--from", "prod/web", "--to", "prod/api", "--port", "5000", "-o", "json")
	if err != nil || strings.Contains(raw, `"staged"`) {
		t.Errorf("without staged policies: err %v, %s", err, raw)
	}
}

// --batch answers carry "staged" too, with exactly the documented field names.
func TestExplainStagedBatch(t *testing.T) {
	dir := threeTierWith(t, stagedDenyAll)
	out, _, err := runExplain(t, `{"from":"prod/api","to":"prod/db","port":3306}`+"\n", "--manifests", dir, "--batch")
	if err != nil {
		t.Fatal(err)
	}
	var line struct {
		Verdict string         `json:"verdict"`
		Staged  map[string]any `json:"staged"`
	}
	if err := json.Unmarshal([]byte(out), &line); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if line.Verdict != "allow" || line.Staged["verdict"] != "deny" || line.Staged["reason"] == "" {
		t.Errorf("got %s", out)
	}
	if pols, _ := line.Staged["policies"].([]any); !slices.Contains(pols, any("prod/deny-all")) {
		t.Errorf("staged policies %v lack prod/deny-all", line.Staged["policies"])
	}
}

// A staged object of the kind, namespace and name of an enforced one replaces it in the
// staged verdict; the enforced verdict keeps the enforced object.
func TestExplainStagedReplaces(t *testing.T) {
	dir := threeTierWith(t, stagedDBPolicy)
	a := explainJSON(t, dir, "--from", "prod/web", "--to", "prod/db", "--port", "3306")
	if a.Verdict != "deny" {
		t.Errorf("enforced verdict %q, want deny (the enforced db-policy admits only api)", a.Verdict)
	}
	if a.Staged == nil || a.Staged.Verdict != "allow" || !slices.Contains(a.Staged.Policies, "prod/db-policy") {
		t.Errorf("staged %+v, want allow by prod/db-policy", a.Staged)
	}
	// Both still admit api.
	a = explainJSON(t, dir, "--from", "prod/api", "--to", "prod/db", "--port", "3306")
	if a.Verdict != "allow" || a.Staged == nil || a.Staged.Verdict != "allow" {
		t.Errorf("api -> db: verdict %q, staged %+v", a.Verdict, a.Staged)
	}
}

// what-if judges the policy in force without its staged policies: promoting a staged
// deny-all (proposing it without the annotation) lists the flows it would deny.
func TestWhatifPromotesStaged(t *testing.T) {
	dir := threeTierWith(t, stagedDenyAll)
	promoted := filepath.Join(t.TempDir(), "deny-all.yaml")
	if err := os.WriteFile(promoted, []byte(strings.Replace(stagedDenyAll, `podwall.io/staged: "true"`, `podwall.io/staged: "false"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runWhatif(t, "--proposed", promoted, "--flows", flowsFile(t), "--manifests", dir)
	wantStatus(t, err, exitNewlyDenied)
	if !strings.Contains(out, "Newly denied by prod/deny-all") {
		t.Errorf("output:\n%s", out)
	}
}

// --matrix prints the enforced table, then the one with the staged policies; -o json
// answers carry "staged".
func TestExplainStagedMatrix(t *testing.T) {
	dir := threeTierWith(t, stagedDenyAll)
	out, _, err := runExplain(t, "", "--manifests", dir, "--matrix", "--ports", "5000/TCP")
	if err != nil {
		t.Fatal(err)
	}
	enforced, staged, ok := strings.Cut(out, "With the staged policies")
	if !ok || !strings.Contains(staged, "pairs denied") {
		t.Fatalf("no staged table:\n%s", out)
	}
	// In force db-policy denies TCP/5000 to db; staged, every pair of prod but a pod to
	// itself.
	if !strings.Contains(enforced, "2 of 9 pairs denied") || !strings.Contains(staged, "6 of 9 pairs denied") {
		t.Errorf("matrix:\n%s", out)
	}
	js, _, err := runExplain(t, "", "--manifests", dir, "--matrix", "--ports", "5000/TCP", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(js), "\n") {
		var a explain.Answer
		if err := json.Unmarshal([]byte(l), &a); err != nil || a.Staged == nil {
			t.Errorf("line %s: err %v, no staged", l, err)
		}
	}
}
