package e2e

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy/policytest"
)

// A pod cannot inject packets into another pod's established connection: a datagram with
// the victim's address and port, sent by another pod on the same node into the victim's
// open flow to a server, is dropped by the anti-spoofing check, which runs before the
// established accept (once it ran after it, and the forged datagram passed as part of the
// victim's connection). The victim's own datagrams keep arriving.
//
//	node-1: victim, server (ingress-isolated, takes the victim), mallory
func TestSpoofedInjection(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/victim", "app/server", "app/mallory")
	e.write(
		policytest.Namespace("app", nil),
		e.podObject("app/victim", map[string]string{"name": "victim"}),
		e.podObject("app/server", map[string]string{"name": "server"}),
		e.podObject("app/mallory", map[string]string{"name": "mallory"}),
		policytest.NetworkPolicy("app", "server-in", policytest.Selector("name", "server"), policytest.Ingress(
			policytest.From(policytest.Pods(policytest.Selector("name", "victim"))))),
	)
	e.start()
	before := e.queueCounts("node-1")
	for _, fam := range []string{"IPv4", "IPv6"} {
		p := e.pair(fam, "udp", "app/victim", "app/server")
		victim := netip.MustParseAddrPort(p.ends[client].(*datagramEnd).pc.LocalAddr().String())
		srv := netip.MustParseAddrPort(p.ends[server].(*datagramEnd).pc.LocalAddr().String())
		victim = netip.AddrPortFrom(victim.Addr().Unmap(), victim.Port())

		tok := make([]byte, 16)
		rand.Read(tok)
		if err := spoofUDP(e.Pods["app/mallory"].NS, victim, srv, tok); err != nil {
			t.Fatal(err)
		}
		err := p.ends[server].recv(tok, 500*time.Millisecond)
		switch {
		case err == nil:
			t.Errorf("%s: a datagram forged by mallory as %v reached the server inside the victim's flow", fam, victim)
		case !errors.Is(err, errNotArrived):
			t.Fatal(err)
		}
		if err := p.exchange(client, time.Second); err != nil {
			t.Errorf("%s: the victim's own datagram after the forgery: %v", fam, err)
		}
	}
	if q := e.queueCounts("node-1").sub(before); q.Spoofed != 2 {
		t.Errorf("node-1 counters: %v; want 2 spoofed (one per family)", q)
	}
}

// spoofUDP sends one UDP datagram with payload from the namespace, with the forged source
// src, on a raw socket that carries its own IP header (so the kernel neither checks nor
// replaces the source).
func spoofUDP(from *lab.NS, src, dst netip.AddrPort, payload []byte) error {
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	var ip gopacket.SerializableLayer
	family := syscall.AF_INET
	var sa syscall.Sockaddr
	if src.Addr().Is4() {
		v4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
			SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
		udp.SetNetworkLayerForChecksum(v4)
		ip, sa = v4, &syscall.SockaddrInet4{Addr: dst.Addr().As4()}
	} else {
		v6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP,
			SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
		udp.SetNetworkLayerForChecksum(v6)
		family = syscall.AF_INET6
		ip, sa = v6, &syscall.SockaddrInet6{Addr: dst.Addr().As16()}
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, udp, gopacket.Payload(payload)); err != nil {
		return err
	}
	fd := -1
	if err := from.Do(func() (err error) {
		fd, err = syscall.Socket(family, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.IPPROTO_RAW)
		return err
	}); err != nil {
		return fmt.Errorf("spoof from %s: raw socket: %w", from, err)
	}
	defer syscall.Close(fd)
	if err := syscall.Sendto(fd, buf.Bytes(), 0, sa); err != nil {
		return fmt.Errorf("spoof from %s: %v → %v: %w", from, src, dst, err)
	}
	return nil
}
