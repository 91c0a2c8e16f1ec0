package policy

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// validPolicy uses every kind of peer and port, so that each case below breaks exactly one thing.
func validPolicy() *networkingv1.NetworkPolicy {
	tcp, udp, sctp := corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP
	port := func(p intstr.IntOrString) *intstr.IntOrString { return &p }
	end := int32(90)
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "db"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}}},
					{
						PodSelector: &metav1.LabelSelector{},
						NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
							{Key: "team", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", "b"}},
							{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpExists},
						}},
					},
					{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16", "10.2.3.4/32"}}},
					{IPBlock: &networkingv1.IPBlock{CIDR: "2001:db8::/32", Except: []string{"2001:db8:1::/48"}}},
				},
				Ports: []networkingv1.NetworkPolicyPort{
					{Port: port(intstr.FromInt32(5432))},
					{Protocol: &udp, Port: port(intstr.FromInt32(80)), EndPort: &end},
					{Protocol: &sctp},
					{Protocol: &tcp, Port: port(intstr.FromString("metrics"))},
				},
			}},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}},
			}},
		},
	}
}

// TestValidateAccepts: each policy passes Validate and then compiles; the compiler trusts
// Validate and panics on what it should have refused.
func TestValidateAccepts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tweak func(*networkingv1.NetworkPolicy)
	}{
		{"full policy", func(*networkingv1.NetworkPolicy) {}},
		{"empty spec: deny all ingress", func(np *networkingv1.NetworkPolicy) { np.Spec = networkingv1.NetworkPolicySpec{} }},
		// The API server accepts host bits beyond the prefix (with a warning): the masked network.
		{"cidr with host bits", func(np *networkingv1.NetworkPolicy) {
			np.Spec.Ingress[0].From[2].IPBlock = &networkingv1.IPBlock{CIDR: "10.0.0.1/8", Except: []string{"10.1.0.0/16"}}
		}},
		{"non-canonical IPv6 cidr", func(np *networkingv1.NetworkPolicy) {
			np.Spec.Ingress[0].From[3].IPBlock.CIDR = "2001:DB8:0:0::/32"
		}},
		{"repeated policyType, as the API server allows", func(np *networkingv1.NetworkPolicy) {
			np.Spec.PolicyTypes = []networkingv1.PolicyType{"Ingress", "Ingress"}
		}},
		{"endPort equal to port", func(np *networkingv1.NetworkPolicy) {
			e := int32(80)
			np.Spec.Ingress[0].Ports[1].EndPort = &e
		}},
		{"port 65535 to 65535", func(np *networkingv1.NetworkPolicy) {
			p, e := intstr.FromInt32(65535), int32(65535)
			np.Spec.Ingress[0].Ports[1].Port, np.Spec.Ingress[0].Ports[1].EndPort = &p, &e
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			np := validPolicy()
			tc.tweak(np)
			if err := Validate(np); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if _, err := Compile(State{Policies: []*networkingv1.NetworkPolicy{np}}); err != nil {
				t.Fatalf("Compile: %v", err)
			}
		})
	}
}

