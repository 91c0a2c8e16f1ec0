// Package synth generates synthetic but realistic clusters — namespaces, pods,
// NetworkPolicies and ClusterNetworkPolicies — for benchmarks, scale tests and property tests of the policy engine.
// A generated State is deterministic for a given Config.
package synth

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
)

// Config sizes a synthetic cluster.
type Config struct {
	Pods, Policies int
	// ClusterPolicies is the number of ClusterNetworkPolicies (ClusterPolicy); with some,
	// the state also holds its Nodes, labelled by zone, with addresses 172.18.i.i.
	ClusterPolicies int
	// Namespaces defaults to max(2, Pods/100).
	Namespaces int
	// Nodes defaults to max(1, Pods/100).
	Nodes int
	Seed  uint64
}

var (
	apps    = []string{"web", "api", "db", "cache", "queue", "auth", "search", "billing", "mail", "report"}
	tiers   = []string{"frontend", "backend", "data"}
	teams   = []string{"red", "blue", "green", "gold"}
	envs    = []string{"prod", "staging", "dev"}
	zones   = []string{"a", "b", "c"}
	svcPort = map[string]uint16{"web": 8080, "api": 5000, "db": 3306, "cache": 6379, "queue": 5672,
		"auth": 9000, "search": 9200, "billing": 7000, "mail": 2525, "report": 8443}
)

// Generate builds a cluster. Pod i gets the addresses PodIPv4(i) and PodIPv6(i) and the
// named ports "http" (its app's service port), "metrics" and "dns" (UDP 53).
func Generate(c Config) policy.State {
	if c.Namespaces == 0 {
		c.Namespaces = max(2, c.Pods/100)
	}
	if c.Nodes == 0 {
		c.Nodes = max(1, c.Pods/100)
	}
	r := rand.New(rand.NewPCG(c.Seed, 0x9e3779b97f4a7c15))
	var s policy.State
	for i := range c.Namespaces {
		s.Namespaces = append(s.Namespaces, policy.Namespace{
			Name: nsName(i),
			Labels: map[string]string{
				"team": teams[i%len(teams)], "env": envs[i%len(envs)],
				"kubernetes.io/metadata.name": nsName(i),
			},
		})
	}
	for i := range c.Pods {
		app := apps[r.IntN(len(apps))]
		ns := nsName(r.IntN(c.Namespaces))
		s.Pods = append(s.Pods, policy.Pod{
			Namespace: ns,
			Name:      fmt.Sprintf("%s-%d", app, i),
			Labels: map[string]string{
				"app": app, "tier": tiers[r.IntN(len(tiers))], "version": fmt.Sprintf("v%d", r.IntN(3)),
			},
			IPs: []netip.Addr{PodIPv4(i), PodIPv6(i)},
			Ports: []policy.NamedPort{
				{Name: "http", Proto: flow.TCP, Port: svcPort[app]},
				{Name: "metrics", Proto: flow.TCP, Port: 9090 + uint16(r.IntN(3))},
				{Name: "dns", Proto: flow.UDP, Port: 53},
			},
			Node:  fmt.Sprintf("node-%d", i%c.Nodes),
			Phase: string(corev1.PodRunning),
		})
	}
	for i := range c.Policies {
		s.Policies = append(s.Policies, Policy(r, nsName(r.IntN(c.Namespaces)), fmt.Sprintf("np-%d", i)))
	}
	// After the rest, so that adding ClusterPolicies leaves the others as they were.
	for i := range c.ClusterPolicies {
		s.ClusterPolicies = append(s.ClusterPolicies, ClusterPolicy(r, fmt.Sprintf("cnp-%d", i)))
	}
	if c.ClusterPolicies > 0 {
		for i := range c.Nodes {
			s.Nodes = append(s.Nodes, policy.Node{Name: fmt.Sprintf("node-%d", i),
				IPs:    []netip.Addr{netip.AddrFrom4([4]byte{172, 18, byte(i >> 8), byte(i)})},
				Labels: map[string]string{"zone": zones[i%len(zones)], "kubernetes.io/os": "linux"}})
		}
	}
	return s
}

func nsName(i int) string { return fmt.Sprintf("ns-%d", i) }

// PodIPv4 is the IPv4 address Generate gives pod i: 10.244.0.0/16, i modulo 65536.
func PodIPv4(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)})
}

// PodIPv6 is the IPv6 address Generate gives pod i: fd00:10:244::/112, i modulo 65536.
func PodIPv6(i int) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x10, 0x02, 0x44, 14: byte(i >> 8), 15: byte(i)})
}

