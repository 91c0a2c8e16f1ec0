//go:build linux

package nft

import (
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podwall/podwall/policy/flow"
)

// udpEcho serves UDP echo on port echoPort in ns until the test ends.
func udpEcho(t testing.TB, ns netns.NsHandle) {
	t.Helper()
	var srv *net.UDPConn
	if err := inNS(ns, func() (err error) {
		srv, err = net.ListenUDP("udp", &net.UDPAddr{Port: echoPort})
		return err
	}); err != nil {
		t.Fatalf("echo server: %v", err)
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = srv.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { _ = srv.Close() })
}

// dialFrom opens a new UDP flow from namespace ns to dst's echo server.
func dialFrom(t *testing.T, ns netns.NsHandle, dst netip.Addr) echoFlow {
	t.Helper()
	var c *net.UDPConn
	if err := inNS(ns, func() (err error) {
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, echoPort)))
		return err
	}); err != nil {
		t.Fatalf("dial %s: %v", dst, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return echoFlow{c}
}

// newNodeHookLab builds the pod lab for the own-node hook tests — the node's addresses
// node4 (10.244.0.1, on the pod interfaces) and node6 (a global IPv6 one on lo), echo servers
// in the node and in pod a — and programs a Ruleset with cfg in the node, closed (failing as
// cfg says) when the test ends. It skips without root or the lab's tools.
func newNodeHookLab(t *testing.T, cfg Config) (l *podLab, r *Ruleset, node4, node6 netip.Addr) {
	t.Helper()
	requireRoot(t)
	for _, tool := range []string{"ip", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("live traffic test: no %s to build the lab with", tool)
		}
	}
	l = newPodLab(t)
	node4, node6 = netip.MustParseAddr("10.244.0.1"), netip.MustParseAddr("fd00:99::1")
	if err := inNS(l.node, func() error {
		return exec.Command("ip", "addr", "add", node6.String()+"/128", "dev", "lo", "nodad").Run()
	}); err != nil {
		t.Fatal(err)
	}
	udpEcho(t, l.node)
	udpEcho(t, l.a)
	var err error
	r, err = New(withNetNS(cfg, int(l.node)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(false) })
	return l, r, node4, node6
}

// nodeCacheLab is the own-node hook lab of the verdict-cache tests: a Ruleset of cfg (one
// queue, pod interfaces "pw*") in force at generation 1, judging a's traffic to its node
// (input) and the node's traffic to b (output), nobody reading the queue.
type nodeCacheLab struct {
	*podLab
	t            *testing.T
	r            *Ruleset
	node4, node6 netip.Addr
	judged       Window // the own-node sets in force
}

func newNodeCacheLab(t *testing.T, cfg Config) *nodeCacheLab {
	t.Helper()
	cfg.QueueCount, cfg.PodInterfacePrefixes = 1, []string{"pw"}
	l, r, node4, node6 := newNodeHookLab(t, cfg)
	n := &nodeCacheLab{podLab: l, t: t, r: r, node4: node4, node6: node6,
		judged: Window{NodeEgress: l.list("a4", "a6"), NodeIngress: l.list("b4", "b6")}}
	if err := r.ProgramSyncWindow(1, nil, nil, n.judged); err != nil {
		t.Fatal(err)
	}
	return n
}

// passes opens a new UDP connection from the namespace from to dst and reports whether it
// echoed; dropped the same, with a short wait.
func (n *nodeCacheLab) passes(from netns.NsHandle, dst netip.Addr) bool {
	return dialFrom(n.t, from, dst).echo(n.t)
}

func (n *nodeCacheLab) dropped(from netns.NsHandle, dst netip.Addr) bool {
	return !dialFrom(n.t, from, dst).echoWithin(n.t, 100*time.Millisecond)
}

// udpEchoFlow is the flow of a UDP connection from src to dst's echo server.
func udpEchoFlow(src, dst netip.Addr) flow.Flow {
	return flow.Flow{Src: src, Dst: dst, Proto: flow.UDP, Port: echoPort}
}

