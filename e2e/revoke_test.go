package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/conntrack"
	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/manifests"
	"github.com/podwall/podwall/policy/policytest"
)

// A policy that tightens cuts the established connections it now denies — TCP and UDP,
// ingress and egress, same node and from another node — and only those: an allowed
// connection between the same pods keeps working, and the other node, whose side of the
// connections is still allowed, deletes nothing. With --keep-established nothing is cut.
//
//	node-1: client, db (ingress-isolated), job (egress-isolated), web
//	node-2: remote
func TestRevoke(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddNode("node-2", 2)
	e.AddPods("node-1", "prod/client", "prod/db", "prod/job", "prod/web")
	e.AddPods("node-2", "prod/remote")
	base := []any{policytest.Namespace("prod", nil)}
	for _, k := range []string{"prod/client", "prod/db", "prod/job", "prod/web", "prod/remote"} {
		base = append(base, e.podObject(k, map[string]string{"app": k[5:]}))
	}
	client := policytest.Pods(policytest.Selector("app", "client"))
	dbIn := func(rules ...networkingv1.NetworkPolicyIngressRule) *networkingv1.NetworkPolicy {
		return policytest.NetworkPolicy("prod", "db-in", policytest.Selector("app", "db"), policytest.Ingress(rules...))
	}
	jobOut := func(rules ...networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
		return policytest.NetworkPolicy("prod", "job-out", policytest.Selector("app", "job"), policytest.Egress(rules...))
	}
	loose := append(slices.Clone(base),
		dbIn(policytest.From(client, policytest.Port("80/TCP"), policytest.Port("81/UDP"), policytest.Port("82/TCP")),
			policytest.From(policytest.Pods(policytest.Selector("app", "remote")), policytest.Port("80/TCP"))),
		jobOut(policytest.To(policytest.Pods(policytest.Selector("app", "web")), policytest.Port("80/TCP"))))
	tight := append(slices.Clone(base),
		dbIn(policytest.From(client, policytest.Port("82/TCP"))),
		jobOut())
	e.Serve(80, 81, 82)
	e.Warm()
	e.write(loose...)
	e.start()
	ct := e.conntrackOf("node-1")

	// holdAll opens the connections of the test in both families and checks they echo.
	holdAll := func(e *env) []*held {
		var hs []*held
		for _, fam := range []string{"IPv4", "IPv6"} {
			hs = append(hs,
				e.hold("cut", fam, "prod/client", "prod/db", "tcp", 80),
				e.hold("cut", fam, "prod/client", "prod/db", "udp", 81),
				e.hold("kept", fam, "prod/client", "prod/db", "tcp", 82),
				e.hold("cut", fam, "prod/remote", "prod/db", "tcp", 80),
				e.hold("cut", fam, "prod/job", "prod/web", "tcp", 80))
		}
		return hs
	}

	t.Run("revoked", func(t *testing.T) {
		e := e.sub(t)
		hs := holdAll(e)
		for _, h := range hs {
			if !ct.has(e, h) {
				t.Fatalf("%v: no live conntrack entry on node-1", h)
			}
		}
		edited := time.Now()
		e.write(tight...)
		cuts := ct.waitGone(e, edited, hs)
		var lat []time.Duration
		for _, h := range hs {
			if h.name == "cut" {
				lat = append(lat, cuts[h])
			}
		}
		t.Logf("edit -> conntrack entry marked revoked, %d connections: %s", len(lat), quantiles(lat))
		e.checkHeld(hs)
		if got := e.metric("node-1", "podwall_conntrack_revoked_total"); got != 8 {
			t.Errorf("node-1 revoked %v entries, want 8 (4 connections x 2 families)", got)
		}
		// node-2 sees remote -> db too, but its side (remote's egress) is allowed.
		if got := e.metric("node-2", "podwall_conntrack_revoked_total"); got != 0 {
			t.Errorf("node-2 revoked %v entries, want 0", got)
		}
		// New connections follow the new policy.
		e.check(
			probe{from: "prod/client", to: "prod/db", port: 80, allow: false},
			probe{from: "prod/client", to: "prod/db", port: 81, proto: "UDP", allow: false},
			probe{from: "prod/client", to: "prod/db", port: 82, allow: true},
			probe{from: "prod/job", to: "prod/web", port: 80, allow: false},
		)
	})

	// Change -> cut, over 20 tightening edits: from the rename of the manifests to the
	// revocation (mark) of the conntrack entries of a held TCP and a held UDP connection.
	t.Run("latency", func(t *testing.T) {
		e := e.sub(t)
		staging := filepath.Join(t.TempDir(), "cluster.yaml")
		var cut, applied []time.Duration
		var all []*held
		for range 20 {
			e.rewrite(loose...)
			hs := []*held{
				e.hold("cut", "IPv4", "prod/client", "prod/db", "tcp", 80),
				e.hold("cut", "IPv6", "prod/client", "prod/db", "udp", 81),
			}
			all = append(all, hs...)
			gen, err := e.Agents["node-1"].Generation(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if err := manifests.Write(staging, tight...); err != nil {
				t.Fatal(err)
			}
			renamed := time.Now()
			if err := os.Rename(staging, e.manifests); err != nil {
				t.Fatal(err)
			}
			readyz := make(chan time.Time, 1)
			go func() { readyz <- e.pollGeneration("node-1", gen) }()
			for _, d := range ct.waitGone(e, renamed, hs) {
				cut = append(cut, d)
			}
			at := <-readyz
			if at.IsZero() {
				t.Fatalf("agent did not report a generation after %d", gen)
			}
			applied = append(applied, at.Sub(renamed))
		}
		t.Logf("edit -> conntrack entry revoked (%d connections, 20 edits): %s", len(cut), quantiles(cut))
		t.Logf("edit -> /readyz generation (20 edits): %s", quantiles(applied))
		e.checkHeld(all)
	})

	t.Run("--keep-established", func(t *testing.T) {
		e := e.sub(t)
		e.rewrite(loose...)
		for name, a := range e.Agents {
			if err := a.Stop(syscall.SIGTERM, 5*time.Second); err != nil {
				t.Fatalf("stop agent on %s: %v", name, err)
			}
		}
		e.start("--keep-established")
		hs := holdAll(e)
		e.rewrite(tight...)
		for _, h := range hs {
			if !ct.has(e, h) {
				t.Errorf("%v: conntrack entry revoked with --keep-established", h)
			}
			h.name = "kept"
		}
		e.checkHeld(hs)
		if got := e.metric("node-1", "podwall_conntrack_revoked_total"); got != 0 {
			t.Errorf("revoked %v entries with --keep-established", got)
		}
	})
}

// held is one connection held open across a policy change.
type held struct {
	name     string // "cut" or "kept": what the change should do to it
	fam      string
	from, to string
	network  string
	conn     net.Conn
	src, dst netip.AddrPort // the original tuple
}

func (h *held) String() string {
	return fmt.Sprintf("%s %s %s -> %s (%v -> %v)", h.fam, h.network, h.from, h.to, h.src, h.dst)
}

// hold dials from -> to:port and checks that it echoes; the connection is closed when the
// test ends.
func (e *env) hold(name, fam, from, to, network string, port uint16) *held {
	e.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	dst := netip.AddrPortFrom(e.Addr(to, fam), port)
	c, err := lab.Dial(ctx, e.Pods[from].NS, network, dst)
	if err != nil {
		e.T.Fatalf("hold %s %s -> %s: %v", network, from, to, err)
	}
	e.T.Cleanup(func() { c.Close() })
	h := &held{name: name, fam: fam, from: from, to: to, network: network, conn: c,
		src: netip.MustParseAddrPort(c.LocalAddr().String()), dst: dst}
	h.src = netip.AddrPortFrom(h.src.Addr().Unmap(), h.src.Port())
	if err := lab.Echo(ctx, c, time.Second); err != nil {
		e.T.Fatalf("hold %v: first echo: %v", h, err)
	}
	return h
}

// checkHeld checks that every "kept" connection echoes and every "cut" one does not.
func (e *env) checkHeld(hs []*held) {
	e.T.Helper()
	errs := make([]error, len(hs))
	done := make(chan int)
	for i, h := range hs {
		go func() {
			errs[i] = lab.Echo(context.Background(), h.conn, 700*time.Millisecond)
			done <- i
		}()
	}
	for range hs {
		<-done
	}
	for i, h := range hs {
		switch {
		case h.name == "kept" && errs[i] != nil:
			e.T.Errorf("%v: should keep working: %v", h, errs[i])
		case h.name == "cut" && errs[i] == nil:
			e.T.Errorf("%v: still works, should be cut", h)
		}
	}
}

// ctTable is a node's conntrack table, read from the test.
type ctTable struct {
	node string
	tab  *conntrack.Table
}

// conntrackOf opens node's conntrack table for the rest of the test.
func (e *env) conntrackOf(node string) *ctTable {
	e.T.Helper()
	var tab *conntrack.Table
	if err := e.Nodes[node].Do(func() (err error) { tab, err = conntrack.Open(); return err }); err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { tab.Close() })
	return &ctTable{node: node, tab: tab}
}

