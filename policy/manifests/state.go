package manifests

import (
	"bytes"
	"io"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/policy"
)

// Objects turns a State back into API objects, for Write, WriteList and EncodeList: what
// the State holds of each (a Pod's labels, node, hostNetwork, phase, addresses and named
// ports — these in one container —; a Node's labels, pod ranges and addresses as
// InternalIPs; policies and ClusterNetworkPolicies as they are), so that loading them gives
// the same State.
func Objects(s policy.State) []any {
	objs := make([]any, 0, len(s.Namespaces)+len(s.Nodes)+len(s.Pods)+len(s.Policies)+len(s.ClusterPolicies))
	for _, n := range s.Namespaces {
		objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: n.Labels}})
	}
	for _, n := range s.Nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: n.Labels}}
		for _, c := range n.PodCIDRs {
			node.Spec.PodCIDRs = append(node.Spec.PodCIDRs, c.String())
		}
		for _, ip := range n.IPs {
			node.Status.Addresses = append(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip.String()})
		}
		objs = append(objs, node)
	}
	for i := range s.Pods {
		p := &s.Pods[i]
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels},
			Spec:       corev1.PodSpec{NodeName: p.Node, HostNetwork: p.HostNetwork},
			Status:     corev1.PodStatus{Phase: corev1.PodPhase(p.Phase)},
		}
		if len(p.Ports) > 0 {
			c := corev1.Container{Name: "ports"}
			for _, np := range p.Ports {
				c.Ports = append(c.Ports, corev1.ContainerPort{Name: np.Name, ContainerPort: int32(np.Port), Protocol: corev1.Protocol(np.Proto.String())})
			}
			pod.Spec.Containers = []corev1.Container{c}
		}
		for j, ip := range p.IPs {
			if j == 0 {
				pod.Status.PodIP = ip.String()
			}
			pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: ip.String()})
		}
		objs = append(objs, pod)
	}
	for _, np := range s.Policies {
		objs = append(objs, np)
	}
	for _, cnp := range s.ClusterPolicies {
		objs = append(objs, cnp)
	}
	return objs
}

// EncodeList writes objects (as Write) to w as one YAML v1 List.
func EncodeList(w io.Writer, objs ...any) error {
	b, err := list(objs)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// Parse reads manifests from data as Load reads a file named name (its extension picks JSON
// or YAML; errors name it).
func Parse(name string, data []byte) (policy.State, error) {
	return (&source{files: []file{{name: name, data: bytes.Clone(data)}}}).parse()
}
