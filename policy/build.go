package policy

import (
	"encoding/binary"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/podwall/podwall/policy/flow"
)

// podEntry is a pod as a Snapshot sees it. Immutable.
type podEntry struct {
	pod     *Pod
	local   bool
	claimed bool // claimants is set; beside local so that Decide reads one cache line
	// combos are the ids of the combos of its Admin and Baseline groups (Snapshot.combos;
	// cnptable.go); 0 when it has none of that tier.
	combos  [2]uint32
	ingress *ruleTable // the rules of the policies isolating it for ingress; nil when none
	egress  *ruleTable
	peers   []uint32 // sorted peer ids the pod belongs to
	ports   []portID // named ports, interned
	// clusterPeers are the cluster peer bits of the peers it belongs to that
	// ClusterNetworkPolicies name (cnptable.go).
	clusterPeers peerBits
	// claimants is set on the entry of an address several live pods claim (conflict.go):
	// their entries, sorted by namespace/name. Nil otherwise.
	claimants []*podEntry
	// groups are the ids of the ClusterNetworkPolicy groups whose subject holds the pod
	// (Snapshot.groups; see clusterPolicies), the Admin tier's first: groups[:admin].
	groups []uint32
	admin  int
}

// portID is a named port of a pod with its name interned (Compiler.portName).
type portID struct {
	name  uint32
	proto flow.Proto
	port  uint16
}

// Snapshot applies the changes recorded since the last call and returns a new Snapshot that
// shares everything unchanged with the previous one; with no change, the previous one.
func (c *Compiler) Snapshot() *Snapshot {
	if c.last != nil && len(c.dirty) == 0 && len(c.removed) == 0 && len(c.touched) == 0 && !c.nodesDirty && !c.problemsDirty &&
		len(c.cnps.dirty) == 0 && len(c.cnps.comboDirty) == 0 && len(c.refresh) == 0 {
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
		s.problems, s.conflicts = c.last.problems, c.last.conflicts
	}
	if c.problemsDirty {
		s.problems = c.problems()
		c.problemsDirty = false
	}
	if c.nodesDirty {
		c.nodesChanged() // before the groups' tables are built
	}
	var lastGroups []groupTables
	if c.last != nil {
		lastGroups = c.last.groups
	}
	s.groups = c.snapshotGroups(lastGroups)
	for _, e := range c.removed {
		if s.byKey[e.pod.Key()] == e {
			delete(s.byKey, e.pod.Key())
		}
	}
	c.removed = c.removed[:0]
	for ps, what := range c.refresh {
		if _, ok := c.dirty[ps]; ok || ps.entry == nil {
			continue
		}
		old := ps.entry
		ps.entry = c.refreshed(ps, what)
		if what&refreshGroups != 0 {
			for _, id := range old.combos {
				c.releaseCombo(id) // after refreshed, which may share them
			}
		}
		s.byKey[ps.key] = ps.entry
		for _, ip := range ps.pod.IPs {
			if s.byIP[ip] == old { // its own address, no other pod claims it: the pod is its owner still
				s.byIP[ip] = ps.entry
			} else {
				c.touched[ip] = struct{}{}
			}
		}
	}
	clear(c.refresh)
	for _, g := range c.cnps.born {
		g.born = false
	}
	c.cnps.born = c.cnps.born[:0]
	for ps := range c.dirty {
		old := ps.entry
		ps.entry = c.build(ps)
		if old != nil {
			c.releaseTables(old) // after build, which may share its tables
		}
		s.byKey[ps.key] = ps.entry
		for _, ip := range ps.pod.IPs {
			c.touched[ip] = struct{}{}
		}
	}
	clear(c.dirty)
	var lastCombos []comboTables
	if c.last != nil {
		lastCombos = c.last.combos
	}
	s.combos = c.snapshotCombos(lastCombos)
	for ip := range c.touched {
		owners := c.owners[ip]
		switch len(owners) {
		case 0:
			delete(s.byIP, ip)
		case 1:
			s.byIP[ip] = owners[0].entry
		default:
			s.byIP[ip] = claimed(owners) // judged with every claimant (conflict.go)
		}
		if was, is := c.conflicts[ip], len(owners) > 1; was || is {
			c.conflictsDirty = true
			if is {
				c.conflicts[ip] = true
			} else {
				delete(c.conflicts, ip)
			}
		}
	}
	clear(c.touched)
	if c.conflictsDirty {
		s.conflicts = conflictsOf(c.conflicts, s.byIP)
		c.conflictsDirty = false
	}
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
	for a := range s.nodeIPs {
		if s.byIP[a] != nil {
			s.podNodeAddrs = true
			break
		}
	}
	c.last = s
	return s
}

