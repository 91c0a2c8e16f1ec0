package nft

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The new-pod window's sets (see "The new-pod window" in the package doc).
const (
	// SetLocal4 and SetLocal6 hold the addresses of every local pod the policy in force
	// knows, isolated or not.
	SetLocal4 = "local4"
	SetLocal6 = "local6"
	// SetPodRanges4 and SetPodRanges6 hold this node's pod ranges (interval sets).
	SetPodRanges4 = "podranges4"
	SetPodRanges6 = "podranges6"
)

// Window is what the new-pod window's sets hold.
type Window struct {
	// Local are the addresses of the local pods the policy knows (live, not hostNetwork),
	// isolated or not; IPv4 and IPv6 mixed.
	Local []netip.Addr
	// PodRanges are the ranges this node's pods take their addresses from (the Node's
	// spec.podCIDRs, or configured). A new connection from or to an address of these
	// ranges that is not in Local is queued, whatever the isolation sets say.
	PodRanges []netip.Prefix

	// NodeIngress and NodeEgress fill the own-node sets (nodeingress4/6, nodeegress4/6,
	// "A pod and its own node" in the package doc), synced with the window in the same
	// transaction: the local pods whose traffic from (ingress, output hook) and to (egress,
	// input hook) their own node a policy can deny. IPv4 and IPv6 mixed.
	NodeIngress, NodeEgress []netip.Addr
	// NodeIngressRanges and NodeEgressRanges fill the own-node window's interval sets
	// (nodeingresswindow4/6, nodeegresswindow4/6): the ranges whose addresses no known local
	// pod has are queued at the output hook (the node's packet to one) and at the input
	// hook (a packet from one to the node). PodRanges while a policy could deny an unknown
	// pod's traffic with its node in that direction, none otherwise (nothing queued).
	NodeIngressRanges, NodeEgressRanges []netip.Prefix
}

// ranges returns the ranges of w each pair of interval sets holds, in the order of
// rangePairs.
func (w *Window) ranges() [3][]netip.Prefix {
	return [3][]netip.Prefix{w.PodRanges, w.NodeEgressRanges, w.NodeIngressRanges}
}

// rangePairs are the interval sets, IPv4 then IPv6, that Window.ranges fills.
var rangePairs = [3][]setDef{rangeDefs, nodeEgressWindowDefs, nodeIngressWindowDefs}

// localDefs and rangeDefs list the window's sets, created and rendered after the deny cache's.
var (
	localDefs = []setDef{{SetLocal4, unix.NFPROTO_IPV4}, {SetLocal6, unix.NFPROTO_IPV6}}
	rangeDefs = []setDef{{SetPodRanges4, unix.NFPROTO_IPV4}, {SetPodRanges6, unix.NFPROTO_IPV6}}
)

// newRangeSet returns an interval set of addresses: the pod ranges.
func newRangeSet(t *nftables.Table, d setDef) *nftables.Set {
	s := newSet(t, d)
	s.Interval = true
	return s
}

// windowSets returns the window's sets: local4, local6, podranges4, podranges6.
func windowSets(t *nftables.Table) []*nftables.Set {
	var out []*nftables.Set
	for _, d := range localDefs {
		out = append(out, newSet(t, d))
	}
	for _, d := range rangeDefs {
		out = append(out, newRangeSet(t, d))
	}
	return out
}

// windowRules returns the rules that queue the new-pod window: a new packet from or to an
// address of this node's pod ranges that no local pod known to the policy has. They follow
// the isolation queue rules, so a packet they queue is one the isolation sets let pass
// unjudged; the reader holds it until the policy knows the address (package datapath).
func windowRules(queueText string, queueExpr func() expr.Any) []rule {
	return []rule{
		// ip saddr @podranges4 ip saddr != @local4 counter <queue>
		windowRule(SetPodRanges4, SetLocal4, unix.NFPROTO_IPV4, "saddr", queueText, queueExpr),
		// ip6 saddr @podranges6 ip6 saddr != @local6 counter <queue>
		windowRule(SetPodRanges6, SetLocal6, unix.NFPROTO_IPV6, "saddr", queueText, queueExpr),
		// ip daddr @podranges4 ip daddr != @local4 counter <queue>
		windowRule(SetPodRanges4, SetLocal4, unix.NFPROTO_IPV4, "daddr", queueText, queueExpr),
		// ip6 daddr @podranges6 ip6 daddr != @local6 counter <queue>
		windowRule(SetPodRanges6, SetLocal6, unix.NFPROTO_IPV6, "daddr", queueText, queueExpr),
	}
}

// windowRule returns "<proto> <field> @<ranges> <proto> <field> != @<local> counter <queue>"
// for one family: a new packet whose address (field: "saddr" or "daddr") lies in the
// interval set ranges and is not in local is queued. The local set's lookup comes last:
// Counters counts the rule as the window's by it.
func windowRule(ranges, local string, family byte, field, queueText string, queueExpr func() expr.Any) rule {
	proto, off, n := "ip", uint32(12), uint32(4)
	if family == unix.NFPROTO_IPV6 {
		proto, off, n = "ip6", 8, 16
	}
	if field == "daddr" {
		off += n
	}
	return rule{
		text: fmt.Sprintf("%[1]s %[2]s @%[3]s %[1]s %[2]s != @%[4]s counter %[5]s", proto, field, ranges, local, queueText),
		exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Lookup{SourceRegister: 1, SetName: ranges},
			&expr.Lookup{SourceRegister: 1, SetName: local, Invert: true},
			&expr.Counter{},
			queueExpr(),
		},
	}
}

// rangeElements returns the interval elements of ranges of one family (v6 or not): each
// range's first address, and the address after its last as the interval's end (none when
// the range reaches the end of the address space). Ranges inside another are left out: the
// kernel refuses overlapping intervals.
func rangeElements(ranges []netip.Prefix, v6 bool) []nftables.SetElement {
	var ps []netip.Prefix
	for _, p := range ranges {
		p = p.Masked()
		if p.IsValid() && p.Addr().Is6() == v6 {
			ps = append(ps, p)
		}
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	var out []nftables.SetElement
	var last netip.Prefix
	for _, p := range ps {
		if last.IsValid() && last.Contains(p.Addr()) {
			continue // inside the previous range (sorted: a containing range comes first)
		}
		last = p
		out = append(out, nftables.SetElement{Key: p.Addr().AsSlice()})
		if end := lastAddr(p).Next(); end.IsValid() {
			out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// lastAddr returns the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
