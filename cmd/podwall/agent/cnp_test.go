package agent

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	"sigs.k8s.io/yaml"
)

// A ClusterNetworkPolicy's Accept and Deny verdicts count under its cnp/NAME series and
// their codes; its series go when it does.
func TestObserveMetricsClusterNetworkPolicy(t *testing.T) {
	a, s := testAgent(t)
	var c cnpv1alpha2.ClusterNetworkPolicy
	if err := yaml.Unmarshal([]byte(`
metadata: {name: guard-db}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {}}
  ingress:
  - {action: Accept, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: web}}}}], protocols: [{tcp: {destinationPort: {number: 3306}}}]}
  - {action: Deny, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: api}}}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}
`), &c); err != nil {
		t.Fatal(err)
	}
	s.ClusterPolicies = append(s.ClusterPolicies, &c)
	a.setState(t, s)
	a.observe(a.verdict(webIP, dbIP, 3306, false)) // Accept overrides db-policy
	a.observe(a.verdict(apiIP, webIP, 80, false))  // Deny
	for _, m := range []struct {
		name, labels string
		want         float64
	}{
		{"podwall_datapath_direction_verdicts_total", "code=cluster-accepted,direction=ingress,verdict=allow", 1},
		{"podwall_datapath_direction_verdicts_total", "code=cluster-denied,direction=ingress,verdict=deny", 1},
		{"podwall_policy_verdicts_total", "direction=ingress,policy=cnp/guard-db,verdict=allow", 1},
		{"podwall_policy_verdicts_total", "direction=ingress,policy=cnp/guard-db,verdict=deny", 1},
		{"podwall_policy_verdicts_total", "direction=ingress,policy=prod/db-policy,verdict=deny", 0},
	} {
		if got := a.metricValue(t, m.name, m.labels); got != m.want {
			t.Errorf("%s{%s} = %v, want %v", m.name, m.labels, got, m.want)
		}
	}
	s.ClusterPolicies = nil
	a.setState(t, s)
	if got := a.metricValue(t, "podwall_policy_verdicts_total", "direction=ingress,policy=cnp/guard-db,verdict=allow"); got != -1 {
		t.Errorf("series of a deleted ClusterNetworkPolicy still there: %v", got)
	}
}

// What the agent enforces of a ClusterNetworkPolicy otherwise than written is logged.
func TestApplyLogsClusterProblems(t *testing.T) {
	var logs bytes.Buffer
	a, s := testAgent(t, func(c *Config) { c.Log = slog.New(slog.NewTextHandler(&logs, nil)) })
	var c cnpv1alpha2.ClusterNetworkPolicy
	if err := yaml.Unmarshal([]byte(`
metadata: {name: no-domains}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {}}
  egress: [{action: Accept, to: [{domainNames: ["*.example.com"]}]}]
`), &c); err != nil {
		t.Fatal(err)
	}
	s.ClusterPolicies = []*cnpv1alpha2.ClusterNetworkPolicy{&c}
	a.setState(t, s)
	if !strings.Contains(logs.String(), "cnp/no-domains: spec.egress[0].to[0].domainNames: not supported") {
		t.Errorf("logs lack the unsupported domainNames rule:\n%s", logs.String())
	}
	// Once per change, not per apply: another state with the same policy logs nothing new.
	before := strings.Count(logs.String(), "domainNames: not supported")
	s.Pods = s.Pods[:len(s.Pods)-1]
	a.setState(t, s)
	if n := strings.Count(logs.String(), "domainNames: not supported"); n != before {
		t.Errorf("the problem was logged %d times after a second apply, want %d:\n%s", n, before, logs.String())
	}
}
