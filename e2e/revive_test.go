package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy/policytest"
)

// A connection that a policy change cuts stays cut whichever side sends next — the client,
// the server, or a peer outside the cluster at either end — over TCP and UDP, in both
// families: no packet gets through in either direction, not the first one after the cut
// and not the answers to it. (Deleting the conntrack entry was not enough: the side that
// spoke next made conntrack pick the connection up as a new one in its own direction,
// judged as that direction — a server of an only egress-isolated pod, or the remote end of
// a reverse shell, was allowed.) A connection the change does not touch keeps working.
//
//	node-1: client, db (ingress-isolated), job (egress-isolated), web
//	outside: 192.0.2.10 / 2001:db8::a behind node-1
func TestRevokedStaysCut(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "prod/client", "prod/db", "prod/job", "prod/web")
	e.AddExternal("outside", 0, "node-1")
	base := []any{policytest.Namespace("prod", nil)}
	for _, k := range []string{"prod/client", "prod/db", "prod/job", "prod/web"} {
		base = append(base, e.podObject(k, map[string]string{"app": k[5:]}))
	}
	outside := []policytest.Elem{policytest.CIDR("192.0.2.0/24"), policytest.CIDR("2001:db8::/64")}
	dbIn := func(rules ...networkingv1.NetworkPolicyIngressRule) *networkingv1.NetworkPolicy {
		return policytest.NetworkPolicy("prod", "db-in", policytest.Selector("app", "db"), policytest.Ingress(rules...))
	}
	jobOut := func(rules ...networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
		return policytest.NetworkPolicy("prod", "job-out", policytest.Selector("app", "job"), policytest.Egress(rules...))
	}
	// Loose: db takes any port from client and from outside; job reaches web and outside.
	loose := append(slices.Clone(base),
		dbIn(policytest.From(append([]policytest.Elem{policytest.Pods(policytest.Selector("app", "client"))}, outside...)...)),
		jobOut(policytest.To(append([]policytest.Elem{policytest.Pods(policytest.Selector("app", "web"))}, outside...)...)))
	// Tight: db takes nothing, job reaches nothing.
	tight := append(slices.Clone(base), dbIn(), jobOut())
	e.write(loose...)
	e.start()

	type conn struct {
		from, to string
		next     side // who sends first after the cut
		cut      bool
	}
	conns := []conn{
		{"prod/client", "prod/db", client, true},   // ingress cut, the client sends next
		{"prod/client", "prod/db", server, true},   // ingress cut, the server sends next
		{"prod/job", "prod/web", client, true},     // egress cut, the client sends next
		{"prod/job", "prod/web", server, true},     // egress cut, the server sends next
		{"prod/job", "outside", server, true},      // a reverse shell: the outside end sends next
		{"outside", "prod/db", client, true},       // from outside: the outside end sends next
		{"outside", "prod/db", server, true},       // from outside: the pod answers first
		{"prod/client", "prod/web", client, false}, // untouched
		{"prod/client", "prod/web", server, false}, // untouched
	}
	var ps []*pair
	for _, fam := range []string{"IPv4", "IPv6"} {
		for _, network := range []string{"tcp", "udp"} {
			for _, c := range conns {
				p := e.pair(fam, network, c.from, c.to)
				p.next, p.cut = c.next, c.cut
				ps = append(ps, p)
			}
		}
	}
	cuts := 0
	for _, p := range ps {
		if p.cut {
			cuts++
		}
	}

	before := e.metric("node-1", "podwall_conntrack_revoked_total")
	e.rewrite(tight...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := lab.Poll(ctx, 5*time.Millisecond, func() error {
		if got := e.metric("node-1", "podwall_conntrack_revoked_total") - before; got < float64(cuts) {
			return fmt.Errorf("node-1 revoked %v connections, want %d", got, cuts)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Each connection: the side named sends, then the other side, then the first again.
	var wg sync.WaitGroup
	errs := make([][]error, len(ps))
	for i, p := range ps {
		wg.Go(func() {
			s := p.next
			for range 3 {
				errs[i] = append(errs[i], p.exchange(s, 700*time.Millisecond))
				s = s.other()
			}
		})
	}
	wg.Wait()
	for i, p := range ps {
		for j, err := range errs[i] {
			s := p.next
			if j%2 == 1 {
				s = s.other()
			}
			switch {
			case p.cut && err == nil:
				t.Errorf("%v: cut, but what the %v sent (%d. after the cut) arrived", p, s, j+1)
			case p.cut && !errors.Is(err, errNotArrived):
				t.Errorf("%v: %v sending (%d. after the cut): %v", p, s, j+1, err)
			case !p.cut && err != nil:
				t.Errorf("%v: untouched, but the %v's message (%d.) failed: %v", p, s, j+1, err)
			}
		}
	}
	t.Logf("%d connections cut, %d kept; node-1 counted %v revoked-connection packets dropped",
		cuts, len(ps)-cuts, e.revokedDrops("node-1"))
}

// side is one end of a held connection.
type side int

const (
	client side = iota
	server
)

func (s side) String() string { return [...]string{"client", "server"}[s] }
func (s side) other() side    { return 1 - s }

// pair is one connection whose two ends the test holds, so that either may send next.
type pair struct {
	fam, network, from, to string
	ends                   [2]end // by side
	next                   side
	cut                    bool
}

func (p *pair) String() string {
	return fmt.Sprintf("%s %s %s -> %s (%v sends next)", p.fam, p.network, p.from, p.to, p.next)
}

// end sends and receives on one end of a connection.
type end interface {
	send(b []byte) error
	// recv reads until b has arrived, or fails with errNotArrived when it has not within
	// timeout.
	recv(b []byte, timeout time.Duration) error
	Close() error
}

var errNotArrived = errors.New("not arrived")

// exchange sends a fresh token from side s and reports whether it arrived at the other
// end within timeout (nil: it did).
func (p *pair) exchange(s side, timeout time.Duration) error {
	tok := make([]byte, 16)
	rand.Read(tok)
	if err := p.ends[s].send(tok); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return p.ends[s.other()].recv(tok, timeout)
}

// pair opens a connection from -> to over network, with a server socket of the test's own
// on an ephemeral port of to, checks that a message passes each way, and closes both ends
// when the test ends.
func (e *env) pair(fam, network, from, to string) *pair {
	e.T.Helper()
	p := &pair{fam: fam, network: network, from: from, to: to}
	dst := e.Addr(to, fam)
	var err error
	switch network {
	case "tcp":
		var ln net.Listener
		if err = e.Pods[to].NS.Do(func() (err error) {
			ln, err = net.Listen("tcp", netip.AddrPortFrom(dst, 0).String())
			return err
		}); err != nil {
			e.T.Fatal(err)
		}
		defer ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := lab.Dial(ctx, e.Pods[from].NS, "tcp", netip.MustParseAddrPort(ln.Addr().String()))
		if err != nil {
			e.T.Fatal(err)
		}
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Second))
		s, err := ln.Accept()
		if err != nil {
			c.Close()
			e.T.Fatalf("%s: accept: %v", p, err)
		}
		p.ends = [2]end{&streamEnd{Conn: c}, &streamEnd{Conn: s}}
	case "udp":
		var pc *net.UDPConn
		if err = e.Pods[to].NS.Do(func() (err error) {
			pc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 0)))
			return err
		}); err != nil {
			e.T.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := lab.Dial(ctx, e.Pods[from].NS, "udp", netip.MustParseAddrPort(pc.LocalAddr().String()))
		if err != nil {
			pc.Close()
			e.T.Fatal(err)
		}
		peer := netip.MustParseAddrPort(c.LocalAddr().String())
		p.ends = [2]end{&datagramEnd{pc: c.(*net.UDPConn)}, &datagramEnd{pc: pc, peer: peer}}
	}
	e.T.Cleanup(func() { p.ends[0].Close(); p.ends[1].Close() })
	for _, s := range []side{client, server} {
		if err := p.exchange(s, time.Second); err != nil {
			e.T.Fatalf("%s: before the change, the %v's message: %v", p, s, err)
		}
	}
	return p
}

