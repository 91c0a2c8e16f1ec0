package policy

import (
	"cmp"
	"encoding/binary"
	"maps"
	"net/netip"
	"slices"

	"github.com/podwall/podwall/policy/flow"
)

// ruleTable is every rule of the policies that isolate a pod for one direction, merged so
// that finding the rule that allows a flow does not try the policies one by one. Pods
// isolated by the same policies share one table (Compiler.table). Immutable.
//
// The rules are numbered in the order Judgement names them, policies by name and then rules
// by index; a rule's number is its rank, and the rule Decide names is the allowing rule of
// lowest rank. Each way a rule can name the remote end is a key with a portMap, which gives
// the lowest rank among the key's rules that allow a protocol and port:
//   - any: the rules without peers;
//   - each peer (pod and namespace selector pair) some rule names, sorted by peer id;
//   - each address segment: the ipBlocks of all the rules, cut where one starts or ends, so
//     that the rules covering a segment cover all of it.
//
// Cost of first for a remote pod that belongs to R peers, with a table naming T peers and
// cutting its ipBlocks into S segments:
//   - any: one port lookup;
//   - addresses: a binary search among S segments, then one port lookup;
//   - peers: the peers the pod and the table have in common, found by walking the shorter of
//     the two sorted id lists and seeking each id in the longer one by doubling steps, then
//     bisecting (about min(R,T) · log(max(R,T)/min(R,T)) comparisons, R+T at most); then one
//     port lookup per common peer, skipped when the peer's lowest rank cannot beat the best
//     rank found so far;
//   - a port lookup: a binary search among the key's port spans (disjoint per protocol, each
//     with its lowest rank), plus, when the key's rules name ports, a scan of the destination
//     pod's named ports and a binary search for each one on the flow's protocol and port.
//
// So the cost grows with neither the number of policies nor the number of rules naming one
// key: a hundred rules naming the same peer cost one port lookup. What it grows with is the
// number of peers that the remote pod and the table have in common (at most min(R,T)),
// each a port lookup of a few nanoseconds; the worst case is a remote pod that belongs to
// many of the table's peers, none of whose rules allow the flow's port.
//
// Memory: a port map holds at most two spans per port entry of its key's rules (painting one
// range around the ones of lower rank leaves at most one more gap than it fills), and no rule
// after the first without ports. ipBlocks yield at most twice as many segments as they have
// ranges; the rules covering each segment are kept once per distinct set of rules, so the
// overlapping blocks of many rules (0.0.0.0/0 except the same few) share their maps.
type ruleTable struct {
	key   string            // the Compiler's cache key
	pols  []*compiledPolicy // the isolating policies, sorted by name
	rules []rankedRule      // indexed by rank

	any      portMap   // the rules without peers
	peerIDs  []uint32  // the peers the rules name, sorted
	peerMaps []uint32  // the index in maps of each peer's map
	peerMin  uint32    // lowest rank of all the peers' maps
	maps     []portMap // the maps of peers and segments, one per distinct set of rules
	v4       []segment4
	v6       []segment6
}

// rankedRule is the rule of a given rank: rule index of policy cp.
type rankedRule struct {
	cp    *compiledPolicy
	index int
}

// segment4 and segment6 are address ranges covered by the same rules, with the index of
// their map in ruleTable.maps.
type segment4 struct {
	lo, hi uint32
	m      uint32
}

type segment6 struct {
	lo, hi u128
	m      uint32
}

// noRank is the rank of no rule: higher than any.
const noRank = ^uint32(0)

// portMap gives, for a protocol and a port, the lowest rank among some rules whose ports
// allow it.
type portMap struct {
	min     uint32      // lowest rank of all; noRank when the map is empty
	noPorts uint32      // lowest rank of a rule without ports (every protocol and port)
	spans   []portSpan  // sorted by protocol and first port; disjoint
	named   []namedRank // sorted by protocol and name
}

// portSpan is a port range of one protocol and the lowest rank that allows it.
type portSpan struct {
	proto  flow.Proto
	lo, hi uint16
	rank   uint32
}

