package policy

import (
	"cmp"
	"encoding/binary"
	"slices"

	"github.com/podwall/podwall/policy/flow"
)

// tableBuilder builds rule tables. It keeps its scratch space from one table to the next, so
// that a table costs a handful of allocations: its own arrays.
type tableBuilder struct {
	rules   []*rule // by rank
	noPorts []uint32
	spans   []taggedPorts
	named   []taggedName
	classes []rankedPorts
	ranks   []uint32 // the ranks of classes, end to end
	cuts    []uint32

	shared map[string]uint32 // a set's ranks, little endian → its index in sets
	key    []byte
	// addrSegs: the ranks of the rules whose ipBlocks a set merged, little endian → the
	// segments made of them, as offsets into v4 and v6 (from, to, from, to). Port classes
	// differ mostly in rules without ipBlocks, so that their sets share one copy.
	addrSegs map[string][4]int
	addrKey  []byte

	// The sets built, with their slices as offsets into the arrays below.
	sets   []builtSet
	u32    []uint32 // peer ids, ranks and suffix minima
	v4     []segment4
	v6     []segment6
	peers  []taggedPeer
	blocks [2][]taggedSpan // IPv4 (as the low bits of a u128), IPv6
	bounds []u128
	starts []taggedSpan
	active []uint32
	segs   []taggedSpan
}

// taggedPorts is a port range of one protocol that the rule of a given rank allows.
type taggedPorts struct {
	proto  flow.Proto
	lo, hi uint16
	rank   uint32
}

// taggedName is a port name of one protocol that the rule of a given rank allows.
type taggedName struct {
	proto flow.Proto
	name  uint32
	rank  uint32
}

// taggedPeer is a peer the rule of a given rank names.
type taggedPeer struct{ id, rank uint32 }

// taggedSpan is an address range of the rule of a given rank.
type taggedSpan struct {
	lo, hi u128
	rank   uint32
}

// rankedPorts is a port range of one protocol and the ranks, ascending, of the rules that
// allow it: tableBuilder.ranks[from:to].
type rankedPorts struct {
	proto    flow.Proto
	lo, hi   uint16
	from, to int
}

// builtSet is a ruleSet under construction: its peers are tableBuilder.u32[peers:peers+3n]
// (ids, ranks, suffix minima), its segments tableBuilder.v4[v4:v4n] and v6[v6:v6n].
type builtSet struct {
	ruleSet
	peers, n int
	v4, v4n  int
	v6, v6n  int
}