func TestValidateRejects(t *testing.T) {
	intPort := func(n int32) *intstr.IntOrString { p := intstr.FromInt32(n); return &p }
	strPort := func(s string) *intstr.IntOrString { p := intstr.FromString(s); return &p }
	i32 := func(n int32) *int32 { return &n }
	proto := func(p corev1.Protocol) *corev1.Protocol { return &p }
	ingressPeer := func(np *networkingv1.NetworkPolicy) *networkingv1.NetworkPolicyPeer {
		return &np.Spec.Ingress[0].From[0]
	}
	ingressPort := func(np *networkingv1.NetworkPolicy) *networkingv1.NetworkPolicyPort {
		return &np.Spec.Ingress[0].Ports[0]
	}

	for _, tc := range []struct {
		name  string
		tweak func(*networkingv1.NetworkPolicy)
		want  []string // substrings of the single error reported: its path first
	}{
		// Metadata.
		{"no name", func(np *networkingv1.NetworkPolicy) { np.Name = "" },
			[]string{"metadata.name: Required value"}},
		{"bad name", func(np *networkingv1.NetworkPolicy) { np.Name = "Not_A_Name" },
			[]string{`metadata.name: Invalid value: "Not_A_Name"`}},
		{"no namespace", func(np *networkingv1.NetworkPolicy) { np.Namespace = "" },
			[]string{"metadata.namespace: Required value"}},
		{"bad label", func(np *networkingv1.NetworkPolicy) { np.Labels = map[string]string{"a": "b c"} },
			[]string{"metadata.labels: Invalid value"}},

		// Label selectors.
		{"podSelector bad operator", func(np *networkingv1.NetworkPolicy) {
			np.Spec.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Like", Values: []string{"b"}}}
		}, []string{`spec.podSelector.matchExpressions[0].operator: Invalid value: "Like"`}},
		{"podSelector In without values", func(np *networkingv1.NetworkPolicy) {
			np.Spec.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "a", Operator: metav1.LabelSelectorOpIn}}
		}, []string{"spec.podSelector.matchExpressions[0].values: Required value"}},
		{"podSelector Exists with values", func(np *networkingv1.NetworkPolicy) {
			np.Spec.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "a", Operator: metav1.LabelSelectorOpExists, Values: []string{"b"}}}
		}, []string{"spec.podSelector.matchExpressions[0].values: Forbidden"}},
		{"podSelector bad key", func(np *networkingv1.NetworkPolicy) {
			np.Spec.PodSelector.MatchLabels = map[string]string{"-a": "b"}
		}, []string{`spec.podSelector.matchLabels: Invalid value: "-a"`}},
		{"peer podSelector bad value", func(np *networkingv1.NetworkPolicy) {
			np.Spec.Ingress[0].From[1].NamespaceSelector.MatchExpressions[0].Values[1] = "b/c"
		}, []string{`spec.ingress[0].from[1].namespaceSelector.matchExpressions[0].values[1]: Invalid value: "b/c"`}},
		{"egress peer namespaceSelector bad value", func(np *networkingv1.NetworkPolicy) {
			np.Spec.Egress[0].To[0].NamespaceSelector.MatchLabels = map[string]string{"a": "b c"}
		}, []string{`spec.egress[0].to[0].namespaceSelector.matchLabels: Invalid value: "b c"`}},

		// policyTypes.
		{"unknown policyType", func(np *networkingv1.NetworkPolicy) {
			np.Spec.PolicyTypes = []networkingv1.PolicyType{"Ingress", "ingress"}
		}, []string{`spec.policyTypes[1]: Unsupported value: "ingress"`}},
		{"three policyTypes", func(np *networkingv1.NetworkPolicy) {
			np.Spec.PolicyTypes = []networkingv1.PolicyType{"Ingress", "Egress", "Ingress"}
		}, []string{"spec.policyTypes: Invalid value", "more than two"}},

		// Peers.
		{"empty peer", func(np *networkingv1.NetworkPolicy) { *ingressPeer(np) = networkingv1.NetworkPolicyPeer{} },
			[]string{"spec.ingress[0].from[0]: Required value", "must specify a peer"}},
		{"empty egress peer", func(np *networkingv1.NetworkPolicy) { np.Spec.Egress[0].To[0] = networkingv1.NetworkPolicyPeer{} },
			[]string{"spec.egress[0].to[0]: Required value"}},
		{"ipBlock with podSelector", func(np *networkingv1.NetworkPolicy) {
			ingressPeer(np).IPBlock = &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}
		}, []string{"spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer"}},
		{"ipBlock with namespaceSelector", func(np *networkingv1.NetworkPolicy) {
			np.Spec.Ingress[0].From[2].NamespaceSelector = &metav1.LabelSelector{}
		}, []string{"spec.ingress[0].from[2]: Forbidden"}},

		// ipBlock.
		{"ipBlock without cidr", func(np *networkingv1.NetworkPolicy) { np.Spec.Ingress[0].From[2].IPBlock.CIDR = "" },
			[]string{"spec.ingress[0].from[2].ipBlock.cidr: Required value"}},
		{"prefix too long", func(np *networkingv1.NetworkPolicy) { np.Spec.Ingress[0].From[2].IPBlock.CIDR = "10.0.0.0/33" },
			[]string{`spec.ingress[0].from[2].ipBlock.cidr: Invalid value: "10.0.0.0/33"`}},
		{"not a CIDR", func(np *networkingv1.NetworkPolicy) { np.Spec.Ingress[0].From[2].IPBlock.CIDR = "10.0.0.1" },
			[]string{`spec.ingress[0].from[2].ipBlock.cidr: Invalid value: "10.0.0.1"`}},
		{"leading zeros", func(np *networkingv1.NetworkPolicy) { np.Spec.Ingress[0].From[2].IPBlock.CIDR = "010.0.0.0/8" },
			[]string{`spec.ingress[0].from[2].ipBlock.cidr: Invalid value: "010.0.0.0/8"`}},
		{"IPv4-mapped IPv6", func(np *networkingv1.NetworkPolicy) {
			np.Spec.Ingress[0].From[3].IPBlock = &networkingv1.IPBlock{CIDR: "::ffff:10.0.0.0/104"}
		}, []string{`spec.ingress[0].from[3].ipBlock.cidr: Invalid value: "::ffff:10.0.0.0/104"`, "IPv4-mapped"}},
		{"bad except", func(np *networkingv1.NetworkPolicy) { np.Spec.Ingress[0].From[2].IPBlock.Except[1] = "10.2.3.4/40" },
			[]string{`spec.ingress[0].from[2].ipBlock.except[1]: Invalid value: "10.2.3.4/40"`}},
		{"except outside cidr", func(np *networkingv1.NetworkPolicy) { np.Spec.Ingress[0].From[2].IPBlock.Except[0] = "11.0.0.0/16" },
			[]string{`spec.ingress[0].from[2].ipBlock.except[0]: Invalid value: "11.0.0.0/16": must be a strict subset of ` + "`cidr`"}},
		{"except equal to cidr", func(np *networkingv1.NetworkPolicy) { np.Spec.Ingress[0].From[2].IPBlock.Except[0] = "10.0.0.0/8" },
			[]string{`spec.ingress[0].from[2].ipBlock.except[0]: Invalid value: "10.0.0.0/8"`, "strict subset"}},
		{"except wider than cidr", func(np *networkingv1.NetworkPolicy) { np.Spec.Ingress[0].From[2].IPBlock.Except[0] = "10.0.0.0/7" },
			[]string{`spec.ingress[0].from[2].ipBlock.except[0]: Invalid value: "10.0.0.0/7"`}},
		{"except of other family", func(np *networkingv1.NetworkPolicy) { np.Spec.Ingress[0].From[3].IPBlock.Except[0] = "10.0.0.0/16" },
			[]string{`spec.ingress[0].from[3].ipBlock.except[0]: Invalid value: "10.0.0.0/16"`, "strict subset"}},
		{"egress ipBlock", func(np *networkingv1.NetworkPolicy) {
			np.Spec.Egress[0].To[0] = networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "fd00::/129"}}
		}, []string{`spec.egress[0].to[0].ipBlock.cidr: Invalid value: "fd00::/129"`}},

		// Ports.
		{"ICMP protocol", func(np *networkingv1.NetworkPolicy) { ingressPort(np).Protocol = proto("ICMP") },
			[]string{`spec.ingress[0].ports[0].protocol: Unsupported value: "ICMP"`}},
		{"lower-case protocol", func(np *networkingv1.NetworkPolicy) { ingressPort(np).Protocol = proto("tcp") },
			[]string{`spec.ingress[0].ports[0].protocol: Unsupported value: "tcp"`}},
		{"port 0", func(np *networkingv1.NetworkPolicy) { ingressPort(np).Port = intPort(0) },
			[]string{"spec.ingress[0].ports[0].port: Invalid value: 0"}},
		{"port 65536", func(np *networkingv1.NetworkPolicy) { ingressPort(np).Port = intPort(65536) },
			[]string{"spec.ingress[0].ports[0].port: Invalid value: 65536"}},
		{"bad port name", func(np *networkingv1.NetworkPolicy) { ingressPort(np).Port = strPort("http_alt") },
			[]string{`spec.ingress[0].ports[0].port: Invalid value: "http_alt"`}},
		{"port name too long", func(np *networkingv1.NetworkPolicy) { ingressPort(np).Port = strPort("abcdefghijklmnop") },
			[]string{`spec.ingress[0].ports[0].port: Invalid value: "abcdefghijklmnop"`}},
		{"endPort below port", func(np *networkingv1.NetworkPolicy) { np.Spec.Ingress[0].Ports[1].EndPort = i32(79) },
			[]string{"spec.ingress[0].ports[1].endPort: Invalid value: 79: must be greater than or equal to `port`"}},
		{"endPort above 65535", func(np *networkingv1.NetworkPolicy) { np.Spec.Ingress[0].Ports[1].EndPort = i32(65536) },
			[]string{"spec.ingress[0].ports[1].endPort: Invalid value: 65536"}},
		{"endPort with named port", func(np *networkingv1.NetworkPolicy) { np.Spec.Ingress[0].Ports[3].EndPort = i32(100) },
			[]string{"spec.ingress[0].ports[3].endPort: Invalid value: 100: may not be specified when `port` is non-numeric"}},
		{"endPort without port", func(np *networkingv1.NetworkPolicy) { np.Spec.Ingress[0].Ports[2].EndPort = i32(100) },
			[]string{"spec.ingress[0].ports[2].endPort: Invalid value: 100: may not be specified when `port` is not specified"}},
		{"egress port", func(np *networkingv1.NetworkPolicy) {
			np.Spec.Egress[0].Ports = []networkingv1.NetworkPolicyPort{{Port: intPort(-1)}}
		}, []string{"spec.egress[0].ports[0].port: Invalid value: -1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			np := validPolicy()
			tc.tweak(np)
			errs := problems(t, Validate(np))
			if len(errs) != 1 {
				t.Fatalf("got %d problems, want 1:\n%v", len(errs), errors.Join(errs...))
			}
			for _, w := range tc.want {
				if !strings.Contains(errs[0].Error(), w) {
					t.Errorf("error %q does not contain %q", errs[0], w)
				}
			}
		})
	}
}