// has reports whether the table holds the entry of h, not marked revoked (the agent's
// default --revoke-mark): a connection that can carry packets.
func (c *ctTable) has(e *env, h *held) bool {
	e.T.Helper()
	p := flow.TCP
	if h.network == "udp" {
		p = flow.UDP
	}
	en, err := c.tab.Get(conntrack.Tuple{Src: h.src.Addr(), Dst: h.dst.Addr(), Proto: p, SrcPort: h.src.Port(), DstPort: h.dst.Port()})
	if err != nil {
		e.T.Fatalf("conntrack of %s: %v", c.node, err)
	}
	return en != nil && en.Mark&conntrack.DefaultMark == 0
}

// waitGone polls the table every millisecond until the entries of the "cut" connections
// are marked revoked (or gone), and returns how long after since each was. It fails the
// test when one is left after 5 s, or when a "kept" entry is marked or disappears.
func (c *ctTable) waitGone(e *env, since time.Time, hs []*held) map[*held]time.Duration {
	e.T.Helper()
	gone := map[*held]time.Duration{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := lab.Poll(ctx, time.Millisecond, func() error {
		var left []string
		for _, h := range hs {
			if h.name != "cut" {
				continue
			}
			if _, ok := gone[h]; !ok && !c.has(e, h) {
				gone[h] = time.Since(since)
			}
			if _, ok := gone[h]; !ok {
				left = append(left, h.String())
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("entries not revoked: %s", strings.Join(left, "; "))
		}
		return nil
	})
	if err != nil {
		e.T.Fatalf("%v\n%s", err, e.Agents[c.node].Logs())
	}
	for _, h := range hs {
		if h.name == "kept" && !c.has(e, h) {
			e.T.Errorf("%v: entry of an allowed connection revoked", h)
		}
	}
	return gone
}
