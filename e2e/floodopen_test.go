package e2e

import (
	"context"
	byteorder "encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy/policytest"
)

// A full queue under --fail-open accepts by definition (the kernel's NFQA_CFG_F_FAIL_OPEN):
// what a flood pushes into the queue faster than the agent empties it reaches the victim
// unjudged. The deny cache is what keeps a flood of one denied flow out of the queue. This
// test floods a victim whose policy denies the attacker, from a pod of the lab, with the
// agent failing open and the deny cache on (the default), and measures where the packets
// went: dropped by the deny cache, queued and judged (denied), or accepted by the full
// queue — which it counts on arrival, in the victim's own namespace. Every packet that
// arrives is one the queue accepted unjudged (queued by the rules, never read by the
// agent): the accounting must close. A flood of one denied flow, repeated SYNs or repeated
// datagrams, reaches the queue for at most 5 % of its packets (what arrives before the
// kernel holds the flow's element). The figures go to bench/README.md ("Deny cache under
// a flood, failing open"); set PODWALL_FLOOD_PACKETS to change the flood size (default
// 100,000).
//
//	node-1: attacker, victim (ingress: client on 80/TCP), client
func TestFloodFailOpen(t *testing.T) {
	if testing.Short() {
		t.Skip("a flood: not in -short")
	}
	packets := 100_000
	if s := os.Getenv("PODWALL_FLOOD_PACKETS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("PODWALL_FLOOD_PACKETS: %v", err)
		}
		packets = n
	}
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/attacker", "app/victim", "app/client")
	e.write(policytest.Namespace("app", nil),
		e.podObject("app/attacker", nil), e.podObject("app/victim", map[string]string{"app": "victim"}),
		e.podObject("app/client", map[string]string{"app": "client"}),
		policytest.NetworkPolicy("app", "victim", policytest.Selector("app", "victim"), policytest.Ingress(policytest.From(
			policytest.Pods(policytest.Selector("app", "client")), policytest.Port("80/TCP")))))
	e.Serve(80)
	attacker, victim := e.Pods["app/attacker"], e.Pods["app/victim"]
	arrivals := countArrivals(t, victim, attacker.IPv4)
	e.start("--fail-open")

	for _, flood := range []struct {
		name    string
		proto   string
		oneFlow bool
		send    func() (int, error)
	}{
		{"SYN flood, one denied port", "tcp", true, func() (int, error) { return synFloodTo(attacker, victim.IPv4, 3306, packets) }},
		{"UDP flood, one denied port", "udp", true, func() (int, error) { return udpFlood(attacker, victim.IPv4, 81, packets) }},
		{"SYN flood, random ports", "tcp", false, func() (int, error) { return synFloodTo(attacker, victim.IPv4, 0, packets) }},
	} {
		t.Run(flood.name, func(t *testing.T) {
			e := e.sub(t)
			q0, qs0 := e.queueCounts("node-1"), e.queueStats("node-1")
			hits0 := e.metric("node-1", "podwall_datapath_deny_cache_hits_total")
			arrived0 := arrivals(flood.proto)
			sent, err := flood.send()
			if err != nil {
				t.Fatal(err)
			}
			e.drained("node-1", q0.Agent)
			q := e.queueCounts("node-1").sub(q0)
			var qdrop, udrop uint64
			for i, s := range e.queueStats("node-1") {
				if i < len(qs0) && qs0[i].Queue == s.Queue && qs0[i].PortID == s.PortID {
					qdrop += s.Dropped - qs0[i].Dropped
					udrop += s.UserDropped - qs0[i].UserDropped
				}
			}
			hits := uint64(e.metric("node-1", "podwall_datapath_deny_cache_hits_total") - hits0)
			arrived := arrivals(flood.proto) - arrived0
			t.Logf("fail open, deny cache on: sent %d; dropped by the deny cache %d (%.2f %%); queued by the rules %d (%.2f %%); agent read and denied %d; accepted by the full queue, arrived at the victim %d (%.2f %% of sent); queue drops %d, socket drops %d",
				sent, hits, pct(hits, sent), q.Queued(), pct(q.Queued(), sent), q.Agent, arrived, pct(arrived, sent), qdrop, udrop)
			if q.Queued() != q.Agent+arrived+qdrop+udrop {
				t.Errorf("accounting: queued %d ≠ read %d + arrived unjudged %d + dropped %d + %d", q.Queued(), q.Agent, arrived, qdrop, udrop)
			}
			if hits+q.Queued() < uint64(sent)*9/10 {
				t.Errorf("only %d + %d of %d flood packets reached the deny cache or the queue rules", hits, q.Queued(), sent)
			}
			if flood.oneFlow && q.Queued() > uint64(sent)/20 {
				t.Errorf("%d of %d packets of one denied flow reached the queue; want at most 5 %%", q.Queued(), sent)
			}
			// Afterwards the agent judges again at once.
			e.check(
				probe{from: "app/client", to: "app/victim", port: 80, allow: true},
				probe{from: "app/attacker", to: "app/victim", port: 80, allow: false},
			)
		})
	}
}

