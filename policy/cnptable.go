package policy

import (
	"cmp"
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"

	"github.com/podwall/podwall/policy/flow"
)

// A pod's ClusterNetworkPolicies of one tier are the policies of the groups (same tier and
// subject) whose subject holds it; pods with the same groups share a combo, and a combo has
// one clusterTable per direction: the rules of all its policies in precedence order. So
// Decide looks up one table per tier and direction, however many policies and groups select
// the pod. A change to a policy rebuilds the tables of the combos holding its group, in the
// directions its rules changed — a clusterTable is cheap to build, it merges nothing but bit
// masks, and combos with the same policies of a direction share one (clusterTableUse) — and
// no pod entry: an entry names its combos by id, and the Snapshot maps ids to the tables of
// the moment. A group that comes or goes changes the combos of the pods it selects: their
// entries are copied with the new ids (Compiler.refreshed), not built again.
//
// Peers are matched by cluster peer bits: the peers ClusterNetworkPolicy rules name get
// small numbers of their own (usePeerBits), a pod entry holds those of the peers it belongs
// to as a bitmap (podEntry.clusterPeers), and a table ANDs it with the bitmap of the peers
// its rules name, however many NetworkPolicy peers the pod belongs to.

// clusterTable is the rules of one direction of the ClusterNetworkPolicies of a combo, in
// the order they are judged (priority, then name, then rule index): a rule's rank is its
// position, and the rule that decides is the matching rule of lowest rank. Immutable.
//
// Every set of rules is a bit mask over ranks (words uint64s, rank r at bit r%64 of word
// r/64): the rules allowing a port class, naming a port, with an address block, without
// peers, naming each peer. A lookup ANDs the mask of the flow's port with that of the rules
// matching the remote end, a word at a time, and takes the lowest bit: a binary search for
// the port class, then — only for the rules of lower rank than the best found so far — the
// address blocks of the rules that have some, and the peers the remote pod and the table
// have in common (cluster peer bits, ANDed).
//
// So that a lookup touches few cache lines, everything but the rules is one array, data:
//
//	[0, 4·words)           the masks of the rules without ports, without peers, with
//	                       address blocks and naming some peer (the fixed masks, fixed*)
//	[portsAt, +nports)     port classes sorted by protocol and first port, disjoint, each
//	                       packed: protocol<<56 | last port<<40 | first port<<24 | mask offset
//	[namedAt, +nnamed)     named classes sorted by protocol and name, each packed:
//	                       protocol<<56 | name<<24 | mask offset
//	[peerBitsAt, +npeerw)  the cluster peer bits of the peers the rules name; then as many
//	                       counts: the bits set in the words before
//	[peersAt, …)           the masks of those peers, in bit order: peer i's at peersAt+i·words
//	the masks the classes point to.
type clusterTable struct {
	rules  []clusterRule // by rank
	words  uint32
	nports uint32
	nnamed uint32
	npeerw uint32
	data   []uint64
}

// The fixed masks of a clusterTable, in units of words.
const (
	fixedNoPorts = iota // the rules without ports (every port)
	fixedAny            // the rules without peers (every remote end)
	fixedAddrs          // the rules with address blocks
	fixedPeered         // the rules naming some peer
	fixedMasks
)

// clusterRule is the rule of a given rank of a clusterTable, with what a judgement needs of
// it at hand.
type clusterRule struct {
	cp     *compiledPolicy
	index  int
	action Action
	step   *RuleRef // the rule named, for a Pass step
	v4     []span4  // its address blocks (the rule's own)
	v6     []span6
}

// holds reports whether the address blocks of the rule of a rank hold an address, given as
// x4 when is4, else as x6.
func (t *clusterTable) holds(rank int, is4 bool, x4 uint32, x6 u128) bool {
	r := &t.rules[rank]
	if is4 {
		return contains4(r.v4, x4)
	}
	return contains6(r.v6, x6)
}

func (t *clusterTable) portsAt() uint32    { return fixedMasks * t.words }
func (t *clusterTable) namedAt() uint32    { return t.portsAt() + t.nports }
func (t *clusterTable) peerBitsAt() uint32 { return t.namedAt() + t.nnamed }

