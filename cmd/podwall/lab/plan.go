package lab

import (
	"fmt"
	"net/netip"
)

// NodePlan is the addressing of one node in the documented plan (see the
// package doc). Plan(i) gives node i's.
type NodePlan struct {
	Index                  int
	UnderlayV4, UnderlayV6 netip.Addr
	PodCIDRv4, PodCIDRv6   netip.Prefix
}

// Plan returns the addressing of node i (0 ≤ i < 250): underlay
// 172.18.0.<i+1>/16 and fd00:172:18::<i+1>/64, pods 10.244.<i>.0/24 and
// fd00:10:244:<i>::/64. It panics for i out of range.
func Plan(i int) NodePlan {
	if i < 0 || i >= 250 {
		panic(fmt.Sprintf("lab: node index %d out of range [0, 250)", i))
	}
	return NodePlan{
		Index:      i,
		UnderlayV4: netip.AddrFrom4([4]byte{172, 18, 0, byte(i + 1)}),
		UnderlayV6: netip.MustParseAddr(fmt.Sprintf("fd00:172:18::%x", i+1)),
		PodCIDRv4:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24),
		PodCIDRv6:  netip.MustParsePrefix(fmt.Sprintf("fd00:10:244:%x::/64", i)),
	}
}

// Pod returns the addresses of pod j (0 ≤ j < 245) of the node:
// 10.244.<i>.<j+10> and fd00:10:244:<i>::<j+10> (hex). It panics for j out
// of range.
func (p NodePlan) Pod(j int) (ipv4, ipv6 netip.Addr) {
	if j < 0 || j >= 245 {
		panic(fmt.Sprintf("lab: pod index %d out of range [0, 245)", j))
	}
	v4 := p.PodCIDRv4.Addr().As4()
	v4[3] = byte(j + 10)
	v6 := p.PodCIDRv6.Addr().As16()
	v6[15] = byte(j + 10)
	return netip.AddrFrom4(v4), netip.AddrFrom16(v6)
}

// AddNode adds node name to the lab with this plan's addresses.
func (p NodePlan) AddNode(l *Lab, name string) (*Node, error) {
	return l.AddNode(name, p.UnderlayV4, p.UnderlayV6, p.PodCIDRv4, p.PodCIDRv6)
}

// External returns the addresses of external host j (0 ≤ j < 240):
// 192.0.2.<j+10> and 2001:db8::<j+10> (hex). 198.51.100.0/24 is left for
// tests that need a second, separate external range.
func External(j int) (ipv4, ipv6 netip.Addr) {
	if j < 0 || j >= 240 {
		panic(fmt.Sprintf("lab: external index %d out of range [0, 240)", j))
	}
	v6 := netip.MustParseAddr("2001:db8::").As16()
	v6[15] = byte(j + 10)
	return netip.AddrFrom4([4]byte{192, 0, 2, byte(j + 10)}), netip.AddrFrom16(v6)
}
