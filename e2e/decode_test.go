package e2e

import (
	"context"
	be "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/datapath/packet"
	"github.com/podwall/podwall/policy/policytest"
)

// Nothing undecodable passes: a SYN crafted so that a decoder stricter than the kernel
// calls it malformed — a TCP option of length 1, an unknown IPv4 option of length 2, IPv6
// extension headers pushing TCP past a short copy range — is judged by its ports like any
// other, on real packets through the kernel, failing closed and failing open: to a denied
// port it is dropped, to an allowed port it arrives. The agent counts none of them
// malformed: it reads them as the kernel forwards them. A SYN whose TCP header length is
// below 20 bytes, which no receiver takes (the kernel forwards it, conntrack marks it
// invalid), is dropped to both ports in both modes and counted malformed: failing open is
// about the agent's availability, not a verdict a packet's bytes can choose. A SYN sent in
// two fragments, the second without a TCP header, reaches the agent once, whole (conntrack
// reassembles fragments before the forward hook): judged by its ports, never as a later
// fragment.
//
//	node-1: server (ingress: TCP 80 only), client
func TestOddHeaders(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/server", "app/client")
	e.write(
		policytest.Namespace("app", nil),
		e.podObject("app/server", map[string]string{"name": "server"}),
		e.podObject("app/client", nil),
		policytest.NetworkPolicy("app", "web-only", policytest.Selector("name", "server"), policytest.Ingress(
			policytest.From(policytest.Port("80/TCP")))),
	)
	const allowed, denied = 80, 3306
	traps := map[uint16]*lab.SYNTrap{}
	for _, port := range []uint16{allowed, denied} {
		trap, err := lab.TrapSYN(e.Pods["app/server"].NS, port)
		if err != nil {
			t.Fatal(err)
		}
		traps[port] = trap
	}
	client, server := e.Pods["app/client"], e.Pods["app/server"]
	crafts := []struct {
		name string
		v6   bool
		// opts4 are IPv4 option bytes, tcpOpts TCP option bytes (multiples of 4); ext6 the
		// IPv6 extension headers between the IPv6 header and TCP (next header filled in).
		opts4, tcpOpts []byte
		ext6           [][]byte
		// unreadable: a TCP data offset of 4 words: dropped and counted malformed.
		unreadable bool
		// fragmented: the SYN carries 16 bytes of data and is sent in two fragments, the
		// second holding no TCP header; conntrack reassembles them before the forward hook,
		// so the agent judges the whole datagram once, by its ports.
		fragmented bool
	}{
		{name: "TCP option of length 1", tcpOpts: []byte{0xfe, 1, 1, 1}},
		{name: "unknown IPv4 option of length 2", opts4: []byte{0x1e, 2, 1, 0}},
		{name: "IPv6 TCP option of length 1", v6: true, tcpOpts: []byte{0xfe, 1, 1, 1}},
		{name: "IPv6 hop-by-hop, routing, 200 bytes of destination options (TCP at byte 272)", v6: true,
			ext6: [][]byte{hopByHopPad(), routing253(), destOpts200()}},
		{name: "TCP header length 16", unreadable: true},
		{name: "IPv6 TCP header length 16", v6: true, unreadable: true},
		{name: "SYN in two IPv4 fragments", fragmented: true},
		{name: "SYN in two IPv6 fragments", v6: true, fragmented: true},
	}
	send := func(t *testing.T, failOpen bool) {
		before := e.queueCounts("node-1")
		malformed := e.metric("node-1", "podwall_datapath_malformed_total")
		// Send every SYN, then wait for them together: a drop shows as a SYN that has not
		// arrived when the shared deadline passes.
		type sent struct {
			name   string
			syn    lab.SpoofedSYN
			arrive bool
		}
		var all []sent
		for _, c := range crafts {
			for _, port := range []uint16{allowed, denied} {
				src, dst := client.IPv4, server.IPv4
				if c.v6 {
					src, dst = client.IPv6, server.IPv6
				}
				syn := lab.SpoofedSYN{Src: netip.AddrPortFrom(src, uint16(32768+rand.IntN(28000))),
					Dst: netip.AddrPortFrom(dst, port), Seq: rand.Uint32()}
				doff := 0
				if c.unreadable {
					doff = 4
				}
				var data []byte
				if c.fragmented {
					data = make([]byte, 16)
				}
				pkt := craftSYN(syn, c.opts4, c.tcpOpts, c.ext6, doff, data)
				pkts := [][]byte{pkt}
				if c.fragmented {
					pkts = fragment(pkt)
				}
				for _, pkt := range pkts {
					if err := sendRaw(client.NS, dst, pkt); err != nil {
						t.Fatal(err)
					}
				}
				all = append(all, sent{c.name, syn, port == allowed && !c.unreadable})
			}
		}
		deadline := time.Now().Add(time.Second)
		for _, s := range all {
			err := traps[s.syn.Dst.Port()].Wait(context.Background(), s.syn, max(time.Until(deadline), time.Millisecond))
			if got := err == nil; got != s.arrive {
				t.Errorf("failOpen=%v: %s to port %d: arrived=%v, want %v", failOpen, s.name, s.syn.Dst.Port(), got, s.arrive)
			}
		}
		q := e.queueCounts("node-1").sub(before)
		if want := uint64(2 * len(crafts)); q.Queued() != want || q.Agent != want {
			t.Errorf("failOpen=%v: %v, want all %d crafted SYNs queued and read", failOpen, q, want)
		}
		unreadable := 0
		for _, c := range crafts {
			if c.unreadable {
				unreadable += 2
			}
		}
		if got := e.metric("node-1", "podwall_datapath_malformed_total") - malformed; got != float64(unreadable) {
			t.Errorf("failOpen=%v: the agent counted %v of them malformed, want %d (the unreadable ones)", failOpen, got, unreadable)
		}
	}
	// The deny cache off: every crafted SYN reaches the agent, none is dropped for an earlier.
	e.start("--deny-cache-ttl=0")
	t.Run("fail closed", func(t *testing.T) { send(t, false) })
	if err := e.Agents["node-1"].Stop(syscall.SIGTERM, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	e.startOn("node-1", "--deny-cache-ttl=0", "--fail-open")
	t.Run("fail open", func(t *testing.T) { send(t, true) })
}

// craftSYN builds syn's packet with raw IPv4 options, TCP options or IPv6 extension headers,
// with correct lengths and TCP checksum: what gopacket would refuse to build or decode. A
// doff other than 0 replaces the TCP data offset (in 4-byte words); data follows the
// header.
func craftSYN(syn lab.SpoofedSYN, opts4, tcpOpts []byte, ext6 [][]byte, doff int, data []byte) []byte {
	tcp := make([]byte, 20, 20+len(tcpOpts))
	be.BigEndian.PutUint16(tcp[0:], syn.Src.Port())
	be.BigEndian.PutUint16(tcp[2:], syn.Dst.Port())
	be.BigEndian.PutUint32(tcp[4:], syn.Seq)
	if doff == 0 {
		doff = 5 + len(tcpOpts)/4
	}
	tcp[12] = byte(doff) << 4
	tcp[13] = 0x02 // SYN
	be.BigEndian.PutUint16(tcp[14:], 64240)
	tcp = append(append(tcp, tcpOpts...), data...)
	src, dst := syn.Src.Addr(), syn.Dst.Addr()
	// The pseudo-header checksum (RFC 793, RFC 8200 section 8.1).
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(be.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src.AsSlice())
	add(dst.AsSlice())
	sum += 6 + uint32(len(tcp))
	add(tcp)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	be.BigEndian.PutUint16(tcp[16:], ^uint16(sum))

	if src.Is4() {
		ip := make([]byte, 20, 20+len(opts4))
		ip[0] = 0x40 | byte(5+len(opts4)/4)
		be.BigEndian.PutUint16(ip[2:], uint16(20+len(opts4)+len(tcp)))
		be.BigEndian.PutUint16(ip[4:], uint16(rand.Uint32()))
		ip[8], ip[9] = 64, 6
		copy(ip[12:], src.AsSlice())
		copy(ip[16:], dst.AsSlice())
		ip = append(ip, opts4...) // the kernel fills in the header checksum (IP_HDRINCL)
		return append(ip, tcp...)
	}
	ip := make([]byte, 40)
	ip[0] = 0x60
	ip[7] = 64
	copy(ip[8:], src.AsSlice())
	copy(ip[24:], dst.AsSlice())
	next := &ip[6]
	for _, h := range ext6 {
		*next = h[0] // the header's own type, kept in its first byte until chained
		ip = append(ip, h...)
		next = &ip[len(ip)-len(h)]
	}
	*next = 6
	ip = append(ip, tcp...)
	be.BigEndian.PutUint16(ip[4:], uint16(len(ip)-40))
	return ip
}

// fragment splits an unfragmented IPv4 packet without options, or an IPv6 packet without
// extension headers, in two fragments: the first holds the IP header and the first 24 bytes
// after it (the TCP header and 4 bytes of data), the second the rest.
func fragment(pkt []byte) [][]byte {
	const first = 24
	id := rand.Uint32() | 1
	if pkt[0]>>4 == 4 {
		h, l4 := pkt[:20], pkt[20:]
		f1 := slices.Concat(h, l4[:first])
		f2 := slices.Concat(h, l4[first:])
		be.BigEndian.PutUint16(f1[2:], uint16(len(f1)))
		be.BigEndian.PutUint16(f2[2:], uint16(len(f2)))
		be.BigEndian.PutUint16(f1[4:], uint16(id))
		be.BigEndian.PutUint16(f2[4:], uint16(id))
		be.BigEndian.PutUint16(f1[6:], 0x2000)  // more fragments, offset 0
		be.BigEndian.PutUint16(f2[6:], first/8) // offset 24 bytes, last
		return [][]byte{f1, f2}
	}
	h, l4 := slices.Clone(pkt[:40]), pkt[40:]
	next := h[6]
	h[6] = 44
	fh := func(offset uint16, more bool) []byte {
		b := make([]byte, 8)
		b[0] = next
		v := offset
		if more {
			v |= 1
		}
		be.BigEndian.PutUint16(b[2:], v)
		be.BigEndian.PutUint32(b[4:], id)
		return b
	}
	f1 := slices.Concat(h, fh(0, true), l4[:first])
	f2 := slices.Concat(h, fh(first, false), l4[first:])
	be.BigEndian.PutUint16(f1[4:], uint16(len(f1)-40))
	be.BigEndian.PutUint16(f2[4:], uint16(len(f2)-40))
	return [][]byte{f1, f2}
}

// The IPv6 extension headers of the crafted SYNs, each with its own type in its first byte
// (craftSYN chains them). The receiving kernel takes all three: padding within RFC 8200's
// limits, a routing type it does not know with no segments left (skipped), unknown options
// whose type says "skip".
func hopByHopPad() []byte { return []byte{0, 0, 1, 4, 0, 0, 0, 0} } // PadN of 6

func routing253() []byte {
	h := make([]byte, 24)
	h[0], h[1], h[2], h[3] = 43, 2, 253, 0 // hdr ext len 2, type 253 (experimental), segments left 0
	return h
}

func destOpts200() []byte {
	h := make([]byte, 200)
	h[0], h[1] = 60, 200/8-1
	h[2], h[3] = 0x1e, 96     // experimental option (RFC 4727), action "skip"
	h[100], h[101] = 0x1e, 98 // and another: 2 + 98 + 100 = 200
	return h
}

// sendRaw sends pkt, a whole IP packet, from the namespace on a raw socket that carries
// its own IP header (IPPROTO_RAW implies IP_HDRINCL): the kernel sends the headers as built.
func sendRaw(from *lab.NS, dst netip.Addr, pkt []byte) error {
	family := syscall.AF_INET6
	var sa syscall.Sockaddr = &syscall.SockaddrInet6{Addr: dst.As16()}
	if dst.Is4() {
		family, sa = syscall.AF_INET, &syscall.SockaddrInet4{Addr: dst.As4()}
	}
	fd := -1
	if err := from.Do(func() (err error) {
		fd, err = syscall.Socket(family, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.IPPROTO_RAW)
		return err
	}); err != nil {
		return fmt.Errorf("raw socket in %s: %w", from, err)
	}
	defer syscall.Close(fd)
	if err := syscall.Sendto(fd, slices.Clone(pkt), 0, sa); err != nil {
		return fmt.Errorf("send from %s to %v: %w", from, dst, err)
	}
	return nil
}

// The decoder reads what the kernel reads: every packet of datapath/packet's fuzz corpus
// (and, with $PODWALL_DECODE_CORPUS, every file of another corpus directory, such as the
// one a local fuzz run leaves in $(go env GOCACHE)/fuzz) is sent from a lab pod on a raw
// socket, and an nft chain at the output hook records what nft makes of it — meta l4proto,
// and meta l4proto . th dport, the fields the deny cache keys on and the transport header
// the destination reads — before dropping it. Wherever Decode reads ports, the kernel read
// the same protocol and destination port; wherever the kernel found a protocol, Decode
// found the same (when it succeeded) — but for IPv6 AH, where nft stops and Decode, like
// conntrack and the receiver, goes on to the transport header. Packets the sending kernel refuses (a raw IPv4 header
// longer than the packet, say) are skipped; the kernel sets the IP length fields itself, so
// the packets are compared as sent.
func TestDecodeAgreesWithKernel(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/sender")
	ext := e.AddExternal("outside", 1, "node-1")
	p := e.Pods["app/sender"]
	script := fmt.Sprintf(`table inet view {
	set seen { type inet_proto . inet_service; size 65535; }
	set l4 { type inet_proto; size 65535; }
	chain out {
		type filter hook output priority -300; policy accept;
		ip saddr %s ip daddr %s jump look
		ip6 saddr %s ip6 daddr %s jump look
	}
	chain look {
		add @l4 { meta l4proto }
		add @seen { meta l4proto . th dport }
		drop
	}
}
`, p.IPv4, ext.IPv4, p.IPv6, ext.IPv6)
	nft := func(stdin string, args ...string) []byte {
		cmd := p.NS.Exec(context.Background(), "nft", args...)
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nft %v in %s: %v: %s", args, p.NS, err, out)
		}
		return out
	}
	nft(script, "-f", "-")

	dirs := []string{filepath.Join("..", "datapath", "packet", "testdata", "fuzz", "FuzzDecode")}
	if d := os.Getenv("PODWALL_DECODE_CORPUS"); d != "" {
		dirs = append(dirs, d)
	}
	var pkts [][]byte
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no corpus in %s: %v", dir, err)
		}
		for _, f := range files {
			pkts = append(pkts, readCorpusFile(t, f))
		}
	}
	dec := packet.NewDecoder()
	compared, withPorts, ah := 0, 0, 0
	for _, orig := range pkts {
		pkt, dst, ok := asSentFrom(orig, p, ext)
		if !ok {
			continue
		}
		nft("", "flush", "set", "inet", "view", "seen")
		nft("", "flush", "set", "inet", "view", "l4")
		// EPERM is the look chain's drop; any other error, the sending kernel refusing it.
		if err := sendRaw(p.NS, dst, pkt); err != nil && !errors.Is(err, syscall.EPERM) {
			continue
		}
		l4, seen := kernelView(t, nft("", "-nn", "-j", "list", "set", "inet", "view", "l4")),
			kernelView(t, nft("", "-nn", "-j", "list", "set", "inet", "view", "seen"))
		var d packet.Parsed
		err := dec.Decode(pkt, &d)
		compared++
		if pkt[0]>>4 == 6 && len(l4) == 1 && l4[0][0] == 51 && d.Proto != 51 {
			// nft stops at an IPv6 AH header (it calls ipv6_find_hdr with
			// IP6_FH_F_AUTH): its meta l4proto is 51; conntrack and the receiver skip
			// it, and so does Decode (packet.Decoder). Such a packet never matches the
			// deny cache, so each one is queued and judged.
			ah++
			continue
		}
		switch {
		case err == nil && d.HasPorts():
			withPorts++
			if want := [2]int{int(d.Proto), int(d.DstPort)}; len(seen) != 1 || seen[0] != want {
				t.Errorf("packet %x: Decode reads %v, the kernel's meta l4proto . th dport %v", pkt, d.String(), seen)
			}
		case err == nil && len(l4) == 1 && l4[0][0] != int(d.Proto):
			t.Errorf("packet %x: Decode reads protocol %d, the kernel's meta l4proto %v", pkt, d.Proto, l4)
		}
	}
	t.Logf("%d packets compared with the kernel's view, %d with ports; %d behind an IPv6 AH header, where nft stops", compared, withPorts, ah)
	if withPorts < 20 {
		t.Errorf("only %d packets with ports compared: the corpus or the sending broke", withPorts)
	}
}

