package kube

import (
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/e2e/cluster"
	"github.com/podwall/podwall/policy"
)

// A staged policy through the real API server (SPEC §2c): the informers keep the
// podwall.io/staged annotation (the transform drops every other one), so a staged deny-all
// for prod is evaluated — its staged verdicts counted — but not enforced; removing the
// annotation (a server-side apply without it) is a policy update that enforces it.
func TestClusterStagedPolicy(t *testing.T) {
	needRoot(t)
	c := cluster.Shared(t)
	token := installRBAC(t, c)
	e := newEnv(t, c)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "prod/web", "prod/api")
	e.Serve(5000)
	e.createNamespace("prod", nil)
	e.createPod("prod/web", map[string]string{"role": "web"}, true)
	e.createPod("prod/api", map[string]string{"role": "api"}, true)
	e.start(token)

	denyAll := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "deny-all", Annotations: map[string]string{policy.StagedAnnotation: "true"}},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
	}
	// The enforced policy does not change (nor its generation): the staged policy's series
	// appearing says the agent has it.
	e.applyPolicy(denyAll)
	series, labels := "podwall_policy_staged_verdicts_total", []string{"policy", e.ns("prod") + "/deny-all", "verdict", "deny"}
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := e.Metrics("node-1")
		if _, ok := m.Value(series, labels...); err == nil && ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s%q after 10s (err %v)", series, labels, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.check(probe{"prod/web", "prod/api", 5000, true})
	m, err := e.Metrics("node-1")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := m.Value(series, labels...); !ok || v < 2 {
		t.Errorf("%s{deny-all,deny} = %v (%v), want the probes' first packets (2 families)", series, v, ok)
	}

	promoted := denyAll.DeepCopy()
	promoted.Annotations = nil
	e.applyPolicy(promoted)
	e.await("promoted deny-all", 10*time.Second, probe{"prod/web", "prod/api", 5000, false})
}