// first returns the rank of the first rule matching a flow whose remote end is remote (nil
// when not a pod) at raddr, towards the destination pod dst (nil when not a pod); noRank when
// none does. It never allocates.
func (t *clusterTable) first(remote *podEntry, raddr netip.Addr, dst *podEntry, f flow.Flow) uint32 {
	d, ws := t.data, t.words
	pc := uint32(fixedNoPorts) * ws
	if at, ok := t.portClass(f.Proto, f.Port); ok {
		pc = at
	}
	var named [4]uint32 // the mask offsets of the named classes of the flow's port
	nn := 0             // how many; more than 4: looked up again for each word
	if t.nnamed > 0 && dst != nil {
		for _, np := range dst.ports {
			if np.proto == f.Proto && np.port == f.Port {
				if at, ok := t.namedClass(f.Proto, np.name); ok {
					if nn < len(named) {
						named[nn] = at
					}
					nn++
				}
			}
		}
	}
	var keyed, is4 bool // raddr as a number, computed once needed
	var x4 uint32
	var x6 u128
	for w := range ws {
		pm := d[pc+w]
		if nn <= len(named) {
			for _, at := range named[:nn] {
				pm |= d[at+w]
			}
		} else {
			for _, np := range dst.ports {
				if np.proto == f.Proto && np.port == f.Port {
					if at, ok := t.namedClass(f.Proto, np.name); ok {
						pm |= d[at+w]
					}
				}
			}
		}
		if pm == 0 {
			continue
		}
		m := pm & d[fixedAny*ws+w]
		if p := pm & below(m) & d[fixedPeered*ws+w]; p != 0 && remote != nil {
			m |= t.peerMatch(remote, w, p)
		}
		for a := pm & below(m) & d[fixedAddrs*ws+w]; a != 0; a &= a - 1 {
			if !keyed {
				keyed, is4 = true, raddr.Is4()
				if is4 {
					x4 = v4(raddr)
				} else {
					x6 = v6(raddr)
				}
			}
			b := bits.TrailingZeros64(a)
			if t.holds(int(w)*64+b, is4, x4, x6) {
				m |= 1 << b // the lowest of the address rules; below any earlier match
				break
			}
		}
		if m != 0 {
			return w*64 + uint32(bits.TrailingZeros64(m))
		}
	}
	return noRank
}

// below returns the bits lower than the lowest set bit of m; all of them when m is 0.
func below(m uint64) uint64 { return (m & -m) - 1 }

// portClass returns the offset of the mask of the port class holding a protocol and port.
func (t *clusterTable) portClass(proto flow.Proto, port uint16) (uint32, bool) {
	s := t.data[t.portsAt() : t.portsAt()+t.nports]
	want := uint64(proto)<<16 | uint64(port)
	i, j := 0, len(s)
	for i < j { // first class at or after (proto, port)
		h := int(uint(i+j) >> 1)
		if s[h]>>40 < want {
			i = h + 1
		} else {
			j = h
		}
	}
	if i < len(s) && s[i]>>56 == uint64(proto) && uint16(s[i]>>24) <= port {
		return uint32(s[i] & (1<<24 - 1)), true
	}
	return 0, false
}

// namedClass returns the offset of the mask of the named class of a protocol and name.
func (t *clusterTable) namedClass(proto flow.Proto, name uint32) (uint32, bool) {
	s := t.data[t.namedAt() : t.namedAt()+t.nnamed]
	want := uint64(proto)<<32 | uint64(name)
	i, j := 0, len(s)
	for i < j {
		h := int(uint(i+j) >> 1)
		if s[h]>>24 < want {
			i = h + 1
		} else {
			j = h
		}
	}
	if i < len(s) && s[i]>>24 == want {
		return uint32(s[i] & (1<<24 - 1)), true
	}
	return 0, false
}

// peerMatch returns the bits of want (word w) of the rules naming a peer the remote pod
// belongs to. It stops once the lowest bit of want is found.
func (t *clusterTable) peerMatch(remote *podEntry, w uint32, want uint64) uint64 {
	var got uint64
	lowest := want & -want
	at := t.peerBitsAt()
	peers := at + 2*t.npeerw // peersAt
	for k := range t.npeerw {
		mine := t.data[at+k]
		for common := remote.clusterPeers.word(k) & mine; common != 0; common &= common - 1 {
			low := common & -common
			i := uint32(t.data[at+t.npeerw+k]) + uint32(bits.OnesCount64(mine&(low-1)))
			if got |= t.data[peers+i*t.words+w] & want; got&lowest != 0 {
				return got
			}
		}
	}
	return got
}

