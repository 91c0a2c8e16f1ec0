// Package manifests is podwall's file source of policy state: `podwall run --manifests PATH`,
// `podwall explain --manifests PATH` and the demo read Namespaces, Pods, Nodes,
// NetworkPolicies and ClusterNetworkPolicies (policy.networking.k8s.io/v1alpha2) from
// Kubernetes YAML or JSON files instead of a cluster. Nodes give their addresses and labels
// to ClusterNetworkPolicy nodes peers (and to own-node traffic).
//
// It owns turning files into a policy.State, and refusing files that do not say exactly one
// thing. Load decodes strictly (unknown fields, unknown kinds and apiVersions are errors,
// never silently dropped), validates each NetworkPolicy with policy.Validate, each
// ClusterNetworkPolicy with policy.ValidateClusterPolicy (the CRD's rules) and each Pod with
// policy.FromPod. Every problem is reported, not just the first, each naming the
// file and line, the object and the field, e.g.
//
//	manifests/db.yaml:12: NetworkPolicy prod/db: spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "010.0.0.0/8": ...
//
// An invalid object with a name is rejected alone (fail one object, not the world): it goes
// into State.Problems and is handled as policy.Problem says — an invalid NetworkPolicy or
// ClusterNetworkPolicy is enforced fail-closed, a Pod with a bad address holds none — while
// the file's other objects apply, so the agent becomes ready with them. What cannot be pinned
// on one named object (a file that cannot be read, a document that does not parse, an unknown
// kind, an object without a name, the same object twice) is a Load error, which means "keep
// what you had": the caller keeps enforcing its last good state (SPEC §2). So is a
// ClusterNetworkPolicy that does not decode strictly (an unknown or misspelt field, a value
// of the wrong type): unlike a NetworkPolicy, whose namespace bounds what a fail-closed
// reading takes, its subject cannot be known, and read without the field it could allow
// what it denies. Two pods claiming one address are
// both loaded; the compiler judges the address with both (policy/conflict.go). Watch
// delivers a new Load result after every change, for hot reload.
//
// Memory: Load holds the files' bytes, a file's documents as JSON, the State, and one
// decoded object at a time. A List is read an item at a time, in JSON and in YAML block style
// as kubectl and sigs.k8s.io/yaml write it (entries starting with "- " in one column under an
// "items:" line in the first column): converting a YAML document to JSON holds all of it as
// generic values, 250 MB for a List of 6.8 MB. A YAML List in flow style, or whose entries
// share anchors, is still converted whole.
//
// Defaults applied, as the API server would: metadata.namespace "default" for Pods and
// NetworkPolicies, and the kubernetes.io/metadata.name label on Namespaces. Namespaces that
// Pods or policies use but no file declares are fine: the compiler assumes them,
// labelled only with kubernetes.io/metadata.name.
package manifests
