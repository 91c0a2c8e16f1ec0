package policy

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/podwall/podwall/policy/flow"
)

// Tier is where a policy's rules are judged: the Admin tier of ClusterNetworkPolicy, then
// NetworkPolicy, then the Baseline tier of ClusterNetworkPolicy.
type Tier uint8

// Tiers, in the order a direction is judged. The zero Tier is NetworkPolicy's.
const (
	NetworkPolicyTier Tier = iota
	AdminTier
	BaselineTier
)

var tierNames = [...]string{"NetworkPolicy", "Admin", "Baseline"}

func (t Tier) String() string {
	if int(t) < len(tierNames) {
		return tierNames[t]
	}
	return "unknown"
}

// Action is what a ClusterNetworkPolicy rule does with the traffic it matches.
type Action uint8

// Actions.
const (
	// ActionAccept allows the direction: no further rule of any tier is looked at (the
	// other direction is still judged).
	ActionAccept Action = iota
	// ActionDeny denies the direction.
	ActionDeny
	// ActionPass skips the rest of the tier: the next tier judges.
	ActionPass
)

var actionNames = [...]string{"Accept", "Deny", "Pass"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "unknown"
}

// clusterInfo is what a compiled ClusterNetworkPolicy has beyond a NetworkPolicy's rules:
// its tier, priority and the action and name of each rule.
type clusterInfo struct {
	tier     Tier
	priority int32
	actions  [2][]Action  // by Direction, by rule index
	steps    [2][]RuleRef // each rule named, by Direction, by rule index (Judgement points here)
	names    [2][]string  // spec rule names, by Direction, by rule index
	nodes    bool         // some rule names nodes: recompiled when nodes change
	problems []string     // what it holds that podwall enforces fail-closed
	invalid  error        // why it failed validation (compileInvalidCluster); nil when valid
	subNS    labels.Selector
	subPods  labels.Selector
}

// clusterState is the compiler's record of one ClusterNetworkPolicy.
type clusterState struct {
	obj   *cnpv1alpha2.ClusterNetworkPolicy // a copy of the valid object last recorded
	cp    *compiledPolicy
	group *cnpGroup
}

// clusterPolicies are the ClusterNetworkPolicies a Compiler holds, grouped by tier and
// subject.
//
// A group's policies select the same pods, and a pod's entry names the groups whose subject
// holds it, and the combo of its groups of each tier (cnptable.go): pods with the same
// groups share one rule table per direction and tier, their policies' rules in precedence
// order. Changing a policy rebuilds the tables of the combos holding its group, and no pod
// entry unless a group appears or disappears (a subject no other policy of the tier has):
// the Snapshot maps group and combo ids to their policies and tables of the moment. Decide
// looks up one combo table per tier and direction.
type clusterPolicies struct {
	byName map[string]*clusterState
	groups map[string]*cnpGroup // tier and subject →
	byID   []*cnpGroup          // by id; nil where free
	dirty  map[*cnpGroup]struct{}
	serial uint64      // of the last group made
	born   []*cnpGroup // the groups made since the last Snapshot (cnpGroup.born)

	combos     map[string]*cnpCombo // the serials of its groups →
	comboByID  []*cnpCombo          // by id; nil where free, and at 0 (no combo)
	comboDirty map[*cnpCombo]struct{}
	builder    clusterTableBuilder
	tables     map[string]*clusterTableUse // Direction and the policies' serials → (cnptable.go)
	peerBit    map[uint32]uint32           // the peers the policies name → their cluster peer bit (cnptable.go)
	bitUses    []int                       // by bit: how many peer references of the policies use it; 0: free
	// hostIPs are the addresses of the live host-network pods by node, for nodes peers;
	// nil until needed and after nodes or host-network pods change (nodesChanged).
	hostIPs map[string][]netip.Addr
}

// cnpGroup is the ClusterNetworkPolicies of one tier with one subject.
type cnpGroup struct {
	id             uint32
	key            string
	tier           Tier
	subNS, subPods labels.Selector
	serial         uint64 // unique: ids are reused, serials are not
	born           bool   // made since the last Snapshot
	pols           map[*compiledPolicy]struct{}
	tables         groupTables // set by Compiler.Snapshot
	combos         map[*cnpCombo]struct{}
}

