// Package policytest builds the Kubernetes objects that NetworkPolicy tests are written in
// — labels, label selectors, peers, ports, rules, NetworkPolicies and Namespaces — so that a
// policy in a test reads like its YAML:
//
//	policytest.NetworkPolicy("prod", "db-policy", policytest.Selector("role", "db"),
//		policytest.Ingress(policytest.From(
//			policytest.Pods(policytest.Selector("name", "api-pod")), policytest.Port("3306/TCP"))))
//
// The tests of package policy, policy/decisions and the e2e suites use it. It builds API
// types only (k8s.io/api, k8s.io/apimachinery), never podwall's, so that package policy's
// own tests can import it; podwall's types (policy.Pod, policy.State) are built where they
// are defined. Objects carry no apiVersion and kind: policy/manifests.Write adds them.
//
// Everything panics on malformed input: a typo in a fixture is a bug in the test, not a
// case to handle.
package policytest
