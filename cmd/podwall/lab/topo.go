package lab

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

const (
	underlayBitsV4 = 16
	underlayBitsV6 = 64
	bridgeName     = "br0"
)

var (
	// gatewayV4 and gatewayV6 are the pods' default gateways, Calico style:
	// addresses that exist nowhere, resolved by a permanent neighbour entry
	// in the pod to gatewayMAC, the MAC of every node-side pod veth.
	gatewayV4  = netip.MustParseAddr("169.254.1.1")
	gatewayV6  = netip.MustParseAddr("fe80::1")
	gatewayMAC = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
)

// Node is a namespace acting as a Kubernetes node: a router with IPv4 and
// IPv6 forwarding on and reverse-path filtering off, an underlay interface
// "ul0" carrying its node addresses, and a veth to each of its pods.
type Node struct {
	*NS
	// UnderlayV4 and UnderlayV6 are the node's addresses on the underlay;
	// either may be the zero Addr when the lab is single-stack.
	UnderlayV4, UnderlayV6 netip.Addr
	// PodCIDRv4 and PodCIDRv6 hold the addresses of the node's pods; zero
	// when that family is absent.
	PodCIDRv4, PodCIDRv6 netip.Prefix

	lab       *Lab
	pods      []*Pod
	externals []*Pod
}

// Pod is a namespace attached to a node by a veth pair, point-to-point
// style: inside, "eth0" holds the pod's /32 and /128 and default routes via
// 169.254.1.1 (onlink) and fe80::1; on the node, the veth (HostVeth) has a
// host route to each address. External hosts are wired the same way but sit
// outside the cluster.
type Pod struct {
	*NS
	// IPv4 and IPv6 are the pod's addresses; either may be the zero Addr.
	IPv4, IPv6 netip.Addr
	// Node is the node the pod's veth goes to.
	Node *Node
	// HostVeth is the name of the node-side veth: the lab's VethPrefix and
	// a hash of the pod's name, or "xh" and a hash for an external host.
	HostVeth string
	// External reports whether this is an external host (AddExternal)
	// rather than a pod.
	External bool
	// Bridged reports whether the pod's veth is a port of the node's pod bridge
	// (PodOptions.Bridge) rather than routed to point-to-point.
	Bridged bool
}

// Pods returns the node's pods in the order they were added.
func (n *Node) Pods() []*Pod {
	n.lab.mu.Lock()
	defer n.lab.mu.Unlock()
	return append([]*Pod(nil), n.pods...)
}

