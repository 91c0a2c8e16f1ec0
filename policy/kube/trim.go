package kube

import (
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/podwall/podwall/policy"
)

// trim is the informers' transform: it cuts objects down to what policy reads, in place
// (client-go hands the transform an object nobody else holds yet). It is idempotent, as
// client-go requires. Tombstones and other types pass through unchanged.
func trim(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		trimPod(o)
	case *corev1.Namespace:
		trimMeta(&o.ObjectMeta)
		o.Spec, o.Status = corev1.NamespaceSpec{}, corev1.NamespaceStatus{}
	case *networkingv1.NetworkPolicy:
		trimPolicyMeta(&o.ObjectMeta)
	case *cnpv1alpha2.ClusterNetworkPolicy:
		trimClusterPolicy(o)
	case *corev1.Node:
		trimNode(o)
	}
	return obj, nil
}

// trimNode keeps exactly what policy.FromNode reads: spec.podCIDR, spec.podCIDRs and
// status.addresses.
func trimNode(n *corev1.Node) {
	trimMeta(&n.ObjectMeta)
	n.Spec = corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs}
	n.Status = corev1.NodeStatus{Addresses: n.Status.Addresses}
}

// trimMeta keeps what identifies an object and its labels. ResourceVersion stays: the
// reflector resumes its watch from it. UID stays so a recreated object is a new one.
func trimMeta(m *metav1.ObjectMeta) {
	*m = metav1.ObjectMeta{
		Name:            m.Name,
		Namespace:       m.Namespace,
		UID:             m.UID,
		ResourceVersion: m.ResourceVersion,
		Labels:          m.Labels,
	}
}

// trimPolicyMeta is trimMeta for a NetworkPolicy or ClusterNetworkPolicy: it keeps, of the
// annotations, only policy.StagedAnnotation (SPEC §2c).
func trimPolicyMeta(m *metav1.ObjectMeta) {
	staged, ok := m.Annotations[policy.StagedAnnotation]
	trimMeta(m)
	if ok {
		m.Annotations = map[string]string{policy.StagedAnnotation: staged}
	}
}

// trimPod keeps exactly what policy.FromPod reads: labels, spec.nodeName,
// spec.hostNetwork, the named ports of containers and init containers, status.phase,
// status.podIP and status.podIPs.
func trimPod(p *corev1.Pod) {
	trimMeta(&p.ObjectMeta)
	p.Spec = corev1.PodSpec{
		NodeName:       p.Spec.NodeName,
		HostNetwork:    p.Spec.HostNetwork,
		Containers:     namedPorts(p.Spec.Containers),
		InitContainers: namedPorts(p.Spec.InitContainers),
	}
	p.Status = corev1.PodStatus{
		Phase:  p.Status.Phase,
		PodIP:  p.Status.PodIP,
		PodIPs: p.Status.PodIPs,
	}
}

// namedPorts keeps, of each container with named ports, its name and those ports; containers
// without any are dropped.
func namedPorts(cs []corev1.Container) []corev1.Container {
	var out []corev1.Container
	for i := range cs {
		var ports []corev1.ContainerPort
		for _, p := range cs[i].Ports {
			if p.Name != "" {
				ports = append(ports, corev1.ContainerPort{Name: p.Name, Protocol: p.Protocol, ContainerPort: p.ContainerPort})
			}
		}
		if len(ports) > 0 {
			out = append(out, corev1.Container{Name: cs[i].Name, Ports: ports})
		}
	}
	return out
}

// The changed functions report whether an update of a trimmed object changes what policy
// reads. Most pod updates are status conditions and resource versions: they are dropped
// here instead of costing a rebuild.

func podChanged(a, b *corev1.Pod) bool {
	return a.UID != b.UID || !maps.Equal(a.Labels, b.Labels) ||
		a.Spec.NodeName != b.Spec.NodeName || a.Spec.HostNetwork != b.Spec.HostNetwork ||
		a.Status.Phase != b.Status.Phase || a.Status.PodIP != b.Status.PodIP ||
		!slices.Equal(a.Status.PodIPs, b.Status.PodIPs) ||
		!apiequality.Semantic.DeepEqual(a.Spec.Containers, b.Spec.Containers) ||
		!apiequality.Semantic.DeepEqual(a.Spec.InitContainers, b.Spec.InitContainers)
}

func namespaceChanged(a, b *corev1.Namespace) bool {
	return a.UID != b.UID || !maps.Equal(a.Labels, b.Labels)
}

func policyChanged(a, b *networkingv1.NetworkPolicy) bool {
	return a.UID != b.UID || policy.IsStaged(&a.ObjectMeta) != policy.IsStaged(&b.ObjectMeta) ||
		!apiequality.Semantic.DeepEqual(a.Spec, b.Spec)
}