// build merges the rules of one direction of pols, which are sorted by name.
func (b *tableBuilder) build(key string, dir Direction, pols []*compiledPolicy) *ruleTable {
	t := &ruleTable{key: key, dir: dir, pols: pols}
	n := 0
	for _, cp := range pols {
		n += len(cp.rules(dir))
	}
	t.rules = make([]rankedRule, 0, n)
	b.rules, b.noPorts, b.spans, b.named = b.rules[:0], b.noPorts[:0], b.spans[:0], b.named[:0]
	for _, cp := range pols {
		rs := cp.rules(dir)
		for i := range rs {
			r := &rs[i]
			rank := uint32(len(b.rules))
			b.rules = append(b.rules, r)
			t.rules = append(t.rules, rankedRule{cp, i})
			if len(r.ports) == 0 {
				b.noPorts = append(b.noPorts, rank)
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
	}

	// Classes holding the same rules share a set.
	if b.shared == nil {
		b.shared = map[string]uint32{}
	}
	clear(b.shared)
	if b.addrSegs == nil {
		b.addrSegs = map[string][4]int{}
	}
	clear(b.addrSegs)
	b.sets, b.u32, b.v4, b.v6 = b.sets[:0], b.u32[:0], b.v4[:0], b.v6[:0]
	t.noPorts = b.setOf(b.noPorts)
	b.portClasses()
	t.ports = make([]portClass, 0, len(b.classes))
	for _, c := range b.classes {
		t.ports = append(t.ports, portClass{c.proto, c.lo, c.hi, b.setOf(b.ranks[c.from:c.to])})
	}
	t.ports = mergeAdjacent(t.ports, func(a, b portClass) bool {
		return a.proto == b.proto && a.set == b.set && a.hi+1 == b.lo
	}, func(a *portClass, b portClass) { a.hi = b.hi })
	slices.SortFunc(b.named, func(x, y taggedName) int {
		return cmp.Or(cmp.Compare(x.proto, y.proto), cmp.Compare(x.name, y.name), cmp.Compare(x.rank, y.rank))
	})
	for i := 0; i < len(b.named); {
		j := i + 1
		for j < len(b.named) && b.named[j].proto == b.named[i].proto && b.named[j].name == b.named[i].name {
			j++
		}
		b.ranks = b.ranks[:0]
		for _, n := range b.named[i:j] {
			b.ranks = append(b.ranks, n.rank)
		}
		t.named = append(t.named, namedClass{b.named[i].proto, b.named[i].name, b.setOf(slices.Compact(b.ranks))})
		i = j
	}

	// The sets' arrays, allocated once for the table.
	u32, v4, v6 := slices.Clone(b.u32), slices.Clone(b.v4), slices.Clone(b.v6)
	t.sets = make([]ruleSet, len(b.sets))
	for i, bs := range b.sets {
		s := bs.ruleSet
		s.peerIDs = u32[bs.peers : bs.peers+bs.n : bs.peers+bs.n]
		s.peerRanks = u32[bs.peers+bs.n : bs.peers+2*bs.n : bs.peers+2*bs.n]
		s.peerRest = u32[bs.peers+2*bs.n : bs.peers+3*bs.n : bs.peers+3*bs.n]
		s.v4 = v4[bs.v4:bs.v4n:bs.v4n]
		s.v6 = v6[bs.v6:bs.v6n:bs.v6n]
		t.sets[i] = s
	}
	return t
}

// setOf returns the index of the set of the rules of the given ranks, ascending, building
// it unless an identical one was.
func (b *tableBuilder) setOf(ranks []uint32) uint32 {
	b.key = b.key[:0]
	for _, r := range ranks {
		b.key = binary.LittleEndian.AppendUint32(b.key, r)
	}
	if s, ok := b.shared[string(b.key)]; ok {
		return s
	}
	s := uint32(len(b.sets))
	b.shared[string(b.key)] = s
	b.sets = append(b.sets, b.newSet(ranks))
	return s
}

// portClasses cuts the port ranges of each protocol where one starts or ends, into
// b.classes: the pieces some range covers, sorted by protocol and port, with the ranks of
// the rules covering them and of the rules without ports, which allow every port.
func (b *tableBuilder) portClasses() {
	b.classes, b.ranks = b.classes[:0], b.ranks[:0]
	spans := b.spans
	slices.SortFunc(spans, func(a, b taggedPorts) int {
		return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.lo, b.lo))
	})
	for len(spans) > 0 {
		n := 1
		for n < len(spans) && spans[n].proto == spans[0].proto {
			n++
		}
		b.cuts = b.cuts[:0] // port numbers, and 65536 past the last
		for _, s := range spans[:n] {
			b.cuts = append(b.cuts, uint32(s.lo), uint32(s.hi)+1)
		}
		slices.Sort(b.cuts)
		b.cuts = slices.Compact(b.cuts)
		for k := 0; k+1 < len(b.cuts); k++ {
			lo, hi := uint16(b.cuts[k]), uint16(b.cuts[k+1]-1)
			from := len(b.ranks)
			for _, s := range spans[:n] {
				if s.lo <= lo && hi <= s.hi {
					b.ranks = append(b.ranks, s.rank)
				}
			}
			if len(b.ranks) == from {
				continue // no range covers it: the rules without ports, as for any other port
			}
			b.ranks = append(b.ranks, b.noPorts...)
			slices.Sort(b.ranks[from:])
			b.ranks = b.ranks[:from+len(slices.Compact(b.ranks[from:]))]
			b.classes = append(b.classes, rankedPorts{spans[0].proto, lo, hi, from, len(b.ranks)})
		}
		spans = spans[n:]
	}
}