// namedRank is the lowest rank that allows a named port of one protocol.
type namedRank struct {
	proto flow.Proto
	name  uint32
	rank  uint32
}

// policies returns the policies whose rules t holds, sorted by name; none when t is nil.
func (t *ruleTable) policies() []*compiledPolicy {
	if t == nil {
		return nil
	}
	return t.pols
}

// first returns the rank of the first rule that allows a flow whose remote end is remote
// (nil when not a pod) at raddr, towards the destination pod dst (nil when not a pod); noRank
// when none does. It never allocates.
func (t *ruleTable) first(remote *podEntry, raddr netip.Addr, dst *podEntry, f flow.Flow) uint32 {
	best := t.any.lowest(noRank, dst, f)
	if m := t.addrMap(raddr); m != nil {
		best = m.lowest(best, dst, f)
	}
	if remote != nil && t.peerMin < best {
		best = t.peersLowest(best, remote.peers, dst, f)
	}
	return best
}

// peersLowest lowers best to the lowest rank the maps of the peers in ids (sorted) allow.
func (t *ruleTable) peersLowest(best uint32, ids []uint32, dst *podEntry, f flow.Flow) uint32 {
	at := 0
	if len(ids) <= len(t.peerIDs) {
		for _, id := range ids {
			if at = seek(t.peerIDs, at, id); at == len(t.peerIDs) {
				break
			}
			if t.peerIDs[at] == id {
				best = t.maps[t.peerMaps[at]].lowest(best, dst, f)
			}
		}
		return best
	}
	for i, id := range t.peerIDs {
		if at = seek(ids, at, id); at == len(ids) {
			break
		}
		if ids[at] == id {
			best = t.maps[t.peerMaps[i]].lowest(best, dst, f)
		}
	}
	return best
}

// seek returns the index of the first id in s from lo on that is at least x, or len(s): it
// probes lo, lo+1, lo+3, lo+7, … and bisects the last step, so its cost is logarithmic in
// the distance it skips.
func seek(s []uint32, lo int, x uint32) int {
	hi, step := lo, 1
	for hi < len(s) && s[hi] < x {
		lo = hi + 1
		hi += step
		step <<= 1
	}
	hi = min(hi, len(s))
	for lo < hi {
		h := int(uint(lo+hi) >> 1)
		if s[h] < x {
			lo = h + 1
		} else {
			hi = h
		}
	}
	return lo
}

// addrMap returns the map of the segment holding a, or nil.
func (t *ruleTable) addrMap(a netip.Addr) *portMap {
	if a.Is4() {
		if len(t.v4) == 0 {
			return nil
		}
		x := v4(a)
		i, j := 0, len(t.v4)
		for i < j { // first segment with hi >= x
			h := int(uint(i+j) >> 1)
			if t.v4[h].hi < x {
				i = h + 1
			} else {
				j = h
			}
		}
		if i < len(t.v4) && t.v4[i].lo <= x {
			return &t.maps[t.v4[i].m]
		}
		return nil
	}
	if len(t.v6) == 0 {
		return nil
	}
	x := v6(a)
	i, j := 0, len(t.v6)
	for i < j {
		h := int(uint(i+j) >> 1)
		if t.v6[h].hi.less(x) {
			i = h + 1
		} else {
			j = h
		}
	}
	if i < len(t.v6) && !x.less(t.v6[i].lo) {
		return &t.maps[t.v6[i].m]
	}
	return nil
}

// lowest returns the lower of best and the lowest rank in m that allows the flow's protocol
// and port, named ports resolving on the destination pod dst (nil when not a pod).
func (m *portMap) lowest(best uint32, dst *podEntry, f flow.Flow) uint32 {
	if m.min >= best {
		return best
	}
	best = min(best, m.noPorts)
	if s := m.spans; len(s) > 0 {
		i, j := 0, len(s)
		for i < j { // first span at or after (f.Proto, f.Port)
			h := int(uint(i+j) >> 1)
			if s[h].proto < f.Proto || (s[h].proto == f.Proto && s[h].hi < f.Port) {
				i = h + 1
			} else {
				j = h
			}
		}
		if i < len(s) && s[i].proto == f.Proto && s[i].lo <= f.Port {
			best = min(best, s[i].rank)
		}
	}
	if len(m.named) > 0 && dst != nil {
		for _, np := range dst.ports {
			if np.proto == f.Proto && np.port == f.Port {
				best = min(best, m.namedLowest(f.Proto, np.name))
			}
		}
	}
	return best
}