// TestValidateReportsAll: every problem is reported, each as a *field.Error on its own line.
func TestValidateReportsAll(t *testing.T) {
	np := validPolicy()
	np.Name = ""
	np.Spec.Ingress[0].From[2].IPBlock.CIDR = "10.0.0.0/33"
	np.Spec.Egress[0].To[0] = networkingv1.NetworkPolicyPeer{}
	bad := corev1.Protocol("ICMP")
	np.Spec.Egress[0].Ports = []networkingv1.NetworkPolicyPort{{Protocol: &bad}}

	err := Validate(np)
	errs := problems(t, err)
	want := []string{
		"metadata.name",
		"spec.ingress[0].from[2].ipBlock.cidr",
		"spec.egress[0].ports[0].protocol",
		"spec.egress[0].to[0]",
	}
	if len(errs) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(errs), len(want), err)
	}
	for i, e := range errs {
		var fe *field.Error
		if !errors.As(e, &fe) {
			t.Fatalf("problem %d is %T, want *field.Error", i, e)
		}
		if fe.Field != want[i] {
			t.Errorf("problem %d names %s, want %s", i, fe.Field, want[i])
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != len(want) {
		t.Errorf("message has %d lines, want %d:\n%v", n, len(want), err)
	}
}

func TestValidateNil(t *testing.T) {
	if Validate(nil) == nil {
		t.Fatal("Validate(nil) = nil, want an error")
	}
}

// problems unwraps the errors.Join of Validate; it fails the test when err is nil.
func problems(t *testing.T, err error) []error {
	t.Helper()
	if err == nil {
		t.Fatal("Validate = nil, want an error")
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