// newSet merges the rules of the given ranks, ascending, appending its peers and segments
// to b.u32, b.v4 and b.v6.
func (b *tableBuilder) newSet(ranks []uint32) builtSet {
	s := builtSet{ruleSet: ruleSet{min: noRank, any: noRank}, peers: len(b.u32), v4: len(b.v4), v6: len(b.v6)}
	s.v4n, s.v6n = s.v4, s.v6
	if len(ranks) == 0 {
		return s
	}
	s.min = ranks[0]
	b.peers, b.blocks[0], b.blocks[1] = b.peers[:0], b.blocks[0][:0], b.blocks[1][:0]
	b.addrKey = b.addrKey[:0]
	for _, rank := range ranks {
		r := b.rules[rank]
		if r.any {
			// It allows every remote end: no rule of higher rank can be the first.
			s.any = rank
			break
		}
		for _, id := range r.peers {
			b.peers = append(b.peers, taggedPeer{id, rank})
		}
		if len(r.addrs.v4)+len(r.addrs.v6) > 0 {
			b.addrKey = binary.LittleEndian.AppendUint32(b.addrKey, rank)
		}
	}
	seg, cached := b.addrSegs[string(b.addrKey)]
	for _, rank := range ranks {
		r := b.rules[rank]
		if r.any || cached || len(b.addrKey) == 0 {
			break
		}
		for _, a := range r.addrs.v4 {
			b.blocks[0] = append(b.blocks[0], taggedSpan{u128{0, uint64(a.lo)}, u128{0, uint64(a.hi)}, rank})
		}
		for _, a := range r.addrs.v6 {
			b.blocks[1] = append(b.blocks[1], taggedSpan{a.lo, a.hi, rank})
		}
	}

	// Peers sorted by id, each with its lowest rank; then the lowest rank from each on.
	slices.SortFunc(b.peers, func(x, y taggedPeer) int { return cmp.Or(cmp.Compare(x.id, y.id), cmp.Compare(x.rank, y.rank)) })
	b.peers = slices.CompactFunc(b.peers, func(x, y taggedPeer) bool { return x.id == y.id })
	s.n = len(b.peers)
	for _, p := range b.peers {
		b.u32 = append(b.u32, p.id)
	}
	for _, p := range b.peers {
		b.u32 = append(b.u32, p.rank)
	}
	b.u32 = append(b.u32, make([]uint32, s.n)...)
	rest := noRank
	for i := s.n - 1; i >= 0; i-- {
		rest = min(rest, b.u32[s.peers+s.n+i])
		b.u32[s.peers+2*s.n+i] = rest
	}

	if cached { // the ipBlocks of the same rules as a set before
		s.v4, s.v4n, s.v6, s.v6n = seg[0], seg[1], seg[2], seg[3]
		return s
	}
	for _, g := range b.segments(b.blocks[0]) {
		b.v4 = append(b.v4, segment4{uint32(g.lo.lo), uint32(g.hi.lo), g.rank})
	}
	b.v4 = b.v4[:s.v4+len(mergeAdjacent(b.v4[s.v4:], func(a, b segment4) bool { return a.rank == b.rank && a.hi+1 == b.lo },
		func(a *segment4, b segment4) { a.hi = b.hi }))]
	s.v4n = len(b.v4)
	for _, g := range b.segments(b.blocks[1]) {
		b.v6 = append(b.v6, segment6(g))
	}
	b.v6 = b.v6[:s.v6+len(mergeAdjacent(b.v6[s.v6:], func(a, b segment6) bool { return a.rank == b.rank && a.hi.inc() == b.lo },
		func(a *segment6, b segment6) { a.hi = b.hi }))]
	s.v6n = len(b.v6)
	if len(b.addrKey) > 0 {
		b.addrSegs[string(b.addrKey)] = [4]int{s.v4, s.v4n, s.v6, s.v6n}
	}
	return s
}

// mergeAdjacent joins each element to the one before it when joins says so, in place.
func mergeAdjacent[S any](s []S, joins func(a, b S) bool, join func(a *S, b S)) []S {
	out := s[:0]
	for _, x := range s {
		if n := len(out); n > 0 && joins(out[n-1], x) {
			join(&out[n-1], x)
			continue
		}
		out = append(out, x)
	}
	return out
}

// segments cuts ranges where one starts or ends and returns the pieces some range covers,
// in address order, each with the lowest rank covering it. The ranges of one rank are
// disjoint. It reorders blocks; what it returns is valid until its next call.
func (b *tableBuilder) segments(blocks []taggedSpan) []taggedSpan {
	if len(blocks) == 0 {
		return nil
	}
	top := u128{^uint64(0), ^uint64(0)}
	b.bounds = b.bounds[:0]
	for _, s := range blocks {
		b.bounds = append(b.bounds, s.lo)
		if s.hi != top {
			b.bounds = append(b.bounds, s.hi.inc())
		}
	}
	slices.SortFunc(b.bounds, u128.cmp)
	b.bounds = slices.Compact(b.bounds)
	starts := append(b.starts[:0], blocks...)
	slices.SortFunc(starts, func(x, y taggedSpan) int { return x.lo.cmp(y.lo) })
	ends := blocks
	slices.SortFunc(ends, func(x, y taggedSpan) int { return x.hi.cmp(y.hi) })

	out := b.segs[:0]
	active := b.active[:0] // ranks, ascending
	si, ei := 0, 0
	for k, at := range b.bounds {
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
		if k+1 < len(b.bounds) {
			hi = b.bounds[k+1].dec()
		}
		out = append(out, taggedSpan{at, hi, active[0]})
	}
	b.starts, b.active, b.segs = starts, active, out
	return out
}
