package policy

import (
	"errors"
	"fmt"

	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
)

// ValidateClusterPolicy reports whether cnp is a ClusterNetworkPolicy podwall can enforce. It
// returns nil or an error joining one *field.Error per problem, each naming its field path,
// like Validate. The checks are the CRD's (config/crd of sigs.k8s.io/network-policy-api
// v0.3.0, which the API server applies): metadata (a cluster-scoped name), tier Admin or
// Baseline, priority 0–1000, a subject with exactly one of namespaces and pods, valid label
// selectors, at most 25 rules per direction, rule names of at most 100 characters, 1–25
// peers and 1–25 protocols per rule, networks in masked CIDR form (at most 25), port
// numbers 1–65535 and ranges with start < end, valid port names, no named port beside
// networks or nodes peers.
//
// The compiler enforces a policy that fails these checks fail-closed, alone
// (compileInvalidCluster); a file source reports it as a Problem naming file, object and
// field, and passes it on to be enforced so.
//
// Not errors, on purpose: what the API documents as "fail closed" — a peer or protocol with
// no field podwall knows (the object may come from a newer CRD), an unknown action, and the
// unsupported domainNames. The compiler enforces those rules fail-closed and
// Snapshot.ClusterProblems reports them.
func ValidateClusterPolicy(cnp *cnpv1alpha2.ClusterNetworkPolicy) error {
	if cnp == nil {
		return errors.New("nil ClusterNetworkPolicy")
	}
	errs := apivalidation.ValidateObjectMeta(&cnp.ObjectMeta, false, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	spec, path := &cnp.Spec, field.NewPath("spec")
	switch spec.Tier {
	case cnpv1alpha2.AdminTier, cnpv1alpha2.BaselineTier:
	default:
		errs = append(errs, field.NotSupported(path.Child("tier"), spec.Tier, []string{"Admin", "Baseline"}))
	}
	if spec.Priority < 0 || spec.Priority > 1000 {
		errs = append(errs, field.Invalid(path.Child("priority"), spec.Priority, "must be between 0 and 1000, inclusive"))
	}
	sub := path.Child("subject")
	switch s := spec.Subject; {
	case s.Namespaces != nil && s.Pods != nil:
		errs = append(errs, field.Invalid(sub, "namespaces, pods", "must set exactly one of namespaces and pods"))
	case s.Namespaces != nil:
		errs = append(errs, validateSelector(s.Namespaces, sub.Child("namespaces"))...)
	case s.Pods != nil:
		errs = append(errs, validateNamespacedPod(s.Pods, sub.Child("pods"))...)
	default:
		errs = append(errs, field.Required(sub, "must set exactly one of namespaces and pods"))
	}
	errs = append(errs, tooMany(path.Child("ingress"), len(spec.Ingress))...)
	for i := range spec.Ingress {
		r, at := &spec.Ingress[i], path.Child("ingress").Index(i)
		errs = append(errs, validateRuleHead(r.Name, r.Protocols, len(r.From), at, "from")...)
		for j, p := range r.From {
			pat := at.Child("from").Index(j)
			switch {
			case p.Namespaces != nil && p.Pods != nil:
				errs = append(errs, field.Invalid(pat, "namespaces, pods", "must set exactly one peer type"))
			case p.Namespaces != nil:
				errs = append(errs, validateSelector(p.Namespaces, pat.Child("namespaces"))...)
			case p.Pods != nil:
				errs = append(errs, validateNamespacedPod(p.Pods, pat.Child("pods"))...)
			}
		}
	}
	errs = append(errs, tooMany(path.Child("egress"), len(spec.Egress))...)
	for i := range spec.Egress {
		r, at := &spec.Egress[i], path.Child("egress").Index(i)
		errs = append(errs, validateRuleHead(r.Name, r.Protocols, len(r.To), at, "to")...)
		addrPeers := false
		for j, p := range r.To {
			pat := at.Child("to").Index(j)
			n := 0
			if p.Namespaces != nil {
				n++
				errs = append(errs, validateSelector(p.Namespaces, pat.Child("namespaces"))...)
			}
			if p.Pods != nil {
				n++
				errs = append(errs, validateNamespacedPod(p.Pods, pat.Child("pods"))...)
			}
			if p.Nodes != nil {
				n++
				addrPeers = true
				errs = append(errs, validateSelector(p.Nodes, pat.Child("nodes"))...)
			}
			if p.Networks != nil {
				n++
				addrPeers = true
				errs = append(errs, validateNetworks(p.Networks, pat.Child("networks"))...)
			}
			if p.DomainNames != nil {
				n++
				addrPeers = true
				if len(p.DomainNames) > 25 {
					errs = append(errs, field.TooMany(pat.Child("domainNames"), len(p.DomainNames), 25))
				}
			}
			if n > 1 {
				errs = append(errs, field.Invalid(pat, n, "must set exactly one peer type"))
			}
		}
		if addrPeers {
			for j, p := range r.Protocols {
				if p.DestinationNamedPort != "" {
					errs = append(errs, field.Invalid(at.Child("protocols").Index(j).Child("destinationNamedPort"), p.DestinationNamedPort,
						"networks/nodes/domainNames peer cannot be set with namedPorts since there are no namedPorts for networks/nodes/domainNames"))
				}
			}
		}
	}
	return joinFieldErrors(errs)
}

// validateClusterPolicy is ValidateClusterPolicy with the policy named on every problem.
func validateClusterPolicy(cnp *cnpv1alpha2.ClusterNetworkPolicy) error {
	err := ValidateClusterPolicy(cnp)
	if err == nil {
		return nil
	}
	parts := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		parts = j.Unwrap()
	}
	out := make([]error, len(parts))
	for i, e := range parts {
		out[i] = fmt.Errorf("ClusterNetworkPolicy %s: %w", cnp.Name, e)
	}
	return errors.Join(out...)
}