// groupTables are the rules of a group by Direction (nil when none of its policies has rules
// of that direction). Immutable.
type groupTables struct {
	tier   Tier
	tables [2]*groupRules
}

// groupRules are the policies of a group with rules of one direction, in precedence order
// (the combos' tables merge them: cnptable.go).
type groupRules struct {
	dir  Direction
	pols []*compiledPolicy
}

// policies returns the policies, in precedence order; none when r is nil.
func (r *groupRules) policies() []*compiledPolicy {
	if r == nil {
		return nil
	}
	return r.pols
}

// mayMatchAddrs reports whether some rule can match a remote end that is not a pod (a node
// address): a rule without peers or with networks or nodes.
func (r *groupRules) mayMatchAddrs() bool {
	for _, cp := range r.policies() {
		for _, rl := range cp.rules(r.dir) {
			if rl.any || len(rl.addrs.v4) > 0 || len(rl.addrs.v6) > 0 {
				return true
			}
		}
	}
	return false
}

// ClusterRef returns the PolicyRef of a ClusterNetworkPolicy.
func ClusterRef(cnp *cnpv1alpha2.ClusterNetworkPolicy) PolicyRef {
	ref := PolicyRef{Name: cnp.Name, Tier: AdminTier}
	if cnp.Spec.Tier == cnpv1alpha2.BaselineTier {
		ref.Tier = BaselineTier
	}
	return ref
}

// action returns the action of rule i of direction dir.
func (ci *clusterInfo) action(dir Direction, i int) Action { return ci.actions[dir][i] }

// selects reports whether the group's subject holds the pod, whose namespace has the given
// labels. Host-network pods are never subjects.
func (g *cnpGroup) selects(nsLabels labels.Set, p *Pod) bool {
	return livePod(p) && g.subNS.Matches(nsLabels) && g.subPods.Matches(labels.Set(p.Labels))
}

// SetClusterPolicy records a ClusterNetworkPolicy. An invalid one (ValidateClusterPolicy) is
// rejected alone, enforced fail-closed (compileInvalidCluster), and its error returned with
// the policy named.
func (c *Compiler) SetClusterPolicy(cnp *cnpv1alpha2.ClusterNetworkPolicy) error {
	if !c.holdsCluster(cnp) {
		c.setClusterPolicy(cnp, false)
	}
	return validateClusterPolicy(cnp)
}

// DeleteClusterPolicy forgets a ClusterNetworkPolicy.
func (c *Compiler) DeleteClusterPolicy(name string) {
	cs := c.cnps.byName[name]
	if cs == nil {
		return
	}
	delete(c.cnps.byName, name)
	if cs.cp.cluster.invalid != nil {
		c.problemsDirty = true
	}
	c.leave(cs.group, cs.cp)
	c.release(cs.cp)
}

func (c *Compiler) holdsCluster(cnp *cnpv1alpha2.ClusterNetworkPolicy) bool {
	cs := c.cnps.byName[cnp.Name]
	return cs != nil && reflect.DeepEqual(cs.obj.ObjectMeta, cnp.ObjectMeta) && reflect.DeepEqual(cs.obj.Spec, cnp.Spec)
}

// setClusterPolicy records a valid ClusterNetworkPolicy, compiling it unless its spec is
// the one recorded and force is false.
func (c *Compiler) setClusterPolicy(cnp *cnpv1alpha2.ClusterNetworkPolicy, force bool) {
	if c.cnps.byName == nil {
		c.cnps.byName = map[string]*clusterState{}
	}
	old := c.cnps.byName[cnp.Name]
	if old != nil && !force && reflect.DeepEqual(old.obj.Spec, cnp.Spec) {
		old.obj = cnp.DeepCopy()
		return
	}
	cp := c.compileClusterPolicy(cnp)
	if cp.cluster.invalid != nil || (old != nil && old.cp.cluster.invalid != nil) {
		c.problemsDirty = true // Snapshot.Problems lists the invalid ones
	}
	g := c.join(cp)
	c.cnps.byName[cnp.Name] = &clusterState{obj: cnp.DeepCopy(), cp: cp, group: g}
	if old != nil {
		c.leave(old.group, old.cp)
		c.release(old.cp)
	}
}

