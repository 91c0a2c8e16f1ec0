package agent

import (
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/e2e/lab"
)

// Namespace returns a Namespace object.
func Namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

// Pod returns the Pod object of a lab pod: scheduled on nodeName, Running, with the lab
// pod's addresses (IPv4 primary) and the given named container ports.
func Pod(p *lab.Pod, namespace, name, nodeName string, labels map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: nodeName,
			Containers: []corev1.Container{{Name: "main", Image: "lab", Ports: ports}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, a := range []string{addr(p.IPv4), addr(p.IPv6)} {
		if a != "" {
			pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: a})
		}
	}
	if len(pod.Status.PodIPs) > 0 {
		pod.Status.PodIP = pod.Status.PodIPs[0].IP
	}
	return pod
}

func addr(a interface {
	IsValid() bool
	String() string
}) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// Write writes objects as one multi-document YAML file, atomically (write + rename) so a
// watching agent never reads half a file.
func Write(path string, objs ...any) error {
	var out []byte
	for _, o := range objs {
		switch o.(type) {
		case *corev1.Namespace, *corev1.Pod, *networkingv1.NetworkPolicy, *corev1.Node:
		default:
			return fmt.Errorf("agent.Write: unsupported object %T", o)
		}
		b, err := yaml.Marshal(o)
		if err != nil {
			return err
		}
		out = append(append(out, "---\n"...), b...)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// DBPolicy is the seeds' db-policy in namespace ns: pods role=db accept TCP 3306 only from
// pods name=api-pod. The demo and the 3-tier e2e enforce it.
func DBPolicy(ns string) *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(3306)
	return &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
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
