//go:build linux

package nft

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// podLab is a node namespace with two pod namespaces, a and b, each
// attached by a veth pair whose host side is named pw<pod> (ptp-CNI
// style: /32 and /128 routes per pod on the node, the node as the pods'
// gateway). b runs a UDP echo server on port echoPort.
type podLab struct {
	node, a, b netns.NsHandle
	nodeName   string
	addrs      map[string]netip.Addr // "a4", "a6", "b4", "b6", "spoof4"
}

const echoPort = 7777

func newPodLab(t testing.TB) *podLab {
	t.Helper()
	nodeName, node := labNS(t)
	aName, a := labNS(t)
	bName, b := labNS(t)
	l := &podLab{node: node, a: a, b: b, nodeName: nodeName, addrs: map[string]netip.Addr{
		"a4": netip.MustParseAddr("10.244.0.2"), "a6": netip.MustParseAddr("fd00:10:244::2"),
		"b4": netip.MustParseAddr("10.244.0.3"), "b6": netip.MustParseAddr("fd00:10:244::3"),
		// An address pod a gives itself but the node routes elsewhere (nowhere).
		"spoof4": netip.MustParseAddr("10.244.0.99"),
	}}

	sysctl := func(ns string, kv ...string) {
		run(t, append([]string{"ip", "netns", "exec", ns, "sysctl", "-q", "-w"}, kv...)...)
	}
	// The node forwards, and the kernel's own reverse-path filter is off so
	// that the ruleset's anti-spoofing rule is what drops spoofed packets.
	sysctl(nodeName, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
		"net.ipv6.conf.default.accept_dad=0")
	run(t, "ip", "-n", nodeName, "link", "set", "lo", "up")
	for _, p := range []struct {
		ns, host string
		v4, v6   string
	}{{aName, "pwa", "10.244.0.2", "fd00:10:244::2"}, {bName, "pwb", "10.244.0.3", "fd00:10:244::3"}} {
		run(t, "ip", "-n", nodeName, "link", "add", p.host, "type", "veth", "peer", "name", "eth0", "netns", p.ns)
		sysctl(p.ns, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.eth0.accept_dad=0")
		sysctl(nodeName, "net.ipv4.conf."+p.host+".rp_filter=0", "net.ipv6.conf."+p.host+".accept_dad=0")
		run(t, "ip", "-n", nodeName, "addr", "add", "10.244.0.1/32", "dev", p.host)
		run(t, "ip", "-n", nodeName, "addr", "add", "fe80::1/64", "dev", p.host, "nodad")
		run(t, "ip", "-n", nodeName, "link", "set", p.host, "up")
		run(t, "ip", "-n", nodeName, "route", "add", p.v4+"/32", "dev", p.host)
		run(t, "ip", "-n", nodeName, "-6", "route", "add", p.v6+"/128", "dev", p.host)

		run(t, "ip", "-n", p.ns, "link", "set", "lo", "up")
		run(t, "ip", "-n", p.ns, "link", "set", "eth0", "up")
		run(t, "ip", "-n", p.ns, "addr", "add", p.v4+"/32", "dev", "eth0")
		run(t, "ip", "-n", p.ns, "addr", "add", p.v6+"/128", "dev", "eth0", "nodad")
		run(t, "ip", "-n", p.ns, "route", "add", "10.244.0.1", "dev", "eth0", "scope", "link")
		run(t, "ip", "-n", p.ns, "route", "add", "default", "via", "10.244.0.1", "dev", "eth0")
		run(t, "ip", "-n", p.ns, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
	}
	run(t, "ip", "-n", aName, "addr", "add", "10.244.0.99/32", "dev", "eth0")

	udpEcho(t, b)
	return l
}

// echoFlow is one UDP connection from pod a to b's echo server.
type echoFlow struct{ c *net.UDPConn }

// dial opens a new flow (a new source port: a new connection for
// conntrack) from a's address src to b's address dst.
func (l *podLab) dial(t *testing.T, src, dst string) echoFlow {
	t.Helper()
	var c *net.UDPConn
	if err := inNS(l.a, func() (err error) {
		c, err = net.DialUDP("udp",
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(l.addrs[src], 0)),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(l.addrs[dst], echoPort)))
		return err
	}); err != nil {
		t.Fatalf("dial %s -> %s: %v", src, dst, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return echoFlow{c}
}

// echo reports whether one datagram made it to b and back.
func (f echoFlow) echo(t *testing.T) bool {
	t.Helper()
	return f.echoWithin(t, 700*time.Millisecond)
}

// echoWithin reports whether one datagram made it to b and back within d. A datagram a rule
// drops in the sender's own output hook fails the send with EPERM: not echoed.
func (f echoFlow) echoWithin(t *testing.T, d time.Duration) bool {
	t.Helper()
	if _, err := f.c.Write([]byte("podwall")); errors.Is(err, syscall.EPERM) {
		return false
	} else if err != nil {
		t.Fatalf("send: %v", err)
	}
	_ = f.c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 64)
	_, err := f.c.Read(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	return true
}

// The ruleset in a node namespace, with real packets between two pods and
// nobody reading the queues: what an agent outage looks like.
func TestLiveTraffic(t *testing.T) {
	requireRoot(t)
	for _, tool := range []string{"ip", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("live traffic test: no %s to build the lab with", tool)
		}
	}
	l := newPodLab(t)
	cfg := Config{QueueNum: 100, QueueCount: 2, PodInterfacePrefixes: []string{"pw"}}
	r, err := New(withNetNS(cfg, int(l.node)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(true)
	t.Logf("queue rendering: %v", r.Mode())
	if err := r.Program(); err != nil {
		t.Fatal(err)
	}
	counters := func() Counters { return mustCounters(t, r) }
	sync := func(ingress, egress []netip.Addr) {
		t.Helper()
		if err := r.Sync(1, ingress, egress); err != nil {
			t.Fatal(err)
		}
	}

	// No isolated pod: everything stays in the kernel, nothing is queued.
	est4, est6 := l.dial(t, "a4", "b4"), l.dial(t, "a6", "b6")
	if !est4.echo(t) || !est6.echo(t) {
		t.Fatal("a -> b blocked with empty sets")
	}
	if c := counters(); c != (Counters{}) {
		t.Errorf("counters with empty sets: %+v, want zero", c)
	}

	// A packet from a pod interface with an address not routed back
	// through it is dropped before anything else looks at it.
	if l.dial(t, "spoof4", "b4").echo(t) {
		t.Error("spoofed source got through")
	}
	if c := counters(); c.Spoofed == 0 {
		t.Errorf("spoofed packet not counted: %+v", c)
	}

	// b isolated for ingress, fail closed: new connections to b are queued
	// and, with no reader and no bypass, dropped by the kernel; connections
	// established before keep working.
	sync(l.list("b4", "b6"), nil)
	if l.dial(t, "a4", "b4").echo(t) || l.dial(t, "a6", "b6").echo(t) {
		t.Error("fail closed: new connection to an ingress-isolated pod got through with nobody serving the queue")
	}
	if c := counters(); c.Ingress4 == 0 || c.Ingress6 == 0 {
		t.Errorf("queued packets not counted: %+v", c)
	}
	if !est4.echo(t) || !est6.echo(t) {
		t.Error("established connection cut by isolating its destination")
	}

	// a isolated for egress instead.
	sync(nil, l.list("a4", "a6"))
	if l.dial(t, "a4", "b4").echo(t) || l.dial(t, "a6", "b6").echo(t) {
		t.Error("fail closed: new connection from an egress-isolated pod got through")
	}
	if c := counters(); c.Egress4 == 0 || c.Egress6 == 0 {
		t.Errorf("queued packets not counted: %+v", c)
	}

	// Fail open, taking the table over: bypass lets packets through when
	// nobody serves the queue, and only the first packet of a connection
	// goes to the queue — the rest are established.
	open := cfg
	open.FailOpen = true
	r2, err := New(withNetNS(open, int(l.node)))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close(true)
	if err := r2.Program(); err != nil {
		t.Fatal(err)
	}
	f := l.dial(t, "a4", "b4")
	for i := range 3 {
		if !f.echo(t) {
			t.Fatalf("fail open: datagram %d of a new connection dropped", i)
		}
	}
	c, err := r2.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c.Egress4 != 1 {
		t.Errorf("fail open: %d packets queued for one connection of three round trips, want 1", c.Egress4)
	}
}

func (l *podLab) list(names ...string) []netip.Addr {
	out := make([]netip.Addr, len(names))
	for i, n := range names {
		out[i] = l.addrs[n]
	}
	return out
}