// join adds a compiled policy to the group of its tier and subject, making the group when
// it is new (its subjects then have one more group: they are rebuilt).
func (c *Compiler) join(cp *compiledPolicy) *cnpGroup {
	ci := cp.cluster
	key := ci.tier.String() + "|" + ci.subNS.String() + "|" + ci.subPods.String()
	g := c.cnps.groups[key]
	if g == nil {
		if c.cnps.groups == nil {
			c.cnps.groups, c.cnps.dirty = map[string]*cnpGroup{}, map[*cnpGroup]struct{}{}
		}
		c.cnps.serial++
		g = &cnpGroup{key: key, tier: ci.tier, subNS: ci.subNS, subPods: ci.subPods, pols: map[*compiledPolicy]struct{}{}, serial: c.cnps.serial}
		g.id = uint32(slices.Index(c.cnps.byID, nil))
		if g.id == ^uint32(0) {
			g.id = uint32(len(c.cnps.byID))
			c.cnps.byID = append(c.cnps.byID, nil)
		}
		c.cnps.byID[g.id] = g
		c.cnps.groups[key] = g
		g.born = true
		c.cnps.born = append(c.cnps.born, g)
		c.markSubjects(g)
	}
	g.pols[cp] = struct{}{}
	c.cnps.dirty[g] = struct{}{}
	c.usePeerBits(cp)
	return g
}

// leave removes a compiled policy from its group, forgetting a group left empty (its
// subjects are rebuilt).
func (c *Compiler) leave(g *cnpGroup, cp *compiledPolicy) {
	delete(g.pols, cp)
	c.cnps.dirty[g] = struct{}{}
	c.dropPeerBits(cp)
	if len(g.pols) == 0 {
		delete(c.cnps.groups, g.key)
		c.cnps.byID[g.id] = nil
		c.markSubjects(g)
	}
}

// replaceClusterPolicies returns apply, which records the ClusterNetworkPolicies of a state
// (invalid ones fail-closed, each alone: compileInvalidCluster) and forgets the others.
func (c *Compiler) replaceClusterPolicies(cnps []*cnpv1alpha2.ClusterNetworkPolicy) (apply func()) {
	last := make(map[string]int, len(cnps))
	held := make([]bool, len(cnps))
	for i, cnp := range cnps {
		last[cnp.Name] = i
		held[i] = c.holdsCluster(cnp)
	}
	return func() {
		for i, cnp := range cnps {
			if !held[i] && last[cnp.Name] == i {
				c.setClusterPolicy(cnp, false)
			}
		}
		for name := range c.cnps.byName {
			if _, ok := last[name]; !ok {
				c.DeleteClusterPolicy(name)
			}
		}
	}
}

// nodesChanged recompiles the ClusterNetworkPolicies naming nodes, whose addresses they
// hold.
func (c *Compiler) nodesChanged() {
	c.cnps.hostIPs = nil
	for _, cs := range c.cnps.byName {
		if cs.cp.cluster.nodes {
			c.setClusterPolicy(cs.obj, true)
		}
	}
}

// markSubjects marks the pods a group selects for new groups.
func (c *Compiler) markSubjects(g *cnpGroup) {
	for ns, pods := range c.podsByNS {
		nsl := c.nsLabels(ns)
		if !g.subNS.Matches(nsl) {
			continue
		}
		for ps := range pods {
			if g.selects(nsl, ps.pod) {
				c.refreshPod(ps, refreshGroups)
			}
		}
	}
}

// podGroups returns the ids of the groups whose subject holds a pod, the Admin tier's first
// (how many: admin), each tier's by id.
func (c *Compiler) podGroups(p *Pod) (ids []uint32, admin int) {
	if len(c.cnps.groups) == 0 || !livePod(p) {
		return nil, 0
	}
	var gs []*cnpGroup
	nsl := c.nsLabels(p.Namespace)
	for _, g := range c.cnps.byID {
		if g != nil && g.selects(nsl, p) {
			gs = append(gs, g)
		}
	}
	return groupIDs(gs)
}