// namedLowest returns the lowest rank that allows the named port, or noRank.
func (m *portMap) namedLowest(proto flow.Proto, name uint32) uint32 {
	s := m.named
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
		return s[i].rank
	}
	return noRank
}

// newRuleTable merges the rules of one direction of pols, which are sorted by name.
func newRuleTable(key string, dir Direction, pols []*compiledPolicy) *ruleTable {
	t := &ruleTable{key: key, pols: pols}
	var (
		rules  []*rule // by rank
		any    []uint32
		byPeer = map[uint32][]uint32{}
		blocks [2][]taggedSpan // IPv4 (as the low bits of a u128), IPv6
	)
	for _, cp := range pols {
		rs := cp.ingressRules
		if dir == Egress {
			rs = cp.egressRules
		}
		for i := range rs {
			r := &rs[i]
			rank := uint32(len(rules))
			rules = append(rules, r)
			t.rules = append(t.rules, rankedRule{cp, i})
			if r.any {
				any = append(any, rank)
			}
			for _, id := range r.peers {
				byPeer[id] = append(byPeer[id], rank)
			}
			for _, s := range r.addrs.v4 {
				blocks[0] = append(blocks[0], taggedSpan{u128{0, uint64(s.lo)}, u128{0, uint64(s.hi)}, rank})
			}
			for _, s := range r.addrs.v6 {
				blocks[1] = append(blocks[1], taggedSpan{s.lo, s.hi, rank})
			}
		}
	}
	t.any = newPortMap(any, rules)

	// Keys named by the same rules share a map.
	shared := map[string]uint32{}
	mapOf := func(ranks []uint32) uint32 {
		k := make([]byte, 0, 4*len(ranks))
		for _, r := range ranks {
			k = binary.LittleEndian.AppendUint32(k, r)
		}
		if m, ok := shared[string(k)]; ok {
			return m
		}
		m := uint32(len(t.maps))
		shared[string(k)] = m
		t.maps = append(t.maps, newPortMap(ranks, rules))
		return m
	}
	t.peerMin = noRank
	for _, id := range slices.Sorted(maps.Keys(byPeer)) {
		m := mapOf(byPeer[id])
		t.peerIDs = append(t.peerIDs, id)
		t.peerMaps = append(t.peerMaps, m)
		t.peerMin = min(t.peerMin, t.maps[m].min)
	}
	for _, s := range segments(blocks[0]) {
		t.v4 = append(t.v4, segment4{uint32(s.lo.lo), uint32(s.hi.lo), mapOf(s.ranks)})
	}
	for _, s := range segments(blocks[1]) {
		t.v6 = append(t.v6, segment6{s.lo, s.hi, mapOf(s.ranks)})
	}
	t.v4 = mergeSegments(t.v4, func(a, b segment4) bool { return a.m == b.m && a.hi+1 == b.lo },
		func(a *segment4, b segment4) { a.hi = b.hi })
	t.v6 = mergeSegments(t.v6, func(a, b segment6) bool { return a.m == b.m && a.hi.inc() == b.lo },
		func(a *segment6, b segment6) { a.hi = b.hi })
	return t
}

// mergeSegments joins adjacent segments that share a map.
func mergeSegments[S any](segs []S, joins func(a, b S) bool, join func(a *S, b S)) []S {
	out := segs[:0]
	for _, s := range segs {
		if n := len(out); n > 0 && joins(out[n-1], s) {
			join(&out[n-1], s)
			continue
		}
		out = append(out, s)
	}
	return slices.Clip(out)
}