// AddNode adds a node namespace, plugs it into the underlay bridge with its
// underlay addresses (/16 for IPv4, /64 for IPv6) and adds routes between
// its pod CIDRs and those of every other node, and to external hosts
// attached to other nodes. Give the zero Addr and Prefix for an absent
// family.
func (l *Lab) AddNode(name string, underlayV4, underlayV6 netip.Addr, podCIDRv4, podCIDRv6 netip.Prefix) (*Node, error) {
	var errs []error
	if underlayV4.IsValid() && !addrOK(underlayV4, false) {
		errs = append(errs, fmt.Errorf("underlay %v is not IPv4", underlayV4))
	}
	if underlayV6.IsValid() && !addrOK(underlayV6, true) {
		errs = append(errs, fmt.Errorf("underlay %v is not IPv6", underlayV6))
	}
	if !underlayV4.IsValid() && !underlayV6.IsValid() {
		errs = append(errs, errors.New("no underlay address"))
	}
	for _, p := range []struct {
		p  netip.Prefix
		ul netip.Addr
		v6 bool
	}{{podCIDRv4, underlayV4, false}, {podCIDRv6, underlayV6, true}} {
		switch {
		case !p.p.IsValid():
		case !addrOK(p.p.Addr(), p.v6) || p.p != p.p.Masked():
			errs = append(errs, fmt.Errorf("pod CIDR %v: want a masked IPv%d prefix", p.p, map[bool]int{false: 4, true: 6}[p.v6]))
		case !p.ul.IsValid():
			errs = append(errs, fmt.Errorf("pod CIDR %v needs an underlay address of its family", p.p))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("lab: add node %s: %w", name, err)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.claimRole(name); err != nil {
		return nil, fmt.Errorf("lab: add node: %w", err)
	}
	n, err := l.addNode(name, underlayV4, underlayV6, podCIDRv4, podCIDRv6)
	if err != nil {
		delete(l.roles, name)
		return nil, fmt.Errorf("lab: add node %s: %w", name, err)
	}
	return n, nil
}

func (l *Lab) addNode(name string, ulV4, ulV6 netip.Addr, podV4, podV6 netip.Prefix) (*Node, error) {
	if l.underlay == nil {
		u, err := l.newUnderlay()
		if err != nil {
			return nil, err
		}
		l.underlay = u
	}
	ns, err := newNS(l.nsName(name), name, l.logf)
	if err != nil {
		return nil, err
	}
	n := &Node{NS: ns, UnderlayV4: ulV4, UnderlayV6: ulV6, PodCIDRv4: podV4, PodCIDRv6: podV6, lab: l}
	for _, a := range []netip.Addr{ulV4, ulV6} {
		if a.IsValid() {
			n.addrs = append(n.addrs, a)
		}
	}
	if err := l.wireNode(n); err != nil {
		return nil, errors.Join(err, ns.destroy())
	}
	l.nss = append(l.nss, ns)
	l.nodes = append(l.nodes, n)
	return n, nil
}

// newUnderlay creates the namespace holding the underlay bridge.
func (l *Lab) newUnderlay() (*NS, error) {
	u, err := newNS(l.nsName(underlayRole), underlayRole, l.logf)
	if err != nil {
		return nil, err
	}
	err = func() error {
		// br_netfilter, when loaded, would pass bridged frames through this
		// namespace's (empty) netfilter hooks and conntrack: turn that off.
		u.Do(func() error {
			for _, k := range []string{"iptables", "ip6tables", "arptables"} {
				writeSysctl("net/bridge/bridge-nf-call-"+k, "0") // absent without br_netfilter
			}
			return nil
		})
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}}
		if err := u.nl.LinkAdd(br); err != nil {
			return fmt.Errorf("bridge: %w", err)
		}
		if err := u.nl.LinkSetUp(br); err != nil {
			return fmt.Errorf("bridge up: %w", err)
		}
		return nil
	}()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("netns %s: %w", u.name, err), u.destroy())
	}
	l.nss = append(l.nss, u)
	return u, nil
}

// wireNode configures a new node's sysctls, underlay link and routes.
func (l *Lab) wireNode(n *Node) error {
	if err := n.setSysctls(
		"net.ipv4.ip_forward", "1",
		"net.ipv6.conf.all.forwarding", "1",
		"net.ipv4.conf.all.rp_filter", "0",
		"net.ipv4.conf.default.rp_filter", "0",
		"net.ipv4.conf.all.send_redirects", "0",
		"net.ipv4.conf.default.send_redirects", "0",
	); err != nil {
		return err
	}
	port := "n" + hashName(n.role, 14)
	if err := l.claimVeth(underlayRole, port); err != nil {
		return err
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: port},
		PeerName:      underlayIf,
		PeerNamespace: netlink.NsFd(int(n.h)),
	}
	if err := l.underlay.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("underlay veth: %w", err)
	}
	br, err := l.underlay.nl.LinkByName(bridgeName)
	if err != nil {
		return err
	}
	p, err := l.underlay.nl.LinkByName(port)
	if err != nil {
		return err
	}
	if err := l.underlay.nl.LinkSetMaster(p, br); err != nil {
		return fmt.Errorf("underlay port: %w", err)
	}
	if err := l.underlay.nl.LinkSetUp(p); err != nil {
		return fmt.Errorf("underlay port up: %w", err)
	}
	ul, err := n.nl.LinkByName(underlayIf)
	if err != nil {
		return err
	}
	if err := n.nl.LinkSetUp(ul); err != nil {
		return fmt.Errorf("%s up: %w", underlayIf, err)
	}
	if n.UnderlayV4.IsValid() {
		if err := addAddr(n.nl, ul, netip.PrefixFrom(n.UnderlayV4, underlayBitsV4)); err != nil {
			return err
		}
	}
	if n.UnderlayV6.IsValid() {
		if err := addAddr(n.nl, ul, netip.PrefixFrom(n.UnderlayV6, underlayBitsV6)); err != nil {
			return err
		}
	}
	// Routes both ways between the new node and every other node.
	for _, m := range l.nodes {
		if err := routeVia(n, m, m.remotePrefixes()...); err != nil {
			return err
		}
		if err := routeVia(m, n, n.remotePrefixes()...); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) claimVeth(role, ifname string) error {
	k := role + "/" + ifname
	if l.veths[k] {
		return fmt.Errorf("interface name %s already used in %s (hash collision: rename)", ifname, role)
	}
	l.veths[k] = true
	return nil
}

