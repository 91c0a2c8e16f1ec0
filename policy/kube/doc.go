// Package kube is podwall's Kubernetes API source of policy state: `podwall run` with
// --kubeconfig or in-cluster config, and `podwall explain --kubeconfig`.
//
// Source implements policy.Source with client-go shared informers for Pods, Namespaces and
// NetworkPolicies (all namespaces), and ClusterNetworkPolicies (policy.networking.k8s.io/
// v1alpha2, sigs.k8s.io/network-policy-api) while their CRD is installed. It owns four things:
//
//   - Trimming at the edge. An informer transform cuts every Pod, as it arrives and before it
//     is stored, down to what policy.FromPod reads — name, namespace, labels, node,
//     hostNetwork, the named container ports, phase and addresses — and drops managed fields
//     and annotations from Namespaces and (Cluster)NetworkPolicies, and the status that
//     implementations write on ClusterNetworkPolicies. A cluster of 10 000 pods then
//     costs the agent a few MB of cache, not the hundreds that full Pods take.
//   - Coalescing. An event that changes nothing policy reads (a pod condition, a resource
//     version) is ignored. Others mark the state dirty; once the events have been quiet for
//     Quiet (default 10 ms), or at the latest MaxDelay (default 100 ms) after the first one,
//     Source builds one complete policy.State from the informer caches and calls update. The
//     agent's compiler diffs it against the previous state, so a complete state costs little
//     more than a delta. The first update comes only after every cache has synced; a
//     source that never syncs (the API unreachable or forbidden from the start) never
//     updates, and the agent never becomes ready.
//   - The ClusterNetworkPolicy CRD, which may be missing, installed or removed at any time
//     (cluster.go). Source asks the API server's discovery whether the resource is served:
//     when it is not, the states hold no ClusterNetworkPolicies, the first state does not
//     wait for them, Status says so, and discovery is asked again every
//     ClusterPolicyRecheck (15 s); once it is, an informer lists and watches them and a
//     state follows its first list. An informer whose list finds the resource gone (the CRD
//     deleted) makes discovery be asked at once. When the CRD is installed at start, the
//     first state waits for their list like the others: the agent never enforces a state
//     that leaves out an admin's Deny.
//   - Connectivity. A lost API connection changes nothing that is enforced: the caches keep
//     the last state and client-go's reflectors list and watch again by themselves, with
//     backoff, after which the caches converge and an update follows. Status reports whether
//     the last request to the API server got an answer, since when, the last error and how
//     many requests failed, for the agent's /readyz and metrics.
//
// With Options.Node set (the agent's node), Nodes are listed and watched too (node.go): the
// agent's own Node for its pod ranges (spec.podCIDRs), which the agent needs for the
// new-pod window (datapath/doc.go), and every Node for the labels and addresses that
// ClusterNetworkPolicy `nodes` peers select. They are optional: the first state does not
// wait for them, and credentials that may not read Nodes make the Source warn once and go
// on without them.
//
// Pods without an address yet are part of the state (they can be selected, they isolate
// nothing until they have an address) and enforced as soon as their status carries one.
// An object policy cannot use is rejected alone, never the state: a pod whose addresses do
// not parse holds no address and is named in State.Problems (policy.PodOf); a NetworkPolicy
// podwall refuses (e.g. `cidr: 010.0.0.0/8`, which the API server accepts unless strict CIDR
// validation is on) goes into the state as it is and the compiler enforces it fail-closed
// (policy/invalid.go). Every other object applies, so one tenant's bad object never freezes
// enforcement for the cluster.
//
// List reads the same objects once, for explain (ClusterNetworkPolicies when their CRD is
// installed), and also Nodes when the credentials allow.
//
// The agent needs get, list and watch on pods, namespaces and
// networking.k8s.io/networkpolicies, list and watch on
// policy.networking.k8s.io/clusternetworkpolicies, cluster-wide, and nothing else:
// deploy/rbac.yaml. Discovery needs no rule (system:discovery).
//
// A Source is a prometheus.Collector of its Status: podwall_source_connected,
// podwall_source_api_errors_total, podwall_source_cluster_policy_crd and
// podwall_source_cluster_policies (described in cmd/podwall/README.md with every series).
package kube
