package conntrack

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/podwall/podwall/policy/flow"
)

// nodePolicy is labPolicy that also judges web's connections to its own node (an Admin
// egress Deny to nodes): it denies them.
type nodePolicy struct{ fakePolicy }

var web = mustAddr("10.244.1.5")

func (nodePolicy) LocalNodeJudged() (ingress, egress []netip.Addr) { return nil, []netip.Addr{web} }

// A policy that can cut pods off from their own node (NodePolicy) has those connections
// swept too, in the direction it judges; the node's other connections stay alone.
func TestSweepOwnNode(t *testing.T) {
	lab := labPolicy(nil)
	p := nodePolicy{lab}
	p.egress = append(slices.Clone(lab.egress), web) // web is egress-judged
	p.allow = func(f flow.Flow) bool { return !(f.Src == web && f.Dst == node) && lab.allow(f) }
	keep := []*Entry{
		entry(tcp("172.18.0.2", "10.244.1.5", 40005, 8080)),  // node → web: ingress not judged
		entry(tcp("10.244.1.3", "172.18.0.2", 40006, 10250)), // db → node: db not node-judged
		entry(tcp("10.244.1.5", "10.244.1.6", 40007, 80)),    // web → a pod: allowed
	}
	revoke := []*Entry{
		entry(tcp("10.244.1.5", "172.18.0.2", 40010, 10250)), // web → its node: denied
		entry(udp("10.244.1.5", "172.18.0.2", 40011, 53)),    // web → its node over UDP: denied
	}
	k := &fakeKernel{entries: append(slices.Clone(keep), revoke...)}
	r := NewRevoker(Config{Kernel: k, LocalAddrs: func() ([]netip.Addr, error) { return []netip.Addr{node}, nil }})
	res := r.Sweep(p)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if res.Revoked != len(revoke) {
		t.Errorf("revoked %d, want %d: %+v", res.Revoked, len(revoke), res)
	}
	for _, e := range revoke {
		if !slices.Contains(k.marked, e) || e.Mark != DefaultMark {
			t.Errorf("%v not revoked (mark %#x)", e, e.Mark)
		}
	}
	for _, e := range keep {
		if slices.Contains(k.marked, e) {
			t.Errorf("%v revoked", e)
		}
	}

	// The same policy without the own-node scope leaves the node's connections alone.
	k = &fakeKernel{entries: slices.Clone(revoke)}
	r = NewRevoker(Config{Kernel: k, LocalAddrs: func() ([]netip.Addr, error) { return []netip.Addr{node}, nil }})
	if res := r.Sweep(p.fakePolicy); res.Revoked != 0 {
		t.Errorf("a Policy that is no NodePolicy revoked the node's own connections: %+v", res)
	}
}