// clusterTableBuilder builds clusterTables, keeping its scratch space from one to the next.
type clusterTableBuilder struct {
	// The rules' port ranges, port names and peers, packed so that sorting them sorts numbers:
	// protocol<<56 | first port<<40 | last port<<24 | rank; protocol<<56 | name<<24 | rank;
	// cluster peer bit<<32 | rank. (A table holds fewer than 1<<24 rules.)
	spans   []uint64
	named   []uint64
	peers   []uint64
	cuts    []uint32
	ports   []uint64 // packed port classes
	classes []uint64 // their masks, end to end
	mask    []uint64
	protos  []uint64 // scratch of groupByProto
	spans2  []uint64
}

// groupByProto reorders b.spans by protocol, ascending — all the port classes need of their
// order, cheaper than sorting for the few protocols there are.
func (b *clusterTableBuilder) groupByProto() {
	b.protos = b.protos[:0]
	for _, x := range b.spans {
		if !slices.Contains(b.protos, x>>56) {
			b.protos = append(b.protos, x>>56)
		}
	}
	if len(b.protos) < 2 {
		return
	}
	slices.Sort(b.protos)
	b.spans2 = b.spans2[:0]
	for _, p := range b.protos {
		for _, x := range b.spans {
			if x>>56 == p {
				b.spans2 = append(b.spans2, x)
			}
		}
	}
	b.spans, b.spans2 = b.spans2, b.spans
}

