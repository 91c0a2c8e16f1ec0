package agent

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/policy/policytest"
)

// One bad policy never freezes enforcement: a state holding one applies (the agent becomes
// ready with it), the policy is enforced fail-closed, counted while it lasts and logged once
// per change, not on every resync.
func TestRejectedPolicyAppliesAlone(t *testing.T) {
	var logs bytes.Buffer
	a, s := testAgent(t, func(c *Config) { c.Log = slog.New(slog.NewTextHandler(&logs, nil)) })
	bad := policytest.NetworkPolicy("prod", "bad", policytest.Selector("role", "web"),
		policytest.Ingress(policytest.From(policytest.CIDR("010.0.0.0/8"))))
	s.Policies = append(s.Policies, bad)
	a.setState(t, s) // fails the test when the state is refused
	a.setState(t, s) // a resync: nothing new to log

	// web was not isolated; now the bad policy isolates it and allows nothing.
	if r := a.verdict(apiIP, webIP, 80, false); r.Allow {
		t.Errorf("api -> web allowed; want the invalid policy to isolate web")
	}
	// The good policies still apply.
	if r := a.verdict(apiIP, dbIP, 3306, false); !r.Allow {
		t.Error("api -> db denied; the good policy no longer applies")
	}
	if got := a.metricValue(t, "podwall_policy_invalid", "kind=NetworkPolicy,name=bad,namespace=prod"); got != 1 {
		t.Errorf("podwall_policy_invalid = %v, want 1", got)
	}
	if n := strings.Count(logs.String(), "object rejected alone"); n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "spec.ingress[0].from[0].ipBlock.cidr") {
		t.Errorf("log does not name the field:\n%s", logs.String())
	}

	// Fixed: the series goes, the fix is logged.
	s.Policies = s.Policies[:len(s.Policies)-1]
	a.setState(t, s)
	if got := a.metricValue(t, "podwall_policy_invalid", "kind=NetworkPolicy,name=bad,namespace=prod"); got != -1 {
		t.Errorf("podwall_policy_invalid after the fix = %v, want no series", got)
	}
	if !strings.Contains(logs.String(), "resolved") {
		t.Errorf("the fix is not logged:\n%s", logs.String())
	}
}

// Two pods claiming one address are counted and logged once per address.
func TestAddressConflictReported(t *testing.T) {
	var logs bytes.Buffer
	a, s := testAgent(t, func(c *Config) { c.Log = slog.New(slog.NewTextHandler(&logs, nil)) })
	twin := s.Pods[0]
	twin.Name += "-twin"
	twin.Labels = nil
	s.Pods = append(s.Pods, twin)
	s.Policies = append([]*networkingv1.NetworkPolicy{}, s.Policies...)
	a.setState(t, s)
	a.setState(t, s)
	if got := a.metricValue(t, "podwall_policy_address_conflicts", ""); got != 2 { // its IPv4 and IPv6 addresses
		t.Errorf("podwall_policy_address_conflicts = %v, want 2", got)
	}
	if n := strings.Count(logs.String(), "claimed by several live pods"); n != 2 {
		t.Errorf("logged %d times, want once per address:\n%s", n, logs.String())
	}
}