// regroup returns podGroups for a pod whose groups were ids, given that the pod did not
// change since: the groups of ids that live on, and those made since the last Snapshot
// (born) whose subject holds it.
func (c *Compiler) regroup(p *Pod, ids []uint32) ([]uint32, int) {
	var gs []*cnpGroup
	for _, id := range ids {
		if g := c.cnps.byID[id]; g != nil {
			if !g.born { // else the id's group was forgotten and the id reused
				gs = append(gs, g)
			}
		}
	}
	if len(c.cnps.born) > 0 && livePod(p) {
		nsl := c.nsLabels(p.Namespace)
		for _, g := range c.cnps.born {
			if c.cnps.byID[g.id] == g && g.selects(nsl, p) {
				gs = append(gs, g)
			}
		}
	}
	slices.SortFunc(gs, func(a, b *cnpGroup) int { return cmp.Compare(a.id, b.id) })
	return groupIDs(gs)
}

// groupIDs returns the ids of groups sorted by id, the Admin tier's first (how many: admin).
func groupIDs(gs []*cnpGroup) (ids []uint32, admin int) {
	if len(gs) == 0 {
		return nil, 0
	}
	slices.SortStableFunc(gs, func(a, b *cnpGroup) int { return cmp.Compare(a.tier, b.tier) })
	ids = make([]uint32, len(gs))
	for i, g := range gs {
		ids[i] = g.id
		if g.tier == AdminTier {
			admin++
		}
	}
	return ids, admin
}

// snapshotGroups sorts the policies of the groups changed since the last Snapshot, marks
// the combos holding them for rebuilding, and returns the groups' policies by id.
func (c *Compiler) snapshotGroups(last []groupTables) []groupTables {
	if len(c.cnps.dirty) == 0 {
		return last
	}
	out := make([]groupTables, len(c.cnps.byID))
	copy(out, last)
	for g := range c.cnps.dirty {
		for cb := range g.combos {
			c.cnps.comboDirty[cb] = struct{}{}
		}
		if c.cnps.byID[g.id] != g { // forgotten; its id may be another group's now
			if int(g.id) < len(out) && c.cnps.byID[g.id] == nil {
				out[g.id] = groupTables{}
			}
			g.tables = groupTables{}
			continue
		}
		gt := groupTables{tier: g.tier}
		for _, dir := range [...]Direction{Egress, Ingress} {
			var pols []*compiledPolicy
			for cp := range g.pols {
				if len(cp.rules(dir)) > 0 { // no rules of a direction: no effect on it
					pols = append(pols, cp)
				}
			}
			if len(pols) > 0 {
				slices.SortFunc(pols, byPrecedence)
				gt.tables[dir] = &groupRules{dir, pols}
			}
		}
		out[g.id] = gt
		g.tables = gt
	}
	clear(c.cnps.dirty)
	return out
}

// byPrecedence orders the ClusterNetworkPolicies of one tier as they are judged: by
// priority, then — for policies of the same priority, which the API leaves to the
// implementation — by name.
func byPrecedence(a, b *compiledPolicy) int {
	if a.cluster.priority != b.cluster.priority {
		return cmp.Compare(a.cluster.priority, b.cluster.priority)
	}
	return strings.Compare(a.ref.Name, b.ref.Name)
}

