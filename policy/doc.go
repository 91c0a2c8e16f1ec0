// Package policy owns podwall's meaning of Kubernetes NetworkPolicy (networking.k8s.io/v1).
//
// It compiles Namespaces, Pods and NetworkPolicies into an immutable Snapshot and answers,
// for one flow, what the policies say about it: a Decision with, for each direction, the
// verdict and why — the policy and rule that allowed it, or the isolation that denied it.
//
// Compile, then evaluate. The Compiler evaluates every label selector when objects change;
// Snapshot.Decide never looks at a selector. Pods isolated by the same policies share a
// table of those policies' rules merged by port, peer and address (ruleTable), so that the
// cost of a decision does not grow with the number of policies.
//
// Semantics are upstream's (see SPEC §2):
//   - a pod is isolated for a direction when a policy in its namespace selects it and has that
//     direction in its effective policyTypes (omitted = Ingress, plus Egress when the policy
//     has an egress section); a non-isolated direction allows everything;
//   - allowed traffic is the union of all rules of all policies selecting the pod;
//   - egress is judged at the source pod, ingress at the destination pod, and a flow passes
//     only when both allow;
//   - named ports resolve on the pod that receives the traffic, which for both directions is
//     the flow's destination pod (the selected pod for ingress, the peer for egress);
//   - a pod may always talk to itself and to its own node (node addresses come from Node
//     objects and from hostNetwork pods, which are node traffic, never selected pods);
//   - pods in phase Succeeded or Failed hold no address: their IPs may be reused;
//   - an address several live pods claim is judged with every claimant, deny unless all
//     allow (conflict.go; Snapshot.Conflicts).
//
// Invalid input never widens access, and one bad object never freezes enforcement: the
// Compiler takes every state and rejects an object it cannot use alone (Problem,
// Snapshot.Problems). It validates each policy once, as it comes in new or changed
// (Validate); an invalid one, or one its source reported, is compiled fail-closed — it
// isolates the pods it selects in the directions it names and allows nothing (invalid.go) —
// and the reasons of the flows it denies name it and the field. Sources reject what they
// cannot read the same way (State.Problems): a pod with a bad address holds none (PodOf), a
// rejected namespace's pods match no namespaceSelector.
package policy