// remotePrefixes returns what other nodes route to n: its pod CIDRs and
// the host routes of the external hosts attached to it.
func (n *Node) remotePrefixes() []netip.Prefix {
	var ps []netip.Prefix
	for _, p := range []netip.Prefix{n.PodCIDRv4, n.PodCIDRv6} {
		if p.IsValid() {
			ps = append(ps, p)
		}
	}
	for _, x := range n.externals {
		ps = append(ps, hostPrefixes(x.IPv4, x.IPv6)...)
	}
	return ps
}

// routeVia adds to from's routing table a route to each prefix via to's
// underlay address of the prefix's family.
func routeVia(from, to *Node, prefixes ...netip.Prefix) error {
	ul, err := from.nl.LinkByName(underlayIf)
	if err != nil {
		return err
	}
	for _, p := range prefixes {
		gw := to.UnderlayV4
		if p.Addr().Is6() {
			gw = to.UnderlayV6
		}
		if !gw.IsValid() {
			return fmt.Errorf("node %s: no IPv%d underlay address to route %v via", to.role, map[bool]int{false: 4, true: 6}[p.Addr().Is6()], p)
		}
		r := &netlink.Route{LinkIndex: ul.Attrs().Index, Dst: ipNet(p), Gw: gw.AsSlice()}
		if err := from.nl.RouteAdd(r); err != nil {
			return fmt.Errorf("node %s: route %v via %v: %w", from.role, p, gw, err)
		}
	}
	return nil
}

// AddPod adds a pod namespace attached to the node. Each address must lie
// in the node's pod CIDR of its family; give the zero Addr for an absent
// family.
func (n *Node) AddPod(name string, ipv4, ipv6 netip.Addr) (*Pod, error) {
	return n.AddPodWith(name, ipv4, ipv6, PodOptions{})
}

// AddPodWith is AddPod wired as o says.
func (n *Node) AddPodWith(name string, ipv4, ipv6 netip.Addr, o PodOptions) (*Pod, error) {
	var errs []error
	for _, c := range []struct {
		a    netip.Addr
		cidr netip.Prefix
		v6   bool
	}{{ipv4, n.PodCIDRv4, false}, {ipv6, n.PodCIDRv6, true}} {
		switch {
		case !c.a.IsValid():
		case !addrOK(c.a, c.v6):
			errs = append(errs, fmt.Errorf("%v is not IPv%d", c.a, map[bool]int{false: 4, true: 6}[c.v6]))
		case !c.cidr.Contains(c.a):
			errs = append(errs, fmt.Errorf("%v is outside node %s's pod CIDR %v", c.a, n.role, c.cidr))
		}
	}
	if !ipv4.IsValid() && !ipv6.IsValid() {
		errs = append(errs, errors.New("no address"))
	}
	errs = append(errs, o.check(n, ipv4, ipv6)...)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("lab: add pod %s: %w", name, err)
	}
	return n.lab.attach(name, ipv4, ipv6, n, false, o)
}