// Policy generates one random policy in namespace ns: mixed peers, ports and policy types.
func Policy(r *rand.Rand, ns, name string) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: podSelector(r)},
	}
	switch r.IntN(4) {
	case 0:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	case 1:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	case 2:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	}
	for range r.IntN(3) + 1 {
		np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: peers(r), Ports: ports(r)})
	}
	if r.IntN(2) == 0 {
		for range r.IntN(2) + 1 {
			np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: peers(r), Ports: ports(r)})
		}
	}
	return np
}

func podSelector(r *rand.Rand) metav1.LabelSelector {
	switch r.IntN(6) {
	case 0:
		return metav1.LabelSelector{}
	case 1:
		return metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{apps[r.IntN(len(apps))], apps[r.IntN(len(apps))]}},
		}}
	case 2:
		return metav1.LabelSelector{MatchLabels: map[string]string{"tier": tiers[r.IntN(len(tiers))]},
			MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "version", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"v0"}},
			}}
	}
	return metav1.LabelSelector{MatchLabels: map[string]string{"app": apps[r.IntN(len(apps))]}}
}

func peers(r *rand.Rand) []networkingv1.NetworkPolicyPeer {
	n := r.IntN(4)
	if n == 0 && r.IntN(3) > 0 {
		n = 1 // mostly rules with peers
	}
	var out []networkingv1.NetworkPolicyPeer
	for range n {
		var p networkingv1.NetworkPolicyPeer
		switch r.IntN(6) {
		case 0:
			sel := podSelector(r)
			p.PodSelector = &sel
		case 1:
			p.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": teams[r.IntN(len(teams))]}}
		case 2: // AND
			sel := podSelector(r)
			p.PodSelector = &sel
			p.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "env", Operator: metav1.LabelSelectorOpIn, Values: []string{envs[r.IntN(len(envs))]}},
			}}
		case 3:
			p.NamespaceSelector = &metav1.LabelSelector{}
			p.PodSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "tier", Operator: metav1.LabelSelectorOpExists},
				{Key: "canary", Operator: metav1.LabelSelectorOpDoesNotExist},
			}}
		case 4:
			b := r.IntN(256)
			p.IPBlock = &networkingv1.IPBlock{CIDR: fmt.Sprintf("10.244.%d.0/24", b),
				Except: []string{fmt.Sprintf("10.244.%d.%d/28", b, 16*r.IntN(16))}}
		default:
			if r.IntN(2) == 0 {
				p.IPBlock = &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"10.0.0.0/8", "172.16.0.0/12"}}
			} else {
				p.IPBlock = &networkingv1.IPBlock{CIDR: fmt.Sprintf("fd00:10:244::%x00/120", r.IntN(256))}
			}
		}
		out = append(out, p)
	}
	return out
}

func ports(r *rand.Rand) []networkingv1.NetworkPolicyPort {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	var out []networkingv1.NetworkPolicyPort
	for range r.IntN(3) {
		var p networkingv1.NetworkPolicyPort
		switch r.IntN(5) {
		case 0:
			v := intstr.FromString([]string{"http", "metrics"}[r.IntN(2)])
			p.Port = &v
		case 1:
			v := intstr.FromInt32(int32(svcPort[apps[r.IntN(len(apps))]]))
			p.Port, p.Protocol = &v, &tcp
		case 2:
			v := intstr.FromInt32(8000)
			end := int32(8100 + r.IntN(500))
			p.Port, p.EndPort = &v, &end
		case 3:
			p.Protocol = &udp
		default:
			v := intstr.FromInt32(53)
			p.Port, p.Protocol = &v, &udp
		}
		out = append(out, p)
	}
	return out
}

