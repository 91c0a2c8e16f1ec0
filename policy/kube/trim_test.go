package kube

import (
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podwall/podwall/policy"
)

// fullPod is a pod with much that policy does not read.
func fullPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "web-0", UID: "u1", ResourceVersion: "42",
			Labels:          map[string]string{"app": "web"},
			Annotations:     map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubelet"}},
			OwnerReferences: []metav1.OwnerReference{{Kind: "StatefulSet", Name: "web"}}},
		Spec: corev1.PodSpec{
			NodeName: "node-a",
			InitContainers: []corev1.Container{
				{Name: "init", Image: "busybox", Command: []string{"true"}},
				{Name: "sidecar", Image: "envoy", Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: 9901}, {ContainerPort: 15000}}},
			},
			Containers: []corev1.Container{{Name: "app", Image: "nginx", Env: []corev1.EnvVar{{Name: "A", Value: "b"}},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "dns", Protocol: corev1.ProtocolUDP, ContainerPort: 53}, {ContainerPort: 9000}}}},
			Volumes: []corev1.Volume{{Name: "v"}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.5",
			PodIPs:     []corev1.PodIP{{IP: "10.244.1.5"}, {IP: "fd00:10:244:1::5"}},
			HostIP:     "172.18.0.2",
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

// Trimming keeps exactly what policy.FromPod reads.
func TestTrimPodKeepsWhatPolicyReads(t *testing.T) {
	want, err := policy.FromPod(fullPod())
	if err != nil {
		t.Fatal(err)
	}
	p := fullPod()
	trim(p)
	got, err := policy.FromPod(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("FromPod(trimmed) = %+v\nwant %+v", got, want)
	}
	if p.Annotations != nil || p.ManagedFields != nil || p.OwnerReferences != nil || p.Spec.Volumes != nil ||
		p.Status.Conditions != nil || p.Status.HostIP != "" {
		t.Errorf("trimmed pod keeps more than policy reads: %+v", p)
	}
	if len(p.Spec.InitContainers) != 1 || len(p.Spec.Containers[0].Ports) != 2 || p.Spec.Containers[0].Image != "" {
		t.Errorf("trimmed containers: %+v %+v", p.Spec.InitContainers, p.Spec.Containers)
	}
	if p.ResourceVersion != "42" || p.UID != "u1" {
		t.Errorf("trim dropped resourceVersion or uid: %+v", p.ObjectMeta)
	}
}

// Trimming a Node keeps exactly what policy.FromNode reads: addresses and pod ranges.
func TestTrimNodeKeepsWhatPolicyReads(t *testing.T) {
	full := func() *corev1.Node {
		return &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "node-1", UID: "n1", ResourceVersion: "7",
				Annotations: map[string]string{"a": "b"}},
			Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24", "fd00:10:244:1::/64"},
				ProviderID: "cloud://x"},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "172.18.0.2"}},
				Capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")}},
		}
	}
	n := full()
	trim(n)
	if got, want := policy.FromNode(n), policy.FromNode(full()); !reflect.DeepEqual(got, want) {
		t.Errorf("FromNode(trimmed) = %+v\nwant %+v", got, want)
	}
	if n.Annotations != nil || n.Spec.ProviderID != "" || n.Status.Capacity != nil {
		t.Errorf("trimmed node keeps more than policy reads: %+v", n)
	}
}

// client-go requires the transform to be idempotent.
func TestTrimIdempotent(t *testing.T) {
	once := fullPod()
	trim(once)
	twice := once.DeepCopy()
	trim(twice)
	if !reflect.DeepEqual(once, twice) {
		t.Errorf("trim(trim(p)) != trim(p):\n%+v\n%+v", twice, once)
	}
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "db",
		Annotations: map[string]string{"a": "b"}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{}}}}
	trim(np)
	if np.Annotations != nil || np.ManagedFields != nil || len(np.Spec.Ingress) != 1 {
		t.Errorf("trimmed policy: %+v", np)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod", Labels: map[string]string{"env": "prod"}},
		Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"kubernetes"}}}
	trim(ns)
	if ns.Spec.Finalizers != nil || ns.Labels["env"] != "prod" {
		t.Errorf("trimmed namespace: %+v", ns)
	}
}

// Updates that change nothing policy reads do not cost a rebuild.
func TestChanged(t *testing.T) {
	base := fullPod()
	trim(base)
	tweak := func(f func(p *corev1.Pod)) *corev1.Pod {
		p := fullPod()
		f(p)
		trim(p)
		return p
	}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want bool
	}{
		{"resource version", tweak(func(p *corev1.Pod) { p.ResourceVersion = "43" }), false},
		{"condition", tweak(func(p *corev1.Pod) { p.Status.Conditions = nil }), false},
		{"annotation", tweak(func(p *corev1.Pod) { p.Annotations["x"] = "y" }), false},
		{"unnamed port", tweak(func(p *corev1.Pod) { p.Spec.Containers[0].Ports[2].ContainerPort = 9001 }), false},
		{"label", tweak(func(p *corev1.Pod) { p.Labels["app"] = "db" }), true},
		{"address", tweak(func(p *corev1.Pod) { p.Status.PodIPs = p.Status.PodIPs[:1] }), true},
		{"phase", tweak(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), true},
		{"named port", tweak(func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].ContainerPort = 8081 }), true},
		{"node", tweak(func(p *corev1.Pod) { p.Spec.NodeName = "node-b" }), true},
		{"host network", tweak(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), true},
		{"recreated", tweak(func(p *corev1.Pod) { p.UID = "u2" }), true},
	} {
		if got := podChanged(base, tc.pod); got != tc.want {
			t.Errorf("%s: podChanged = %v, want %v", tc.name, got, tc.want)
		}
	}

	np := func(port int) *networkingv1.NetworkPolicy {
		p := intstr.FromInt32(int32(port))
		return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "db", ResourceVersion: "1"},
			Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: &p}}}}}}
	}
	rv := np(80)
	rv.ResourceVersion = "2"
	if policyChanged(np(80), rv) || !policyChanged(np(80), np(81)) {
		t.Error("policyChanged: want spec changes only")
	}
	ns := func(l string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod", Labels: map[string]string{"env": l}}}
	}
	if namespaceChanged(ns("a"), ns("a")) || !namespaceChanged(ns("a"), ns("b")) {
		t.Error("namespaceChanged: want label changes only")
	}
}

func TestStatusString(t *testing.T) {
	since := time.Now().Add(-12 * time.Second)
	for _, tc := range []struct {
		st   Status
		want string
	}{
		{Status{Since: since}, "kubernetes API: connecting"},
		{Status{Connected: true, Synced: true}, "kubernetes API: connected, synced"},
		{Status{Connected: true, LastError: "pods: forbidden"}, "kubernetes API: connected, caches not synced yet (last error: pods: forbidden)"},
		{Status{Since: since, LastError: "EOF"}, "kubernetes API: unreachable for 12s (last error: EOF)"},
		{Status{Since: since, LastError: "EOF", Synced: true}, "kubernetes API: unreachable for 12s (last error: EOF); enforcing the last state, retrying"},
	} {
		if got := tc.st.String(); got != tc.want {
			t.Errorf("%#v:\n got %q\nwant %q", tc.st, got, tc.want)
		}
	}
}
