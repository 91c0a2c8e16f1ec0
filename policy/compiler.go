package policy

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podwall/podwall/policy/flow"
)

// nameLabel is the label the API server puts on every namespace.
const nameLabel = "kubernetes.io/metadata.name"

// Compiler turns Kubernetes objects into Snapshots and keeps what it needs to make the next
// Snapshot cheaply after a change: a pod change re-evaluates selectors against that pod only,
// a policy change re-evaluates that policy only. Set/Delete record a change; Snapshot applies
// the recorded changes and returns a new immutable Snapshot sharing everything unchanged
// with the previous one. A Compiler is not safe for concurrent use.
type Compiler struct {
	node string
	gen  uint64

	namespaces map[string]map[string]string // name → labels (declared namespaces)
	nodes      map[string]*Node
	pods       map[string]*podState // ns/name →
	podsByNS   map[string]map[*podState]struct{}
	policies   map[string]*compiledPolicy // ns/name →
	policiesNS map[string]map[*compiledPolicy]struct{}
	peers      map[string]*peerDef // canonical key →
	peerByID   map[uint32]*peerDef
	nextPeer   uint32
	portNames  map[string]uint32
	owners     map[netip.Addr][]*podState // live pod addresses → pods claiming them

	dirty      map[*podState]struct{} // entries to rebuild
	touched    map[netip.Addr]struct{}
	removed    []*podEntry // entries of deleted pods
	nodesDirty bool
	last       *Snapshot
}

// podState is the compiler's mutable record of one pod.
type podState struct {
	pod   *Pod
	peers []uint32  // sorted ids of the peers whose selectors match the pod; copy on write
	entry *podEntry // the entry published last, nil before the first Snapshot
}

// podEntry is a pod as a Snapshot sees it. Immutable.
type podEntry struct {
	pod     *Pod
	local   bool
	peers   []uint32          // sorted peer ids the pod belongs to
	ingress []*compiledPolicy // policies isolating it for ingress, sorted by name
	egress  []*compiledPolicy
	ports   []portID // named ports, interned
}

type portID struct {
	name  uint32
	proto flow.Proto
	port  uint16
}

// peerDef is one distinct pod/namespace selector pair used by some policy peer.
type peerDef struct {
	id     uint32
	key    string
	ns     string          // the policy namespace; used when nsSel is nil
	nsSel  labels.Selector // nil: pods of ns only
	podSel labels.Selector
	refs   int
}