// ClusterPolicy generates one random ClusterNetworkPolicy: mostly Admin tier, a random
// priority (ties happen), a subject by namespace labels or by app, and a few rules per
// direction of every action, with namespaces, pods, networks and nodes peers and TCP, UDP,
// range and named-port protocols.
func ClusterPolicy(r *rand.Rand, name string) *cnpv1alpha2.ClusterNetworkPolicy {
	c := &cnpv1alpha2.ClusterNetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy.networking.k8s.io/v1alpha2", Kind: "ClusterNetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       cnpv1alpha2.ClusterNetworkPolicySpec{Tier: cnpv1alpha2.AdminTier, Priority: int32(r.IntN(1001))},
	}
	if r.IntN(4) == 0 {
		c.Spec.Tier = cnpv1alpha2.BaselineTier
	}
	switch r.IntN(3) {
	case 0:
		c.Spec.Subject.Namespaces = &metav1.LabelSelector{MatchLabels: map[string]string{"team": teams[r.IntN(len(teams))]}}
	case 1:
		c.Spec.Subject.Namespaces = &metav1.LabelSelector{MatchLabels: map[string]string{"env": envs[r.IntN(len(envs))]}}
	default:
		c.Spec.Subject.Pods = &cnpv1alpha2.NamespacedPod{PodSelector: podSelector(r)}
	}
	actions := []cnpv1alpha2.ClusterNetworkPolicyRuleAction{"Accept", "Deny", "Pass"}
	for range r.IntN(4) {
		var peers []cnpv1alpha2.ClusterNetworkPolicyIngressPeer
		for _, p := range clusterPeers(r, false) {
			peers = append(peers, cnpv1alpha2.ClusterNetworkPolicyIngressPeer{Namespaces: p.Namespaces, Pods: p.Pods})
		}
		c.Spec.Ingress = append(c.Spec.Ingress, cnpv1alpha2.ClusterNetworkPolicyIngressRule{
			Action: actions[r.IntN(3)], From: peers, Protocols: clusterProtocols(r, true)})
	}
	for range r.IntN(4) {
		to := clusterPeers(r, true)
		named := true
		for _, p := range to {
			named = named && p.Networks == nil && p.Nodes == nil
		}
		c.Spec.Egress = append(c.Spec.Egress, cnpv1alpha2.ClusterNetworkPolicyEgressRule{
			Action: actions[r.IntN(3)], To: to, Protocols: clusterProtocols(r, named)})
	}
	return c
}

func clusterPeers(r *rand.Rand, egress bool) []cnpv1alpha2.ClusterNetworkPolicyEgressPeer {
	kinds := 2
	if egress {
		kinds = 4
	}
	var out []cnpv1alpha2.ClusterNetworkPolicyEgressPeer
	for range r.IntN(2) + 1 {
		var p cnpv1alpha2.ClusterNetworkPolicyEgressPeer
		switch r.IntN(kinds) {
		case 0:
			p.Namespaces = &metav1.LabelSelector{MatchLabels: map[string]string{"team": teams[r.IntN(len(teams))]}}
		case 1:
			p.Pods = &cnpv1alpha2.NamespacedPod{PodSelector: podSelector(r)}
		case 2:
			p.Networks = []cnpv1alpha2.CIDR{cnpv1alpha2.CIDR(fmt.Sprintf("10.244.%d.0/24", r.IntN(256))), "192.0.2.0/24"}
			if r.IntN(4) == 0 {
				p.Networks = append(p.Networks, "0.0.0.0/0", "::/0")
			}
		default:
			p.Nodes = &metav1.LabelSelector{MatchLabels: map[string]string{"zone": zones[r.IntN(len(zones))]}}
		}
		out = append(out, p)
	}
	return out
}

func clusterProtocols(r *rand.Rand, named bool) []cnpv1alpha2.ClusterNetworkPolicyProtocol {
	var out []cnpv1alpha2.ClusterNetworkPolicyProtocol
	for range r.IntN(3) {
		var p cnpv1alpha2.ClusterNetworkPolicyProtocol
		switch r.IntN(4) {
		case 0:
			p.TCP = &cnpv1alpha2.ClusterNetworkPolicyProtocolTCP{DestinationPort: &cnpv1alpha2.Port{Number: int32(svcPort[apps[r.IntN(len(apps))]])}}
		case 1:
			p.UDP = &cnpv1alpha2.ClusterNetworkPolicyProtocolUDP{DestinationPort: &cnpv1alpha2.Port{Number: 53}}
		case 2:
			p.TCP = &cnpv1alpha2.ClusterNetworkPolicyProtocolTCP{DestinationPort: &cnpv1alpha2.Port{Range: &cnpv1alpha2.PortRange{Start: 8000, End: int32(8100 + r.IntN(500))}}}
		default:
			if !named {
				p.TCP = &cnpv1alpha2.ClusterNetworkPolicyProtocolTCP{DestinationPort: &cnpv1alpha2.Port{Number: 9090}}
				break
			}
			p.DestinationNamedPort = []string{"http", "metrics"}[r.IntN(2)]
		}
		out = append(out, p)
	}
	return out
}
