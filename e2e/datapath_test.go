package e2e

import (
	"context"
	"net/netip"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy/policytest"
)

// denyAllIngress isolates the pods labelled role=locked of ns for ingress and allows nothing.
func denyAllIngress(ns string) *networkingv1.NetworkPolicy {
	return policytest.NetworkPolicy(ns, "deny-all", policytest.Selector("role", "locked"), policytest.Ingress())
}

// A pod and its own node may always talk, whatever the policies: a node's traffic to its
// pods never passes the forward hook, so it is never queued. Another node's address is
// not exempt, even when a Node object names it: it is judged like any other source.
//
//	node-1: p (deny all ingress), q
//	node-2: r (deny all ingress)
func TestNodeToPod(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddNode("node-2", 2)
	e.AddPods("node-1", "app/p", "app/q")
	e.AddPods("node-2", "app/r")
	e.write(
		e.Nodes["node-1"].Object("node-1"), e.Nodes["node-2"].Object("node-2"),
		policytest.Namespace("app", nil),
		e.podObject("app/p", map[string]string{"role": "locked"}),
		e.podObject("app/q", nil),
		e.podObject("app/r", map[string]string{"role": "locked"}),
		denyAllIngress("app"),
	)
	e.Serve(80)
	node1, node2 := e.nodeEndpoint("node-1"), e.nodeEndpoint("node-2")
	e.start()

	before1, before2 := e.queueCounts("node-1"), e.queueCounts("node-2")
	e.check(
		probe{from: node1, to: "app/p", port: 80, allow: true},
		probe{from: node1, to: "app/p", port: 80, proto: "UDP", allow: true},
		probe{from: node2, to: "app/r", port: 80, allow: true},
		probe{from: node2, to: "app/r", port: 80, proto: "UDP", allow: true},
	)
	if q := e.queueCounts("node-1").sub(before1); q.Queued() != 0 || q.Kernel != 0 {
		t.Errorf("node-1 queued its own traffic to its pod: %v", q)
	}
	if q := e.queueCounts("node-2").sub(before2); q.Queued() != 0 || q.Kernel != 0 {
		t.Errorf("node-2 queued its own traffic to its pod: %v", q)
	}
	e.check(
		// Another node (through the underlay, with its own node address as source).
		probe{from: node2, to: "app/p", port: 80, allow: false},
		probe{from: node1, to: "app/r", port: 80, proto: "UDP", allow: false},
		// A pod on the same node is no node.
		probe{from: "app/q", to: "app/p", port: 80, allow: false},
	)
}