// compileClusterPolicy compiles a ClusterNetworkPolicy that passed validation, registering its
// peers. What it cannot enforce as written it enforces fail-closed, as the API documents for
// fields an implementation does not know: an Accept rule then matches nothing of what it
// cannot read, a Deny or Pass rule becomes "Deny all". Each such case is one of the
// policy's problems (ClusterProblems).
func (c *Compiler) compileClusterPolicy(cnp *cnpv1alpha2.ClusterNetworkPolicy) *compiledPolicy {
	if err := ValidateClusterPolicy(cnp); err != nil {
		return c.compileInvalidCluster(cnp, err)
	}
	c.nextSerial++
	ref := ClusterRef(cnp)
	ci := &clusterInfo{tier: ref.Tier, priority: cnp.Spec.Priority}
	cp := &compiledPolicy{ref: ref, serial: c.nextSerial, cluster: ci}
	switch sub := cnp.Spec.Subject; {
	case sub.Namespaces != nil:
		ci.subNS, ci.subPods = validated(metav1.LabelSelectorAsSelector(sub.Namespaces)), labels.Everything()
	default:
		ci.subNS = validated(metav1.LabelSelectorAsSelector(&sub.Pods.NamespaceSelector))
		ci.subPods = validated(metav1.LabelSelectorAsSelector(&sub.Pods.PodSelector))
	}
	for i := range cnp.Spec.Ingress {
		r := &cnp.Spec.Ingress[i]
		peers := make([]cnpv1alpha2.ClusterNetworkPolicyEgressPeer, len(r.From))
		for j, p := range r.From {
			peers[j] = cnpv1alpha2.ClusterNetworkPolicyEgressPeer{Namespaces: p.Namespaces, Pods: p.Pods}
		}
		at := fmt.Sprintf("spec.ingress[%d]", i)
		c.compileClusterRule(cp, Ingress, at, r.Name, r.Action, peers, r.Protocols)
	}
	for i := range cnp.Spec.Egress {
		r := &cnp.Spec.Egress[i]
		c.compileClusterRule(cp, Egress, fmt.Sprintf("spec.egress[%d]", i), r.Name, r.Action, r.To, r.Protocols)
	}
	return cp
}

// compileClusterRule compiles one rule of a ClusterNetworkPolicy (ingress peers are given as
// egress peers with only namespaces or pods set).
func (c *Compiler) compileClusterRule(cp *compiledPolicy, dir Direction, at, name string, act cnpv1alpha2.ClusterNetworkPolicyRuleAction,
	peers []cnpv1alpha2.ClusterNetworkPolicyEgressPeer, protos []cnpv1alpha2.ClusterNetworkPolicyProtocol) {
	ci := cp.cluster
	var r rule
	var failed []string // what cannot be read, for a fail-closed rule
	a := ActionDeny
	switch act {
	case cnpv1alpha2.ClusterNetworkPolicyRuleActionAccept:
		a = ActionAccept
	case cnpv1alpha2.ClusterNetworkPolicyRuleActionDeny:
	case cnpv1alpha2.ClusterNetworkPolicyRuleActionPass:
		a = ActionPass
	default:
		failed = append(failed, fmt.Sprintf("%s.action: unknown action %q", at, act))
	}
	for j, p := range peers {
		pat := fmt.Sprintf("%s.%s[%d]", at, map[Direction]string{Ingress: "from", Egress: "to"}[dir], j)
		switch {
		case p.Namespaces != nil:
			id := c.peer("", p.Namespaces, nil)
			cp.peerIDs = append(cp.peerIDs, id)
			r.peers = append(r.peers, id)
		case p.Pods != nil:
			ns := p.Pods.NamespaceSelector
			id := c.peer("", &ns, &p.Pods.PodSelector)
			cp.peerIDs = append(cp.peerIDs, id)
			r.peers = append(r.peers, id)
		case len(p.Networks) > 0:
			for _, n := range p.Networks {
				r.addrs.addBlock(validated(netip.ParsePrefix(string(n))), nil)
			}
		case p.Nodes != nil:
			ci.nodes = true
			sel := validated(metav1.LabelSelectorAsSelector(p.Nodes))
			for _, ip := range c.nodeAddrs(sel) {
				r.addrs.addBlock(netip.PrefixFrom(ip, ip.BitLen()), nil)
			}
		case len(p.DomainNames) > 0:
			failed = append(failed, pat+".domainNames: not supported")
		default:
			failed = append(failed, pat+": no peer podwall knows (a field of a newer API version?)")
		}
	}
	slices.Sort(r.peers)
	r.peers = slices.Compact(r.peers)
	r.addrs.normalize()
	for j, p := range protos {
		ok := true
		switch {
		case p.TCP != nil:
			ok = addPorts(&r, flow.TCP, p.TCP.DestinationPort)
		case p.UDP != nil:
			ok = addPorts(&r, flow.UDP, p.UDP.DestinationPort)
		case p.SCTP != nil:
			ok = addPorts(&r, flow.SCTP, p.SCTP.DestinationPort)
		case p.DestinationNamedPort != "":
			id := c.portName(p.DestinationNamedPort)
			for _, proto := range [...]flow.Proto{flow.TCP, flow.UDP, flow.SCTP} {
				r.ports = append(r.ports, portRule{proto: proto, name: id})
			}
		default:
			ok = false
		}
		if !ok {
			failed = append(failed, fmt.Sprintf("%s.protocols[%d]: no protocol or port podwall knows (a field of a newer API version?)", at, j))
		}
	}
	if len(protos) > 0 && len(r.ports) == 0 {
		r = rule{} // every protocol entry unreadable: the rule names no traffic it can match
	}
	if len(failed) > 0 {
		if a == ActionAccept {
			ci.problems = append(ci.problems, strings.Join(failed, "; ")+": the Accept rule matches nothing of it")
		} else {
			ci.problems = append(ci.problems, strings.Join(failed, "; ")+": enforced as Deny all")
			a, r = ActionDeny, rule{any: true}
		}
	}
	switch dir {
	case Ingress:
		cp.ingressRules = append(cp.ingressRules, r)
	default:
		cp.egressRules = append(cp.egressRules, r)
	}
	ci.actions[dir] = append(ci.actions[dir], a)
	ci.names[dir] = append(ci.names[dir], name)
	ci.steps[dir] = append(ci.steps[dir], RuleRef{cp.ref, len(ci.steps[dir])})
}

