package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy/decisions"
	"github.com/podwall/podwall/policy/policytest"
)

// The kernel's deny cache (datapath/nft doc.go), with the real agent and its default TTL
// (2 s): a sender repeating datagrams to a denied port and a client retrying its SYN cost
// the agent one queued packet each, the kernel drops the repeats (counted in
// podwall_datapath_deny_cache_hits_total), and the decision stream shows the one decision,
// saying the kernel now drops the flow's repeats. A policy change that allows a flow the
// cache holds lets the very next attempt through: the cache never shadows a new policy.
// With --deny-cache-ttl 0 every repeat is queued and the table has no deny cache.
//
//	node-1: client, server (ingress: client on 80/TCP; later also 82/TCP)
func TestDenyCache(t *testing.T) {
	e, base := newClientServerEnv(t)
	e.write(append(base, serverPolicy("80/TCP"))...)
	e.Serve(80, 81, 82)
	e.start()
	denies := e.stream("node-1", "?verdict=deny")

	// snap reads what the node counted: queued by the ingress rules, dropped by the deny
	// cache, flows the agent added to it.
	snap := func(fam string) cacheCounts { return e.cacheCounts(fam, "deny") }
	// denials returns the denies the stream carried for a flow so far.
	denials := func(fam, proto string, port uint16) []decisions.Event {
		evs, _, err := denies.snapshot()
		if err != nil {
			t.Fatal(err)
		}
		var out []decisions.Event
		for _, ev := range evs {
			if ev.Family == fam && ev.Protocol == proto && ev.DstPort == port && ev.Src == e.Addr("app/client", fam).String() {
				out = append(out, ev)
			}
		}
		return out
	}

	for _, fam := range []string{"IPv4", "IPv6"} {
		t.Run(fam, func(t *testing.T) {
			e := e.sub(t)
			server := e.Addr("app/server", fam)

			// A UDP sender repeating to a denied port, from one socket: its first datagram is
			// queued and denied; once the agent has put the flow in the cache, the kernel
			// drops the other nine.
			t.Run("UDP sender repeating", func(t *testing.T) {
				before := snap(fam)
				c := udpSender(t, e.Pods["app/client"], netip.AddrPortFrom(server, 81))
				send(t, c)
				e.waitFor(func() bool { return snap(fam).adds > before.adds },
					func() string { return "the denied flow never went into the deny cache" })
				for range 9 {
					time.Sleep(10 * time.Millisecond)
					send(t, c)
				}
				c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				if n, err := c.Read(make([]byte, 64)); err == nil || n > 0 {
					t.Errorf("a reply to a denied datagram: %d bytes, %v", n, err)
				}
				after := snap(fam)
				if q, h := after.queued-before.queued, after.hits-before.hits; q != 1 || h != 9 {
					t.Errorf("10 datagrams: %v queued, %v dropped by the deny cache; want 1 and 9", q, h)
				}
				e.waitFor(func() bool { return len(denials(fam, "UDP", 81)) >= 1 },
					func() string { return "no deny in the stream" })
				time.Sleep(50 * time.Millisecond) // a second decision would be here by now
				evs := denials(fam, "UDP", 81)
				if len(evs) != 1 || evs[0].KernelDenyTTLms != 2000 || !strings.Contains(evs[0].Reason, "no rule allows UDP/81") {
					t.Errorf("stream: %d decisions on the flow, want one with kernelDenyTTLms 2000: %+v", len(evs), evs)
				}
			})

			// A TCP client retrying: the SYN is queued and denied, its retransmission a second
			// later is dropped by the kernel.
			t.Run("TCP client retrying", func(t *testing.T) {
				before := snap(fam)
				if err := e.probe(fam, probe{from: "app/client", to: "app/server", port: 82}, 1500*time.Millisecond); err == nil {
					t.Fatal("a denied connection opened")
				}
				after := snap(fam)
				if q, h := after.queued-before.queued, after.hits-before.hits; q != 1 || h != 1 {
					t.Errorf("a SYN and its retransmission: %v queued, %v dropped by the deny cache; want 1 and 1", q, h)
				}
				if evs := denials(fam, "TCP", 82); len(evs) != 1 || evs[0].KernelDenyTTLms != 2000 {
					t.Errorf("stream: %d decisions on the flow, want one with kernelDenyTTLms 2000: %+v", len(evs), evs)
				}
			})
		})
	}

	// The flow client → server:82/TCP is in the cache (denied just now, for 2 s) in both
	// families; a new policy allows it. The very next connection opens at its first SYN
	// (the timeout is below the first retransmission), queued and judged by the new policy.
	t.Run("never shadows a new policy", func(t *testing.T) {
		e := e.sub(t)
		// A probe that the entry of the subtest before (about to expire) drops in the kernel
		// does not renew it: probe each family until both are cached at once.
		e.waitFor(func() bool {
			for _, fam := range []string{"IPv4", "IPv6"} {
				if e.cached(fam, 82) {
					continue
				}
				if err := e.probe(fam, probe{from: "app/client", to: "app/server", port: 82}, 200*time.Millisecond); err == nil {
					t.Fatalf("%s: a denied connection opened", fam)
				}
			}
			return e.cached("IPv4", 82) && e.cached("IPv6", 82)
		}, func() string { return "the denied flows are not in the deny cache" })
		e.rewrite(append(base, serverPolicy("80/TCP", "82/TCP"))...)
		for _, fam := range []string{"IPv4", "IPv6"} {
			before := snap(fam)
			if err := e.probe(fam, probe{from: "app/client", to: "app/server", port: 82}, 900*time.Millisecond); err != nil {
				t.Errorf("%s: the first connection after the policy allowed it: %v", fam, err)
			}
			after := snap(fam)
			if q, h := after.queued-before.queued, after.hits-before.hits; q != 1 || h != 0 {
				t.Errorf("%s: %v queued, %v dropped by the deny cache; want 1 and 0", fam, q, h)
			}
		}
		// And back: denied again at once.
		e.rewrite(append(base, serverPolicy("80/TCP"))...)
		e.check(probe{from: "app/client", to: "app/server", port: 82, allow: false})
	})

	t.Run("--deny-cache-ttl 0", func(t *testing.T) {
		e := e.sub(t)
		if err := e.Agents["node-1"].Stop(syscall.SIGTERM, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		e.startOn("node-1", "--deny-cache-ttl", "0")
		if table, _ := e.ruleset("node-1"); strings.Contains(table, "denied") {
			t.Errorf("deny cache off, the table still has it:\n%s", table)
		}
		before := snap("IPv4")
		c := udpSender(t, e.Pods["app/client"], netip.AddrPortFrom(e.Addr("app/server", "IPv4"), 81))
		for range 10 {
			send(t, c)
			time.Sleep(10 * time.Millisecond)
		}
		e.waitFor(func() bool { return snap("IPv4").queued-before.queued == 10 },
			func() string { return fmt.Sprintf("queued %v of 10 datagrams", snap("IPv4").queued-before.queued) })
		if h := snap("IPv4").hits; h != 0 {
			t.Errorf("deny cache off: %v packets dropped by it", h)
		}
	})
}

// newClientServerEnv is the lab of the verdict-cache tests: node-1 with pods app/client and
// app/server, and the manifests' objects but the policy (serverPolicy's).
func newClientServerEnv(t *testing.T) (*env, []any) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/client", "app/server")
	return e, []any{policytest.Namespace("app", nil),
		e.podObject("app/client", map[string]string{"app": "client"}),
		e.podObject("app/server", map[string]string{"app": "server"})}
}

