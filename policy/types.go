package policy

import (
	"fmt"
	"net/netip"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
)

// Protocol is an IP protocol number (IANA).
type Protocol uint8

// The protocols podwall distinguishes.
const (
	ICMP   Protocol = 1
	TCP    Protocol = 6
	UDP    Protocol = 17
	ICMPv6 Protocol = 58
	SCTP   Protocol = 132
)

// String returns the protocol's Kubernetes spelling (TCP, UDP, SCTP) or a name/number.
func (p Protocol) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	case SCTP:
		return "SCTP"
	case ICMP:
		return "ICMP"
	case ICMPv6:
		return "ICMPv6"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// HasPorts reports whether the protocol carries ports that NetworkPolicy can match.
func (p Protocol) HasPorts() bool { return p == TCP || p == UDP || p == SCTP }

// ParseProtocol parses TCP, UDP, SCTP, ICMP or ICMPv6, case-insensitively.
func ParseProtocol(s string) (Protocol, error) {
	switch strings.ToUpper(s) {
	case "TCP":
		return TCP, nil
	case "UDP":
		return UDP, nil
	case "SCTP":
		return SCTP, nil
	case "ICMP":
		return ICMP, nil
	case "ICMPV6":
		return ICMPv6, nil
	}
	return 0, fmt.Errorf("unknown protocol %q (want TCP, UDP, SCTP, ICMP or ICMPv6)", s)
}

// NamedPort is one named container port of a pod.
type NamedPort struct {
	Name     string
	Protocol Protocol
	Port     uint16
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
	// Phase is status.phase; Succeeded and Failed pods hold no address.
	Phase string
}

// Key returns "namespace/name".
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// Terminated reports whether the pod has finished and so no longer owns its addresses.
func (p *Pod) Terminated() bool { return p.Phase == "Succeeded" || p.Phase == "Failed" }

// Namespace is what policy needs of a Kubernetes Namespace.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Node is what policy needs of a Kubernetes Node: its name and addresses. Traffic between a
// pod and its own node is always allowed.
type Node struct {
	Name string
	IPs  []netip.Addr
}

// State is a complete view of the objects policy depends on.
type State struct {
	Namespaces []Namespace
	Pods       []Pod
	Nodes      []Node
	Policies   []*networkingv1.NetworkPolicy
}

// Flow is what Decide judges: the first packet of a connection. Port is the destination
// port, zero for protocols without ports.
type Flow struct {
	Src, Dst netip.Addr
	Proto    Protocol
	Port     uint16
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
