package policytest

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestPort(t *testing.T) {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	p80, pHTTP := intstr.FromInt32(80), intstr.FromString("http")
	end := int32(32768)
	p32000 := intstr.FromInt32(32000)
	for spec, want := range map[string]networkingv1.NetworkPolicyPort{
		"80":              {Port: &p80},
		"80/UDP":          {Protocol: &udp, Port: &p80},
		"http":            {Port: &pHTTP},
		"http/TCP":        {Protocol: &tcp, Port: &pHTTP},
		"32000-32768/TCP": {Protocol: &tcp, Port: &p32000, EndPort: &end},
		"/UDP":            {Protocol: &udp},
	} {
		if got := From(Port(spec)).Ports; len(got) != 1 || !reflect.DeepEqual(got[0], want) {
			t.Errorf("Port(%q) = %+v, want %+v", spec, got, want)
		}
	}
	for _, bad := range []string{"", "80/ICMP", "1-x/TCP"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Port(%q) did not panic", bad)
				}
			}()
			Port(bad)
		}()
	}
}

// A policy reads like its YAML: peers and ports sorted into their rule, policyTypes listed
// by the directions given.
func TestNetworkPolicy(t *testing.T) {
	got := NetworkPolicy("prod", "db", Selector("role", "db"),
		Ingress(From(Pods(Selector("name", "api")), Port("3306/TCP"), Namespaces(Exprs(In("team", "a"))))),
		Egress())
	tcp, p3306 := corev1.ProtocolTCP, intstr.FromInt32(3306)
	want := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "db"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "db"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"name": "api"}}},
					{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
						{Key: "team", Operator: metav1.LabelSelectorOpIn, Values: []string{"a"}}}}},
				},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p3306}},
			}},
			Egress:      []networkingv1.NetworkPolicyEgressRule{},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if s := Selector(); s.MatchLabels != nil || s.MatchExpressions != nil {
		t.Errorf("Selector() = %+v, want the empty selector", s)
	}
}
