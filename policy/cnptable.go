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
// the pod. A change to a policy rebuilds the tables of the combos holding its group — a
// clusterTable is cheap to build, it merges nothing but bit masks — and no pod entry: an
// entry names its combos by id, and the Snapshot maps ids to the tables of the moment.

// clusterTable is the rules of one direction of the ClusterNetworkPolicies of a combo, in
// the order they are judged (priority, then name, then rule index): a rule's rank is its
// position, and the rule that decides is the matching rule of lowest rank. Immutable.
//
// Every set of rules is a bit mask over ranks (words uint64s, rank r at bit r%64 of word
// r/64), stored in masks at an offset: the rules allowing a port class, naming a port, with
// an address block, without peers, naming each peer. A lookup ANDs the mask of the flow's
// port with that of the rules matching the remote end, a word at a time, and takes the
// lowest bit: a binary search for the port class, then — only for the rules of lower rank
// than the best found so far — the address blocks of the rules that have some, and the
// peers the remote pod and the table have in common.
type clusterTable struct {
	dir   Direction
	rules []rankedRule // by rank
	ptrs  []*rule      // the rule of each rank
	words int          // uint64s per mask

	ports   []portClass  // sorted by protocol and first port, disjoint; set: the offset of its mask
	named   []namedClass // sorted by protocol and name; set: the offset of its mask
	noPorts uint32       // the mask of the rules without ports (every port)
	any     uint32       // the mask of the rules without peers (every remote end)
	addrs   uint32       // the mask of the rules with address blocks
	peered  uint32       // the mask of the rules naming some peer
	// peerBits are the cluster peer bits (Compiler.peerBit) of the peers the rules name; the
	// mask of the peer of the i-th bit set is at peers+i*words, and peerBase[k] is the number
	// of bits set in peerBits[:k].
	peerBits []uint64
	peerBase []uint32
	peers    uint32
	masks    []uint64
}

// first returns the rank of the first rule matching a flow whose remote end is remote (nil
// when not a pod) at raddr, towards the destination pod dst (nil when not a pod); noRank when
// none does. It never allocates.
func (t *clusterTable) first(remote *podEntry, raddr netip.Addr, dst *podEntry, f flow.Flow) uint32 {
	pc := t.noPorts
	if c := findPortClass(t.ports, f.Proto, f.Port); c != nil {
		pc = c.set
	}
	for w := range uint32(t.words) {
		pm := t.masks[pc+w]
		if len(t.named) > 0 && dst != nil {
			for _, np := range dst.ports {
				if np.proto == f.Proto && np.port == f.Port {
					if c := findNamedClass(t.named, f.Proto, np.name); c != nil {
						pm |= t.masks[c.set+w]
					}
				}
			}
		}
		if pm == 0 {
			continue
		}
		m := pm & t.masks[t.any+w]
		for a := pm & below(m) & t.masks[t.addrs+w]; a != 0; a &= a - 1 {
			b := bits.TrailingZeros64(a)
			if t.ptrs[int(w)*64+b].addrs.contains(raddr) {
				m |= 1 << b // the lowest of the address rules; below any earlier match
				break
			}
		}
		if p := pm & below(m) & t.masks[t.peered+w]; p != 0 && remote != nil {
			m |= t.peerMatch(remote.clusterPeers, w, p)
		}
		if m != 0 {
			return w*64 + uint32(bits.TrailingZeros64(m))
		}
	}
	return noRank
}

// below returns the bits lower than the lowest set bit of m; all of them when m is 0.
func below(m uint64) uint64 { return (m & -m) - 1 }

// peerMatch returns the bits of want (word w) of the rules naming a peer the remote pod
// belongs to, whose cluster peer bits are given. It stops once the lowest bit of want is
// found.
func (t *clusterTable) peerMatch(remote []uint64, w uint32, want uint64) uint64 {
	var got uint64
	lowest := want & -want
	for k := range min(len(remote), len(t.peerBits)) {
		common := remote[k] & t.peerBits[k]
		for ; common != 0; common &= common - 1 {
			low := common & -common
			i := t.peerBase[k] + uint32(bits.OnesCount64(t.peerBits[k]&(low-1)))
			if got |= t.masks[t.peers+i*uint32(t.words)+w] & want; got&lowest != 0 {
				return got
			}
		}
	}
	return got
}