// The own-node chains with real packets and nobody reading the queues (fail closed): a pod
// of the nodeegress sets cannot open a connection to its node, the node cannot open one to
// a pod of the nodeingress sets; everything else between pods and their node, and between
// pods, stays in the kernel; established connections keep working; emptying the sets opens
// the way again.
func TestLiveNodeHooks(t *testing.T) {
	l, r, node4, node6 := newNodeHookLab(t, Config{QueueNum: 110, QueueCount: 1, PodInterfacePrefixes: []string{"pw"}})
	if err := r.ProgramSyncWindow(1, nil, nil, Window{}); err != nil {
		t.Fatal(err)
	}
	sync := func(gen uint64, w Window) {
		t.Helper()
		if err := r.SyncWindow(gen, nil, nil, w); err != nil {
			t.Fatal(err)
		}
	}
	toNode := func() [2]bool { // a → node, IPv4 and IPv6, new connections
		return [2]bool{dialFrom(t, l.a, node4).echo(t), dialFrom(t, l.a, node6).echo(t)}
	}
	fromNode := func(pod string) [2]bool {
		return [2]bool{dialFrom(t, l.node, l.addrs[pod+"4"]).echo(t), dialFrom(t, l.node, l.addrs[pod+"6"]).echo(t)}
	}
	both, none := [2]bool{true, true}, [2]bool{}

	// Empty own-node sets: pods and their node talk freely, nothing is queued.
	est := dialFrom(t, l.a, node4)
	if !est.echo(t) {
		t.Fatal("a -> node blocked with empty sets")
	}
	if got := toNode(); got != both {
		t.Errorf("a -> node with empty sets: %v", got)
	}
	if got := fromNode("a"); got != both {
		t.Errorf("node -> a with empty sets: %v", got)
	}
	if c := mustCounters(t, r); c != (Counters{}) {
		t.Errorf("counters with empty sets: %+v, want zero", c)
	}

	// a judged for egress to its node: its new connections to the node are queued (and
	// dropped: nobody reads); the node still reaches a, a still reaches b, and the
	// connection a opened before keeps working.
	sync(2, Window{NodeEgress: l.list("a4", "a6")})
	if got := toNode(); got != none {
		t.Errorf("a -> node, a in nodeegress: %v got through with nobody serving the queue", got)
	}
	if got := fromNode("a"); got != both {
		t.Errorf("node -> a, a in nodeegress only: %v", got)
	}
	if !l.dial(t, "a4", "b4").echo(t) || !l.dial(t, "a6", "b6").echo(t) {
		t.Error("a -> b (forwarded) blocked by the own-node sets")
	}
	if !est.echo(t) {
		t.Error("established a -> node connection cut")
	}
	if c := mustCounters(t, r); c.NodeEgress < 2 || c.NodeIngress != 0 || c.Egress4+c.Egress6+c.Ingress4+c.Ingress6 != 0 {
		t.Errorf("counters: %+v, want only NodeEgress (at least one packet per family)", c)
	}

	// b judged for ingress from its node: the node's new connections to b are queued; to
	// a they are not.
	sync(3, Window{NodeIngress: l.list("b4", "b6")})
	if got := fromNode("b"); got != none {
		t.Errorf("node -> b, b in nodeingress: %v got through with nobody serving the queue", got)
	}
	if got := fromNode("a"); got != both {
		t.Errorf("node -> a: %v", got)
	}
	if got := toNode(); got != both {
		t.Errorf("a -> node after a left nodeegress: %v", got)
	}
	if c := mustCounters(t, r); c.NodeIngress < 2 {
		t.Errorf("counters: %+v, want NodeIngress (at least one packet per family)", c)
	}

	// The node talking to itself is never queued, even to an address in the sets.
	sync(4, Window{NodeIngress: []netip.Addr{node4, node6}, NodeEgress: []netip.Addr{node4, node6}})
	if !dialFrom(t, l.node, node4).echo(t) || !dialFrom(t, l.node, node6).echo(t) {
		t.Error("node -> itself blocked (loopback)")
	}
}