// build merges the rules of one direction of pols, which are in precedence order; bit gives
// the cluster peer bit of each peer they name.
func (b *clusterTableBuilder) build(dir Direction, pols []*compiledPolicy, bit map[uint32]uint32) *clusterTable {
	t := &clusterTable{}
	n := 0
	for _, cp := range pols {
		n += len(cp.rules(dir))
	}
	t.rules = make([]clusterRule, 0, n)
	t.words = uint32(n+63) / 64
	ws := t.words
	fixed := make([]uint64, fixedMasks*ws)
	set := func(m []uint64, rank uint32) { m[rank/64] |= 1 << (rank % 64) }
	b.spans, b.named, b.peers = b.spans[:0], b.named[:0], b.peers[:0]
	for _, cp := range pols {
		rs := cp.rules(dir)
		for i := range rs {
			r := &rs[i]
			rank := uint32(len(t.rules))
			cr := clusterRule{cp: cp, index: i, action: cp.cluster.action(dir, i), step: &cp.cluster.steps[dir][i]}
			if len(r.ports) == 0 {
				set(fixed[fixedNoPorts*ws:], rank)
			}
			if r.any {
				set(fixed[fixedAny*ws:], rank)
			}
			if len(r.addrs.v4)+len(r.addrs.v6) > 0 {
				set(fixed[fixedAddrs*ws:], rank)
				cr.v4, cr.v6 = r.addrs.v4, r.addrs.v6
			}
			if len(r.peers) > 0 {
				set(fixed[fixedPeered*ws:], rank)
			}
			t.rules = append(t.rules, cr)
			for _, id := range r.peers {
				b.peers = append(b.peers, uint64(bit[id])<<32|uint64(rank))
			}
			for _, p := range r.ports {
				switch {
				case p.name != 0:
					b.named = append(b.named, uint64(p.proto)<<56|uint64(p.name)<<24|uint64(rank))
				case p.all:
					b.spans = append(b.spans, uint64(p.proto)<<56|0xffff<<24|uint64(rank))
				default:
					b.spans = append(b.spans, uint64(p.proto)<<56|uint64(p.lo)<<40|uint64(p.hi)<<24|uint64(rank))
				}
			}
		}
	}

	// Port classes: each protocol's ranges cut where one starts or ends; a piece no range
	// covers is left to the rules without ports. Adjacent pieces of the same rules are one
	// class. Their masks are numbered for now (class k's at k·words of b.classes).
	b.ports, b.classes = b.ports[:0], b.classes[:0]
	b.groupByProto()
	lo16 := func(x uint64) uint64 { return x >> 40 & 0xffff }
	hi16 := func(x uint64) uint64 { return x >> 24 & 0xffff }
	for spans := b.spans; len(spans) > 0; {
		proto := spans[0] >> 56
		n := 1
		for n < len(spans) && spans[n]>>56 == proto {
			n++
		}
		b.cuts = b.cuts[:0]
		for _, x := range spans[:n] {
			b.cuts = append(b.cuts, uint32(lo16(x)), uint32(hi16(x))+1)
		}
		slices.Sort(b.cuts)
		b.cuts = slices.Compact(b.cuts)
		for k := 0; k+1 < len(b.cuts); k++ {
			lo, hi := uint64(b.cuts[k]), uint64(b.cuts[k+1]-1)
			b.mask = append(b.mask[:0], fixed[fixedNoPorts*ws:(fixedNoPorts+1)*ws]...)
			covered := false
			for _, x := range spans[:n] {
				if lo16(x) <= lo && hi <= hi16(x) {
					set(b.mask, uint32(x&(1<<24-1)))
					covered = true
				}
			}
			if !covered {
				continue
			}
			if last := len(b.ports) - 1; last >= 0 && b.ports[last]>>56 == proto && (b.ports[last]>>40)&0xffff+1 == lo &&
				slices.Equal(b.classes[len(b.classes)-int(ws):], b.mask) {
				b.ports[last] = b.ports[last]&^(0xffff<<40) | hi<<40
				continue
			}
			b.ports = append(b.ports, proto<<56|hi<<40|lo<<24|uint64(len(b.ports)))
			b.classes = append(b.classes, b.mask...)
		}
		spans = spans[n:]
	}
	slices.Sort(b.named)
	slices.Sort(b.peers) // by bit
	nnamed, npeers := 0, 0
	for i, x := range b.named {
		if i == 0 || x>>24 != b.named[i-1]>>24 {
			nnamed++
		}
	}
	for i, x := range b.peers {
		if i == 0 || x>>32 != b.peers[i-1]>>32 {
			npeers++
		}
		t.npeerw = max(t.npeerw, uint32(x>>32)/64+1)
	}
	t.nports, t.nnamed = uint32(len(b.ports)), uint32(nnamed)

	// The one array.
	peersAt := t.peerBitsAt() + 2*t.npeerw
	classesAt := peersAt + uint32(npeers)*ws
	namedMasksAt := classesAt + uint32(len(b.classes))
	d := make([]uint64, namedMasksAt+uint32(nnamed)*ws)
	copy(d, fixed)
	for k, c := range b.ports {
		d[t.portsAt()+uint32(k)] = c&^(1<<24-1) | uint64(classesAt+uint32(c&(1<<24-1))*ws)
	}
	copy(d[classesAt:], b.classes)
	k := -1
	for i, x := range b.named {
		if i == 0 || x>>24 != b.named[i-1]>>24 {
			k++
			d[t.namedAt()+uint32(k)] = x&^(1<<24-1) | uint64(namedMasksAt+uint32(k)*ws)
		}
		set(d[namedMasksAt+uint32(k)*ws:], uint32(x&(1<<24-1)))
	}
	bitsAt := t.peerBitsAt()
	k = -1
	for i, x := range b.peers {
		if bit := uint32(x >> 32); i == 0 || x>>32 != b.peers[i-1]>>32 {
			k++
			d[bitsAt+bit/64] |= 1 << (bit % 64)
		}
		set(d[peersAt+uint32(k)*ws:], uint32(x))
	}
	for w := uint32(1); w < t.npeerw; w++ {
		d[bitsAt+t.npeerw+w] = d[bitsAt+t.npeerw+w-1] + uint64(bits.OnesCount64(d[bitsAt+w-1]))
	}
	t.data = d
	return t
}

// cnpCombo is a set of groups of one tier: the groups whose subject holds some pods. Pods
// with the same groups share its tables (Snapshot.combos).
type cnpCombo struct {
	id     uint32
	key    string
	groups []*cnpGroup
	users  int       // built pod entries naming it
	tables [2]string // the keys of its tables by Direction in clusterPolicies.tables; "" for none
}

// clusterTableUse is a table and the number of combos that use it: combos whose policies of
// a direction are the same share its table.
type clusterTableUse struct {
	t     *clusterTable
	users int
}

// comboTables are the tables of a combo by Direction (nil when none of its policies has
// rules of that direction). Immutable.
type comboTables [2]*clusterTable