// serverPolicy isolates app/server for ingress and allows app/client on ports.
func serverPolicy(ports ...string) *networkingv1.NetworkPolicy {
	peers := []policytest.Elem{policytest.Pods(policytest.Selector("app", "client"))}
	for _, p := range ports {
		peers = append(peers, policytest.Port(p))
	}
	return policytest.NetworkPolicy("app", "server", policytest.Selector("app", "server"),
		policytest.Ingress(policytest.From(peers...)))
}

// cacheCounts is what node-1 counted for one family and verdict cache: packets queued by the
// ingress rules, packets the cache answered in the kernel, flows the agent added to it.
type cacheCounts struct{ queued, hits, adds float64 }

// cacheCounts reads them, for kind "deny" or "allow".
func (e *env) cacheCounts(fam, kind string) cacheCounts {
	q := e.queueCounts("node-1")
	set := map[string]string{"IPv4": "ingress4", "IPv6": "ingress6"}[fam]
	return cacheCounts{float64(q.Rules[set]), e.metric("node-1", "podwall_datapath_"+kind+"_cache_hits_total"),
		e.metric("node-1", "podwall_datapath_"+kind+"_cache_adds_total")}
}

// cached reports whether node-1's deny cache holds client → server on TCP port, as nft
// lists it.
func (e *env) cached(fam string, port uint16) bool {
	e.T.Helper()
	set := map[string]string{"IPv4": "denied4", "IPv6": "denied6"}[fam]
	out, err := e.Nodes["node-1"].Exec(context.Background(), "nft", "list", "set", "inet", "podwall", set).Output()
	if err != nil {
		e.T.Fatalf("nft list set %s: %v", set, err)
	}
	return strings.Contains(string(out), fmt.Sprintf("%s . %s . tcp . %d ", e.Addr("app/client", fam), e.Addr("app/server", fam), port))
}

// udpSender is a UDP socket in pod p connected to dst, closed when the test ends.
func udpSender(t *testing.T, p *lab.Pod, dst netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := p.Do(func() (err error) {
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, c *net.UDPConn) {
	t.Helper()
	if _, err := c.Write([]byte("podwall")); err != nil {
		t.Fatal(err)
	}
}
