package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Validate reports whether np is a NetworkPolicy podwall can enforce exactly as written. It
// returns nil, or an error joining one *field.Error per problem (errors.Join; unwrap with
// interface{ Unwrap() []error }), each naming its field path, e.g.
//
//	spec.ingress[0].from[1].ipBlock.cidr: Invalid value: "10.0.0.0/33": must be a valid CIDR ...
//
// The messages do not name the policy: callers add the object (and file) they report on.
//
// The checks are the API server's for networking.k8s.io/v1 (ValidateNetworkPolicy in
// k8s.io/kubernetes/pkg/apis/networking/validation) on create: metadata (name a DNS subdomain,
// namespace present), label selectors, policyTypes, peers, ipBlocks and ports. An object the
// API server accepted therefore passes, with one deliberate exception for CIDRs, which must
// be what net/netip.ParsePrefix accepts (the form podwall compiles), minus ambiguous forms:
//   - rejected: leading zeros ("010.0.0.0/8"), zones, and IPv4-mapped IPv6 prefixes
//     ("::ffff:10.0.0.0/104": IPv4 or IPv6? an except of that form could otherwise fail to
//     exclude the IPv4 range its author meant). The API server rejects these too when its
//     StrictIPCIDRValidation gate is on;
//   - accepted: bits set beyond the prefix length ("10.0.0.1/24"), which the API server
//     accepts with a warning and which means the masked network (10.0.0.0/24).
//
// Also like the API server, a repeated policyType ([Ingress, Ingress]) is accepted: it is
// harmless, and rejecting what the cluster accepted would freeze enforcement. Not copied: the
// API server's ratcheting, which lets an update keep a selector value or CIDR stored before
// its rules tightened; such an old object fails here, which narrows, never widens, access.
func Validate(np *networkingv1.NetworkPolicy) error {
	if np == nil {
		return errors.New("nil NetworkPolicy")
	}
	errs := apivalidation.ValidateObjectMeta(&np.ObjectMeta, true, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	errs = append(errs, validateSpec(&np.Spec, field.NewPath("spec"))...)
	return joinFieldErrors(errs)
}

// nameProblems returns the problems of err (Validate's) with the policy named on every
// one, one per line, as Compiler.SetPolicy reports them.
func nameProblems(np *networkingv1.NetworkPolicy, err error) error {
	var parts []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		parts = j.Unwrap()
	} else {
		parts = []error{err}
	}
	out := make([]error, len(parts))
	for i, e := range parts {
		out[i] = fmt.Errorf("NetworkPolicy %s/%s: %w", np.Namespace, np.Name, e)
	}
	return errors.Join(out...)
}

func validateSpec(spec *networkingv1.NetworkPolicySpec, path *field.Path) field.ErrorList {
	errs := validateSelector(&spec.PodSelector, path.Child("podSelector"))
	for i := range spec.Ingress {
		rule := &spec.Ingress[i]
		rulePath := path.Child("ingress").Index(i)
		for j := range rule.Ports {
			errs = append(errs, validatePort(&rule.Ports[j], rulePath.Child("ports").Index(j))...)
		}
		for j := range rule.From {
			errs = append(errs, validatePeer(&rule.From[j], rulePath.Child("from").Index(j))...)
		}
	}
	for i := range spec.Egress {
		rule := &spec.Egress[i]
		rulePath := path.Child("egress").Index(i)
		for j := range rule.Ports {
			errs = append(errs, validatePort(&rule.Ports[j], rulePath.Child("ports").Index(j))...)
		}
		for j := range rule.To {
			errs = append(errs, validatePeer(&rule.To[j], rulePath.Child("to").Index(j))...)
		}
	}
	types := []string{string(networkingv1.PolicyTypeIngress), string(networkingv1.PolicyTypeEgress)}
	if len(spec.PolicyTypes) > len(types) {
		errs = append(errs, field.Invalid(path.Child("policyTypes"), spec.PolicyTypes, "may not specify more than two policyTypes"))
	}
	for i, t := range spec.PolicyTypes {
		if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
			errs = append(errs, field.NotSupported(path.Child("policyTypes").Index(i), t, types))
		}
	}
	return errs
}

