package policy

import (
	"maps"
	"net/netip"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/podwall/podwall/policy/flow"
)

// NamedPort is one named container port of a pod.
type NamedPort struct {
	Name  string
	Proto flow.Proto
	Port  uint16
}

// Pod is what policy needs of a Kubernetes Pod: the trimmed form sources deliver.
type Pod struct {
	Namespace string
	Name      string
	Labels    map[string]string
	// IPs holds status.podIPs; IPs[0] is the primary address (status.podIP). Empty until the
	// pod has an address.
	IPs []netip.Addr
	// Ports holds the named ports of all containers, init and sidecar containers included.
	Ports       []NamedPort
	Node        string
	HostNetwork bool
	// Phase is status.phase (see Terminated).
	Phase string
}

// Key returns "namespace/name".
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// Terminated reports whether the pod has finished and so no longer owns its addresses.
func (p *Pod) Terminated() bool { return p.Phase == "Succeeded" || p.Phase == "Failed" }

// livePod reports whether the pod's addresses are its own (pod traffic, not node traffic).
func livePod(p *Pod) bool { return !p.HostNetwork && !p.Terminated() }

// podEqual reports whether two pods are equal in every field.
func podEqual(a, b *Pod) bool {
	return a.Namespace == b.Namespace && a.Name == b.Name && a.Node == b.Node &&
		a.HostNetwork == b.HostNetwork && a.Phase == b.Phase && maps.Equal(a.Labels, b.Labels) &&
		slices.Equal(a.IPs, b.IPs) && slices.Equal(a.Ports, b.Ports)
}

// clonePod returns a copy of p that shares no memory with it; its Labels are never nil.
func clonePod(p *Pod) *Pod {
	q := *p
	q.Labels = maps.Clone(p.Labels)
	if q.Labels == nil {
		q.Labels = map[string]string{}
	}
	q.IPs = slices.Clone(p.IPs)
	q.Ports = slices.Clone(p.Ports)
	return &q
}

// Namespace is what policy needs of a Kubernetes Namespace.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Node is what policy needs of a Kubernetes Node: its name, addresses and labels (which
// ClusterNetworkPolicy nodes peers select), and the address ranges of its pods.
type Node struct {
	Name   string
	IPs    []netip.Addr
	Labels map[string]string
	// PodCIDRs are spec.podCIDRs (or spec.podCIDR): the ranges the node's pods take their
	// addresses from. The agent holds a new connection to or from an address of its own
	// node's ranges that no pod has yet (datapath/doc.go, "The new-pod window").
	PodCIDRs []netip.Prefix
}

// State is a complete view of the objects policy depends on.
type State struct {
	Namespaces []Namespace
	Pods       []Pod
	Nodes      []Node
	Policies   []*networkingv1.NetworkPolicy
	// ClusterPolicies are the cluster admin's ClusterNetworkPolicies (both tiers).
	ClusterPolicies []*cnpv1alpha2.ClusterNetworkPolicy
	// Problems are the objects the source rejected alone (problem.go): a Pod in Pods with
	// no address, a Namespace left out of Namespaces, a NetworkPolicy in Policies that the
	// compiler then enforces fail-closed, a Node kept with its valid addresses only.
	Problems []Problem
}

// Verdict is allow or deny.
type Verdict uint8

// Verdicts.
const (
	Deny Verdict = iota
	Allow
)

func (v Verdict) String() string {
	if v == Allow {
		return "allow"
	}
	return "deny"
}
