package lab

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// PodOptions says how Node.AddPodWith wires a pod. The zero value is AddPod's wiring.
type PodOptions struct {
	// HostIf names the node-side veth instead of the lab's veth prefix and a hash of the
	// pod's name: a pod a firewall matching pod interfaces by prefix does not cover. At
	// most 15 bytes, unused on the node.
	HostIf string
	// Bridge makes the pod's veth a port of the node's pod bridge (Node.BridgeName), as
	// the bridge CNI plugin and flannel do: inside, eth0 holds the pod's addresses in the
	// bridge subnets (Node.BridgeSubnets) and routes by default via the bridge's
	// addresses; the node reaches the whole subnets through the bridge. A routed packet
	// from such a pod reaches the node's forward hook from the bridge, not from the veth.
	Bridge bool
}

// check reports what is wrong with o for a pod of n with these addresses.
func (o PodOptions) check(n *Node, ipv4, ipv6 netip.Addr) []error {
	var errs []error
	if len(o.HostIf) > 15 {
		errs = append(errs, fmt.Errorf("host interface %q longer than 15 bytes", o.HostIf))
	}
	if o.Bridge {
		v4, v6 := n.BridgeSubnets()
		if ipv4.IsValid() && !v4.Contains(ipv4) || ipv6.IsValid() && !v6.Contains(ipv6) {
			errs = append(errs, fmt.Errorf("bridged pod addresses %v, %v outside the bridge subnets %v, %v", ipv4, ipv6, v4, v6))
		}
	}
	return errs
}

// BridgeName returns the name of the node's pod bridge: the lab's veth prefix and "br0",
// so that a firewall matching pod interfaces by the veth prefix covers it.
func (n *Node) BridgeName() string { return n.lab.vethPrefix + "br0" }

// BridgeSubnets returns the subnets of the node's pod bridge, inside its pod CIDRs: the
// last 64 addresses of the IPv4 pod CIDR (x.y.z.192/26 for a /24; plan pods 182 and above
// would overlap) and fd00:…:b::/80 of the IPv6 one. The bridge holds the first address of
// each; zero when the family is absent.
func (n *Node) BridgeSubnets() (v4, v6 netip.Prefix) {
	if p := n.PodCIDRv4; p.IsValid() {
		last := lastAddr(p).As4()
		last[3] &^= 63
		v4 = netip.PrefixFrom(netip.AddrFrom4(last), 26)
	}
	if p := n.PodCIDRv6; p.IsValid() {
		a := p.Masked().Addr().As16()
		a[9] = 0x0b
		v6 = netip.PrefixFrom(netip.AddrFrom16(a), 80)
	}
	return v4, v6
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// bridge returns the node's pod bridge, creating it with its addresses on first use.
// Call with the lab's lock held.
func (n *Node) bridge() (netlink.Link, error) {
	name := n.BridgeName()
	if br, err := n.nl.LinkByName(name); err == nil {
		return br, nil
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := n.nl.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("bridge %s: %w", name, err)
	}
	link, err := n.nl.LinkByName(name)
	if err != nil {
		return nil, err
	}
	v4, v6 := n.BridgeSubnets()
	for _, s := range []netip.Prefix{v4, v6} {
		if s.IsValid() {
			if err := addAddr(n.nl, link, netip.PrefixFrom(s.Addr().Next(), s.Bits())); err != nil {
				return nil, err
			}
		}
	}
	if err := n.nl.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bridge %s up: %w", name, err)
	}
	return link, nil
}

// wireBridgePod creates the veth pair between p and its node's pod bridge, and the pod's
// addresses and default routes.
func wireBridgePod(p *Pod) error {
	node := p.Node
	br, err := node.bridge()
	if err != nil {
		return err
	}
	_, eth, err := addPodVeth(p, netlink.LinkAttrs{Name: p.HostVeth, MasterIndex: br.Attrs().Index})
	if err != nil {
		return err
	}
	v4, v6 := node.BridgeSubnets()
	for _, g := range []struct {
		addr   netip.Addr
		subnet netip.Prefix
	}{{p.IPv4, v4}, {p.IPv6, v6}} {
		if !g.addr.IsValid() {
			continue
		}
		if err := addAddr(p.nl, eth, netip.PrefixFrom(g.addr, g.subnet.Bits())); err != nil {
			return err
		}
		def := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if g.addr.Is6() {
			def = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		gw := g.subnet.Addr().Next()
		r := &netlink.Route{LinkIndex: eth.Attrs().Index, Dst: ipNet(def), Gw: gw.AsSlice()}
		if err := p.nl.RouteAdd(r); err != nil {
			return errors.Join(fmt.Errorf("default route via %v: %w", gw, err))
		}
	}
	return nil
}