func tooMany(path *field.Path, n int) field.ErrorList {
	if n > 25 {
		return field.ErrorList{field.TooMany(path, n, 25)}
	}
	return nil
}

// validateRuleHead checks what ingress and egress rules share: name, peer count, protocols.
func validateRuleHead(name string, protos []cnpv1alpha2.ClusterNetworkPolicyProtocol, peers int, at *field.Path, peersField string) field.ErrorList {
	var errs field.ErrorList
	if len(name) > 100 {
		errs = append(errs, field.TooLong(at.Child("name"), name, 100))
	}
	switch {
	case peers == 0:
		errs = append(errs, field.Required(at.Child(peersField), "must name at least one peer"))
	case peers > 25:
		errs = append(errs, field.TooMany(at.Child(peersField), peers, 25))
	}
	if protos != nil && len(protos) == 0 {
		errs = append(errs, field.Required(at.Child("protocols"), "must hold at least one item when set"))
	}
	if len(protos) > 25 {
		errs = append(errs, field.TooMany(at.Child("protocols"), len(protos), 25))
	}
	for j, p := range protos {
		pat := at.Child("protocols").Index(j)
		n := 0
		for _, x := range []struct {
			set  bool
			name string
			port *cnpv1alpha2.Port
		}{{p.TCP != nil, "tcp", portOf(p.TCP)}, {p.UDP != nil, "udp", portOfUDP(p.UDP)}, {p.SCTP != nil, "sctp", portOfSCTP(p.SCTP)}} {
			if !x.set {
				continue
			}
			n++
			if x.port != nil {
				errs = append(errs, validateCNPPort(x.port, pat.Child(x.name, "destinationPort"))...)
			}
		}
		if p.DestinationNamedPort != "" {
			n++
			for _, msg := range validation.IsValidPortName(p.DestinationNamedPort) {
				errs = append(errs, field.Invalid(pat.Child("destinationNamedPort"), p.DestinationNamedPort, msg))
			}
		}
		if n > 1 {
			errs = append(errs, field.Invalid(pat, n, "must set exactly one of tcp, udp, sctp and destinationNamedPort"))
		}
	}
	return errs
}

func portOf(p *cnpv1alpha2.ClusterNetworkPolicyProtocolTCP) *cnpv1alpha2.Port {
	if p == nil {
		return nil
	}
	return p.DestinationPort
}

func portOfUDP(p *cnpv1alpha2.ClusterNetworkPolicyProtocolUDP) *cnpv1alpha2.Port {
	if p == nil {
		return nil
	}
	return p.DestinationPort
}

func portOfSCTP(p *cnpv1alpha2.ClusterNetworkPolicyProtocolSCTP) *cnpv1alpha2.Port {
	if p == nil {
		return nil
	}
	return p.DestinationPort
}

func validateCNPPort(p *cnpv1alpha2.Port, at *field.Path) field.ErrorList {
	var errs field.ErrorList
	if p.Number != 0 && p.Range != nil {
		return field.ErrorList{field.Invalid(at, "number, range", "must set exactly one of number and range")}
	}
	if p.Number != 0 {
		for _, msg := range validation.IsValidPortNum(int(p.Number)) {
			errs = append(errs, field.Invalid(at.Child("number"), p.Number, msg))
		}
	}
	if r := p.Range; r != nil {
		for _, x := range []struct {
			n    int32
			name string
		}{{r.Start, "start"}, {r.End, "end"}} {
			for _, msg := range validation.IsValidPortNum(int(x.n)) {
				errs = append(errs, field.Invalid(at.Child("range", x.name), x.n, msg))
			}
		}
		if r.Start >= r.End {
			errs = append(errs, field.Invalid(at.Child("range"), fmt.Sprintf("%d-%d", r.Start, r.End), "Start port must be less than End port"))
		}
	}
	return errs
}

func validateNamespacedPod(p *cnpv1alpha2.NamespacedPod, at *field.Path) field.ErrorList {
	errs := validateSelector(&p.NamespaceSelector, at.Child("namespaceSelector"))
	return append(errs, validateSelector(&p.PodSelector, at.Child("podSelector"))...)
}

// validateNetworks checks networks CIDRs as the CRD does: a CIDR whose address is its masked
// network ("10.0.0.0/8", not "10.0.0.1/8"), at most 25.
func validateNetworks(nets []cnpv1alpha2.CIDR, at *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(nets) == 0 {
		errs = append(errs, field.Required(at, "must hold at least one CIDR when set"))
	}
	if len(nets) > 25 {
		errs = append(errs, field.TooMany(at, len(nets), 25))
	}
	for i, n := range nets {
		p, perrs := parseCIDR(string(n), at.Index(i))
		errs = append(errs, perrs...)
		if len(perrs) == 0 && p.Masked() != p {
			errs = append(errs, field.Invalid(at.Index(i), string(n), "Invalid CIDR format provided: must be the masked network (e.g. "+p.Masked().String()+")"))
		}
	}
	return errs
}