// The deny cache at the own-node hooks, with real packets, nobody reading the queues and
// failing open, so that a queued packet passes (bypass) and only the cache drops: a pod
// retrying a flow to its node that was denied is dropped at input, counted, never queued
// again; the node retrying a denied flow to a pod is dropped at output; the other family,
// and a cached flow of a pod the chain does not judge, pass. A Sync of a new generation
// lets the very next attempt through, queued again.
func TestLiveNodeHooksDenyCache(t *testing.T) {
	const ttl = 10 * time.Second // the test never waits for it
	l := newNodeCacheLab(t, Config{QueueNum: 111, FailOpen: true, DenyCacheTTL: ttl})
	r, node4, node6, passes, dropped := l.r, l.node4, l.node6, l.passes, l.dropped

	if !passes(l.a, node4) || !passes(l.node, l.addrs["b4"]) {
		t.Fatal("fail open, nobody reading: a new connection between a pod and its node did not pass the queue")
	}
	c0 := mustCounters(t, r)
	if _, err := r.AddDenied(1, []flow.Flow{
		udpEchoFlow(l.addrs["a4"], node4), // a → node: input
		udpEchoFlow(node4, l.addrs["b4"]), // node → b: output
		udpEchoFlow(l.addrs["b4"], node4), // b → node: b is not in nodeegress
	}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if !dropped(l.a, node4) {
			t.Fatalf("attempt %d of the cached a -> node flow passed", i)
		}
	}
	if !dropped(l.node, l.addrs["b4"]) {
		t.Error("the cached node -> b flow passed")
	}
	if !passes(l.b, node4) {
		t.Error("b -> node, cached but not judged at input, was dropped")
	}
	c1 := mustCounters(t, r)
	if d := c1.DenyCached - c0.DenyCached; d != 4 {
		t.Errorf("deny cache counted %d drops, want 4 (3 at input, 1 at output)", d)
	}
	if d, e := c1.NodeEgress-c0.NodeEgress, c1.NodeIngress-c0.NodeIngress; d != 0 || e != 0 {
		t.Errorf("input queued %d packets, output %d, of the cached flows; want 0", d, e)
	}
	// (IPv6 last: a's neighbour discovery towards the node is queued at input too.)
	if !passes(l.a, node6) {
		t.Error("a -> node over IPv6, not in the cache, was dropped")
	}
	c1 = mustCounters(t, r)

	// A new generation empties the cache: the very next attempt is queued (and passes).
	if err := r.SyncWindow(2, nil, nil, l.judged); err != nil {
		t.Fatal(err)
	}
	if !passes(l.a, node4) || !passes(l.node, l.addrs["b4"]) {
		t.Error("the first attempt after a new generation was dropped: the old policy's deny shadowed it")
	}
	if c := mustCounters(t, r); c.DenyCached != c1.DenyCached || c.NodeEgress <= c1.NodeEgress || c.NodeIngress <= c1.NodeIngress {
		t.Errorf("after the new generation: deny cache %d → %d, queued at input %d → %d, at output %d → %d; want the same, more, more",
			c1.DenyCached, c.DenyCached, c1.NodeEgress, c.NodeEgress, c1.NodeIngress, c.NodeIngress)
	}
}

// The new-pod window at the own-node hooks, with real packets and nobody reading the queues
// (fail closed): while the own-node window sets hold the pod ranges, a local pod the policy
// does not know (a, not in local4/local6) cannot open a connection to its node, nor the
// node one to it; a known pod (b) is not queued; with the window sets empty (no policy
// could deny that direction) nothing is queued at all.
func TestLiveNodeHooksWindow(t *testing.T) {
	l, r, node4, node6 := newNodeHookLab(t, Config{QueueNum: 112, QueueCount: 1, PodInterfacePrefixes: []string{"pw"}})
	ranges := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24"), netip.MustParsePrefix("fd00:10:244::/64")}
	known := l.list("b4", "b6") // a is unknown to the policy
	if err := r.ProgramSyncWindow(1, nil, nil, Window{Local: known}); err != nil {
		t.Fatal(err)
	}
	sync := func(gen uint64, w Window) {
		t.Helper()
		if err := r.SyncWindow(gen, nil, nil, w); err != nil {
			t.Fatal(err)
		}
	}
	pair := func(from netns.NsHandle, to4, to6 netip.Addr) [2]bool {
		return [2]bool{dialFrom(t, from, to4).echo(t), dialFrom(t, from, to6).echo(t)}
	}
	both, none := [2]bool{true, true}, [2]bool{}

	// No own-node window: a, unknown, talks with its node; nothing is queued.
	if got := pair(l.a, node4, node6); got != both {
		t.Errorf("a -> node, no own-node window: %v", got)
	}
	if got := pair(l.node, l.addrs["a4"], l.addrs["a6"]); got != both {
		t.Errorf("node -> a, no own-node window: %v", got)
	}
	if c := mustCounters(t, r); c != (Counters{}) {
		t.Errorf("counters with empty window sets: %+v, want zero", c)
	}

	// The egress window: a's new connections to its node are queued (and dropped: nobody
	// reads); b's are not (known); the node still reaches a (no ingress window).
	sync(2, Window{Local: known, NodeEgressRanges: ranges})
	if got := pair(l.a, node4, node6); got != none {
		t.Errorf("a -> node, a unknown, egress window: %v got through with nobody serving the queue", got)
	}
	if got := pair(l.b, node4, node6); got != both {
		t.Errorf("b -> node, b known: %v", got)
	}
	if got := pair(l.node, l.addrs["a4"], l.addrs["a6"]); got != both {
		t.Errorf("node -> a, egress window only: %v", got)
	}
	c := mustCounters(t, r)
	if c.Window < 2 || c.NodeEgress+c.NodeIngress != 0 {
		t.Errorf("counters: %+v, want the window's (at least one packet per family) and no own-node set's", c)
	}

	// The ingress window: the node's new connections to a are queued; a reaches its node
	// again (no egress window); once a is known, it is not queued either way.
	sync(3, Window{Local: known, NodeIngressRanges: ranges})
	if got := pair(l.node, l.addrs["a4"], l.addrs["a6"]); got != none {
		t.Errorf("node -> a, a unknown, ingress window: %v got through with nobody serving the queue", got)
	}
	if got := pair(l.a, node4, node6); got != both {
		t.Errorf("a -> node, ingress window only: %v", got)
	}
	sync(4, Window{Local: l.list("a4", "a6", "b4", "b6"), NodeIngressRanges: ranges, NodeEgressRanges: ranges})
	if got := pair(l.node, l.addrs["a4"], l.addrs["a6"]); got != both {
		t.Errorf("node -> a, a known: %v", got)
	}
	if got := pair(l.a, node4, node6); got != both {
		t.Errorf("a -> node, a known: %v", got)
	}
}