// combo returns the id of the combo of the given groups (ids; none: 0), counting one more
// user of it and making it when new.
func (c *Compiler) combo(ids []uint32) uint32 {
	if len(ids) == 0 {
		return 0
	}
	gs := make([]*cnpGroup, len(ids))
	for i, id := range ids {
		gs[i] = c.cnps.byID[id]
	}
	slices.SortFunc(gs, func(a, b *cnpGroup) int { return cmp.Compare(a.serial, b.serial) })
	k := c.tableKey[:0]
	for _, g := range gs {
		k = binary.LittleEndian.AppendUint64(k, g.serial)
	}
	c.tableKey = k
	if cb := c.cnps.combos[string(k)]; cb != nil {
		cb.users++
		return cb.id
	}
	if c.cnps.combos == nil {
		c.cnps.combos, c.cnps.comboDirty = map[string]*cnpCombo{}, map[*cnpCombo]struct{}{}
		c.cnps.comboByID = []*cnpCombo{nil} // id 0 is no combo
	}
	cb := &cnpCombo{key: string(k), groups: gs, users: 1}
	if i := slices.Index(c.cnps.comboByID[1:], nil); i >= 0 {
		cb.id = uint32(i + 1)
	} else {
		cb.id = uint32(len(c.cnps.comboByID))
		c.cnps.comboByID = append(c.cnps.comboByID, nil)
	}
	c.cnps.comboByID[cb.id] = cb
	c.cnps.combos[cb.key] = cb
	for _, g := range gs {
		if g.combos == nil {
			g.combos = map[*cnpCombo]struct{}{}
		}
		g.combos[cb] = struct{}{}
	}
	c.cnps.comboDirty[cb] = struct{}{}
	return cb.id
}

// releaseCombo counts one user less of a combo, forgetting it when none is left.
func (c *Compiler) releaseCombo(id uint32) {
	if id == 0 {
		return
	}
	cb := c.cnps.comboByID[id]
	if cb.users--; cb.users > 0 {
		return
	}
	delete(c.cnps.combos, cb.key)
	for _, g := range cb.groups {
		delete(g.combos, cb)
	}
	for _, k := range cb.tables {
		c.dropClusterTable(k)
	}
	c.cnps.comboByID[id] = nil
	c.cnps.comboDirty[cb] = struct{}{} // its slot is emptied
}

// snapshotCombos gives the combos made or changed since the last Snapshot (a group of
// theirs changed: snapshotGroups marks them) the tables of their policies — the table they
// had when these are the same, else one another combo has or a new one — and returns the
// combos' tables by id.
func (c *Compiler) snapshotCombos(last []comboTables) []comboTables {
	if len(c.cnps.comboDirty) == 0 {
		return last
	}
	out := make([]comboTables, len(c.cnps.comboByID))
	copy(out, last)
	var pols []*compiledPolicy
	for cb := range c.cnps.comboDirty {
		if c.cnps.comboByID[cb.id] != cb { // forgotten; its id may be another combo's now
			if int(cb.id) < len(out) && c.cnps.comboByID[cb.id] == nil {
				out[cb.id] = comboTables{}
			}
			continue
		}
		var ct comboTables
		for _, dir := range [...]Direction{Egress, Ingress} {
			pols = pols[:0]
			for _, g := range cb.groups {
				pols = append(pols, g.tables.tables[dir].policies()...)
			}
			k := ""
			if len(pols) > 0 {
				slices.SortFunc(pols, byPrecedence)
				key := append(c.tableKey[:0], byte(dir))
				for _, cp := range pols {
					key = binary.LittleEndian.AppendUint64(key, cp.serial)
				}
				c.tableKey = key
				k = string(key)
			}
			if k != cb.tables[dir] {
				c.useClusterTable(k, dir, pols)
				c.dropClusterTable(cb.tables[dir])
				cb.tables[dir] = k
			}
			if k != "" {
				ct[dir] = c.cnps.tables[k].t
			}
		}
		out[cb.id] = ct
	}
	clear(c.cnps.comboDirty)
	return out
}

// Cluster peer bits: the peers ClusterNetworkPolicy rules name have small numbers of their
// own, reused once free, so that a pod entry holds the ones it belongs to as a bitmap
// (podEntry.clusterPeers) and a clusterTable finds the peers a remote pod and its rules have
// in common with a few ANDs, however many NetworkPolicy peers the pod belongs to.