// compiledPolicy is one NetworkPolicy, compiled. Immutable.
type compiledPolicy struct {
	ref             PolicyRef
	src             *networkingv1.NetworkPolicy
	podSel          labels.Selector
	ingress, egress bool // effective policyTypes
	ingressRules    []rule
	egressRules     []rule
	peerIDs         []uint32 // every peer reference of all rules, for reference counting
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

// NewCompiler returns an empty Compiler for the given node: pods whose spec.nodeName is node
// are local (Judgement.Local). node may be empty when nothing is local (explain).
func NewCompiler(node string) *Compiler {
	return &Compiler{
		node:       node,
		namespaces: map[string]map[string]string{},
		nodes:      map[string]*Node{},
		pods:       map[string]*podState{},
		podsByNS:   map[string]map[*podState]struct{}{},
		policies:   map[string]*compiledPolicy{},
		policiesNS: map[string]map[*compiledPolicy]struct{}{},
		peers:      map[string]*peerDef{},
		peerByID:   map[uint32]*peerDef{},
		portNames:  map[string]uint32{},
		owners:     map[netip.Addr][]*podState{},
		dirty:      map[*podState]struct{}{},
		touched:    map[netip.Addr]struct{}{},
	}
}

// Compile compiles a complete state into a Snapshot with no local node.
func Compile(s State) (*Snapshot, error) {
	c := NewCompiler("")
	if err := c.Replace(s); err != nil {
		return nil, err
	}
	return c.Snapshot(), nil
}

// Replace makes the compiler's objects equal to s, recording only what differs. When a
// policy in s is invalid it changes nothing and returns every problem found.
func (c *Compiler) Replace(s State) error {
	var errs []error
	for _, np := range s.Policies {
		errs = append(errs, policyError(np, Validate(np)))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	seen := map[string]bool{}
	for _, n := range s.Namespaces {
		seen[n.Name] = true
		c.SetNamespace(n)
	}
	for name := range c.namespaces {
		if !seen[name] {
			c.DeleteNamespace(name)
		}
	}
	clear(seen)
	for i := range s.Nodes {
		seen[s.Nodes[i].Name] = true
		c.SetNode(s.Nodes[i])
	}
	for name := range c.nodes {
		if !seen[name] {
			c.DeleteNode(name)
		}
	}
	// Pods before policies: a new peer evaluates its selector over the pods of the namespaces
	// it can match, which is far cheaper than every new pod evaluating every peer.
	clear(seen)
	for i := range s.Pods {
		seen[s.Pods[i].Key()] = true
		c.SetPod(s.Pods[i])
	}
	for key, ps := range c.pods {
		if !seen[key] {
			c.DeletePod(ps.pod.Namespace, ps.pod.Name)
		}
	}
	clear(seen)
	for _, np := range s.Policies {
		seen[np.Namespace+"/"+np.Name] = true
		if err := c.SetPolicy(np); err != nil {
			return err // unreachable: validated above
		}
	}
	for key, cp := range c.policies {
		if !seen[key] {
			c.DeletePolicy(cp.ref.Namespace, cp.ref.Name)
		}
	}
	return nil
}

// nsLabels returns a namespace's labels; an undeclared namespace has only its name label.
func (c *Compiler) nsLabels(name string) labels.Set {
	if l, ok := c.namespaces[name]; ok {
		return l
	}
	return labels.Set{nameLabel: name}
}

// SetNamespace records a namespace or a change of its labels.
func (c *Compiler) SetNamespace(n Namespace) {
	l := make(map[string]string, len(n.Labels)+1)
	maps.Copy(l, n.Labels)
	l[nameLabel] = n.Name
	if old, ok := c.namespaces[n.Name]; ok && maps.Equal(old, l) {
		return
	}
	c.namespaces[n.Name] = l
	c.reselectNamespace(n.Name)
}

// DeleteNamespace forgets a namespace's labels.
func (c *Compiler) DeleteNamespace(name string) {
	if _, ok := c.namespaces[name]; !ok {
		return
	}
	delete(c.namespaces, name)
	c.reselectNamespace(name)
}

// reselectNamespace re-evaluates the peers of every pod in a namespace whose labels changed.
func (c *Compiler) reselectNamespace(name string) {
	for ps := range c.podsByNS[name] {
		c.selectPeers(ps)
		c.dirty[ps] = struct{}{}
	}
}

// SetNode records a node's addresses.
func (c *Compiler) SetNode(n Node) {
	if old, ok := c.nodes[n.Name]; ok && slices.Equal(old.IPs, n.IPs) {
		return
	}
	c.nodes[n.Name] = &Node{Name: n.Name, IPs: slices.Clone(n.IPs)}
	c.nodesDirty = true
}

// DeleteNode forgets a node.
func (c *Compiler) DeleteNode(name string) {
	if _, ok := c.nodes[name]; ok {
		delete(c.nodes, name)
		c.nodesDirty = true
	}
}

// livePod reports whether the pod's addresses are its own (pod traffic, not node traffic).
func livePod(p *Pod) bool { return !p.HostNetwork && !p.Terminated() }

// SetPod records a pod or a change of it.
func (c *Compiler) SetPod(p Pod) {
	key := p.Key()
	ps := c.pods[key]
	if ps != nil && podEqual(ps.pod, &p) {
		return
	}
	np := clonePod(&p)
	if ps == nil {
		ps = &podState{pod: np}
		c.pods[key] = ps
		byNS := c.podsByNS[p.Namespace]
		if byNS == nil {
			byNS = map[*podState]struct{}{}
			c.podsByNS[p.Namespace] = byNS
		}
		byNS[ps] = struct{}{}
		c.claim(ps, true)
		c.selectPeers(ps)
	} else {
		old := ps.pod
		c.claim(ps, false)
		ps.pod = np
		c.claim(ps, true)
		if !maps.Equal(old.Labels, np.Labels) || livePod(old) != livePod(np) {
			c.selectPeers(ps)
		}
		if old.HostNetwork {
			c.nodesDirty = true
		}
	}
	if np.HostNetwork {
		c.nodesDirty = true
	}
	c.dirty[ps] = struct{}{}
}

// DeletePod forgets a pod.
func (c *Compiler) DeletePod(namespace, name string) {
	ps := c.pods[namespace+"/"+name]
	if ps == nil {
		return
	}
	c.claim(ps, false)
	delete(c.pods, ps.pod.Key())
	delete(c.podsByNS[namespace], ps)
	if len(c.podsByNS[namespace]) == 0 {
		delete(c.podsByNS, namespace)
	}
	delete(c.dirty, ps)
	if ps.entry != nil {
		c.removed = append(c.removed, ps.entry)
	}
	if ps.pod.HostNetwork {
		c.nodesDirty = true
	}
}

// claim adds (or removes) the pod as an owner of its addresses and marks them touched.
func (c *Compiler) claim(ps *podState, add bool) {
	for _, ip := range ps.pod.IPs {
		c.touched[ip] = struct{}{}
		if !livePod(ps.pod) {
			continue
		}
		if add {
			c.owners[ip] = append(c.owners[ip], ps)
			continue
		}
		o := slices.DeleteFunc(c.owners[ip], func(x *podState) bool { return x == ps })
		if len(o) == 0 {
			delete(c.owners, ip)
		} else {
			c.owners[ip] = o
		}
	}
}

// selectPeers evaluates every peer against the pod.
func (c *Compiler) selectPeers(ps *podState) {
	var ids []uint32
	if livePod(ps.pod) {
		for _, p := range c.peers {
			if c.peerMatches(p, ps.pod) {
				ids = append(ids, p.id)
			}
		}
	}
	slices.Sort(ids)
	ps.peers = ids
}

func (c *Compiler) peerMatches(p *peerDef, pod *Pod) bool {
	if !livePod(pod) {
		return false
	}
	if p.nsSel == nil {
		if pod.Namespace != p.ns {
			return false
		}
	} else if !p.nsSel.Matches(c.nsLabels(pod.Namespace)) {
		return false
	}
	return p.podSel.Matches(labels.Set(pod.Labels))
}

// peerCandidates calls fn for every pod whose namespace the peer can match.
func (c *Compiler) peerCandidates(p *peerDef, fn func(*podState)) {
	if p.nsSel == nil {
		for ps := range c.podsByNS[p.ns] {
			fn(ps)
		}
		return
	}
	for ns, pods := range c.podsByNS {
		if !p.nsSel.Matches(c.nsLabels(ns)) {
			continue
		}
		for ps := range pods {
			fn(ps)
		}
	}
}

// SetPolicy validates and records a NetworkPolicy. An invalid policy changes nothing.
func (c *Compiler) SetPolicy(np *networkingv1.NetworkPolicy) error {
	key := np.Namespace + "/" + np.Name
	old := c.policies[key]
	if old != nil && reflect.DeepEqual(old.src.Spec, np.Spec) {
		return nil
	}
	if err := Validate(np); err != nil {
		return policyError(np, err)
	}
	cp, err := c.compilePolicy(np)
	if err != nil {
		return policyError(np, err)
	}
	c.policies[key] = cp
	byNS := c.policiesNS[np.Namespace]
	if byNS == nil {
		byNS = map[*compiledPolicy]struct{}{}
		c.policiesNS[np.Namespace] = byNS
	}
	byNS[cp] = struct{}{}
	c.markSelected(cp)
	if old != nil {
		delete(byNS, old)
		c.markSelected(old)
		c.release(old)
	}
	return nil
}

// policyError names the policy on every problem of a (joined) error, one per line.
func policyError(np *networkingv1.NetworkPolicy, err error) error {
	if err == nil {
		return nil
	}
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

// DeletePolicy forgets a NetworkPolicy.
func (c *Compiler) DeletePolicy(namespace, name string) {
	key := namespace + "/" + name
	cp := c.policies[key]
	if cp == nil {
		return
	}
	delete(c.policies, key)
	delete(c.policiesNS[namespace], cp)
	if len(c.policiesNS[namespace]) == 0 {
		delete(c.policiesNS, namespace)
	}
	c.markSelected(cp)
	c.release(cp)
}

// markSelected marks dirty the pods a policy selects.
func (c *Compiler) markSelected(cp *compiledPolicy) {
	for ps := range c.podsByNS[cp.ref.Namespace] {
		if cp.podSel.Matches(labels.Set(ps.pod.Labels)) {
			c.dirty[ps] = struct{}{}
		}
	}
}

// release drops a policy's references to its peers, forgetting peers no policy uses.
func (c *Compiler) release(cp *compiledPolicy) {
	for _, id := range cp.peerIDs {
		p := c.peerByID[id]
		if p == nil {
			continue
		}
		if p.refs--; p.refs > 0 {
			continue
		}
		delete(c.peers, p.key)
		delete(c.peerByID, id)
		c.peerCandidates(p, func(ps *podState) {
			if i, ok := slices.BinarySearch(ps.peers, id); ok {
				ps.peers = slices.Delete(slices.Clone(ps.peers), i, i+1)
				c.dirty[ps] = struct{}{}
			}
		})
	}
}

// peer returns the id of the peer for a selector pair, creating and evaluating it when new.
func (c *Compiler) peer(ns string, nsSel, podSel *metav1.LabelSelector) (uint32, error) {
	var p peerDef
	var key strings.Builder
	if nsSel == nil {
		p.ns = ns
		key.WriteString("ns=" + ns)
	} else {
		s, err := metav1.LabelSelectorAsSelector(nsSel)
		if err != nil {
			return 0, fmt.Errorf("namespaceSelector: %w", err)
		}
		p.nsSel = s
		key.WriteString("nssel=" + s.String())
	}
	p.podSel = labels.Everything()
	if podSel != nil {
		s, err := metav1.LabelSelectorAsSelector(podSel)
		if err != nil {
			return 0, fmt.Errorf("podSelector: %w", err)
		}
		p.podSel = s
	}
	key.WriteString("|pods=" + p.podSel.String())
	k := key.String()
	if q, ok := c.peers[k]; ok {
		q.refs++
		return q.id, nil
	}
	c.nextPeer++
	p.id, p.key, p.refs = c.nextPeer, k, 1
	q := &p
	c.peers[k] = q
	c.peerByID[q.id] = q
	c.peerCandidates(q, func(ps *podState) {
		if c.peerMatches(q, ps.pod) {
			// ids grow monotonically, so a new id goes last.
			ps.peers = append(slices.Clip(ps.peers), q.id)
			c.dirty[ps] = struct{}{}
		}
	})
	return q.id, nil
}

func (c *Compiler) portName(name string) uint32 {
	id, ok := c.portNames[name]
	if !ok {
		id = uint32(len(c.portNames) + 1)
		c.portNames[name] = id
	}
	return id
}

func (c *Compiler) compilePolicy(np *networkingv1.NetworkPolicy) (*compiledPolicy, error) {
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		return nil, fmt.Errorf("spec.podSelector: %w", err)
	}
	cp := &compiledPolicy{ref: PolicyRef{np.Namespace, np.Name}, src: np.DeepCopy(), podSel: sel}
	if len(np.Spec.PolicyTypes) == 0 {
		cp.ingress = true
		cp.egress = len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			cp.ingress = true
		case networkingv1.PolicyTypeEgress:
			cp.egress = true
		}
	}
	// Peers are registered even for a direction the policy does not isolate; that keeps the
	// reference counting simple and costs little.
	var created []uint32
	fail := func(err error) (*compiledPolicy, error) {
		cp.peerIDs = created
		c.release(cp)
		return nil, err
	}
	for i, r := range np.Spec.Ingress {
		cr, err := c.compileRule(np.Namespace, r.From, r.Ports, &created)
		if err != nil {
			return fail(fmt.Errorf("spec.ingress[%d]: %w", i, err))
		}
		cp.ingressRules = append(cp.ingressRules, cr)
	}
	for i, r := range np.Spec.Egress {
		cr, err := c.compileRule(np.Namespace, r.To, r.Ports, &created)
		if err != nil {
			return fail(fmt.Errorf("spec.egress[%d]: %w", i, err))
		}
		cp.egressRules = append(cp.egressRules, cr)
	}
	cp.peerIDs = created
	return cp, nil
}

func (c *Compiler) compileRule(ns string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, created *[]uint32) (rule, error) {
	var r rule
	r.any = len(peers) == 0
	for i, p := range peers {
		if p.IPBlock != nil {
			cidr, err := netip.ParsePrefix(p.IPBlock.CIDR)
			if err != nil {
				return r, fmt.Errorf("peers[%d].ipBlock.cidr: %w", i, err)
			}
			var except []netip.Prefix
			for j, e := range p.IPBlock.Except {
				x, err := netip.ParsePrefix(e)
				if err != nil {
					return r, fmt.Errorf("peers[%d].ipBlock.except[%d]: %w", i, j, err)
				}
				except = append(except, x)
			}
			r.addrs.addBlock(cidr, except)
			continue
		}
		if p.PodSelector == nil && p.NamespaceSelector == nil {
			continue // invalid; Validate rejects it. Matching nothing never widens access.
		}
		id, err := c.peer(ns, p.NamespaceSelector, p.PodSelector)
		if err != nil {
			return r, fmt.Errorf("peers[%d].%w", i, err)
		}
		*created = append(*created, id)
		r.peers = append(r.peers, id)
	}
	slices.Sort(r.peers)
	r.peers = slices.Compact(r.peers)
	r.addrs.normalize()
	for _, p := range ports {
		pr := portRule{proto: flow.TCP}
		if p.Protocol != nil {
			proto, err := flow.ParseProto(string(*p.Protocol))
			if err != nil {
				return r, err
			}
			pr.proto = proto
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
	return r, nil
}

// build makes the immutable entry of a pod from its current state.
func (c *Compiler) build(ps *podState) *podEntry {
	p := ps.pod
	e := &podEntry{pod: p, local: c.node != "" && p.Node == c.node, peers: ps.peers}
	if livePod(p) {
		for cp := range c.policiesNS[p.Namespace] {
			if !cp.podSel.Matches(labels.Set(p.Labels)) {
				continue
			}
			if cp.ingress {
				e.ingress = append(e.ingress, cp)
			}
			if cp.egress {
				e.egress = append(e.egress, cp)
			}
		}
		byName := func(a, b *compiledPolicy) int { return strings.Compare(a.ref.Name, b.ref.Name) }
		slices.SortFunc(e.ingress, byName)
		slices.SortFunc(e.egress, byName)
	}
	for _, np := range p.Ports {
		if np.Name != "" {
			e.ports = append(e.ports, portID{c.portName(np.Name), np.Proto, np.Port})
		}
	}
	return e
}

// Snapshot applies the changes recorded since the last call and returns the result. With
// no change it returns the previous Snapshot.
func (c *Compiler) Snapshot() *Snapshot {
	if c.last != nil && len(c.dirty) == 0 && len(c.removed) == 0 && len(c.touched) == 0 && !c.nodesDirty {
		return c.last
	}
	c.gen++
	s := &Snapshot{gen: c.gen, node: c.node}
	if c.last == nil {
		s.byIP = make(map[netip.Addr]*podEntry, len(c.owners))
		s.byKey = make(map[string]*podEntry, len(c.pods))
		s.nodeIPs = map[netip.Addr]string{}
	} else {
		s.byIP = maps.Clone(c.last.byIP)
		s.byKey = maps.Clone(c.last.byKey)
		s.nodeIPs = c.last.nodeIPs
	}
	for _, e := range c.removed {
		if s.byKey[e.pod.Key()] == e {
			delete(s.byKey, e.pod.Key())
		}
	}
	c.removed = c.removed[:0]
	for ps := range c.dirty {
		ps.entry = c.build(ps)
		s.byKey[ps.pod.Key()] = ps.entry
		for _, ip := range ps.pod.IPs {
			c.touched[ip] = struct{}{}
		}
	}
	clear(c.dirty)
	for ip := range c.touched {
		owners := c.owners[ip]
		if len(owners) == 0 {
			delete(s.byIP, ip)
			continue
		}
		// Two live pods claiming one address is a transient state (or a broken input): the
		// oldest-named claim wins deterministically.
		best := owners[0]
		for _, o := range owners[1:] {
			if o.pod.Key() < best.pod.Key() {
				best = o
			}
		}
		s.byIP[ip] = best.entry
	}
	clear(c.touched)
	if c.nodesDirty || c.last == nil {
		s.nodeIPs = map[netip.Addr]string{}
		for _, n := range c.nodes {
			for _, ip := range n.IPs {
				s.nodeIPs[ip] = n.Name
			}
		}
		for _, ps := range c.pods {
			if ps.pod.HostNetwork && !ps.pod.Terminated() && ps.pod.Node != "" {
				for _, ip := range ps.pod.IPs {
					s.nodeIPs[ip] = ps.pod.Node
				}
			}
		}
		c.nodesDirty = false
	}
	c.last = s
	return s
}

func podEqual(a, b *Pod) bool {
	return a.Namespace == b.Namespace && a.Name == b.Name && a.Node == b.Node &&
		a.HostNetwork == b.HostNetwork && a.Phase == b.Phase && maps.Equal(a.Labels, b.Labels) &&
		slices.Equal(a.IPs, b.IPs) && slices.Equal(a.Ports, b.Ports)
}

func clonePod(p *Pod) *Pod {
	q := *p
	q.Labels = maps.Clone(p.Labels)
	if q.Labels == nil {
		q.Labels = map[string]string{}
	}
	q.IPs = slices.Clone(p.IPs)
	q.Ports = slices.Clone(p.Ports)
	return &q
}