// Traffic of pods that no policy selects never reaches userspace: neither the queue rules
// nor the kernel's queues nor the agent count a packet of theirs, same node or across
// nodes. A connection to an isolated pod sends exactly one packet to userspace, its first;
// the reply makes it established and the rest stays in the kernel.
//
//	node-1: u1, u2, iso (ingress: only from u1 and u3)
//	node-2: u3
func TestUnselectedNeverQueued(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddNode("node-2", 2)
	e.AddPods("node-1", "app/u1", "app/u2", "app/iso")
	e.AddPods("node-2", "app/u3")
	e.write(
		policytest.Namespace("app", nil),
		e.podObject("app/u1", map[string]string{"name": "u1"}),
		e.podObject("app/u2", map[string]string{"name": "u2"}),
		e.podObject("app/u3", map[string]string{"name": "u3"}),
		e.podObject("app/iso", map[string]string{"name": "iso"}),
		policytest.NetworkPolicy("app", "iso", policytest.Selector("name", "iso"), policytest.Ingress(
			policytest.From(policytest.Pods(policytest.Exprs(policytest.In("name", "u1", "u3")))))),
	)
	e.Serve(80)
	e.start()
	counts := func() map[string]queued {
		return map[string]queued{"node-1": e.queueCounts("node-1"), "node-2": e.queueCounts("node-2")}
	}

	// n connections per pair, protocol and family between pods no policy selects, and from
	// the isolated pod outwards (it is isolated for ingress only).
	const n = 5
	var probes []probe
	for _, pair := range [][2]string{
		{"app/u1", "app/u2"}, {"app/u2", "app/u1"}, // same node
		{"app/u1", "app/u3"}, {"app/u3", "app/u2"}, // across nodes
		{"app/iso", "app/u1"}, {"app/iso", "app/u3"}, // out of the isolated pod
	} {
		for range n {
			for _, proto := range []string{"TCP", "UDP"} {
				probes = append(probes, probe{from: pair[0], to: pair[1], port: 80, proto: proto, allow: true})
			}
		}
	}
	before := counts()
	e.check(probes...)
	for node, now := range counts() {
		if q := now.sub(before[node]); q.Queued() != 0 || q.Kernel != 0 || q.Agent != 0 {
			t.Errorf("%s: %d connections of unselected pods queued packets: %v", node, 2*len(probes), q)
		}
	}

	// n TCP connections from u1 (same node) and n UDP flows from u3 (other node) per
	// family, allowed: exactly one queued packet each, on node-1's ingress rules.
	probes = nil
	for range n {
		probes = append(probes,
			probe{from: "app/u1", to: "app/iso", port: 80, allow: true},
			probe{from: "app/u3", to: "app/iso", port: 80, proto: "UDP", allow: true})
	}
	before = counts()
	e.check(probes...)
	after := counts()
	q1, q2 := after["node-1"].sub(before["node-1"]), after["node-2"].sub(before["node-2"])
	t.Logf("%d new connections per family to the isolated pod; node-1 queued: %v", len(probes), q1)
	if want := uint64(len(probes)); q1.Rules["ingress4"] != want || q1.Rules["ingress6"] != want ||
		q1.Queued() != 2*want || q1.Kernel != 2*want || q1.Agent != 2*want {
		t.Errorf("node-1 queued %v; want %d per family on the ingress rules (one per connection), %d in all", q1, want, 2*want)
	}
	if q2.Queued() != 0 || q2.Kernel != 0 || q2.Agent != 0 {
		t.Errorf("node-2 queued %v; want nothing (u3 is not isolated)", q2)
	}

	// One held connection, many round trips: still one queued packet.
	before = counts()
	for _, fam := range []string{"IPv4", "IPv6"} {
		c, err := lab.Dial(context.Background(), e.Pods["app/u1"].NS, "tcp", netip.AddrPortFrom(e.Addr("app/iso", fam), 80))
		if err != nil {
			t.Fatal(err)
		}
		for range 20 {
			if err := lab.Echo(context.Background(), c, time.Second); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()
	}
	if q := counts()["node-1"].sub(before["node-1"]); q.Queued() != 2 || q.Kernel != 2 || q.Agent != 2 {
		t.Errorf("20 round trips on one connection per family queued %v; want 1 per family", q)
	}

	// Denied: u2's SYNs are queued and dropped, each attempt at least once.
	before = counts()
	e.check(probe{from: "app/u2", to: "app/iso", port: 80, allow: false})
	if q := counts()["node-1"].sub(before["node-1"]); q.Rules["ingress4"] < 1 || q.Rules["ingress6"] < 1 || q.Kernel != q.Queued() || q.Agent != q.Queued() {
		t.Errorf("denied connection queued %v; want at least one per family, counted alike everywhere", q)
	}
}

// A pod cannot borrow another address: a SYN with a forged source is dropped on the node,
// before policy, whether or not any pod is isolated; the same pod's honest SYN arrives.
// Without the agent the lab delivers the forged SYN, which shows the drop is podwall's.
func TestAntiSpoofing(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddNode("node-2", 2)
	e.AddPods("node-1", "app/mallory", "app/victim", "app/target")
	e.AddPods("node-2", "app/remote")
	e.write(
		policytest.Namespace("app", nil),
		e.podObject("app/mallory", nil),
		e.podObject("app/victim", nil),
		e.podObject("app/target", nil),
		e.podObject("app/remote", nil),
	)
	const port = 7777
	trap, err := lab.TrapSYN(e.Pods["app/target"].NS, port)
	if err != nil {
		t.Fatal(err)
	}
	mallory := e.Pods["app/mallory"]
	ext4, ext6 := lab.External(5)
	type forgery struct {
		name     string
		src4     netip.Addr
		src6     netip.Addr
		arrives  bool // with the agent running
		baseline bool // whether the lab alone delivers it
	}
	forgeries := []forgery{
		{"own address", mallory.IPv4, mallory.IPv6, true, true},
		{"pod on the same node", e.Pods["app/victim"].IPv4, e.Pods["app/victim"].IPv6, false, true},
		{"pod on another node", e.Pods["app/remote"].IPv4, e.Pods["app/remote"].IPv6, false, true},
		{"node address", e.Nodes["node-2"].UnderlayV4, e.Nodes["node-2"].UnderlayV6, false, true},
		{"outside address", ext4, ext6, false, true},
	}
	// send sends every forgery in both families, then waits for them together.
	send := func(t *testing.T, agentRunning bool) {
		type sent struct {
			f    forgery
			syn  lab.SpoofedSYN
			want bool
		}
		var all []sent
		for _, f := range forgeries {
			want := f.baseline
			if agentRunning {
				want = f.arrives
			}
			for _, src := range []netip.Addr{f.src4, f.src6} {
				dst := e.Pods["app/target"].IPv4
				if src.Is6() {
					dst = e.Pods["app/target"].IPv6
				}
				syn, err := lab.SpoofSYN(mallory.NS, src, netip.AddrPortFrom(dst, port))
				if err != nil {
					t.Fatal(err)
				}
				all = append(all, sent{f, syn, want})
			}
		}
		deadline := time.Now().Add(300 * time.Millisecond)
		for _, s := range all {
			err := trap.Wait(context.Background(), s.syn, max(time.Until(deadline), time.Millisecond))
			if got := err == nil; got != s.want {
				t.Errorf("SYN from %s (%v) to target: arrived=%v, want %v", s.f.name, s.syn.Src.Addr(), got, s.want)
			}
		}
	}
	e.Warm()
	t.Run("lab alone", func(t *testing.T) { send(t, false) })
	e.start()
	before := e.queueCounts("node-1")
	t.Run("podwall", func(t *testing.T) { send(t, true) })
	q := e.queueCounts("node-1").sub(before)
	if q.Spoofed != 8 || q.Queued() != 0 {
		t.Errorf("node-1 counters: %v; want 8 spoofed (4 forgeries x 2 families), nothing queued", q)
	}
}

// SCTP is a protocol like TCP and UDP to policy: a port entry "80/SCTP" from one pod lets
// that pod's INIT through to port 80 and nobody else's, and does not open 80/TCP.
func TestSCTP(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddNode("node-2", 2)
	e.AddPods("node-1", "app/server")
	e.AddPods("node-2", "app/allowed")
	e.AddPods("node-1", "app/other")
	e.write(
		policytest.Namespace("app", nil),
		e.podObject("app/server", map[string]string{"name": "server"}),
		e.podObject("app/allowed", map[string]string{"name": "allowed"}),
		e.podObject("app/other", map[string]string{"name": "other"}),
		policytest.NetworkPolicy("app", "sctp-from-allowed", policytest.Selector("name", "server"), policytest.Ingress(
			policytest.From(policytest.Pods(policytest.Selector("name", "allowed")), policytest.Port("80/SCTP")))),
	)
	e.Serve(80)
	srv, err := e.Pods["app/server"].ServeSCTP(80)
	if err != nil {
		t.Fatal(err)
	}
	e.start()
	e.check(
		probe{from: "app/allowed", to: "app/server", port: 80, proto: "SCTP", allow: true},
		probe{from: "app/other", to: "app/server", port: 80, proto: "SCTP", allow: false},
		probe{from: "app/allowed", to: "app/server", port: 80, proto: "TCP", allow: false},
		probe{from: "app/allowed", to: "app/server", port: 80, proto: "UDP", allow: false},
	)
	// The denied INITs never reached the server (dropped on the way, not unanswered).
	for _, i := range srv.Inits() {
		if a := i.From.Addr(); a == e.Pods["app/other"].IPv4 || a == e.Pods["app/other"].IPv6 {
			t.Errorf("INIT from the denied pod reached the server: %v", i.From)
		}
	}
	if got := len(srv.Inits()); got != 2 {
		t.Errorf("server saw %d INITs, want 2 (the allowed pod's, one per family)", got)
	}
}