// policies returns the policies whose rules t holds, in precedence order; none when t is nil.
func (t *clusterTable) policies() []*compiledPolicy {
	if t == nil {
		return nil
	}
	var out []*compiledPolicy
	for _, r := range t.rules {
		if len(out) == 0 || out[len(out)-1] != r.cp {
			out = append(out, r.cp)
		}
	}
	return out
}

// findPortClass returns the class of s (sorted, disjoint) holding a protocol and port, or nil.
func findPortClass(s []portClass, proto flow.Proto, port uint16) *portClass {
	i, j := 0, len(s)
	for i < j { // first class at or after (proto, port)
		h := int(uint(i+j) >> 1)
		if s[h].proto < proto || (s[h].proto == proto && s[h].hi < port) {
			i = h + 1
		} else {
			j = h
		}
	}
	if i < len(s) && s[i].proto == proto && s[i].lo <= port {
		return &s[i]
	}
	return nil
}

// findNamedClass returns the class of s (sorted) of a protocol and port name, or nil.
func findNamedClass(s []namedClass, proto flow.Proto, name uint32) *namedClass {
	i, j := 0, len(s)
	for i < j {
		h := int(uint(i+j) >> 1)
		if s[h].proto < proto || (s[h].proto == proto && s[h].name < name) {
			i = h + 1
		} else {
			j = h
		}
	}
	if i < len(s) && s[i].proto == proto && s[i].name == name {
		return &s[i]
	}
	return nil
}

// clusterTableBuilder builds clusterTables, keeping its scratch space from one to the next.
type clusterTableBuilder struct {
	spans []taggedPorts
	named []taggedName
	peers []taggedPeer
	cuts  []uint32
	mask  []uint64
}

