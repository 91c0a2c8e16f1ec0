package e2e

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Tiny builders for NetworkPolicy manifests, so a policy in a test reads like its YAML.

// netpol returns the NetworkPolicy ns/name with spec.
func netpol(ns, name string, spec networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       spec,
	}
}

// sel returns a label selector matching labels given as key, value pairs; sel() is the
// empty selector, which matches everything.
func sel(kv ...string) *metav1.LabelSelector {
	if len(kv)%2 != 0 {
		panic("sel: odd number of arguments")
	}
	s := &metav1.LabelSelector{}
	for i := 0; i < len(kv); i += 2 {
		if s.MatchLabels == nil {
			s.MatchLabels = map[string]string{}
		}
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

// in returns a selector matching key In values.
func in(key string, values ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: key, Operator: metav1.LabelSelectorOpIn, Values: values}}}
}

// types returns policyTypes.
func types(ts ...networkingv1.PolicyType) []networkingv1.PolicyType { return ts }

const (
	ingressType = networkingv1.PolicyTypeIngress
	egressType  = networkingv1.PolicyTypeEgress
)

// port returns a port entry "80/TCP", "53/UDP", "serve-80-tcp" (named, protocol TCP) or
// "serve-80-udp/UDP".
func port(s string) networkingv1.NetworkPolicyPort {
	value, protocol, _ := strings.Cut(s, "/")
	if protocol == "" {
		protocol = "TCP"
	}
	p := corev1.Protocol(protocol)
	var v intstr.IntOrString
	var n int32
	if _, err := fmt.Sscan(value, &n); err == nil {
		v = intstr.FromInt32(n)
	} else {
		v = intstr.FromString(value)
	}
	return networkingv1.NetworkPolicyPort{Protocol: &p, Port: &v}
}

// ports returns port entries (see port).
func ports(ss ...string) []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	for _, s := range ss {
		out = append(out, port(s))
	}
	return out
}

// pods is a peer selecting pods of the policy's namespace.
func pods(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: s}
}

// namespaces is a peer selecting every pod of the selected namespaces.
func namespaces(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: s}
}

// podsIn is one peer with both selectors: the selected pods of the selected namespaces.
func podsIn(ns, pod *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: ns, PodSelector: pod}
}

// cidr is an ipBlock peer.
func cidr(c string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: c, Except: except}}
}

// from is an ingress rule; no peers means from everywhere.
func from(ports []networkingv1.NetworkPolicyPort, peers ...networkingv1.NetworkPolicyPeer) networkingv1.NetworkPolicyIngressRule {
	return networkingv1.NetworkPolicyIngressRule{Ports: ports, From: peers}
}

// to is an egress rule; no peers means to everywhere.
func to(ports []networkingv1.NetworkPolicyPort, peers ...networkingv1.NetworkPolicyPeer) networkingv1.NetworkPolicyEgressRule {
	return networkingv1.NetworkPolicyEgressRule{Ports: ports, To: peers}
}

// table is an expected reachability matrix, written as upstream's e2e prints it: a header
// of destinations, then one row per source, "." where the connection is allowed and "X"
// where it is denied.
//
//	     x/a x/b
//	x/a   .   X
//	x/b   .   .
type table struct {
	names []string
	allow map[[2]string]bool
}

// parseTable parses a table; it panics on a malformed one.
func parseTable(s string) table {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	t := table{names: strings.Fields(lines[0]), allow: map[[2]string]bool{}}
	if len(lines) != len(t.names)+1 {
		panic(fmt.Sprintf("table: %d rows for %d columns", len(lines)-1, len(t.names)))
	}
	for i, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) != len(t.names)+1 || f[0] != t.names[i] {
			panic(fmt.Sprintf("table: row %q: want %s and %d cells", line, t.names[i], len(t.names)))
		}
		for j, c := range f[1:] {
			if c != "." && c != "X" {
				panic(fmt.Sprintf("table: row %s: cell %q", f[0], c))
			}
			t.allow[[2]string{f[0], t.names[j]}] = c == "."
		}
	}
	return t
}

// probes returns one probe per cell, on port and protocol, sources in row order.
func (t table) probes(portNum uint16, protocol string) []probe {
	var out []probe
	for _, src := range t.names {
		for _, dst := range t.names {
			out = append(out, probe{from: src, to: dst, port: portNum, proto: protocol, allow: t.allow[[2]string{src, dst}]})
		}
	}
	return out
}

// denied counts the denied cells.
func (t table) denied() int {
	n := 0
	for _, a := range t.allow {
		if !a {
			n++
		}
	}
	return n
}

// allAllowed returns the table of names with every cell allowed.
func allAllowed(names ...string) string {
	var b strings.Builder
	b.WriteString(strings.Join(names, " ") + "\n")
	for _, n := range names {
		b.WriteString(n + strings.Repeat(" .", len(names)) + "\n")
	}
	return b.String()
}
