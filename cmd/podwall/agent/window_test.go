package agent

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
)

// The Waiter: a flow is unknown while an address of it lies in the node's pod ranges
// (configured, or the Node object's) and no pod of the deciding generation has it.
// Addresses outside the ranges never wait, nor does anything when no range is known.
func TestUnknown(t *testing.T) {
	newIP := netip.MustParseAddr("10.244.1.99")
	outside := netip.MustParseAddr("192.0.2.10")
	tcp := func(src, dst netip.Addr) flow.Flow { return flow.Flow{Src: src, Dst: dst, Proto: 6, Port: 80} }

	a, s := testAgent(t) // no range configured, no Node object
	gen := a.inForce.Generation()
	if a.inForce.Unknown(tcp(newIP, dbIP), gen) {
		t.Error("without pod ranges a flow waited")
	}

	a, s = testAgent(t, func(c *Config) { c.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("fd00:10:244:1::/64")} })
	s.Nodes = append(s.Nodes, policy.Node{Name: "node-1", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}},
		policy.Node{Name: "node-2", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}})
	a.setState(t, s)
	if got, want := *a.inForce.ranges.Load(), []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:10:244:1::/64")}; !slices.Equal(got, want) {
		t.Errorf("pod ranges %v, want the flag's and node-1's: %v", got, want)
	}
	gen = a.inForce.Generation()
	for _, tc := range []struct {
		name string
		f    flow.Flow
		want bool
	}{
		{"known pods", tcp(webIP, dbIP), false},
		{"from an unknown pod address", tcp(newIP, dbIP), true},
		{"to an unknown pod address", tcp(outside, newIP), true},
		{"outside the ranges", tcp(outside, netip.MustParseAddr("10.244.2.7")), false},
		{"unknown IPv6 pod address", tcp(netip.MustParseAddr("fd00:10:244:1::99"), outside), true},
	} {
		if got := a.inForce.Unknown(tc.f, gen); got != tc.want {
			t.Errorf("%s: Unknown(%v) = %v, want %v", tc.name, tc.f, got, tc.want)
		}
	}
	if n := testing.AllocsPerRun(1000, func() { a.inForce.Unknown(tcp(webIP, dbIP), gen) }); n != 0 {
		t.Errorf("Unknown allocates %v times", n)
	}
	if got := localAddrs(a.inForce.Load()); len(got) != 6 || !slices.Contains(got, webIP) || !slices.Contains(got, dbIP) {
		t.Errorf("local addresses %v, want web, api, db in both families", got)
	}
}
