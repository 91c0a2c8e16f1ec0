package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// exampleWith returns a directory holding the seeds' 3-tier example and the extra files.
func exampleWith(t *testing.T, extra map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"cluster.yaml", "db-policy.yaml"} {
		b, err := os.ReadFile(filepath.Join(example, name))
		if err != nil {
			t.Fatal(err)
		}
		extra[name] = string(b)
	}
	for name, content := range extra {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// batchAnswers runs explain --batch and decodes its answers.
func batchAnswers(t *testing.T, dir, in string) (answers []map[string]any, stderr string) {
	t.Helper()
	out, stderr, err := runExplain(t, in, "--manifests", dir, "--batch")
	if err != nil {
		t.Fatalf("explain --batch: %v (stderr %q)", err, stderr)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var a map[string]any
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("bad output line %q: %v", sc.Text(), err)
		}
		answers = append(answers, a)
	}
	return answers, stderr
}

// An invalid policy in the manifests is judged as the agent judges it — fail-closed for
// the pods it selects, the rest applying — with exit status 0 and the rejection on stderr.
func TestExplainInvalidPolicyFailsClosed(t *testing.T) {
	dir := exampleWith(t, map[string]string{"bad.yaml": `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: prod}
spec:
  podSelector: {matchLabels: {role: web}}
  ingress:
  - from:
    - ipBlock: {cidr: 010.0.0.0/8}
`})
	answers, stderr := batchAnswers(t, dir, `{"from":"prod/api","to":"prod/web","port":80,"protocol":"TCP"}
{"from":"prod/api","to":"prod/db","port":3306,"protocol":"TCP"}
{"from":"prod/web","to":"prod/db","port":3306,"protocol":"TCP"}
{"from":"prod/web","to":"prod/api","port":5000,"protocol":"TCP"}
`)
	want := []string{"deny", "allow", "deny", "allow"}
	if len(answers) != len(want) {
		t.Fatalf("got %d answers, want %d: %v", len(answers), len(want), answers)
	}
	for i, w := range want {
		if answers[i]["verdict"] != w {
			t.Errorf("answer %d: %v, want %s", i, answers[i], w)
		}
	}
	reason, _ := answers[0]["reason"].(string)
	for _, s := range []string{"policy prod/bad is invalid (spec.ingress[0].from[0].ipBlock.cidr", "isolates, allows nothing"} {
		if !strings.Contains(reason, s) {
			t.Errorf("reason %q lacks %q", reason, s)
		}
	}
	for _, s := range []string{"warning", filepath.Join(dir, "bad.yaml") + ":1: NetworkPolicy prod/bad", "spec.ingress[0].from[0].ipBlock.cidr", `"010.0.0.0/8"`} {
		if !strings.Contains(stderr, s) {
			t.Errorf("stderr %q lacks %q", stderr, s)
		}
	}

	// Text output names it too.
	out, _, err := runExplain(t, "", "--manifests", dir, "--from", "prod/api", "--to", "prod/web", "--port", "80")
	if err != nil || !strings.Contains(out, "DENY") || !strings.Contains(out, "policy prod/bad is invalid") {
		t.Errorf("text explain: %v\n%s", err, out)
	}
}

// Two pods claiming the database's address: the one that sorts first is selected by no
// policy, yet the address keeps the database's isolation, and the reason names both.
func TestExplainDuplicateAddressResolvesRestrictively(t *testing.T) {
	dir := exampleWith(t, map[string]string{"twin.yaml": `apiVersion: v1
kind: Pod
metadata: {name: aaa-twin, namespace: prod}
spec: {nodeName: node-1}
status: {phase: Running, podIP: 10.244.1.12}
`})
	answers, stderr := batchAnswers(t, dir, `{"from":"prod/web","to":"10.244.1.12","port":3306,"protocol":"TCP"}
{"from":"prod/api","to":"10.244.1.12","port":3306,"protocol":"TCP"}
`)
	if len(answers) != 2 || answers[0]["verdict"] != "deny" || answers[1]["verdict"] != "allow" {
		t.Fatalf("answers %v: want web denied and api allowed to the shared address", answers)
	}
	reason, _ := answers[0]["reason"].(string)
	if !strings.Contains(reason, "prod/aaa-twin, prod/db") {
		t.Errorf("reason %q does not name both pods", reason)
	}
	if !strings.Contains(stderr, "10.244.1.12 (claimed by prod/aaa-twin, prod/db)") {
		t.Errorf("stderr %q does not report the conflict", stderr)
	}
}
