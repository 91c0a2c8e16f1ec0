package kube

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/e2e/cluster"
	"github.com/podwall/podwall/policy/policytest"
)

// One bad policy never freezes enforcement (README "Reliability"). `cidr: 010.0.0.0/8` is
// accepted by the API server (unless its StrictIPCIDRValidation gate is on) and refused by
// podwall. Created through the API before the agent starts, it must not keep the agent
// from becoming ready; it isolates the pods it selects and allows nothing; and a pod and a
// deny policy created afterwards elsewhere are enforced.
//
//	node-3: prod/web (selected by the bad policy), prod/api, prod/db, other/late (created late)
//
// The lab's node index (3) gives the pods addresses TestClusterEnforcement does not use (the
// API server is shared; see newEnv).
func TestClusterInvalidPolicyIsolatesAlone(t *testing.T) {
	needRoot(t)
	c := cluster.Shared(t)
	token := installRBAC(t, c)
	e := newEnv(t, c)
	e.AddNode("node-3", 3)
	e.AddPods("node-3", "prod/web", "prod/api", "prod/db", "other/late")
	e.Serve(80, 3306)

	e.createNamespace("prod", nil)
	e.createNamespace("other", nil)
	e.createPod("prod/web", map[string]string{"role": "web"}, true)
	e.createPod("prod/api", map[string]string{"role": "api", "name": "api-pod"}, true)
	e.createPod("prod/db", map[string]string{"role": "db"}, true)
	bad := policytest.NetworkPolicy("prod", "bad", policytest.Selector("role", "web"),
		policytest.Ingress(policytest.From(policytest.CIDR("010.0.0.0/8"), policytest.Port("80/TCP"))))
	e.applyPolicy(bad) // the API server takes it (with a warning)
	e.start(token)     // fails the test unless the agent becomes ready

	// The bad policy isolates web for ingress and allows nothing; the rest is open.
	e.check(
		probe{"prod/api", "prod/web", 80, false},
		probe{"prod/db", "prod/web", 80, false},
		probe{"prod/web", "prod/api", 80, true}, // it names no egress
		probe{"prod/web", "prod/db", 3306, true},
	)
	m, err := e.Metrics("node-3")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := m.Value("podwall_policy_invalid", "kind", "NetworkPolicy", "name", "bad", "namespace", e.ns("prod")); !ok || v != 1 {
		t.Errorf("podwall_policy_invalid{prod/bad} = %v (%v), want 1", v, ok)
	}

	// Later changes anywhere apply: a deny policy in the bad one's namespace, a new pod and
	// a deny policy for it in another.
	const enforce = 10 * time.Second
	e.applyPolicy(dbPolicy(3306))
	e.createPod("other/late", map[string]string{"app": "late"}, true)
	e.applyPolicy(policytest.NetworkPolicy("other", "deny-late", policytest.Selector("app", "late"),
		policytest.Types(networkingv1.PolicyTypeIngress)))
	e.await("db-policy and deny-late beside the bad policy", enforce,
		probe{"prod/api", "prod/db", 3306, true},
		probe{"prod/web", "prod/db", 3306, false},
		probe{"prod/api", "other/late", 80, false},
		probe{"prod/api", "prod/web", 80, false})
	code, body, err := e.Agents["node-3"].Get(t.Context(), "/readyz")
	if err != nil || code != 200 {
		t.Errorf("/readyz %d %q %v: want ready", code, body, err)
	}

	// explain --kubeconfig judges the same way: exit 0, the rejection a warning on stderr.
	cmd := exec.Command(binary, "explain", "--kubeconfig", c.Kubeconfig, "--batch")
	webQ, _ := json.Marshal(map[string]any{"from": e.ns("prod") + "/api", "to": e.ns("prod") + "/web", "port": 80})
	dbQ, _ := json.Marshal(map[string]any{"from": e.ns("prod") + "/api", "to": e.ns("prod") + "/db", "port": 3306})
	cmd.Stdin = strings.NewReader(string(webQ) + "\n" + string(dbQ) + "\n")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("explain --batch: %v\n%s", err, stderr.String())
	}
	var answers []map[string]any
	for sc := bufio.NewScanner(strings.NewReader(string(out))); sc.Scan(); {
		var a map[string]any
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatal(err)
		}
		answers = append(answers, a)
	}
	if len(answers) != 2 || answers[0]["verdict"] != "deny" || answers[1]["verdict"] != "allow" {
		t.Fatalf("explain answers %v: want api -> web denied, api -> db allowed", answers)
	}
	if r, _ := answers[0]["reason"].(string); !strings.Contains(r, "policy "+e.ns("prod")+"/bad is invalid (spec.ingress[0].from[0].ipBlock.cidr") {
		t.Errorf("reason %q does not name the invalid policy and field", r)
	}
	if !strings.Contains(stderr.String(), "warning: NetworkPolicy "+e.ns("prod")+"/bad: spec.ingress[0].from[0].ipBlock.cidr") {
		t.Errorf("stderr %q lacks the rejection", stderr.String())
	}
}