func pct(n uint64, of int) float64 { return 100 * float64(n) / float64(max(of, 1)) }

// countArrivals counts, in p's namespace (an nft table of the test's own, at prerouting),
// the IPv4 packets from src per protocol; the returned func reads the count for "tcp" or
// "udp".
func countArrivals(t *testing.T, p *lab.Pod, src netip.Addr) func(proto string) uint64 {
	t.Helper()
	script := fmt.Sprintf(`table ip arrivals {
	chain pre {
		type filter hook prerouting priority -500; policy accept;
		ip saddr %[1]s meta l4proto tcp counter comment "tcp"
		ip saddr %[1]s meta l4proto udp counter comment "udp"
	}
}
`, src)
	cmd := p.NS.Exec(context.Background(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v: %s", p.NS, err, out)
	}
	re := regexp.MustCompile(`counter packets (\d+) bytes \d+ comment "(tcp|udp)"`)
	return func(proto string) uint64 {
		out, err := p.NS.Exec(context.Background(), "nft", "list", "chain", "ip", "arrivals", "pre").Output()
		if err != nil {
			t.Fatalf("nft list in %s: %v", p.NS, err)
		}
		for _, m := range re.FindAllStringSubmatch(string(out), -1) {
			if m[2] == proto {
				n, _ := strconv.ParseUint(m[1], 10, 64)
				return n
			}
		}
		t.Fatalf("no %s counter in:\n%s", proto, out)
		return 0
	}
}

// synFloodTo sends n TCP SYNs from p to dst from random source ports with random sequence
// numbers, to port, or to random ports when port is 0, on a raw socket, as fast as it can;
// it returns how many the kernel took.
func synFloodTo(p *lab.Pod, dst netip.Addr, port uint16, n int) (sent int, err error) {
	src := p.IPv4
	err = p.Do(func() error {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		// IPv4 (the kernel fills in the length, id and checksum) and TCP, 40 bytes.
		pkt := make([]byte, 40)
		pkt[0], pkt[8], pkt[9] = 0x45, 64, syscall.IPPROTO_TCP
		s4, d4 := src.As4(), dst.As4()
		copy(pkt[12:16], s4[:])
		copy(pkt[16:20], d4[:])
		tcp := pkt[20:]
		tcp[12], tcp[13] = 5<<4, 0x02 // data offset 5 words; SYN
		byteorder.BigEndian.PutUint16(tcp[14:], 64240)
		sa := &syscall.SockaddrInet4{Addr: d4}
		rng := rand.New(rand.NewPCG(3, 4))
		for range n {
			dport := port
			if dport == 0 {
				dport = uint16(1 + rng.IntN(65535))
			}
			byteorder.BigEndian.PutUint16(tcp[0:], uint16(1024+rng.IntN(64000)))
			byteorder.BigEndian.PutUint16(tcp[2:], dport)
			byteorder.BigEndian.PutUint32(tcp[4:], rng.Uint32())
			byteorder.BigEndian.PutUint16(tcp[16:], 0)
			byteorder.BigEndian.PutUint16(tcp[16:], tcpChecksum(s4, d4, tcp))
			if err := syscall.Sendto(fd, pkt, 0, sa); err != nil {
				if err == syscall.ENOBUFS || err == syscall.EAGAIN {
					continue
				}
				return err
			}
			sent++
		}
		return nil
	})
	return sent, err
}