// addPorts adds a protocol's destination port (nil: every port) to a rule; false when the
// port names neither a number nor a range.
func addPorts(r *rule, proto flow.Proto, p *cnpv1alpha2.Port) bool {
	pr := portRule{proto: proto}
	switch {
	case p == nil:
		pr.all = true
	case p.Range != nil:
		pr.lo, pr.hi = uint16(p.Range.Start), uint16(p.Range.End)
	case p.Number != 0:
		pr.lo, pr.hi = uint16(p.Number), uint16(p.Number)
	default:
		return false
	}
	r.ports = append(r.ports, pr)
	return true
}

// nodeAddrs returns the addresses of the nodes a selector matches: those of the Node
// objects and of the host-network pods running on them.
func (c *Compiler) nodeAddrs(sel labels.Selector) []netip.Addr {
	var out []netip.Addr
	matched := map[string]bool{}
	for _, n := range c.nodes {
		if sel.Matches(labels.Set(n.Labels)) {
			matched[n.Name] = true
			out = append(out, n.IPs...)
		}
	}
	if c.cnps.hostIPs == nil {
		c.cnps.hostIPs = map[string][]netip.Addr{}
		for _, ps := range c.pods {
			if ps.pod.HostNetwork && !ps.pod.Terminated() {
				c.cnps.hostIPs[ps.pod.Node] = append(c.cnps.hostIPs[ps.pod.Node], ps.pod.IPs...)
			}
		}
	}
	for node := range matched {
		out = append(out, c.cnps.hostIPs[node]...)
	}
	return out
}

