package lab

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The Kubernetes objects of lab pods and nodes, for an agent's manifests (write them with
// policy/manifests.Write) or an API server.

// Object returns the Pod object of lab pod p: namespace/name, scheduled on nodeName,
// Running, with p's addresses (IPv4 primary) and the given container ports.
func (p *Pod) Object(namespace, name, nodeName string, labels map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: nodeName,
			Containers: []corev1.Container{{Name: "main", Image: "lab", Ports: ports}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, a := range []netip.Addr{p.IPv4, p.IPv6} {
		if a.IsValid() {
			pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: a.String()})
		}
	}
	if len(pod.Status.PodIPs) > 0 {
		pod.Status.PodIP = pod.Status.PodIPs[0].IP
	}
	return pod
}

// Object returns the Node object of lab node n, called name, with its underlay addresses
// as InternalIPs and its pod CIDRs as spec.podCIDRs.
func (n *Node) Object(name string) *corev1.Node {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, p := range []netip.Prefix{n.PodCIDRv4, n.PodCIDRv6} {
		if p.IsValid() {
			node.Spec.PodCIDRs = append(node.Spec.PodCIDRs, p.String())
		}
	}
	if len(node.Spec.PodCIDRs) > 0 {
		node.Spec.PodCIDR = node.Spec.PodCIDRs[0]
	}
	for _, a := range []netip.Addr{n.UnderlayV4, n.UnderlayV6} {
		if a.IsValid() {
			node.Status.Addresses = append(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a.String()})
		}
	}
	return node
}

// DBPolicy is the seeds' db-policy in namespace ns: pods role=db accept TCP 3306 only from
// pods name=api-pod. `podwall demo` and the 3-tier e2e tests enforce it.
func DBPolicy(ns string) *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(3306)
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db-policy"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "db"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"name": "api-pod"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
			}},
		},
	}
}