// validateSelector checks a label selector as the API server does, then converts it as the
// compiler will, so that anything the conversion refuses is reported here with its path.
func validateSelector(sel *metav1.LabelSelector, path *field.Path) field.ErrorList {
	errs := metav1validation.ValidateLabelSelector(sel, metav1validation.LabelSelectorValidationOptions{}, path)
	if len(errs) > 0 {
		return errs
	}
	if _, err := metav1.LabelSelectorAsSelector(sel); err != nil {
		errs = append(errs, field.Invalid(path, metav1.FormatLabelSelector(sel), err.Error()))
	}
	return errs
}

func validatePeer(peer *networkingv1.NetworkPolicyPeer, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	n := 0
	if peer.PodSelector != nil {
		n++
		errs = append(errs, validateSelector(peer.PodSelector, path.Child("podSelector"))...)
	}
	if peer.NamespaceSelector != nil {
		n++
		errs = append(errs, validateSelector(peer.NamespaceSelector, path.Child("namespaceSelector"))...)
	}
	if peer.IPBlock != nil {
		n++
		errs = append(errs, validateIPBlock(peer.IPBlock, path.Child("ipBlock"))...)
	}
	switch {
	case n == 0:
		errs = append(errs, field.Required(path, "must specify a peer: podSelector, namespaceSelector or ipBlock"))
	case n > 1 && peer.IPBlock != nil:
		errs = append(errs, field.Forbidden(path, "may not specify both ipBlock and another peer"))
	}
	return errs
}

func validateIPBlock(b *networkingv1.IPBlock, path *field.Path) field.ErrorList {
	if b.CIDR == "" {
		return field.ErrorList{field.Required(path.Child("cidr"), "")}
	}
	cidr, errs := parseCIDR(b.CIDR, path.Child("cidr"))
	for i, s := range b.Except {
		except, exceptErrs := parseCIDR(s, path.Child("except").Index(i))
		errs = append(errs, exceptErrs...)
		if len(exceptErrs) > 0 || !cidr.IsValid() {
			continue
		}
		// Contains is false across families, so this also rejects a mixed-family except.
		if except.Bits() <= cidr.Bits() || !cidr.Masked().Contains(except.Addr()) {
			errs = append(errs, field.Invalid(path.Child("except").Index(i), s, "must be a strict subset of `cidr`"))
		}
	}
	return errs
}

// parseCIDR parses an ipBlock CIDR; see Validate for the forms it accepts.
func parseCIDR(s string, path *field.Path) (netip.Prefix, field.ErrorList) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		why := strings.TrimPrefix(err.Error(), fmt.Sprintf("netip.ParsePrefix(%q): ", s))
		return netip.Prefix{}, field.ErrorList{field.Invalid(path, s, "must be a valid CIDR value (e.g. 10.9.8.0/24 or 2001:db8::/64): "+why)}
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, field.ErrorList{field.Invalid(path, s, "must not be an IPv4-mapped IPv6 prefix: write the IPv4 CIDR")}
	}
	return p, nil
}

func validatePort(p *networkingv1.NetworkPolicyPort, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if p.Protocol != nil {
		switch *p.Protocol {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		default:
			errs = append(errs, field.NotSupported(path.Child("protocol"), *p.Protocol, []string{"TCP", "UDP", "SCTP"}))
		}
	}
	switch {
	case p.Port == nil:
		if p.EndPort != nil {
			errs = append(errs, field.Invalid(path.Child("endPort"), *p.EndPort, "may not be specified when `port` is not specified"))
		}
	case p.Port.Type == intstr.Int:
		for _, msg := range validation.IsValidPortNum(int(p.Port.IntVal)) {
			errs = append(errs, field.Invalid(path.Child("port"), p.Port.IntVal, msg))
		}
		if p.EndPort != nil {
			if *p.EndPort < p.Port.IntVal {
				errs = append(errs, field.Invalid(path.Child("endPort"), *p.EndPort, "must be greater than or equal to `port`"))
			}
			for _, msg := range validation.IsValidPortNum(int(*p.EndPort)) {
				errs = append(errs, field.Invalid(path.Child("endPort"), *p.EndPort, msg))
			}
		}
	default:
		for _, msg := range validation.IsValidPortName(p.Port.StrVal) {
			errs = append(errs, field.Invalid(path.Child("port"), p.Port.StrVal, msg))
		}
		if p.EndPort != nil {
			errs = append(errs, field.Invalid(path.Child("endPort"), *p.EndPort, "may not be specified when `port` is non-numeric"))
		}
	}
	return errs
}
