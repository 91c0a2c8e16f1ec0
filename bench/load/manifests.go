package load

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/policy"
)

// Objects turns a policy.State (e.g. from synth.Generate) back into the Kubernetes objects
// `podwall run --manifests` reads: Namespaces, Nodes, Pods (Running, with status.podIPs and
// one container carrying the named ports) and the NetworkPolicies as they are.
func Objects(s policy.State) []any {
	var out []any
	for _, ns := range s.Namespaces {
		out = append(out, &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
			ObjectMeta: metav1.ObjectMeta{Name: ns.Name, Labels: ns.Labels}})
	}
	for _, n := range s.Nodes {
		node := &corev1.Node{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
			ObjectMeta: metav1.ObjectMeta{Name: n.Name}}
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
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
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

// WriteManifests writes objects as one multi-document YAML file at path, atomically (a
// temporary file renamed over path), so a watching agent never reads half of it.
func WriteManifests(path string, objs ...any) error {
	var out bytes.Buffer
	for _, o := range objs {
		switch o.(type) {
		case *corev1.Namespace, *corev1.Node, *corev1.Pod, *networkingv1.NetworkPolicy:
		default:
			return fmt.Errorf("load: manifests: unsupported object %T", o)
		}
		b, err := yaml.Marshal(o)
		if err != nil {
			return err
		}
		out.WriteString("---\n")
		out.Write(dropNullCreationTimestamps(b))
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, out.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// WriteList writes objects as one v1 List in one YAML document at path, atomically. A
// large cluster loads faster this way than as one document per object (see README).
func WriteList(path string, objs ...any) error {
	list := struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Items      []any  `json:"items"`
	}{"v1", "List", objs}
	for _, o := range objs {
		switch o.(type) {
		case *corev1.Namespace, *corev1.Node, *corev1.Pod, *networkingv1.NetworkPolicy:
		default:
			return fmt.Errorf("load: manifests: unsupported object %T", o)
		}
	}
	b, err := yaml.Marshal(list)
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, dropNullCreationTimestamps(b), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// dropNullCreationTimestamps removes the "creationTimestamp: null" lines that marshalling
// a zero ObjectMeta writes; they are noise in generated manifests.
func dropNullCreationTimestamps(b []byte) []byte {
	var out []byte
	for line := range strings.Lines(string(b)) {
		if strings.TrimSpace(line) == "creationTimestamp: null" {
			continue
		}
		out = append(out, line...)
	}
	return out
}
