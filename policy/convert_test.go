package policy

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/policy/flow"
)

func TestFromPod(t *testing.T) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "web-1", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			NodeName: "node-a",
			InitContainers: []corev1.Container{{
				Name:  "proxy", // a sidecar: its named ports count
				Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: 15000}},
			}},
			Containers: []corev1.Container{
				{Name: "app", Ports: []corev1.ContainerPort{
					{Name: "http", ContainerPort: 8080},
					{ContainerPort: 9999}, // unnamed: not needed to resolve names
					{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
				}},
				{Name: "metrics", Ports: []corev1.ContainerPort{{Name: "sig", ContainerPort: 9000, Protocol: corev1.ProtocolSCTP}}},
			},
			EphemeralContainers: []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
				Name: "debug", Ports: []corev1.ContainerPort{{Name: "debug", ContainerPort: 1234}},
			}}},
		},
		Status: corev1.PodStatus{
			Phase:  corev1.PodRunning,
			PodIP:  "10.244.1.5",
			PodIPs: []corev1.PodIP{{IP: "10.244.1.5"}, {IP: "fd00:10:244:1::5"}},
		},
	}
	got, err := FromPod(p)
	if err != nil {
		t.Fatalf("FromPod: %v", err)
	}
	want := Pod{
		Namespace: "prod",
		Name:      "web-1",
		Labels:    map[string]string{"app": "web"},
		IPs:       []netip.Addr{netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("fd00:10:244:1::5")},
		Ports: []NamedPort{
			{Name: "http", Proto: flow.TCP, Port: 8080},
			{Name: "dns", Proto: flow.UDP, Port: 53},
			{Name: "sig", Proto: flow.SCTP, Port: 9000},
			{Name: "admin", Proto: flow.TCP, Port: 15000},
		},
		Node:  "node-a",
		Phase: "Running",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("FromPod =\n%+v\nwant\n%+v", got, want)
	}

	// The result must not alias the API object.
	p.Labels["app"] = "changed"
	if got.Labels["app"] != "web" {
		t.Error("Pod.Labels aliases the API object's labels")
	}
}

func TestFromPodIPs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status corev1.PodStatus
		want   []string
	}{
		{"no address yet", corev1.PodStatus{Phase: corev1.PodPending}, nil},
		{"podIP only", corev1.PodStatus{PodIP: "10.0.0.1"}, []string{"10.0.0.1"}},
		{"podIPs only", corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "fd00::1"}, {IP: "10.0.0.1"}}}, []string{"fd00::1", "10.0.0.1"}},
		{"IPv6 primary", corev1.PodStatus{PodIP: "fd00::1", PodIPs: []corev1.PodIP{{IP: "fd00::1"}, {IP: "10.0.0.1"}}}, []string{"fd00::1", "10.0.0.1"}},
		{"non-canonical primary", corev1.PodStatus{PodIP: "fd00:0::1", PodIPs: []corev1.PodIP{{IP: "fd00::1"}}}, []string{"fd00::1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromPod(&corev1.Pod{Status: tc.status})
			if err != nil {
				t.Fatalf("FromPod: %v", err)
			}
			var want []netip.Addr
			for _, s := range tc.want {
				want = append(want, netip.MustParseAddr(s))
			}
			if !reflect.DeepEqual(got.IPs, want) {
				t.Errorf("IPs = %v, want %v", got.IPs, want)
			}
		})
	}
}

func TestFromPodErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tweak func(*corev1.Pod)
		want  []string // one per problem, in order
	}{
		{"bad podIPs entry", func(p *corev1.Pod) { p.Status.PodIPs[1].IP = "fd00::zz" },
			[]string{`status.podIPs[1]: Invalid value: "fd00::zz": must be a valid IP address`}},
		{"bad podIP alone", func(p *corev1.Pod) { p.Status = corev1.PodStatus{PodIP: "10.0.0.300"} },
			[]string{`status.podIP: Invalid value: "10.0.0.300"`}},
		{"zone", func(p *corev1.Pod) { p.Status.PodIPs[1].IP = "fe80::1%eth0" },
			[]string{`status.podIPs[1]: Invalid value: "fe80::1%eth0": must not have a zone`}},
		{"IPv4-mapped", func(p *corev1.Pod) { p.Status.PodIPs[1].IP = "::ffff:10.0.0.9" },
			[]string{`status.podIPs[1]: Invalid value: "::ffff:10.0.0.9": must not be an IPv4-mapped`}},
		{"duplicate", func(p *corev1.Pod) { p.Status.PodIPs[1].IP = "10.0.0.1" },
			[]string{`status.podIPs[1]: Duplicate value: "10.0.0.1"`}},
		{"two of one family", func(p *corev1.Pod) { p.Status.PodIPs[1].IP = "10.0.0.2" },
			[]string{`status.podIPs[1]: Invalid value: "10.0.0.2": may specify no more than one IP for each IP family`}},
		{"primary not first", func(p *corev1.Pod) { p.Status.PodIP = "fd00::1" },
			[]string{`status.podIP: Invalid value: "fd00::1": must equal status.podIPs[0]`}},
		{"bad primary", func(p *corev1.Pod) { p.Status.PodIP = "nope" },
			[]string{`status.podIP: Invalid value: "nope": must be a valid IP address`}},
		{"bad port protocol", func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].Protocol = "ICMP" },
			[]string{`spec.containers[0].ports[0].protocol: Unsupported value: "ICMP"`}},
		{"bad init container port", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Ports: []corev1.ContainerPort{{Name: "x", ContainerPort: 70000}}}}
		}, []string{"spec.initContainers[0].ports[0].containerPort: Invalid value: 70000"}},
		{"all at once", func(p *corev1.Pod) {
			p.Status.PodIPs[0].IP = "bad"
			p.Status.PodIPs[1].IP = "also-bad"
			p.Spec.Containers[0].Ports[0].ContainerPort = 0
		}, []string{"status.podIPs[0]", "status.podIPs[1]", "spec.containers[0].ports[0].containerPort"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "web"},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}},
				}}},
				Status: corev1.PodStatus{PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}}},
			}
			tc.tweak(p)
			_, err := FromPod(p)
			if err == nil {
				t.Fatal("FromPod succeeded, want an error")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(lines), len(tc.want), err)
			}
			for i, w := range tc.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("problem %d: %q does not contain %q", i, lines[i], w)
				}
			}
		})
	}
}

func TestFromNamespace(t *testing.T) {
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   map[string]string
	}{
		{"no labels", nil, map[string]string{"kubernetes.io/metadata.name": "prod"}},
		{"labels kept", map[string]string{"team": "a"}, map[string]string{"team": "a", "kubernetes.io/metadata.name": "prod"}},
		// The API server overwrites the label with the name; so do we.
		{"name label corrected", map[string]string{"kubernetes.io/metadata.name": "other"}, map[string]string{"kubernetes.io/metadata.name": "prod"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod", Labels: tc.labels}}
			got := FromNamespace(n)
			if got.Name != "prod" || !reflect.DeepEqual(got.Labels, tc.want) {
				t.Fatalf("FromNamespace = %+v, want labels %v", got, tc.want)
			}
			if tc.labels != nil && len(tc.labels) != 1 {
				t.Error("FromNamespace modified the API object's labels")
			}
		})
	}
}

func TestFromNode(t *testing.T) {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-a"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: "node-a"},
			{Type: corev1.NodeInternalIP, Address: "172.18.0.2"},
			{Type: corev1.NodeInternalIP, Address: "fd00:172:18::2"},
			{Type: corev1.NodeExternalIP, Address: "198.51.100.7"},
			{Type: corev1.NodeExternalIP, Address: "172.18.0.2"}, // listed twice
			{Type: corev1.NodeInternalDNS, Address: "node-a.internal"},
			{Type: corev1.NodeInternalIP, Address: "not-an-ip"},
			{Type: corev1.NodeExternalDNS, Address: "10.9.9.9"}, // a DNS entry, not an address
		}},
		Spec: corev1.NodeSpec{
			PodCIDR: "10.244.0.0/24",
			PodCIDRs: []string{"10.244.0.0/24", "fd00:10:244::1/64", // not masked: masked
				"10.244.0.0/24", "bogus", "::ffff:10.0.0.0/104"}, // twice, unparsable, IPv4-mapped
		},
	}
	want := Node{Name: "node-a", IPs: []netip.Addr{
		netip.MustParseAddr("172.18.0.2"),
		netip.MustParseAddr("fd00:172:18::2"),
		netip.MustParseAddr("198.51.100.7"),
	}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24"), netip.MustParsePrefix("fd00:10:244::/64")}}
	if got := FromNode(n); !reflect.DeepEqual(got, want) {
		t.Fatalf("FromNode = %+v, want %+v", got, want)
	}
	// spec.podCIDR alone (clusters before dual-stack) gives the range.
	old := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "old"}, Spec: corev1.NodeSpec{PodCIDR: "10.244.7.0/24"}}
	if got := FromNode(old).PodCIDRs; !reflect.DeepEqual(got, []netip.Prefix{netip.MustParsePrefix("10.244.7.0/24")}) {
		t.Errorf("FromNode(spec.podCIDR only).PodCIDRs = %v", got)
	}
}