// ClusterProblems lists, sorted, what the snapshot enforces of its ClusterNetworkPolicies
// otherwise than written: rules enforced fail-closed (unknown or unsupported fields, such as
// domainNames) and policies of one tier and priority that select one pod in one direction,
// whose order the API leaves to the implementation (podwall judges them by name).
func (s *Snapshot) ClusterProblems() []string {
	seen := map[string]bool{}
	for _, g := range s.groups {
		for _, t := range g.tables {
			for _, cp := range t.policies() {
				for _, p := range cp.cluster.problems {
					seen[cp.ref.String()+": "+p] = true
				}
			}
		}
	}
	done := map[string]bool{} // pods with the same groups have the same ties
	for _, e := range s.byKey {
		if len(e.groups) < 2 || done[fmt.Sprint(e.groups)] {
			continue
		}
		done[fmt.Sprint(e.groups)] = true
		for _, tier := range [...]Tier{AdminTier, BaselineTier} {
			for _, dir := range [...]Direction{Egress, Ingress} {
				pols := s.clusterPolicies(e, dir, tier)
				for i := 1; i < len(pols); i++ {
					if a, b := pols[i-1], pols[i]; a.cluster.priority == b.cluster.priority {
						seen[fmt.Sprintf("%s and %s: same %s priority %d, both select pods for %s: %s is judged first (by name)",
							a.ref, b.ref, tier, b.cluster.priority, dir, a.ref)] = true
					}
				}
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// priorityTie returns a policy of pols (one tier's, in precedence order) with the priority
// of cp, which it holds, or nil.
func priorityTie(pols []*compiledPolicy, cp *compiledPolicy) *compiledPolicy {
	i := slices.Index(pols, cp)
	if i > 0 && pols[i-1].cluster.priority == cp.cluster.priority {
		return pols[i-1]
	}
	if i >= 0 && i+1 < len(pols) && pols[i+1].cluster.priority == cp.cluster.priority {
		return pols[i+1]
	}
	return nil
}

// ClusterStep is a ClusterNetworkPolicy rule that judged a direction.
type ClusterStep struct {
	Rule     RuleRef // the policy (its Tier set) and the rule's index
	Name     string  // the rule's name in the spec; may be empty
	Priority int32
	Action   Action
	// Tie names a policy of the same tier and priority that also selects the pod for this
	// direction: the API leaves their order to the implementation, podwall judges by name.
	Tie *PolicyRef
}

// String names the step: cnp/NAME rule N ("rule name", Admin priority P).
func (c ClusterStep) String() string {
	s := c.Rule.String() + " ("
	if c.Name != "" {
		s += strconv.Quote(c.Name) + ", "
	}
	s += c.Rule.Policy.Tier.String() + " priority " + strconv.Itoa(int(c.Priority))
	if c.Tie != nil {
		s += ", same priority as " + c.Tie.String() + ": judged by name"
	}
	return s + ")"
}

// clusterSteps returns the ClusterNetworkPolicy rules a judgement went through.
func (s *Snapshot) clusterSteps(pod *podEntry, dir Direction, j *Judgement) []ClusterStep {
	var out []ClusterStep
	step := func(r *RuleRef) {
		pols := s.clusterPolicies(pod, dir, r.Policy.Tier)
		for _, cp := range pols {
			if cp.ref == r.Policy {
				ci := cp.cluster
				st := ClusterStep{Rule: *r, Name: ci.names[dir][r.Rule], Priority: ci.priority, Action: ci.action(dir, r.Rule)}
				if tie := priorityTie(pols, cp); tie != nil {
					st.Tie = &tie.ref
				}
				out = append(out, st)
				return
			}
		}
	}
	if j.AdminPass != nil {
		step(j.AdminPass)
	}
	if j.BaselinePass != nil {
		step(j.BaselinePass)
	}
	if (j.Code == ClusterAccepted || j.Code == ClusterDenied) && j.Policy != nil {
		step(&RuleRef{*j.Policy, j.Rule})
	}
	return out
}

// passes spells out the Pass steps of a direction: "cnp/a rule 2 (Admin priority 5) Pass → ".
func passes(steps []ClusterStep) string {
	var b strings.Builder
	for _, st := range steps {
		if st.Action == ActionPass {
			b.WriteString(st.String() + " Pass → ")
		}
	}
	return b.String()
}

// clusterJudges reports whether a ClusterNetworkPolicy of one of the tiers selects the pod
// with rules of the direction.
func (s *Snapshot) clusterJudges(e *podEntry, dir Direction, tiers ...Tier) bool {
	if e.claimants != nil { // an address several pods claim: judged with each
		return slices.ContainsFunc(e.claimants, func(c *podEntry) bool { return s.clusterJudges(c, dir, tiers...) })
	}
	for _, id := range e.groups {
		if g := &s.groups[id]; g.tables[dir] != nil && slices.Contains(tiers, g.tier) {
			return true
		}
	}
	return false
}

// nodeJudged reports whether a policy can deny the pod's traffic with its own node in a
// direction (LocalNodeJudged): its Admin tier, or — when no NetworkPolicy isolates it for
// that direction, which would allow it — its Baseline tier has a rule that can match a node
// address. An address several pods claim is judged with each.
func (s *Snapshot) nodeJudged(e *podEntry, dir Direction) bool {
	if e.claimants != nil {
		return slices.ContainsFunc(e.claimants, func(c *podEntry) bool { return s.nodeJudged(c, dir) })
	}
	t := e.egress
	if dir == Ingress {
		t = e.ingress
	}
	return s.nodeJudges(e, dir, AdminTier) || (t == nil && s.nodeJudges(e, dir, BaselineTier))
}

// nodeJudges reports whether a ClusterNetworkPolicy of the tier selecting the pod has a rule
// of the direction that can match a node address.
func (s *Snapshot) nodeJudges(e *podEntry, dir Direction, tier Tier) bool {
	for _, id := range e.groups {
		if g := &s.groups[id]; g.tier == tier && g.tables[dir].mayMatchAddrs() {
			return true
		}
	}
	return false
}

// clusterPolicies returns the ClusterNetworkPolicies of a tier selecting the pod with rules
// of the direction, in the order they are judged.
func (s *Snapshot) clusterPolicies(e *podEntry, dir Direction, tier Tier) []*compiledPolicy {
	var out []*compiledPolicy
	for _, id := range e.groups {
		if g := &s.groups[id]; g.tier == tier {
			out = append(out, g.tables[dir].policies()...)
		}
	}
	slices.SortFunc(out, byPrecedence)
	return out
}

// LocalClusterPolicies returns the ClusterNetworkPolicies that select a live pod of the
// snapshot's node, sorted by name: the policies whose verdicts this node gives. It allocates:
// it is meant for indexes built once per snapshot.
func (s *Snapshot) LocalClusterPolicies() []PolicyRef {
	seen := map[PolicyRef]bool{}
	for _, e := range s.byKey {
		if !e.local {
			continue
		}
		for _, id := range e.groups {
			for _, t := range s.groups[id].tables {
				for _, cp := range t.policies() {
					seen[cp.ref] = true
				}
			}
		}
	}
	out := slices.Collect(maps.Keys(seen))
	slices.SortFunc(out, func(a, b PolicyRef) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// compileInvalidCluster compiles a ClusterNetworkPolicy that failed validation fail-closed,
// so that it never widens access: it denies all traffic of its subject in each direction it
// has rules for (a ClusterNetworkPolicy without rules of a direction does not affect it).
// What cannot be read is read the strict way: a tier other than Baseline is the Admin tier,
// a priority out of 0–1000 is 0 (judged first), and an unreadable subject (no field, both,
// or a selector that does not parse) is every pod. The policy's problems say so.
func (c *Compiler) compileInvalidCluster(cnp *cnpv1alpha2.ClusterNetworkPolicy, err error) *compiledPolicy {
	c.nextSerial++
	ref := ClusterRef(cnp)
	ci := &clusterInfo{tier: ref.Tier, priority: cnp.Spec.Priority, invalid: err}
	if ci.priority < 0 || ci.priority > 1000 {
		ci.priority = 0
	}
	cp := &compiledPolicy{ref: ref, serial: c.nextSerial, cluster: ci}
	ci.subNS, ci.subPods = labels.Everything(), labels.Everything()
	switch sub := cnp.Spec.Subject; {
	case sub.Namespaces != nil && sub.Pods == nil:
		if sel, err := metav1.LabelSelectorAsSelector(sub.Namespaces); err == nil {
			ci.subNS = sel
		}
	case sub.Pods != nil && sub.Namespaces == nil:
		ns, err1 := metav1.LabelSelectorAsSelector(&sub.Pods.NamespaceSelector)
		pods, err2 := metav1.LabelSelectorAsSelector(&sub.Pods.PodSelector)
		if err1 == nil && err2 == nil {
			ci.subNS, ci.subPods = ns, pods
		}
	}
	const name = "invalid: enforced fail-closed"
	for _, dir := range [...]Direction{Egress, Ingress} {
		n := len(cnp.Spec.Egress)
		if dir == Ingress {
			n = len(cnp.Spec.Ingress)
		}
		if n == 0 {
			continue
		}
		if dir == Ingress {
			cp.ingressRules = []rule{{any: true}}
		} else {
			cp.egressRules = []rule{{any: true}}
		}
		ci.actions[dir] = []Action{ActionDeny}
		ci.names[dir] = []string{name}
		ci.steps[dir] = []RuleRef{{ref, 0}}
	}
	ci.problems = append(ci.problems, "invalid ("+strings.ReplaceAll(err.Error(), "\n", "; ")+
		"): enforced fail-closed, denying all of its subject's traffic in the directions it has rules for")
	return cp
}