// newPortMap builds the map of the rules of the given ranks, ascending.
func newPortMap(ranks []uint32, rules []*rule) portMap {
	m := portMap{min: noRank, noPorts: noRank}
	if len(ranks) == 0 {
		return m
	}
	m.min = ranks[0]
	for _, rank := range ranks {
		r := rules[rank]
		if len(r.ports) == 0 {
			// It allows every flow: no rule of higher rank can be the first.
			m.noPorts = rank
			break
		}
		for _, p := range r.ports {
			if p.name != 0 {
				if !slices.ContainsFunc(m.named, func(n namedRank) bool { return n.proto == p.proto && n.name == p.name }) {
					m.named = append(m.named, namedRank{p.proto, p.name, rank})
				}
				continue
			}
			lo, hi := p.lo, p.hi
			if p.all {
				lo, hi = 0, ^uint16(0)
			}
			m.spans = paint(m.spans, portSpan{p.proto, lo, hi, rank})
		}
	}
	slices.SortFunc(m.spans, func(a, b portSpan) int {
		return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.lo, b.lo))
	})
	m.spans = mergeSegments(m.spans, func(a, b portSpan) bool {
		return a.proto == b.proto && a.rank == b.rank && a.hi+1 == b.lo
	}, func(a *portSpan, b portSpan) { a.hi = b.hi })
	slices.SortFunc(m.named, func(a, b namedRank) int {
		return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.name, b.name))
	})
	m.named = slices.Clip(m.named)
	return m
}

// paint adds to spans, which hold ranks below s.rank, the parts of s none of them covers.
func paint(spans []portSpan, s portSpan) []portSpan {
	gaps := []portSpan{s}
	for _, c := range spans {
		if c.proto != s.proto {
			continue
		}
		var next []portSpan
		for _, g := range gaps {
			if c.hi < g.lo || c.lo > g.hi {
				next = append(next, g)
				continue
			}
			if c.lo > g.lo {
				next = append(next, portSpan{g.proto, g.lo, c.lo - 1, g.rank})
			}
			if c.hi < g.hi {
				next = append(next, portSpan{g.proto, c.hi + 1, g.hi, g.rank})
			}
		}
		gaps = next
	}
	return append(spans, gaps...)
}

// taggedSpan is an address range of the rule of a given rank.
type taggedSpan struct {
	lo, hi u128
	rank   uint32
}

// segmentSpan is an address range and the ranks, ascending, of the rules covering it.
type segmentSpan struct {
	lo, hi u128
	ranks  []uint32
}

// segments cuts tagged ranges where one starts or ends and returns the pieces some rule
// covers, in address order. The ranges of one rule are disjoint.
func segments(spans []taggedSpan) []segmentSpan {
	if len(spans) == 0 {
		return nil
	}
	top := u128{^uint64(0), ^uint64(0)}
	var cuts []u128
	for _, s := range spans {
		cuts = append(cuts, s.lo)
		if s.hi != top {
			cuts = append(cuts, s.hi.inc())
		}
	}
	slices.SortFunc(cuts, u128.cmp)
	cuts = slices.Compact(cuts)
	starts := slices.Clone(spans)
	slices.SortFunc(starts, func(a, b taggedSpan) int { return a.lo.cmp(b.lo) })
	ends := spans
	slices.SortFunc(ends, func(a, b taggedSpan) int { return a.hi.cmp(b.hi) })

	var out []segmentSpan
	var active []uint32 // ranks, ascending
	si, ei := 0, 0
	for k, at := range cuts {
		for ei < len(ends) && ends[ei].hi.less(at) {
			i, _ := slices.BinarySearch(active, ends[ei].rank)
			active = slices.Delete(active, i, i+1)
			ei++
		}
		for si < len(starts) && starts[si].lo == at {
			i, _ := slices.BinarySearch(active, starts[si].rank)
			active = slices.Insert(active, i, starts[si].rank)
			si++
		}
		if len(active) == 0 {
			continue
		}
		hi := top
		if k+1 < len(cuts) {
			hi = cuts[k+1].dec()
		}
		out = append(out, segmentSpan{at, hi, slices.Clone(active)})
	}
	return out
}
