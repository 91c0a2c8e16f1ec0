package policy

import (
	"net/netip"

	"github.com/podwall/podwall/policy/flow"
)

// ruleTable is every rule of the policies that isolate a pod for one direction, merged so
// that finding the rule that allows a flow does not try the policies one by one. Pods
// isolated by the same policies share one table (Compiler.table). Immutable.
//
// The rules are numbered in the order Judgement names them, policies by name and then rules
// by index; a rule's number is its rank, and the rule Decide names is the allowing rule of
// lowest rank. The table sorts the rules by the ports they allow first, into classes:
//   - a port class per stretch of port numbers of one protocol that the same rules allow: the
//     rules whose numbers, ranges or protocol-only entries cover it, and the rules without
//     ports, which allow every port;
//   - the rules without ports alone, for a protocol and port no class holds (ICMP, say);
//   - a named class per protocol and port name: the rules naming it.
//
// Within a class (a ruleSet) the rules are merged by the way they name the remote end: the
// lowest rank of a rule without peers; each peer (pod and namespace selector pair) with the
// lowest rank of the rules naming it, sorted by peer id; and the rules' ipBlocks cut into
// disjoint address segments, each with the lowest rank of the rules covering it.
//
// Cost of first, for a remote pod that belongs to R peers:
//   - a binary search among the table's port classes for the flow's protocol and port;
//   - for each named port of the destination pod on the flow's protocol and port (rarely
//     more than one), a binary search among the named classes;
//   - in each class found, for a class naming T peers and cutting its ipBlocks into S
//     segments: a binary search among the S segments, then the peers the remote pod and the
//     class have in common, one comparison of ranks each. They are found by walking the two
//     sorted id lists together when their lengths are within a factor of 4 (R+T steps at
//     most), else by walking the shorter one and seeking each id in the longer by doubling
//     steps, then bisecting (about min(R,T) · log(max(R,T)/min(R,T)) comparisons). A class
//     is skipped once the best rank found is no higher than its lowest, and its walk stops
//     once no peer left in id order has a lower rank than the best found.
//
// So rules that do not allow the flow's port cost nothing, rules naming the same peer cost
// one step together, and more policies cost through T only, under a logarithm when the
// remote pod belongs to few peers (R is about a dozen in the synthetic clusters of bench/).
// The worst case is a remote pod that belongs to many of the peers named by the rules that
// allow the flow's port, none of them early in rank while one late in id order is: the walk
// goes to the end, R+T steps.
//
// Memory: a rule is held by every class whose ports it allows, and the rules without ports
// by every port class. Classes are cut where a port entry starts or ends, so N port entries
// make at most 2N port classes, and classes holding the same rules share one set: the
// tables of the synthetic clusters hold a few sets each. The bound is N sets of all the
// rules, for port ranges that overlap in many different ways.
type ruleTable struct {
	key   string            // the Compiler's cache key
	dir   Direction         // the direction of the rules
	pols  []*compiledPolicy // the isolating policies, sorted by name
	rules []rankedRule      // indexed by rank

	ports   []portClass  // sorted by protocol and first port; disjoint
	named   []namedClass // sorted by protocol and name
	noPorts uint32       // the set of the rules without ports
	sets    []ruleSet    // one per distinct set of rules
}

// rankedRule is the rule of a given rank: rule index of policy cp.
type rankedRule struct {
	cp    *compiledPolicy
	index int
}

// portClass is a port range of one protocol and the index in ruleTable.sets of the rules
// that allow it.
type portClass struct {
	proto  flow.Proto
	lo, hi uint16
	set    uint32
}

// namedClass is a port name of one protocol and the index in ruleTable.sets of the rules
// that name it.
type namedClass struct {
	proto flow.Proto
	name  uint32
	set   uint32
}

// ruleSet is a set of rules merged by how they name the remote end.
type ruleSet struct {
	min       uint32   // lowest rank of all; noRank when the set is empty
	any       uint32   // lowest rank of a rule without peers
	peerIDs   []uint32 // the peers the rules name, sorted
	peerRanks []uint32 // the lowest rank naming each peer
	peerRest  []uint32 // peerRest[i] is the lowest of peerRanks[i:]
	v4        []segment4
	v6        []segment6
}