// build merges the rules of one direction of pols, which are in precedence order; bit gives
// the cluster peer bit of each peer they name.
func (b *clusterTableBuilder) build(dir Direction, pols []*compiledPolicy, bit map[uint32]uint32) *clusterTable {
	t := &clusterTable{dir: dir}
	for _, cp := range pols {
		rs := cp.rules(dir)
		for i := range rs {
			t.rules = append(t.rules, rankedRule{cp, i})
			t.ptrs = append(t.ptrs, &rs[i])
		}
	}
	t.words = (len(t.rules) + 63) / 64
	newMask := func() uint32 {
		at := uint32(len(t.masks))
		t.masks = append(t.masks, make([]uint64, t.words)...)
		return at
	}
	set := func(at uint32, rank uint32) { t.masks[at+rank/64] |= 1 << (rank % 64) }
	t.noPorts, t.any, t.addrs, t.peered = newMask(), newMask(), newMask(), newMask()
	b.spans, b.named, b.peers = b.spans[:0], b.named[:0], b.peers[:0]
	for rank, r := range t.ptrs {
		rank := uint32(rank)
		if len(r.ports) == 0 {
			set(t.noPorts, rank)
		}
		if r.any {
			set(t.any, rank)
		}
		if len(r.addrs.v4)+len(r.addrs.v6) > 0 {
			set(t.addrs, rank)
		}
		if len(r.peers) > 0 {
			set(t.peered, rank)
		}
		for _, id := range r.peers {
			b.peers = append(b.peers, taggedPeer{bit[id], rank})
		}
		for _, p := range r.ports {
			switch {
			case p.name != 0:
				b.named = append(b.named, taggedName{p.proto, p.name, rank})
			case p.all:
				b.spans = append(b.spans, taggedPorts{p.proto, 0, ^uint16(0), rank})
			default:
				b.spans = append(b.spans, taggedPorts{p.proto, p.lo, p.hi, rank})
			}
		}
	}

	// Port classes: each protocol's ranges cut where one starts or ends; a piece no range
	// covers is left to noPorts. Adjacent pieces of the same rules are one class.
	slices.SortFunc(b.spans, func(x, y taggedPorts) int { return cmp.Or(cmp.Compare(x.proto, y.proto), cmp.Compare(x.lo, y.lo)) })
	for spans := b.spans; len(spans) > 0; {
		n := 1
		for n < len(spans) && spans[n].proto == spans[0].proto {
			n++
		}
		b.cuts = b.cuts[:0]
		for _, s := range spans[:n] {
			b.cuts = append(b.cuts, uint32(s.lo), uint32(s.hi)+1)
		}
		slices.Sort(b.cuts)
		b.cuts = slices.Compact(b.cuts)
		for k := 0; k+1 < len(b.cuts); k++ {
			lo, hi := uint16(b.cuts[k]), uint16(b.cuts[k+1]-1)
			b.mask = append(b.mask[:0], t.masks[t.noPorts:t.noPorts+uint32(t.words)]...)
			covered := false
			for _, s := range spans[:n] {
				if s.lo <= lo && hi <= s.hi {
					b.mask[s.rank/64] |= 1 << (s.rank % 64)
					covered = true
				}
			}
			if !covered {
				continue
			}
			if last := len(t.ports) - 1; last >= 0 && t.ports[last].proto == spans[0].proto && t.ports[last].hi+1 == lo &&
				slices.Equal(t.masks[t.ports[last].set:t.ports[last].set+uint32(t.words)], b.mask) {
				t.ports[last].hi = hi
				continue
			}
			at := uint32(len(t.masks))
			t.masks = append(t.masks, b.mask...)
			t.ports = append(t.ports, portClass{spans[0].proto, lo, hi, at})
		}
		spans = spans[n:]
	}

	slices.SortFunc(b.named, func(x, y taggedName) int {
		return cmp.Or(cmp.Compare(x.proto, y.proto), cmp.Compare(x.name, y.name))
	})
	for i, n := range b.named {
		if i == 0 || n.proto != b.named[i-1].proto || n.name != b.named[i-1].name {
			t.named = append(t.named, namedClass{n.proto, n.name, newMask()})
		}
		set(t.named[len(t.named)-1].set, n.rank)
	}

	slices.SortFunc(b.peers, func(x, y taggedPeer) int { return cmp.Compare(x.id, y.id) }) // by bit
	t.peers = uint32(len(t.masks))
	n := 0
	for i, p := range b.peers {
		if i == 0 || p.id != b.peers[i-1].id {
			for int(p.id/64) >= len(t.peerBits) {
				t.peerBits = append(t.peerBits, 0)
			}
			t.peerBits[p.id/64] |= 1 << (p.id % 64)
			newMask()
			n++
		}
		set(t.peers+uint32(n-1)*uint32(t.words), p.rank)
	}
	t.peerBase = make([]uint32, len(t.peerBits))
	for k := 1; k < len(t.peerBits); k++ {
		t.peerBase[k] = t.peerBase[k-1] + uint32(bits.OnesCount64(t.peerBits[k-1]))
	}
	t.masks = slices.Clip(t.masks)
	return t
}

// cnpCombo is a set of groups of one tier: the groups whose subject holds some pods. Pods
// with the same groups share its tables (Snapshot.combos).
type cnpCombo struct {
	id     uint32
	key    string
	groups []*cnpGroup
	users  int // built pod entries naming it
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
	c.cnps.comboByID[id] = nil
	c.cnps.comboDirty[cb] = struct{}{} // its slot is emptied
}

// snapshotCombos builds the tables of the combos made or changed since the last Snapshot
// (a group of theirs changed: snapshotGroups marks them) and returns the combos' tables by
// id.
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
				pols = append(pols, g.tables.pols[dir]...)
			}
			if len(pols) > 0 {
				slices.SortFunc(pols, byPrecedence)
				ct[dir] = c.cnps.builder.build(dir, pols, c.cnps.peerBit)
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
			c.dirty[ps] = struct{}{}
		}
	})
}

// clusterPeers returns the cluster peer bits of the given peers (nil when none has one).
func (c *Compiler) clusterPeers(ids []uint32) []uint64 {
	if len(c.cnps.peerBit) == 0 {
		return nil
	}
	var out []uint64
	for _, id := range ids {
		if b, ok := c.cnps.peerBit[id]; ok {
			for int(b/64) >= len(out) {
				out = append(out, 0)
			}
			out[b/64] |= 1 << (b % 64)
		}
	}
	return out
}
