//go:build linux

package nft

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
)

// BenchmarkEstablishedOrder is what moving the anti-spoofing rule (and adding the revoked
// mark rule) before the established accept costs per forwarded packet: pod a sends small
// datagrams of one established UDP flow to a sink in pod b as fast as it can, through the
// node's forward hook (veth: the forwarding runs in the sender's sendmsg). Variants:
//
//	none:    no table
//	after:   ct state established,related accept; then the fib rule (the old order: an
//	         established packet skips the fib lookup)
//	before:  the fib rule, the ct mark rule, then ct state established,related accept
//	         (this order: every packet from a pod interface pays a fib lookup)
//
// Run them alternated: go test -run '^$' -bench EstablishedOrder -count 5 ./datapath/nft/
func BenchmarkEstablishedOrder(b *testing.B) {
	requireRoot(b)
	l := newPodLab(b)
	const sinkPort = 7778
	var sink *net.UDPConn
	if err := inNS(l.b, func() (err error) {
		sink, err = net.ListenUDP("udp", &net.UDPAddr{Port: sinkPort})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sink.Close() })
	go func() { // answer the first datagram of each flow (conntrack: established), drop the rest
		buf := make([]byte, 1500)
		seen := map[netip.AddrPort]bool{}
		for {
			n, from, err := sink.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if !seen[from] {
				seen[from] = true
				_, _ = sink.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	}()
	rules := map[string]string{
		"after": `ct state established,related accept
			iifname "pw*" fib saddr . iif oif missing counter drop`,
		"before": `iifname "pw*" fib saddr . iif oif missing counter drop
			ct mark & 0x10000000 == 0x10000000 counter drop
			ct state established,related accept`,
	}
	for _, variant := range []string{"none", "after", "before"} {
		b.Run(variant, func(b *testing.B) {
			script := "add table inet pwbench\ndelete table inet pwbench\n"
			if r, ok := rules[variant]; ok {
				script += "table inet pwbench { chain forward { type filter hook forward priority filter + 10; policy accept;\n" + r + "\n}\n}\n"
			}
			if _, err := nftScript(l.nodeName, script); err != nil {
				b.Fatal(err)
			}
			var c *net.UDPConn
			if err := inNS(l.a, func() (err error) {
				c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(l.addrs["b4"], sinkPort)))
				return err
			}); err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg := make([]byte, 64)
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := c.Read(make([]byte, 1500)); err != nil { // established from here on
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// nftScript runs an nft script in namespace ns.
func nftScript(ns, script string) (string, error) {
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("nft -f: %w: %s", err, out)
	}
	return string(out), nil
}
