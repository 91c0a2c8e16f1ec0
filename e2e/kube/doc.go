// Package kube holds podwall's cluster-mode end-to-end tests, against a real kube-apiserver
// and etcd (package e2e/cluster): the agent enforcing what the API says in the
// network-namespace lab, with the shipped RBAC and nothing more; the least-privilege proof;
// `podwall explain --kubeconfig`; the deploy/ manifests and Dockerfile checked against
// the API server and the binary; and ClusterNetworkPolicy (cnp_test.go): the CRD installed
// from the network-policy-api module (cluster.InstallCRD), the optional CRD component, the
// README's examples through the CRD's validation, an agent started before the CRD.
//
// How a lab node reaches the API server: the API server listens on 127.0.0.1 of the test's
// own network namespace, which lab nodes cannot reach, and the lab rules forbid adding
// addresses or routes there. The test opens a listener on 127.0.0.1:6443 inside each node's
// namespace and relays every connection to the API server from its own namespace
// (cluster.Relay); the agent's kubeconfig names https://127.0.0.1:6443, which the API
// server's certificate covers. Only this test process bridges the two: no link, address or
// route joins the lab to the root namespace.
//
// `podwall what-if --kubeconfig` (whatif_test.go) needs the opposite: the API server must
// reach the agents, through its pod proxy, and it refuses to proxy to loopback addresses.
// TestWhatIfThroughPodProxy starts a second kube-apiserver and etcd for itself inside the
// lab, in a namespace of its own on the underlay (cluster.Options.Netns, BindAddress), which
// the agents dial directly and which proxies to their debug listeners on the node addresses;
// the test process reaches it through a relay on 127.0.0.1 whose connections are made in
// that namespace (cluster.Cluster.Addr).
//
// The API server, built on first use (≈ 10 min on a fresh machine, then cached), is shared
// by the tests of one run; each test works in namespaces named after its lab's run id.
// Tests that need root (the lab) skip without it; tests that need the API server skip with
// -short.
package kube