// segment4 and segment6 are address ranges and the lowest rank of the rules covering them.
type segment4 struct {
	lo, hi uint32
	rank   uint32
}

type segment6 struct {
	lo, hi u128
	rank   uint32
}

// noRank is the rank of no rule: higher than any.
const noRank = ^uint32(0)

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
	set := t.noPorts
	if c := t.portClass(f.Proto, f.Port); c != nil {
		set = c.set
	}
	best := t.sets[set].lowest(noRank, remote, raddr)
	if len(t.named) > 0 && dst != nil {
		for _, np := range dst.ports {
			if np.proto == f.Proto && np.port == f.Port {
				if c := t.namedClass(f.Proto, np.name); c != nil {
					best = t.sets[c.set].lowest(best, remote, raddr)
				}
			}
		}
	}
	return best
}

// portClass returns the class holding a protocol and port, or nil.
func (t *ruleTable) portClass(proto flow.Proto, port uint16) *portClass {
	s := t.ports
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

// namedClass returns the class of a protocol and port name, or nil.
func (t *ruleTable) namedClass(proto flow.Proto, name uint32) *namedClass {
	s := t.named
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

// lowest returns the lower of best and the lowest rank of the rules in s that name a remote
// end remote (nil when not a pod) at raddr.
func (s *ruleSet) lowest(best uint32, remote *podEntry, raddr netip.Addr) uint32 {
	if s.min >= best {
		return best
	}
	if best = min(best, s.any); best == s.min {
		return best
	}
	best = min(best, s.addrRank(raddr))
	if remote == nil || len(s.peerIDs) == 0 || s.peerRest[0] >= best {
		return best
	}
	ids, at := remote.peers, 0
	if len(ids) < 4*len(s.peerIDs) && len(s.peerIDs) < 4*len(ids) { // walk both together
		i, j := 0, 0
		for i < len(ids) && j < len(s.peerIDs) {
			switch a, b := ids[i], s.peerIDs[j]; {
			case a < b:
				i++
			case a > b:
				if j++; j < len(s.peerRest) && s.peerRest[j] >= best {
					return best
				}
			default:
				best = min(best, s.peerRanks[j])
				i++
				if j++; j < len(s.peerRest) && s.peerRest[j] >= best {
					return best
				}
			}
		}
		return best
	}
	if len(ids) <= len(s.peerIDs) { // walk the pod's, seeking in the set's
		for _, id := range ids {
			if at = seek(s.peerIDs, at, id); at == len(s.peerIDs) || s.peerRest[at] >= best {
				break
			}
			if s.peerIDs[at] == id {
				best = min(best, s.peerRanks[at])
			}
		}
		return best
	}
	for i, id := range s.peerIDs { // walk the set's, seeking in the pod's
		if s.peerRest[i] >= best {
			break
		}
		if at = seek(ids, at, id); at == len(ids) {
			break
		}
		if ids[at] == id {
			best = min(best, s.peerRanks[i])
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

// addrRank returns the lowest rank of the rules in s whose ipBlocks hold a, or noRank.
func (s *ruleSet) addrRank(a netip.Addr) uint32 {
	if a.Is4() {
		if len(s.v4) == 0 {
			return noRank
		}
		x := v4(a)
		i, j := 0, len(s.v4)
		for i < j { // first segment with hi >= x
			h := int(uint(i+j) >> 1)
			if s.v4[h].hi < x {
				i = h + 1
			} else {
				j = h
			}
		}
		if i < len(s.v4) && s.v4[i].lo <= x {
			return s.v4[i].rank
		}
		return noRank
	}
	if len(s.v6) == 0 {
		return noRank
	}
	x := v6(a)
	i, j := 0, len(s.v6)
	for i < j {
		h := int(uint(i+j) >> 1)
		if s.v6[h].hi.less(x) {
			i = h + 1
		} else {
			j = h
		}
	}
	if i < len(s.v6) && !x.less(s.v6[i].lo) {
		return s.v6[i].rank
	}
	return noRank
}