// usePeerBits counts one more use of the cluster peer bit of each peer of a policy, giving
// a bit to a peer that has none: its pods are rebuilt with it.
func (c *Compiler) usePeerBits(cp *compiledPolicy) {
	if c.cnps.peerBit == nil {
		c.cnps.peerBit = map[uint32]uint32{}
	}
	for _, id := range cp.peerIDs {
		if b, ok := c.cnps.peerBit[id]; ok {
			c.cnps.bitUses[b]++
			continue
		}
		b := uint32(slices.Index(c.cnps.bitUses, 0))
		if b == ^uint32(0) {
			b = uint32(len(c.cnps.bitUses))
			c.cnps.bitUses = append(c.cnps.bitUses, 0)
		}
		c.cnps.bitUses[b] = 1
		c.cnps.peerBit[id] = b
		c.markMembers(id)
	}
}

// dropPeerBits counts one use less of the cluster peer bit of each peer of a policy, freeing
// the bit of a peer no ClusterNetworkPolicy names any more: its pods are rebuilt without it.
func (c *Compiler) dropPeerBits(cp *compiledPolicy) {
	for _, id := range cp.peerIDs {
		b := c.cnps.peerBit[id]
		if c.cnps.bitUses[b]--; c.cnps.bitUses[b] == 0 {
			delete(c.cnps.peerBit, id)
			c.markMembers(id)
		}
	}
}

// markMembers marks dirty the pods that belong to a peer.
func (c *Compiler) markMembers(id uint32) {
	p := c.peerByID[id]
	if p == nil {
		return
	}
	c.peerCandidates(p, func(ps *podState) {
		if _, ok := slices.BinarySearch(ps.peers, id); ok {
			c.refreshPod(ps, refreshPeers)
		}
	})
}

// clusterPeers returns the cluster peer bits of the given peers.
func (c *Compiler) clusterPeers(ids []uint32) peerBits {
	var out peerBits
	if len(c.cnps.peerBit) == 0 {
		return out
	}
	for _, id := range ids {
		if b, ok := c.cnps.peerBit[id]; ok {
			out.set(b)
		}
	}
	return out
}

// peerBits is a set of cluster peer bits; the first 128 in the entry itself, which Decide
// reads anyway.
type peerBits struct {
	low  [2]uint64
	high []uint64 // bits from 128 on
}

// word returns the k-th word of the set.
func (p *peerBits) word(k uint32) uint64 {
	if k < uint32(len(p.low)) {
		return p.low[k]
	}
	if k -= uint32(len(p.low)); k < uint32(len(p.high)) {
		return p.high[k]
	}
	return 0
}

func (p *peerBits) set(b uint32) {
	k := b / 64
	if k < uint32(len(p.low)) {
		p.low[k] |= 1 << (b % 64)
		return
	}
	k -= uint32(len(p.low))
	for k >= uint32(len(p.high)) {
		p.high = append(p.high, 0)
	}
	p.high[k] |= 1 << (b % 64)
}

// and returns the bits both sets hold.
func (p peerBits) and(q peerBits) peerBits {
	out := peerBits{low: [2]uint64{p.low[0] & q.low[0], p.low[1] & q.low[1]}}
	for k := range min(len(p.high), len(q.high)) {
		out.high = append(out.high, p.high[k]&q.high[k])
	}
	return out
}

// useClusterTable counts one more combo using the table of a key ("": none), building it
// from pols (one direction's, in precedence order) when no combo has it.
func (c *Compiler) useClusterTable(k string, dir Direction, pols []*compiledPolicy) {
	if k == "" {
		return
	}
	if u := c.cnps.tables[k]; u != nil {
		u.users++
		return
	}
	if c.cnps.tables == nil {
		c.cnps.tables = map[string]*clusterTableUse{}
	}
	c.cnps.tables[k] = &clusterTableUse{t: c.cnps.builder.build(dir, pols, c.cnps.peerBit), users: 1}
}

// dropClusterTable counts one combo less using the table of a key, forgetting it when none
// does.
func (c *Compiler) dropClusterTable(k string) {
	if u := c.cnps.tables[k]; u != nil {
		if u.users--; u.users == 0 {
			delete(c.cnps.tables, k)
		}
	}
}
