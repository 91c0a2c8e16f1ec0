package policy

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/podwall/podwall/policy/flow"
)

// Duplicate addresses resolve restrictively. A cluster never gives one address to two live
// pods for long, but an address reused before the old pod's deletion is seen, a broken CNI,
// or a forged status can make two claim it, and letting one of them win would let an
// unselected pod shadow a deny-all one. An address several live pods claim is judged with
// every claimant (deny unless all allow):
//   - ingress to it: every claimant's ingress must allow (its policies, named ports resolved
//     on that claimant);
//   - egress from it: every claimant's egress must allow;
//   - as the remote end of another pod's rule, it matches a pod peer (podSelector,
//     namespaceSelector) only when every claimant does, and a named port only when every
//     claimant declares it with that number and protocol; ipBlocks match the address as
//     always.
//
// So traffic passes only when it would pass whichever claimant really holds the address. The
// datapath sends the address's new connections to the engine when any claimant is isolated,
// and a node holding one claimant enforces the others' isolation too (the judgement is
// local). Snapshot.Conflicts lists such addresses.

// Conflict is an address several live pods claim.
type Conflict struct {
	Addr netip.Addr
	Pods []string // namespace/name, sorted
}

// String returns "10.0.0.5 (claimed by ns/a, ns/b)".
func (c Conflict) String() string {
	return c.Addr.String() + " (claimed by " + strings.Join(c.Pods, ", ") + ")"
}

// Conflicts returns the addresses several live pods claim, sorted. Shared: do not modify.
func (s *Snapshot) Conflicts() []Conflict { return s.conflicts }

// claimed returns the entry of an address its owners (two or more live pods) claim: the
// first by namespace/name stands for them where one pod must be named, with the peers and
// named ports they all have, and the claimants' entries to judge each.
func claimed(owners []*podState) *podEntry {
	cs := make([]*podEntry, len(owners))
	for i, o := range owners {
		cs[i] = o.entry
	}
	slices.SortFunc(cs, func(a, b *podEntry) int { return strings.Compare(a.pod.Key(), b.pod.Key()) })
	e := &podEntry{pod: cs[0].pod, claimed: true, claimants: cs, peers: cs[0].peers, ports: cs[0].ports, clusterPeers: cs[0].clusterPeers}
	for _, c := range cs {
		e.local = e.local || c.local
		// Any claimant's table marks the address isolated for the datapath; Decide judges
		// each claimant with its own.
		e.ingress = orTable(e.ingress, c.ingress)
		e.egress = orTable(e.egress, c.egress)
		if c == cs[0] {
			continue
		}
		e.peers = slices.DeleteFunc(slices.Clone(e.peers), func(id uint32) bool {
			_, ok := slices.BinarySearch(c.peers, id)
			return !ok
		})
		e.ports = slices.DeleteFunc(slices.Clone(e.ports), func(p portID) bool { return !slices.Contains(c.ports, p) })
		e.clusterPeers = e.clusterPeers.and(c.clusterPeers)
	}
	return e
}

// orTable returns a, or b when a is nil.
func orTable(a, b *ruleTable) *ruleTable {
	if a != nil {
		return a
	}
	return b
}

// conflictsOf lists the conflicting addresses with their claimants.
func conflictsOf(addrs map[netip.Addr]bool, byIP map[netip.Addr]*podEntry) []Conflict {
	out := make([]Conflict, 0, len(addrs))
	for a := range addrs {
		c := Conflict{Addr: a}
		for _, e := range byIP[a].claimants {
			c.Pods = append(c.Pods, e.pod.Key())
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Conflict) int { return a.Addr.Compare(b.Addr) })
	return out
}

// decideClaimed is Decide for a flow one of whose addresses several pods claim.
func (s *Snapshot) decideClaimed(f flow.Flow, src, dst *podEntry) Decision {
	var d Decision
	d.Egress = s.judgeClaimed(Egress, src, dst, f.Dst, f)
	d.Ingress = s.judgeClaimed(Ingress, dst, src, f.Src, f)
	d.Verdict = Allow
	if d.Egress.Verdict == Deny || d.Ingress.Verdict == Deny {
		d.Verdict = Deny
	}
	return d
}

// judgeClaimed judges one direction for every claimant of pod's address (for pod itself when
// one pod holds it): the first denying judgement, else the first claimant's. The remote end
// is the address's entry, whose peers and named ports all its claimants share.
func (s *Snapshot) judgeClaimed(dir Direction, pod, remote *podEntry, raddr netip.Addr, f flow.Flow) Judgement {
	dst := remote // named ports resolve on the destination: the remote end for egress
	if pod == nil || pod.claimants == nil {
		if dir == Ingress {
			dst = pod
		}
		return s.judge(dir, pod, remote, raddr, dst, f)
	}
	var first Judgement
	for i, c := range pod.claimants {
		r := remote
		if remote == pod {
			r = c // the address to itself
		}
		if dir == Ingress {
			dst = c
		}
		j := s.judge(dir, c, r, raddr, dst, f)
		j.Local = pod.local // the node holding the address enforces every claimant
		if j.Verdict == Deny {
			return j
		}
		if i == 0 {
			first = j
		}
	}
	return first
}

// claimant returns the claimant of e's address that a judgement names, or e.
func claimant(e *podEntry, j *Judgement) *podEntry {
	if e == nil || e.claimants == nil {
		return e
	}
	for _, c := range e.claimants {
		if c.pod == j.Pod {
			return c
		}
	}
	return e.claimants[0]
}

// claimNote says, for a reason, how a claimed address was judged: "" unless the judged or
// the remote address is claimed by several pods.
func claimNote(dir Direction, judged, remote *podEntry, jaddr, raddr netip.Addr) string {
	var b strings.Builder
	if judged != nil && judged.claimants != nil {
		b.WriteString("; address " + jaddr.String() + " is claimed by " + claimants(judged) +
			": every claimant's " + dir.String() + " must allow")
	}
	if remote != nil && remote.claimants != nil && remote != judged {
		b.WriteString("; remote address " + raddr.String() + " is claimed by " + claimants(remote) +
			": it matches a pod peer only when every claimant does")
	}
	return b.String()
}

func claimants(e *podEntry) string {
	names := make([]string, len(e.claimants))
	for i, c := range e.claimants {
		names[i] = c.pod.Key()
	}
	return strings.Join(names, ", ")
}