// streamEnd is one end of a TCP connection.
type streamEnd struct {
	net.Conn
	buf []byte // received, not yet matched
}

func (s *streamEnd) send(b []byte) error {
	s.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := s.Write(b)
	return err
}

func (s *streamEnd) recv(b []byte, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	s.SetReadDeadline(deadline)
	chunk := make([]byte, 1024)
	for !bytes.Contains(s.buf, b) {
		n, err := s.Read(chunk)
		s.buf = append(s.buf, chunk[:n]...)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return errNotArrived
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// datagramEnd is one end of a UDP flow: the client's connected socket (peer invalid), or
// the server's socket and the client's address.
type datagramEnd struct {
	pc   *net.UDPConn
	peer netip.AddrPort
}

func (d *datagramEnd) send(b []byte) error {
	if d.peer.IsValid() {
		_, err := d.pc.WriteToUDPAddrPort(b, d.peer)
		return err
	}
	_, err := d.pc.Write(b)
	return err
}

func (d *datagramEnd) recv(b []byte, timeout time.Duration) error {
	d.pc.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1500)
	for {
		n, _, err := d.pc.ReadFromUDPAddrPort(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return errNotArrived
		}
		if err != nil {
			return err
		}
		if bytes.Equal(buf[:n], b) {
			return nil
		}
	}
}

func (d *datagramEnd) Close() error { return d.pc.Close() }

// revokedDrops returns the packets node's table dropped because their connection was
// revoked (the counter of the ct mark rule), or -1 when the table has no such rule.
func (e *env) revokedDrops(node string) int64 {
	e.T.Helper()
	out, err := e.Nodes[node].Exec(context.Background(), "nft", "list", "chain", "inet", "podwall", "forward").Output()
	if err != nil {
		e.T.Fatalf("nft list chain in %s: %v", node, err)
	}
	for _, line := range bytes.Split(out, []byte("\n")) {
		if bytes.Contains(line, []byte("ct mark")) {
			var n int64
			if i := bytes.Index(line, []byte("packets ")); i >= 0 {
				fmt.Sscan(string(line[i+len("packets "):]), &n)
			}
			return n
		}
	}
	return -1
}
