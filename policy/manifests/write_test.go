package manifests

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/policy"
)

// What Write and WriteList write, Load reads back: objects without apiVersion and kind get
// those of their type, and are left as they were.
func TestWriteLoads(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod", Labels: map[string]string{"team": "a"}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "db", Labels: map[string]string{"role": "db"}},
		Spec:   corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "main", Image: "x"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.4", PodIPs: []corev1.PodIP{{IP: "10.244.1.4"}}}}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "172.18.0.2"}}}}
	np := &networkingv1.NetworkPolicy{TypeMeta: metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "deny"},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}

	for name, write := range map[string]func(string, ...any) error{"Write": Write, "WriteList": WriteList} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "cluster.yaml")
			if err := write(path, ns, pod, node, np); err != nil {
				t.Fatal(err)
			}
			st := mustLoad(t, path)
			if len(st.Namespaces) != 1 || st.Namespaces[0].Labels["team"] != "a" ||
				!slices.Equal(podKeys(st), []string{"prod/db"}) || len(st.Pods[0].IPs) != 1 ||
				len(st.Nodes) != 1 || len(st.Nodes[0].IPs) != 1 ||
				!slices.Equal(policyKeys(st), []string{"prod/deny"}) {
				t.Errorf("loaded %+v", st)
			}
			if ns.Kind != "" || pod.Kind != "" || node.Kind != "" {
				t.Error("Write changed the objects it was given")
			}
			b, _ := os.ReadFile(path)
			if strings.Contains(string(b), "creationTimestamp") {
				t.Errorf("null creationTimestamps written:\n%s", b)
			}
			if files, _ := os.ReadDir(dir); len(files) != 1 {
				t.Errorf("files left beside the manifests: %v", files)
			}
			if err := write(path, ns, "a string"); err == nil {
				t.Error("wrote a string")
			}
		})
	}
}

// A State written out with Objects and EncodeList and parsed again is the same State: what
// an agent's /debug/state serves is what it enforces.
func TestObjectsRoundTrip(t *testing.T) {
	want, err := Load("../../deploy/examples/3tier")
	if err != nil {
		t.Fatal(err)
	}
	want.Nodes = append(want.Nodes, policy.Node{Name: "node-1", IPs: []netip.Addr{netip.MustParseAddr("172.18.0.1"), netip.MustParseAddr("fd00:172:18::1")},
		Labels: map[string]string{"zone": "a"}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}})
	cnps, err := Load("../../deploy/examples/clusternetworkpolicy/protect-namespace.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cnps.ClusterPolicies) == 0 {
		t.Fatal("the example holds no ClusterNetworkPolicy")
	}
	want.ClusterPolicies = cnps.ClusterPolicies
	var b bytes.Buffer
	if err := EncodeList(&b, Objects(want)...); err != nil {
		t.Fatal(err)
	}
	got, err := Parse("state.yaml", b.Bytes())
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
}
