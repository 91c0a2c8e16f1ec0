package policytest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Labels builds a label map from key, value pairs.
func Labels(kv ...string) map[string]string {
	if len(kv)%2 != 0 {
		panic(fmt.Sprintf("policytest.Labels: odd number of arguments %q", kv))
	}
	m := make(map[string]string, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// Selector is a selector with matchLabels only, from key, value pairs; Selector() is the
// empty selector, which selects everything.
func Selector(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{}
	if len(kv) > 0 {
		s.MatchLabels = Labels(kv...)
	}
	return s
}

// Exprs is a selector with matchExpressions only.
func Exprs(reqs ...metav1.LabelSelectorRequirement) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: reqs}
}

// In is the requirement "key In values".
func In(key string, values ...string) metav1.LabelSelectorRequirement {
	return metav1.LabelSelectorRequirement{Key: key, Operator: metav1.LabelSelectorOpIn, Values: values}
}

// NotIn is the requirement "key NotIn values".
func NotIn(key string, values ...string) metav1.LabelSelectorRequirement {
	return metav1.LabelSelectorRequirement{Key: key, Operator: metav1.LabelSelectorOpNotIn, Values: values}
}

// Exists is the requirement "key Exists".
func Exists(key string) metav1.LabelSelectorRequirement {
	return metav1.LabelSelectorRequirement{Key: key, Operator: metav1.LabelSelectorOpExists}
}

// DoesNotExist is the requirement "key DoesNotExist".
func DoesNotExist(key string) metav1.LabelSelectorRequirement {
	return metav1.LabelSelectorRequirement{Key: key, Operator: metav1.LabelSelectorOpDoesNotExist}
}

// Namespace returns a Namespace object with the given labels.
func Namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

// Elem is a peer or a port of a rule; From and To sort them out.
type Elem interface {
	addTo(peers *[]networkingv1.NetworkPolicyPeer, ports *[]networkingv1.NetworkPolicyPort)
}

type peerElem networkingv1.NetworkPolicyPeer

func (p peerElem) addTo(peers *[]networkingv1.NetworkPolicyPeer, _ *[]networkingv1.NetworkPolicyPort) {
	*peers = append(*peers, networkingv1.NetworkPolicyPeer(p))
}

type portElem networkingv1.NetworkPolicyPort

func (p portElem) addTo(_ *[]networkingv1.NetworkPolicyPeer, ports *[]networkingv1.NetworkPolicyPort) {
	*ports = append(*ports, networkingv1.NetworkPolicyPort(p))
}

// Pods is a peer with a podSelector only: the selected pods of the policy's namespace.
func Pods(sel *metav1.LabelSelector) Elem { return peerElem{PodSelector: sel} }

// Namespaces is a peer with a namespaceSelector only: every pod of the selected namespaces.
func Namespaces(sel *metav1.LabelSelector) Elem { return peerElem{NamespaceSelector: sel} }

// PodsIn is a peer with both selectors: the pods podSel selects in the namespaces nsSel
// selects (AND).
func PodsIn(nsSel, podSel *metav1.LabelSelector) Elem {
	return peerElem{NamespaceSelector: nsSel, PodSelector: podSel}
}

// CIDR is an ipBlock peer.
func CIDR(cidr string, except ...string) Elem {
	return peerElem{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

// Port is a port of a rule, from its spelling:
//
//	"80"               port 80, protocol omitted (TCP)
//	"80/UDP"           port 80/UDP
//	"serve-80-tcp"     named port, protocol omitted
//	"http/TCP"         named port with protocol
//	"32000-32768/TCP"  port range (endPort)
//	"/UDP"             protocol only: every UDP port
func Port(spec string) Elem {
	num, protoName, hasProto := strings.Cut(spec, "/")
	var p networkingv1.NetworkPolicyPort
	if hasProto {
		proto := corev1.Protocol(protoName)
		if !slices.Contains([]corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}, proto) {
			panic("policytest.Port: bad protocol in " + spec)
		}
		p.Protocol = &proto
	}
	switch {
	case num == "":
		if !hasProto {
			panic("policytest.Port: empty spec")
		}
	case num[0] >= '0' && num[0] <= '9':
		lo, hi, isRange := strings.Cut(num, "-")
		port := intstr.FromInt32(mustInt32(lo))
		p.Port = &port
		if isRange {
			end := mustInt32(hi)
			p.EndPort = &end
		}
	default:
		port := intstr.FromString(num)
		p.Port = &port
	}
	return portElem(p)
}

func mustInt32(s string) int32 {
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		panic("policytest.Port: " + err.Error())
	}
	return int32(n)
}

// From is an ingress rule from the given peers on the given ports. No peers: from
// everywhere; no ports: every port and protocol.
func From(elems ...Elem) networkingv1.NetworkPolicyIngressRule {
	var r networkingv1.NetworkPolicyIngressRule
	for _, e := range elems {
		e.addTo(&r.From, &r.Ports)
	}
	return r
}

// To is an egress rule to the given peers on the given ports. No peers: to everywhere; no
// ports: every port and protocol.
func To(elems ...Elem) networkingv1.NetworkPolicyEgressRule {
	var r networkingv1.NetworkPolicyEgressRule
	for _, e := range elems {
		e.addTo(&r.To, &r.Ports)
	}
	return r
}

// Tweak changes one aspect of a NetworkPolicy.
type Tweak func(*networkingv1.NetworkPolicy)

// NetworkPolicy returns the NetworkPolicy namespace/name selecting the pods podSelector
// selects (Selector() for every pod of the namespace). Without tweaks it has no rules and no
// policyTypes, which means Ingress: it isolates the selected pods for ingress.
func NetworkPolicy(namespace, name string, podSelector *metav1.LabelSelector, tweaks ...Tweak) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: *podSelector},
	}
	for _, t := range tweaks {
		t(np)
	}
	return np
}

// Ingress appends ingress rules and, like upstream's SetSpecIngressRules, lists Ingress in
// policyTypes. Ingress() alone isolates for ingress and allows nothing.
func Ingress(rules ...networkingv1.NetworkPolicyIngressRule) Tweak {
	return func(np *networkingv1.NetworkPolicy) {
		np.Spec.Ingress = appendRules(np.Spec.Ingress, rules)
		addPolicyType(np, networkingv1.PolicyTypeIngress)
	}
}

// Egress appends egress rules and lists Egress in policyTypes. Egress() alone isolates
// for egress and allows nothing.
func Egress(rules ...networkingv1.NetworkPolicyEgressRule) Tweak {
	return func(np *networkingv1.NetworkPolicy) {
		np.Spec.Egress = appendRules(np.Spec.Egress, rules)
		addPolicyType(np, networkingv1.PolicyTypeEgress)
	}
}

// appendRules appends rules to have, never leaving it nil: like upstream's helpers, Ingress()
// makes an empty rule list, not an absent one.
func appendRules[R any](have, rules []R) []R {
	if have == nil {
		have = []R{}
	}
	return append(have, rules...)
}

// Types sets policyTypes exactly; Types() omits the field, so the default applies.
func Types(types ...networkingv1.PolicyType) Tweak {
	return func(np *networkingv1.NetworkPolicy) { np.Spec.PolicyTypes = types }
}

func addPolicyType(np *networkingv1.NetworkPolicy, t networkingv1.PolicyType) {
	if !slices.Contains(np.Spec.PolicyTypes, t) {
		np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, t)
	}
}