// AddExternal adds an "external host": a namespace outside the cluster,
// wired to the via node like a pod but with a node-side veth named
// "xh<hash>" (never the pod prefix), and reachable from every node through
// via. Use addresses outside the pod CIDRs, e.g. 192.0.2.0/24,
// 198.51.100.0/24 and 2001:db8::/32.
func (l *Lab) AddExternal(name string, ipv4, ipv6 netip.Addr, via *Node) (*Pod, error) {
	var errs []error
	if ipv4.IsValid() && !addrOK(ipv4, false) {
		errs = append(errs, fmt.Errorf("%v is not IPv4", ipv4))
	}
	if ipv6.IsValid() && !addrOK(ipv6, true) {
		errs = append(errs, fmt.Errorf("%v is not IPv6", ipv6))
	}
	if !ipv4.IsValid() && !ipv6.IsValid() {
		errs = append(errs, errors.New("no address"))
	}
	if via == nil || via.lab != l {
		errs = append(errs, errors.New("via is not a node of this lab"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("lab: add external %s: %w", name, err)
	}
	return l.attach(name, ipv4, ipv6, via, true, PodOptions{})
}

// attach creates an endpoint namespace and wires it to node.
func (l *Lab) attach(name string, ipv4, ipv6 netip.Addr, node *Node, external bool, o PodOptions) (*Pod, error) {
	kind := "pod"
	if external {
		kind = "external"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.claimRole(name); err != nil {
		return nil, fmt.Errorf("lab: add %s: %w", kind, err)
	}
	p, err := l.attachLocked(name, ipv4, ipv6, node, external, o)
	if err != nil {
		delete(l.roles, name)
		return nil, fmt.Errorf("lab: add %s %s: %w", kind, name, err)
	}
	return p, nil
}

func (l *Lab) attachLocked(name string, ipv4, ipv6 netip.Addr, node *Node, external bool, o PodOptions) (*Pod, error) {
	prefix := l.vethPrefix
	if external {
		prefix = externalVethPrefix
	}
	hostIf := prefix + hashName(name, 15-len(prefix))
	if o.HostIf != "" {
		hostIf = o.HostIf
	}
	if err := l.claimVeth(node.role, hostIf); err != nil {
		return nil, err
	}
	ns, err := newNS(l.nsName(name), name, l.logf)
	if err != nil {
		delete(l.veths, node.role+"/"+hostIf)
		return nil, err
	}
	p := &Pod{NS: ns, IPv4: ipv4, IPv6: ipv6, Node: node, HostVeth: hostIf, External: external, Bridged: o.Bridge}
	for _, a := range []netip.Addr{ipv4, ipv6} {
		if a.IsValid() {
			p.addrs = append(p.addrs, a)
		}
	}
	err = wirePod(p)
	if err == nil && external {
		// Every other node reaches the external host through its node.
		for _, m := range l.nodes {
			if m != node {
				if err = routeVia(m, node, hostPrefixes(ipv4, ipv6)...); err != nil {
					break
				}
			}
		}
	}
	if err != nil {
		// Deleting the namespace deletes the veth pair; routes other nodes
		// got to an external host stay, pointing at nothing.
		delete(l.veths, node.role+"/"+hostIf)
		return nil, errors.Join(err, ns.destroy())
	}
	l.nss = append(l.nss, ns)
	if external {
		node.externals = append(node.externals, p)
	} else {
		node.pods = append(node.pods, p)
	}
	return p, nil
}

// wirePod creates the veth pair between p and its node and the addresses,
// neighbours and routes on both sides.
func wirePod(p *Pod) error {
	if p.Bridged {
		return wireBridgePod(p)
	}
	node := p.Node
	host, eth, err := addPodVeth(p, netlink.LinkAttrs{Name: p.HostVeth, HardwareAddr: gatewayMAC})
	if err != nil {
		return err
	}
	idx := eth.Attrs().Index
	for _, g := range []struct {
		addr, gw netip.Addr
		family   int
		flags    int
	}{
		{p.IPv4, gatewayV4, netlink.FAMILY_V4, int(netlink.FLAG_ONLINK)},
		{p.IPv6, gatewayV6, netlink.FAMILY_V6, 0},
	} {
		if !g.addr.IsValid() {
			continue
		}
		if err := addAddr(p.nl, eth, netip.PrefixFrom(g.addr, g.addr.BitLen())); err != nil {
			return err
		}
		nb := &netlink.Neigh{LinkIndex: idx, Family: g.family, State: netlink.NUD_PERMANENT, IP: g.gw.AsSlice(), HardwareAddr: gatewayMAC}
		if err := p.nl.NeighSet(nb); err != nil {
			return fmt.Errorf("neighbour %v: %w", g.gw, err)
		}
		def := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if g.addr.Is6() {
			def = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		r := &netlink.Route{LinkIndex: idx, Dst: ipNet(def), Gw: g.gw.AsSlice(), Flags: g.flags}
		if err := p.nl.RouteAdd(r); err != nil {
			return fmt.Errorf("default route via %v: %w", g.gw, err)
		}
		// On the node: a host route to the pod, sourced from the node's
		// underlay address so node→pod traffic carries the node address.
		hr := &netlink.Route{LinkIndex: host.Attrs().Index, Dst: ipNet(netip.PrefixFrom(g.addr, g.addr.BitLen())), Scope: netlink.SCOPE_LINK}
		src := node.UnderlayV4
		if g.addr.Is6() {
			src = node.UnderlayV6
		}
		if src.IsValid() {
			hr.Src = src.AsSlice()
		}
		if err := node.nl.RouteAdd(hr); err != nil {
			return fmt.Errorf("node %s: route %v: %w", node.role, g.addr, err)
		}
	}
	return nil
}

// waitOperUp polls until the node-side and pod-side ends of a veth are operationally up.
func waitOperUp(hostNL *netlink.Handle, hostName string, podNL *netlink.Handle, podName string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		h, err := hostNL.LinkByName(hostName)
		if err != nil {
			return err
		}
		p, err := podNL.LinkByName(podName)
		if err != nil {
			return err
		}
		if h.Attrs().OperState == netlink.OperUp && p.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("veth %s/%s not up after 5s (operstate %v/%v)", hostName, podName, h.Attrs().OperState, p.Attrs().OperState)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// addAddr adds an address, without duplicate address detection for IPv6.
func addAddr(h *netlink.Handle, link netlink.Link, p netip.Prefix) error {
	a := &netlink.Addr{IPNet: ipNet(p)}
	if p.Addr().Is6() {
		a.Flags = syscall.IFA_F_NODAD
	}
	if err := h.AddrAdd(link, a); err != nil {
		return fmt.Errorf("address %v on %s: %w", p, link.Attrs().Name, err)
	}
	return nil
}

func hostPrefixes(addrs ...netip.Addr) []netip.Prefix {
	var ps []netip.Prefix
	for _, a := range addrs {
		if a.IsValid() {
			ps = append(ps, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return ps
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// hashName returns n hex digits (at most 16) of a hash of s.
func hashName(s string, n int) string {
	h := fnv.New64a()
	h.Write([]byte(s))
	return fmt.Sprintf("%016x", h.Sum64())[:n]
}

// addPodVeth creates the veth pair of p — the node's end with attrs, the pod's end podIf in
// p's namespace — sets both up and waits until both are operationally up.
func addPodVeth(p *Pod, attrs netlink.LinkAttrs) (host, eth netlink.Link, err error) {
	node := p.Node
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: podIf, PeerNamespace: netlink.NsFd(int(p.h))}
	if err := node.nl.LinkAdd(veth); err != nil {
		return nil, nil, fmt.Errorf("veth %s: %w", attrs.Name, err)
	}
	if host, err = node.nl.LinkByName(attrs.Name); err != nil {
		return nil, nil, err
	}
	if err := node.nl.LinkSetUp(host); err != nil {
		return nil, nil, fmt.Errorf("%s up: %w", attrs.Name, err)
	}
	if eth, err = p.nl.LinkByName(podIf); err != nil {
		return nil, nil, err
	}
	if err := p.nl.LinkSetUp(eth); err != nil {
		return nil, nil, fmt.Errorf("%s up: %w", podIf, err)
	}
	// A fresh veth drops what it is given until the kernel's link watcher has marked it
	// operationally up and attached its qdisc — work that is rate-limited to about once a
	// second. Without this wait a pod's first packet is sometimes lost (seen as "TX dropped"
	// on the node side, and as a 1 s ARP retry or a lost probe).
	if err := waitOperUp(node.nl, attrs.Name, p.nl, podIf); err != nil {
		return nil, nil, err
	}
	return host, eth, nil
}
