package load

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/policy"
)

// Objects turns a policy.State (e.g. from synth.Generate) back into the Kubernetes objects
// `podwall run --manifests` reads: Namespaces, Nodes, Pods (Running, with status.podIPs and
// one container carrying the named ports) and the NetworkPolicies as they are. Write them
// with policy/manifests.Write or WriteList.
func Objects(s policy.State) []any {
	var out []any
	for _, ns := range s.Namespaces {
		out = append(out, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns.Name, Labels: ns.Labels}})
	}
	for _, n := range s.Nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name}}
		for _, ip := range n.IPs {
			node.Status.Addresses = append(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip.String()})
		}
		out = append(out, node)
	}
	for i := range s.Pods {
		out = append(out, PodObject(&s.Pods[i]))
	}
	for _, np := range s.Policies {
		out = append(out, np)
	}
	return out
}

// PodObject returns the Pod a policy.Pod was trimmed from (as far as policy can tell).
func PodObject(p *policy.Pod) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels},
		Spec: corev1.PodSpec{NodeName: p.Node, HostNetwork: p.HostNetwork,
			Containers: []corev1.Container{{Name: "main", Image: "bench"}}},
		Status: corev1.PodStatus{Phase: corev1.PodPhase(p.Phase)},
	}
	for _, np := range p.Ports {
		pod.Spec.Containers[0].Ports = append(pod.Spec.Containers[0].Ports, corev1.ContainerPort{
			Name: np.Name, ContainerPort: int32(np.Port), Protocol: corev1.Protocol(np.Proto.String())})
	}
	for _, ip := range p.IPs {
		pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: ip.String()})
	}
	if len(pod.Status.PodIPs) > 0 {
		pod.Status.PodIP = pod.Status.PodIPs[0].IP
	}
	return pod
}