// claim adds (or removes) the pod as an owner of its addresses and marks them touched, so
// that the next Snapshot gives each touched address to its owner again.
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

// build makes the immutable entry of a pod from its current state.
func (c *Compiler) build(ps *podState) *podEntry {
	p := ps.pod
	e := &podEntry{pod: p, local: c.node != "" && p.Node == c.node, peers: ps.peers, clusterPeers: c.clusterPeers(ps.peers)}
	if livePod(p) {
		var ingress, egress []*compiledPolicy
		for cp := range c.policiesNS[p.Namespace] {
			if !cp.podSel.Matches(labels.Set(p.Labels)) {
				continue
			}
			if cp.ingress {
				ingress = append(ingress, cp)
			}
			if cp.egress {
				egress = append(egress, cp)
			}
		}
		e.ingress = c.table(Ingress, ingress)
		e.egress = c.table(Egress, egress)
		e.groups, e.admin = c.podGroups(p)
		e.combos = [2]uint32{c.combo(e.groups[:e.admin]), c.combo(e.groups[e.admin:])}
	}
	for _, np := range p.Ports {
		if np.Name != "" {
			e.ports = append(e.ports, portID{c.portName(np.Name), np.Proto, np.Port})
		}
	}
	return e
}

// refresh says what of a pod's entry changed when the pod itself did not: its peers (a peer
// came, went, or got or gave back its cluster peer bit) or its ClusterNetworkPolicy groups
// (a group came or went). Such an entry is copied with the new ones, not built again.
type refresh uint8

const (
	refreshPeers refresh = 1 << iota
	refreshGroups
)

// refreshPod marks a pod's entry for copying with new peers or groups at the next Snapshot.
func (c *Compiler) refreshPod(ps *podState, what refresh) {
	c.refresh[ps] |= what
}

// refreshed returns a copy of the entry of a pod with new peers or groups (refresh); it
// counts one more user of its combos when its groups are new.
func (c *Compiler) refreshed(ps *podState, what refresh) *podEntry {
	e := *ps.entry
	if what&refreshPeers != 0 {
		e.peers, e.clusterPeers = ps.peers, c.clusterPeers(ps.peers)
	}
	if what&refreshGroups != 0 {
		e.groups, e.admin = c.regroup(ps.pod, e.groups)
		e.combos = [2]uint32{c.combo(e.groups[:e.admin]), c.combo(e.groups[e.admin:])}
	}
	return &e
}

// tableUse is a cached table and the number of built entries that use it.
type tableUse struct {
	t     *ruleTable
	users int
}

// table returns the table of the rules of one direction of pols (unsorted; nil when none
// isolates the pod) and counts one more user of it. Pods isolated by the same policies share
// a table, built when the first of them is.
func (c *Compiler) table(dir Direction, pols []*compiledPolicy) *ruleTable {
	if len(pols) == 0 {
		return nil
	}
	slices.SortFunc(pols, func(a, b *compiledPolicy) int { return strings.Compare(a.ref.Name, b.ref.Name) })
	return c.cachedTable(dir, pols)
}

// cachedTable returns the table of pols in their order, for a kind of table (a Direction,
// plus 2 for a ClusterNetworkPolicy tier), counting one more user of it.
func (c *Compiler) cachedTable(kind Direction, pols []*compiledPolicy) *ruleTable {
	dir := kind & 1
	k := append(c.tableKey[:0], byte(kind))
	for _, cp := range pols {
		k = binary.LittleEndian.AppendUint64(k, cp.serial)
	}
	c.tableKey = k
	if u := c.tables[string(k)]; u != nil {
		u.users++
		return u.t
	}
	t := c.builder.build(string(k), dir, pols)
	c.tables[t.key] = &tableUse{t: t, users: 1}
	return t
}

// releaseTables counts one user less of the tables of an entry built before, forgetting a
// table no entry uses any more.
func (c *Compiler) releaseTables(e *podEntry) {
	for _, id := range e.combos {
		c.releaseCombo(id)
	}
	for _, t := range [...]*ruleTable{e.ingress, e.egress} {
		if t == nil {
			continue
		}
		if u := c.tables[t.key]; u != nil && u.t == t {
			if u.users--; u.users == 0 {
				delete(c.tables, t.key)
			}
		}
	}
}
