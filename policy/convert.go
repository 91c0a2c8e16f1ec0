package policy

import (
	"errors"
	"maps"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/podwall/podwall/policy/flow"
)

// FromPod trims a Kubernetes Pod to what policy needs. The result shares no memory with p.
//
// IPs come from status.podIPs, or status.podIP when podIPs is empty; the primary address
// (status.podIP) must come first, as the API server requires. Ports are the named ports of
// spec.containers, then spec.initContainers (sidecars are init containers), protocol TCP
// when omitted; ephemeral containers may not declare ports.
//
// The error joins one *field.Error per problem (an address that does not parse, a repeated
// address or family, a port podwall cannot match) and names its field, e.g.
// "status.podIPs[1]: Invalid value: ...". The Pod returned with it lacks exactly the named
// parts; a caller should not enforce on it, since a pod missing one of its addresses would
// escape its own isolation for that address.
func FromPod(p *corev1.Pod) (Pod, error) {
	pod := Pod{
		Namespace:   p.Namespace,
		Name:        p.Name,
		Labels:      maps.Clone(p.Labels),
		Node:        p.Spec.NodeName,
		HostNetwork: p.Spec.HostNetwork,
		Phase:       string(p.Status.Phase),
	}
	var errs field.ErrorList
	pod.IPs, errs = podIPs(&p.Status)

	spec := field.NewPath("spec")
	for i := range p.Spec.Containers {
		errs = append(errs, pod.addPorts(p.Spec.Containers[i].Ports, spec.Child("containers").Index(i).Child("ports"))...)
	}
	for i := range p.Spec.InitContainers {
		errs = append(errs, pod.addPorts(p.Spec.InitContainers[i].Ports, spec.Child("initContainers").Index(i).Child("ports"))...)
	}
	return pod, joinFieldErrors(errs)
}

func podIPs(st *corev1.PodStatus) ([]netip.Addr, field.ErrorList) {
	type entry struct {
		s  string
		at *field.Path
	}
	var raw []entry
	for i, ip := range st.PodIPs {
		raw = append(raw, entry{ip.IP, field.NewPath("status", "podIPs").Index(i)})
	}
	if len(raw) == 0 && st.PodIP != "" {
		raw = append(raw, entry{st.PodIP, field.NewPath("status", "podIP")})
	}

	var errs field.ErrorList
	var ips []netip.Addr
	for i, e := range raw {
		ip, err := parseAddr(e.s)
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(e.at, e.s, err.Error()))
		case slices.Contains(ips, ip):
			errs = append(errs, field.Duplicate(e.at, e.s))
		case slices.ContainsFunc(ips, func(a netip.Addr) bool { return a.Is4() == ip.Is4() }):
			errs = append(errs, field.Invalid(e.at, e.s, "may specify no more than one IP for each IP family"))
		case i == 0 && len(st.PodIPs) > 0 && st.PodIP != "":
			// Both set: the API server requires status.podIP == status.podIPs[0].
			if primary, err := parseAddr(st.PodIP); err != nil {
				errs = append(errs, field.Invalid(field.NewPath("status", "podIP"), st.PodIP, err.Error()))
			} else if primary != ip {
				errs = append(errs, field.Invalid(field.NewPath("status", "podIP"), st.PodIP, "must equal status.podIPs[0]"))
			}
			ips = append(ips, ip)
		default:
			ips = append(ips, ip)
		}
	}
	return ips, errs
}

// parseAddr parses a pod or node address: no zone, no IPv4-mapped IPv6 (a packet carries the
// plain IPv4 address, so the mapped form would never match).
func parseAddr(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, errors.New("must be a valid IP address")
	case ip.Zone() != "":
		return netip.Addr{}, errors.New("must not have a zone")
	case ip.Is4In6():
		return netip.Addr{}, errors.New("must not be an IPv4-mapped IPv6 address")
	}
	return ip, nil
}

func (p *Pod) addPorts(ports []corev1.ContainerPort, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, cp := range ports {
		if cp.Name == "" {
			continue // only named ports need resolving; a number matches by itself
		}
		np := NamedPort{Name: cp.Name, Proto: flow.TCP}
		switch cp.Protocol {
		case "", corev1.ProtocolTCP:
		case corev1.ProtocolUDP:
			np.Proto = flow.UDP
		case corev1.ProtocolSCTP:
			np.Proto = flow.SCTP
		default:
			errs = append(errs, field.NotSupported(path.Index(i).Child("protocol"), cp.Protocol, []string{"TCP", "UDP", "SCTP"}))
			continue
		}
		if cp.ContainerPort < 1 || cp.ContainerPort > 65535 {
			errs = append(errs, field.Invalid(path.Index(i).Child("containerPort"), cp.ContainerPort, "must be between 1 and 65535, inclusive"))
			continue
		}
		np.Port = uint16(cp.ContainerPort)
		p.Ports = append(p.Ports, np)
	}
	return errs
}

// FromNamespace trims a Kubernetes Namespace to what policy needs. Like the API server, it
// sets the label kubernetes.io/metadata.name to the namespace's name, so that selectors on it
// work whether or not the source object carries it. The result shares no memory with n.
func FromNamespace(n *corev1.Namespace) Namespace {
	labels := make(map[string]string, len(n.Labels)+1)
	maps.Copy(labels, n.Labels)
	labels[corev1.LabelMetadataName] = n.Name
	return Namespace{Name: n.Name, Labels: labels}
}

// FromNode trims a Kubernetes Node to its name, its labels, the InternalIP and ExternalIP addresses of
// status.addresses that parse (other types are host names), each once, in their order, and
// the pod ranges of spec.podCIDRs (spec.podCIDR when podCIDRs is empty) that parse, masked,
// each once.
func FromNode(n *corev1.Node) Node {
	node := Node{Name: n.Name, Labels: maps.Clone(n.Labels)}
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		if ip, err := parseAddr(a.Address); err == nil && !slices.Contains(node.IPs, ip) {
			node.IPs = append(node.IPs, ip)
		}
	}
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil && !p.Addr().Is4In6() && !slices.Contains(node.PodCIDRs, p.Masked()) {
			node.PodCIDRs = append(node.PodCIDRs, p.Masked())
		}
	}
	return node
}

// joinFieldErrors returns nil or the errors.Join of errs, one *field.Error per line.
func joinFieldErrors(errs field.ErrorList) error {
	all := make([]error, len(errs))
	for i, e := range errs {
		all[i] = e
	}
	return errors.Join(all...)
}
