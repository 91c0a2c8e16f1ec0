// Package labenv is the environment of podwall's end-to-end tests: one network-namespace
// lab (cmd/podwall/lab) per test, its nodes, pods and external hosts known by name, the
// real podwall agent on every node, and the cleanup that stops the agents and removes the
// lab when the test ends, also on failure. The e2e and e2e/kube suites build on it; what
// differs between them — where the agents read the cluster from (a manifests file, an API
// server) — stays in each.
//
// Endpoints are named by the test: pods "ns/name" (the lab pod is called ns-name), external
// hosts by their name. Failing calls fail the test (t.Fatal).
package labenv