// asSentFrom returns pkt with its addresses replaced by p's (source) and ext's
// (destination), and its length field as the sending kernel sets it, or false when pkt is
// not a packet a raw socket of its family sends.
func asSentFrom(pkt []byte, p, ext *lab.Pod) ([]byte, netip.Addr, bool) {
	pkt = slices.Clone(pkt)
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4 && int(pkt[0]&0xf)*4 >= 20 && int(pkt[0]&0xf)*4 <= len(pkt):
		copy(pkt[12:16], p.IPv4.AsSlice())
		copy(pkt[16:20], ext.IPv4.AsSlice())
		be.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		return pkt, ext.IPv4, true
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		copy(pkt[8:24], p.IPv6.AsSlice())
		copy(pkt[24:40], ext.IPv6.AsSlice())
		be.BigEndian.PutUint16(pkt[4:], uint16(len(pkt)-40))
		return pkt, ext.IPv6, true
	}
	return nil, netip.Addr{}, false
}

// kernelView reads the elements of a set listed by `nft -nn -j`: numbers, or
// concatenations of two numbers.
func kernelView(t *testing.T, out []byte) [][2]int {
	t.Helper()
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("nft -j: %v: %s", err, out)
	}
	var elems [][2]int
	for _, o := range doc.Nftables {
		if o.Set == nil {
			continue
		}
		for _, raw := range o.Set.Elem {
			var n int
			if json.Unmarshal(raw, &n) == nil {
				elems = append(elems, [2]int{n, -1})
				continue
			}
			var c struct {
				Concat []int `json:"concat"`
			}
			if err := json.Unmarshal(raw, &c); err != nil || len(c.Concat) != 2 {
				t.Fatalf("set element %s: %v", raw, err)
			}
			elems = append(elems, [2]int{c.Concat[0], c.Concat[1]})
		}
	}
	return elems
}

// readCorpusFile reads a Go fuzz corpus file of one []byte value.
func readCorpusFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	_, lit, ok := strings.Cut(strings.TrimSpace(string(b)), "\n")
	lit, ok2 := strings.CutPrefix(strings.TrimSpace(lit), "[]byte(")
	lit, ok3 := strings.CutSuffix(lit, ")")
	s, err := strconv.Unquote(lit)
	if !ok || !ok2 || !ok3 || err != nil {
		t.Fatalf("%s: not a corpus file of one []byte: %v", name, err)
	}
	return []byte(s)
}