// The allow cache at the own-node hooks, with real packets, failing closed and nobody
// reading the queues, so that only the allow cache lets a judged packet through: the cached
// flows of a pod to its node (input) and of the node to a pod (output) pass in the kernel,
// counted, never queued; a flow not in the cache (a → node over IPv6) is queued and dropped,
// and so is the very next attempt after a new generation.
func TestLiveNodeHooksAllowCache(t *testing.T) {
	l := newNodeCacheLab(t, Config{QueueNum: 113, AllowCacheTTL: 10 * time.Second})
	r, node4, node6, passes, dropped := l.r, l.node4, l.node6, l.passes, l.dropped

	if !dropped(l.a, node4) || !dropped(l.node, l.addrs["b4"]) {
		t.Fatal("fail closed, nobody reading: a new connection between a pod and its node passed the queue")
	}
	c0 := mustCounters(t, r)
	if _, err := r.AddAllowed(1, []flow.Flow{
		udpEchoFlow(l.addrs["a4"], node4), // a → node: input
		udpEchoFlow(node4, l.addrs["b4"]), // node → b: output
	}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if !passes(l.a, node4) {
			t.Fatalf("attempt %d of the cached a -> node flow was dropped", i)
		}
	}
	if !passes(l.node, l.addrs["b4"]) {
		t.Error("the cached node -> b flow was dropped")
	}
	c1 := mustCounters(t, r)
	if d := c1.AllowCached - c0.AllowCached; d != 4 {
		t.Errorf("allow cache counted %d accepts, want 4 (3 at input, 1 at output)", d)
	}
	if d, e := c1.NodeEgress-c0.NodeEgress, c1.NodeIngress-c0.NodeIngress; d != 0 || e != 0 {
		t.Errorf("input queued %d packets, output %d, of the cached flows; want 0", d, e)
	}
	if !dropped(l.a, node6) {
		t.Error("a -> node over IPv6, not in the cache, passed")
	}
	c1 = mustCounters(t, r)

	// A new generation empties the cache: the very next attempt is queued (and dropped).
	if err := r.SyncWindow(2, nil, nil, l.judged); err != nil {
		t.Fatal(err)
	}
	if !dropped(l.a, node4) || !dropped(l.node, l.addrs["b4"]) {
		t.Error("an attempt after a new generation passed: the old policy's allow shadowed it")
	}
	if c := mustCounters(t, r); c.AllowCached != c1.AllowCached {
		t.Errorf("after the new generation the allow cache accepted %d more", c.AllowCached-c1.AllowCached)
	}
}
