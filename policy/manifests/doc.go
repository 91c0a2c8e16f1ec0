// Package manifests is podwall's file source of policy state: `podwall run --manifests PATH`,
// `podwall explain --manifests PATH` and the demo read Namespaces, Pods, Nodes,
// NetworkPolicies and ClusterNetworkPolicies (policy.networking.k8s.io/v1alpha2) from
// Kubernetes YAML or JSON files instead of a cluster. Nodes give their addresses and labels
// to ClusterNetworkPolicy nodes peers (and to own-node traffic).
//
// It owns turning files into a policy.State, and refusing files that do not say exactly one
// thing. Load decodes strictly (unknown fields, unknown kinds and apiVersions are errors,
// never silently dropped), validates each NetworkPolicy with policy.Validate, each
// ClusterNetworkPolicy with policy.ValidateClusterPolicy (the CRD's rules: an invalid one
// refuses the files, like an invalid NetworkPolicy, so it never widens access) and each Pod
// with policy.FromPod, and rejects states a cluster could not hold: the same object twice, or
// one address held by two running pods. Every problem is reported, not just the first, each
// naming the file and line, the object and the field, e.g.
//
//	manifests/db.yaml:12: NetworkPolicy prod/db: spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.0.0.0/33": ...
//
// A Load error means "keep what you had": the caller keeps enforcing its last good state
// (SPEC §2). Watch delivers a new Load result after every change, for hot reload.
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
