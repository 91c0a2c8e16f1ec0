package policy

import (
	"net/netip"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podwall/podwall/policy/flow"
)

// compiledPolicy is one NetworkPolicy, compiled. Immutable.
type compiledPolicy struct {
	ref             PolicyRef
	serial          uint64 // numbers the compiler's compiled policies; never reused
	podSel          labels.Selector
	ingress, egress bool // effective policyTypes
	ingressRules    []rule
	egressRules     []rule
	peerIDs         []uint32 // every peer reference of all rules, for reference counting
	// invalid is why the policy is enforced fail-closed (invalid.go), nil when it is valid.
	invalid error
	// cluster is set for a ClusterNetworkPolicy: its tier, priority and rule actions. Its
	// podSel is nil: its group (cnpGroup) picks its subjects.
	cluster *clusterInfo
}

// rules returns the policy's rules of one direction, in order.
func (cp *compiledPolicy) rules(dir Direction) []rule {
	if dir == Ingress {
		return cp.ingressRules
	}
	return cp.egressRules
}

// rule is one ingress or egress rule: it matches a flow when the remote end matches one of
// its peers and the flow matches one of its ports.
type rule struct {
	any   bool     // no peers: every address
	peers []uint32 // sorted peer ids (pods)
	addrs addrSet  // ipBlocks
	ports []portRule
}

// portRule is one entry of a rule's ports: a protocol with all its ports, a port range, or a
// named port resolved on the destination pod.
type portRule struct {
	proto  flow.Proto
	all    bool
	lo, hi uint16
	name   uint32 // interned name; 0 for numbers
}

// compilePolicy compiles a policy that passed Validate, registering its peers.
func (c *Compiler) compilePolicy(np *networkingv1.NetworkPolicy) *compiledPolicy {
	c.nextSerial++
	cp := &compiledPolicy{
		ref:    PolicyRef{Namespace: np.Namespace, Name: np.Name},
		serial: c.nextSerial,
		podSel: validated(metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)),
	}
	cp.ingress, cp.egress = policyTypes(&np.Spec)
	// Peers are registered even for a direction the policy does not isolate; that keeps the
	// reference counting simple and costs little.
	for _, r := range np.Spec.Ingress {
		cp.ingressRules = append(cp.ingressRules, c.compileRule(np.Namespace, r.From, r.Ports, &cp.peerIDs))
	}
	for _, r := range np.Spec.Egress {
		cp.egressRules = append(cp.egressRules, c.compileRule(np.Namespace, r.To, r.Ports, &cp.peerIDs))
	}
	return cp
}

// policyTypes returns a policy's effective policyTypes: as written, or when omitted, Ingress
// plus Egress when it has an egress section. Unknown types are ignored.
func policyTypes(spec *networkingv1.NetworkPolicySpec) (ingress, egress bool) {
	if len(spec.PolicyTypes) == 0 {
		return true, len(spec.Egress) > 0
	}
	for _, t := range spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		}
	}
	return ingress, egress
}

// compileRule compiles the peers and ports of one rule of a policy in namespace ns, adding
// each peer reference it makes to refs.
func (c *Compiler) compileRule(ns string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, refs *[]uint32) rule {
	var r rule
	r.any = len(peers) == 0
	for _, p := range peers {
		if p.IPBlock != nil {
			cidr := validated(netip.ParsePrefix(p.IPBlock.CIDR))
			except := make([]netip.Prefix, len(p.IPBlock.Except))
			for i, e := range p.IPBlock.Except {
				except[i] = validated(netip.ParsePrefix(e))
			}
			r.addrs.addBlock(cidr, except)
			continue
		}
		if p.PodSelector == nil && p.NamespaceSelector == nil {
			continue // Validate rejects an empty peer; were one to come, it would match nothing
		}
		id := c.peer(ns, p.NamespaceSelector, p.PodSelector)
		*refs = append(*refs, id)
		r.peers = append(r.peers, id)
	}
	slices.Sort(r.peers)
	r.peers = slices.Compact(r.peers)
	r.addrs.normalize()
	for _, p := range ports {
		pr := portRule{proto: flow.TCP}
		if p.Protocol != nil {
			pr.proto = validated(flow.ParseProto(string(*p.Protocol)))
		}
		switch {
		case p.Port == nil:
			pr.all = true
		case p.Port.Type == intstr.String:
			pr.name = c.portName(p.Port.StrVal)
		default:
			pr.lo, pr.hi = uint16(p.Port.IntVal), uint16(p.Port.IntVal)
			if p.EndPort != nil {
				pr.hi = uint16(*p.EndPort)
			}
		}
		r.ports = append(r.ports, pr)
	}
	return r
}

// validated returns v. The compiler converts only policies that passed Validate, which makes
// the same conversions (selectors, CIDRs, protocols) and reports their errors with the field;
// an error here is a bug in one of the two, and compiling on would enforce something else
// than the policy says.
func validated[T any](v T, err error) T {
	if err != nil {
		panic("policy: compiling what Validate should have refused: " + err.Error())
	}
	return v
}
