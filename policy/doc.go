// Package policy owns podwall's meaning of Kubernetes NetworkPolicy (networking.k8s.io/v1) and
// ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2).
//
// It compiles Namespaces, Nodes, Pods, NetworkPolicies and ClusterNetworkPolicies into an
// immutable Snapshot and answers, for one flow, what the policies say about it: a Decision
// with, for each direction, the verdict and why — the tier, policy and rule that decided
// (with the Pass rules on the way), or the isolation that denied it.
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
//   - a pod may always talk to itself and, as far as NetworkPolicy goes, to its own node
//     (node addresses come from Node objects and from hostNetwork pods, which are node
//     traffic, never selected pods); ClusterNetworkPolicy tiers judge own-node traffic;
//   - pods in phase Succeeded or Failed hold no address: their IPs may be reused;
//   - an address several live pods claim is judged with every claimant, deny unless all
//     allow (conflict.go; Snapshot.Conflicts).
//
// ClusterNetworkPolicy (cnp*.go; SPEC §2b, the API documentation of
// sigs.k8s.io/network-policy-api v0.3.0 and its conformance suite): per direction, a pod to
// itself is allowed; then the Admin tier (priority ascending, equal priorities by name, rules
// in order; Accept and Deny decide, Pass goes on); then NetworkPolicy for a pod it isolates
// (which may always reach its own node); then the Baseline tier; then allow. Policies of one
// tier and subject form a group (clusterPolicies); pods with the same groups of a tier share
// a combo, whose table per direction holds its policies' rules in precedence order as bit
// masks (cnptable.go), so that Decide looks up one table per tier and direction and editing
// a policy rebuilds the tables of the combos holding its group, not the pods. Fields the API
// says to fail closed on (an unknown peer, protocol or action; domainNames, unsupported) make
// an Accept rule match nothing of them and a Deny or Pass rule deny all; ClusterProblems
// reports them and equal-priority pairs. nodes peers match node and host-network pod
// addresses, recompiled when nodes change. An invalid ClusterNetworkPolicy
// (ValidateClusterPolicy) is rejected alone and enforced fail-closed (compileInvalidCluster):
// it denies all of its subject's traffic in the directions it has rules for.
//
// Invalid input never widens access, and one bad object never freezes enforcement: the
// Compiler takes every state and rejects an object it cannot use alone (Problem,
// Snapshot.Problems). It validates each policy once, as it comes in new or changed
// (Validate); an invalid one, or one its source reported, is compiled fail-closed — it
// isolates the pods it selects in the directions it names and allows nothing (invalid.go) —
// and the reasons of the flows it denies name it and the field. Sources reject what they
// cannot read the same way (State.Problems): a pod with a bad address holds none (PodOf), a
// rejected namespace's pods match no namespaceSelector.
//
// Staged policies (staged.go; SPEC §2c): a NetworkPolicy or ClusterNetworkPolicy annotated
// podwall.io/staged: "true" (StagedAnnotation) is evaluated, never enforced. Staged splits a
// State into the enforced state (without them) and the proposed one (the enforced policies
// plus the staged ones, a staged object replacing the enforced object of its kind,
// namespace and name); each is compiled by its own Compiler into its own Snapshot, so the
// enforced Snapshot never sees a staged policy. policy/explain.Proposal reads the proposed
// Snapshot beside the enforced one.
package policy
