package packet

import (
	"bytes"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/podwall/podwall/policy/flow"
)

type decodeCase struct {
	name string
	pkt  []byte
	// want is the decoded header. A zero want.Length stands for len(pkt),
	// the declared length of a packet captured whole.
	want Parsed
	err  error
}

// v4 and v6 fill in the IP header fields of a want.
func v4(p Parsed) Parsed { p.Family, p.Src, p.Dst = 4, pod4a, pod4b; return p }
func v6(p Parsed) Parsed { p.Family, p.Src, p.Dst = 6, pod6a, pod6b; return p }

// A TCP SYN to a web server carrying 1000 bytes, for the truncation cases.
var (
	bigSYN4 = build(ip4(layers.IPProtocolTCP), syn(40000, 80), payload(1000))
	bigSYN6 = build(ip6(layers.IPProtocolIPv6HopByHop), hopByHop(layers.IPProtocolTCP), syn(40000, 80), payload(1000))
)

func decodeCases() []decodeCase {
	tcpSYN := Parsed{Proto: flow.TCP, SrcPort: 40000, DstPort: 80, TCPFlags: TCPSyn}
	return []decodeCase{
		// IPv4: each L4 protocol.
		{name: "v4 TCP SYN", pkt: build(ip4(layers.IPProtocolTCP), syn(40000, 80)), want: v4(tcpSYN)},
		{name: "v4 TCP SYN+ACK with payload", pkt: build(ip4(layers.IPProtocolTCP),
			&layers.TCP{SrcPort: 80, DstPort: 40000, SYN: true, ACK: true}, payload(10)),
			want: v4(Parsed{Proto: flow.TCP, SrcPort: 80, DstPort: 40000, TCPFlags: TCPSyn | TCPAck})},
		{name: "v4 UDP DNS (stops at UDP)", pkt: build(ip4(layers.IPProtocolUDP), udp(5353, 53), payload(30)),
			want: v4(Parsed{Proto: flow.UDP, SrcPort: 5353, DstPort: 53})},
		{name: "v4 SCTP", pkt: build(ip4(layers.IPProtocolSCTP), sctp(5000, 3868), payload(16)),
			want: v4(Parsed{Proto: flow.SCTP, SrcPort: 5000, DstPort: 3868})},
		{name: "v4 ICMP echo request", pkt: build(ip4(layers.IPProtocolICMPv4), icmp4(8, 0), payload(56)),
			want: v4(Parsed{Proto: flow.ICMP, ICMPType: 8})},
		{name: "v4 ICMP port unreachable", pkt: build(ip4(layers.IPProtocolICMPv4), icmp4(3, 3), payload(28)),
			want: v4(Parsed{Proto: flow.ICMP, ICMPType: 3, ICMPCode: 3})},
		{name: "v4 with IP options", pkt: build(&layers.IPv4{Version: 4, IHL: 6, TTL: 1, Protocol: layers.IPProtocolTCP,
			SrcIP: pod4a.AsSlice(), DstIP: pod4b.AsSlice(),
			Options: []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}}, // router alert
			syn(40000, 80)),
			want: v4(tcpSYN)},

		// Options are the kernel's business, not the verdict's: it forwards
		// packets whose TCP options or unknown IPv4 options gopacket
		// rejects, so Decode reads the ports behind them all the same.
		{name: "v4 TCP option of length 1", pkt: synWithOptions(ip4(layers.IPProtocolTCP), 3306, []byte{0xfe, 1, 1, 1}),
			want: v4(Parsed{Proto: flow.TCP, SrcPort: 40000, DstPort: 3306, TCPFlags: TCPSyn})},
		{name: "v4 TCP option of length 0", pkt: synWithOptions(ip4(layers.IPProtocolTCP), 3306, []byte{2, 0, 1, 1}),
			want: v4(Parsed{Proto: flow.TCP, SrcPort: 40000, DstPort: 3306, TCPFlags: TCPSyn})},
		{name: "v4 TCP option overruns the header", pkt: synWithOptions(ip4(layers.IPProtocolTCP), 3306, []byte{8, 40, 0, 0}),
			want: v4(Parsed{Proto: flow.TCP, SrcPort: 40000, DstPort: 3306, TCPFlags: TCPSyn})},
		{name: "v4 unknown IP option of length 2", pkt: build(ipv4WithOptions(layers.IPProtocolTCP, []byte{0x1e, 2, 1, 0}), syn(40000, 3306)),
			want: v4(Parsed{Proto: flow.TCP, SrcPort: 40000, DstPort: 3306, TCPFlags: TCPSyn})},
		{name: "v4 IP option overruns the header", pkt: build(ipv4WithOptions(layers.IPProtocolUDP, []byte{148, 9, 0, 0}), udp(1, 2)),
			want: v4(Parsed{Proto: flow.UDP, SrcPort: 1, DstPort: 2})},
		{name: "v4 40 bytes of IP options, 40 of TCP options", pkt: synWithOptions(
			ipv4WithOptions(layers.IPProtocolTCP, append(bytes.Repeat([]byte{1}, 36), 0x1e, 2, 0, 0)), 3306,
			append(bytes.Repeat([]byte{1}, 38), 0xfe, 1)),
			want: v4(Parsed{Proto: flow.TCP, SrcPort: 40000, DstPort: 3306, TCPFlags: TCPSyn})},

		// IPv4: protocols without an L4 header that we read are not errors.
		{name: "v4 GRE", pkt: build(ip4(layers.IPProtocolGRE), payload(24)), want: v4(Parsed{Proto: 47})},
		{name: "v4 IP-in-IP keeps the outer header", pkt: build(ip4(layers.IPProtocolIPv4),
			&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: []byte{192, 0, 2, 1}, DstIP: []byte{192, 0, 2, 2}},
			syn(1, 2)),
			want: v4(Parsed{Proto: 4})},
		{name: "v4 IPv6 hop-by-hop number is not an extension header in IPv4", pkt: build(ip4(0), hopByHop(layers.IPProtocolTCP), syn(1, 2)),
			want: v4(Parsed{Proto: 0})},

		// IPv4 fragments: the first carries ports, later ones carry none.
		{name: "v4 first fragment", pkt: build(frag4(layers.IPProtocolTCP, 0, true), syn(40000, 80), payload(64)),
			want: v4(Parsed{Proto: flow.TCP, SrcPort: 40000, DstPort: 80, TCPFlags: TCPSyn, Fragment: FirstFragment})},
		{name: "v4 later fragment", pkt: build(frag4(layers.IPProtocolTCP, 1480, false), payload(40)),
			want: v4(Parsed{Proto: flow.TCP, Fragment: LaterFragment})},
		{name: "v4 later fragment whose payload looks like TCP", pkt: build(frag4(layers.IPProtocolTCP, 8, true), syn(40000, 80)),
			want: v4(Parsed{Proto: flow.TCP, Fragment: LaterFragment})},
		{name: "v4 first fragment too short for the TCP header (RFC 1858)", pkt: build(frag4(layers.IPProtocolTCP, 0, true), payload(8)),
			err: ErrMalformed},

		// IPv4 captures cut short by the NFQUEUE copy range.
		{name: "v4 capture ends after the TCP header", pkt: bigSYN4[:60],
			want: v4(Parsed{Proto: flow.TCP, SrcPort: 40000, DstPort: 80, TCPFlags: TCPSyn, Length: 1060})},
		{name: "v4 capture ends in the TCP options: they are not needed", pkt: bigSYN4[:50],
			want: v4(Parsed{Proto: flow.TCP, SrcPort: 40000, DstPort: 80, TCPFlags: TCPSyn, Length: 1060})},
		{name: "v4 capture ends in the fixed TCP header", pkt: bigSYN4[:39], err: ErrTruncated},
		{name: "v4 capture ends after the IP header", pkt: bigSYN4[:20], err: ErrTruncated},
		{name: "v4 capture ends in the IP header", pkt: bigSYN4[:12], err: ErrTruncated},

		// IPv4 malformed headers.
		{name: "empty", pkt: nil, err: ErrTruncated},
		{name: "IP version 5", pkt: tweak(bigSYN4[:60], func(b []byte) { b[0] = 0x55 }), err: ErrMalformed},
		{name: "v4 IHL below 5", pkt: tweak(bigSYN4, func(b []byte) { b[0] = 0x44 }), err: ErrMalformed},
		{name: "v4 total length below IHL", pkt: tweak(bigSYN4, func(b []byte) { b[2], b[3] = 0, 19 }), err: ErrMalformed},
		{name: "v4 header only, total length says so", pkt: build(ip4(layers.IPProtocolTCP)), err: ErrMalformed},
		{name: "v4 TCP data offset below 5", pkt: tweak(bigSYN4, func(b []byte) { b[32] = 0x40 }), err: ErrMalformed},
		{name: "v4 TCP data offset beyond the datagram", pkt: tweak(build(ip4(layers.IPProtocolTCP), syn(40000, 80)),
			func(b []byte) { b[32] = 0xf0 }), err: ErrMalformed},
		{name: "v4 TCP header beyond the datagram", pkt: build(ip4(layers.IPProtocolTCP), payload(12)), err: ErrMalformed},
		{name: "v4 UDP length below 8", pkt: tweak(build(ip4(layers.IPProtocolUDP), udp(1, 2)), func(b []byte) { b[25] = 4 }),
			err: ErrMalformed},
		{name: "v4 ICMP shorter than 8 bytes", pkt: build(ip4(layers.IPProtocolICMPv4), payload(4)), err: ErrMalformed},
		{name: "v4 SCTP shorter than 12 bytes", pkt: build(ip4(layers.IPProtocolSCTP), payload(8)), err: ErrMalformed},

		// IPv6: each L4 protocol.
		{name: "v6 TCP SYN", pkt: build(ip6(layers.IPProtocolTCP), syn(40000, 80)), want: v6(tcpSYN)},
		{name: "v6 UDP", pkt: build(ip6(layers.IPProtocolUDP), udp(5353, 53), payload(30)),
			want: v6(Parsed{Proto: flow.UDP, SrcPort: 5353, DstPort: 53})},
		{name: "v6 SCTP", pkt: build(ip6(layers.IPProtocolSCTP), sctp(5000, 3868), payload(16)),
			want: v6(Parsed{Proto: flow.SCTP, SrcPort: 5000, DstPort: 3868})},
		{name: "v6 ICMPv6 echo request", pkt: build(ip6(layers.IPProtocolICMPv6), icmp6(128, 0), payload(60)),
			want: v6(Parsed{Proto: flow.ICMPv6, ICMPType: 128})},
		{name: "v6 no next header", pkt: build(ip6(layers.IPProtocolNoNextHeader), payload(8)), want: v6(Parsed{Proto: 59})},
		{name: "v6 ESP", pkt: build(ip6(layers.IPProtocolESP), payload(40)), want: v6(Parsed{Proto: 50})},

		// IPv6 extension headers are skipped to the upper-layer header.
		{name: "v6 hop-by-hop, destination options, routing (SRH), atomic fragment, TCP", pkt: build(
			ip6(layers.IPProtocolIPv6HopByHop), hopByHop(layers.IPProtocolIPv6Destination),
			destOpts(layers.IPProtocolIPv6Routing), srh(layers.IPProtocolIPv6Fragment),
			frag6(layers.IPProtocolTCP, 0, false), syn(40000, 80)),
			want: v6(tcpSYN)},
		{name: "v6 hop-by-hop, routing, destination options, first fragment, TCP", pkt: build(
			ip6(layers.IPProtocolIPv6HopByHop), hopByHop(layers.IPProtocolIPv6Routing),
			srh(layers.IPProtocolIPv6Destination), destOpts(layers.IPProtocolIPv6Fragment),
			frag6(layers.IPProtocolTCP, 0, true), syn(40000, 3306), payload(100)),
			want: v6(Parsed{Proto: flow.TCP, SrcPort: 40000, DstPort: 3306, TCPFlags: TCPSyn, Fragment: FirstFragment})},
		{name: "v6 AH, TCP", pkt: build(ip6(layers.IPProtocolAH), ah(layers.IPProtocolTCP), syn(40000, 3306)),
			want: v6(Parsed{Proto: flow.TCP, SrcPort: 40000, DstPort: 3306, TCPFlags: TCPSyn})},
		{name: "v6 destination options, AH, destination options, UDP", pkt: build(ip6(layers.IPProtocolIPv6Destination),
			destOpts(layers.IPProtocolAH), ah(layers.IPProtocolIPv6Destination), destOpts(layers.IPProtocolUDP), udp(5353, 53)),
			want: v6(Parsed{Proto: flow.UDP, SrcPort: 5353, DstPort: 53})},
		{name: "v6 TCP behind 200 bytes of extension headers (past a 128-byte copy range)", pkt: build(
			ip6(layers.IPProtocolIPv6HopByHop), hopByHop(layers.IPProtocolIPv6Destination),
			bigDestOpts(layers.IPProtocolIPv6Routing, 160), srh(layers.IPProtocolTCP), syn(40000, 3306)),
			want: v6(Parsed{Proto: flow.TCP, SrcPort: 40000, DstPort: 3306, TCPFlags: TCPSyn})},
		{name: "v6 TCP behind 40 destination options headers", pkt: build(append(append([]gopacket.SerializableLayer{
			ip6(layers.IPProtocolIPv6Destination)}, destChain(40, layers.IPProtocolTCP)...), syn(40000, 3306))...),
			want: v6(Parsed{Proto: flow.TCP, SrcPort: 40000, DstPort: 3306, TCPFlags: TCPSyn})},
		{name: "v6 routing header of an unknown type", pkt: build(ip6(layers.IPProtocolIPv6Routing),
			gopacket.Payload(tweak(srh(layers.IPProtocolUDP), func(b []byte) { b[2] = 253 })), udp(5353, 53)),
			want: v6(Parsed{Proto: flow.UDP, SrcPort: 5353, DstPort: 53})},
		{name: "v6 extension headers, then no next header", pkt: build(ip6(layers.IPProtocolIPv6HopByHop),
			hopByHop(layers.IPProtocolNoNextHeader), payload(8)),
			want: v6(Parsed{Proto: 59})},
		{name: "v6 mobility header is an upper-layer protocol, as for the kernel", pkt: build(ip6(135), payload(8)),
			want: v6(Parsed{Proto: 135})},
		{name: "v6 later fragment followed by an extension header", pkt: build(ip6(layers.IPProtocolIPv6Fragment),
			frag6(layers.IPProtocolIPv6Destination, 1232, false), payload(16)),
			want: v6(Parsed{Proto: 60, Fragment: LaterFragment})},
		{name: "v6 first fragment", pkt: build(ip6(layers.IPProtocolIPv6Fragment), frag6(layers.IPProtocolUDP, 0, true),
			udp(5353, 53), payload(64)),
			want: v6(Parsed{Proto: flow.UDP, SrcPort: 5353, DstPort: 53, Fragment: FirstFragment})},
		{name: "v6 later fragment", pkt: build(ip6(layers.IPProtocolIPv6Fragment), frag6(layers.IPProtocolUDP, 1232, false),
			udp(5353, 53), payload(64)),
			want: v6(Parsed{Proto: flow.UDP, Fragment: LaterFragment})},
		{name: "v6 first fragment too short for the UDP header", pkt: build(ip6(layers.IPProtocolIPv6Fragment),
			frag6(layers.IPProtocolUDP, 0, true), payload(4)),
			err: ErrMalformed},

		// IPv6 captures cut short by the NFQUEUE copy range.
		{name: "v6 payload length 0 (jumbogram, GSO): the length is what was captured",
			pkt:  tweak(bigSYN6, func(b []byte) { b[4], b[5] = 0, 0 }),
			want: v6(Parsed{Proto: flow.TCP, SrcPort: 40000, DstPort: 80, TCPFlags: TCPSyn, Length: len(bigSYN6)})},
		{name: "v6 capture ends after the TCP header", pkt: bigSYN6[:88],
			want: v6(Parsed{Proto: flow.TCP, SrcPort: 40000, DstPort: 80, TCPFlags: TCPSyn, Length: 1088})},
		{name: "v6 capture ends in the TCP header", pkt: bigSYN6[:60], err: ErrTruncated},
		{name: "v6 capture ends in the hop-by-hop header", pkt: bigSYN6[:44], err: ErrTruncated},
		{name: "v6 capture ends after the IPv6 header", pkt: bigSYN6[:40], err: ErrTruncated},
		{name: "v6 capture ends in the IPv6 header", pkt: bigSYN6[:39], err: ErrTruncated},

		// IPv6 malformed headers.
		{name: "v6 AH beyond the datagram", pkt: tweak(build(ip6(layers.IPProtocolAH), ah(layers.IPProtocolTCP), syn(1, 2)),
			func(b []byte) { b[41] = 40 }), err: ErrMalformed},
		{name: "v6 TCP data offset below 5", pkt: tweak(build(ip6(layers.IPProtocolTCP), syn(1, 2)),
			func(b []byte) { b[52] = 0x40 }), err: ErrMalformed},
		{name: "v6 extension header beyond the datagram", pkt: tweak(bigSYN6, func(b []byte) { b[41] = 200 }), err: ErrMalformed},
		{name: "v6 TCP announced after the last extension header, no byte left", pkt: build(ip6(layers.IPProtocolIPv6HopByHop),
			hopByHop(layers.IPProtocolTCP)), err: ErrMalformed},
		{name: "v6 no length declared, capture ends in the TCP header", pkt: tweak(build(ip6(layers.IPProtocolTCP), payload(1)),
			func(b []byte) { b[5] = 0 }), err: ErrTruncated},
	}
}

func TestDecode(t *testing.T) {
	d := NewDecoder()
	for _, tc := range decodeCases() {
		t.Run(tc.name, func(t *testing.T) {
			var got Parsed
			err := d.Decode(tc.pkt, &got)
			if err != tc.err {
				t.Fatalf("Decode = %v (%v), want %v", err, got.String(), tc.err)
			}
			if err != nil {
				return
			}
			want := tc.want
			if want.Length == 0 {
				want.Length = len(tc.pkt)
			}
			if got != want {
				t.Errorf("Decode:\n got %+v\nwant %+v", got, want)
			}
		})
	}
	if d.foreign != 0 {
		t.Errorf("gopacket returned %d errors that the guards did not catch", d.foreign)
	}
}

// TestDecodeErrorKeepsAddresses: a packet rejected after its IP header still
// says who sent it, so the verdict can name the sender.
func TestDecodeErrorKeepsAddresses(t *testing.T) {
	d := NewDecoder()
	for _, pkt := range [][]byte{bigSYN4[:39], bigSYN6[:60]} {
		var p Parsed
		if err := d.Decode(pkt, &p); err != ErrTruncated {
			t.Fatalf("Decode = %v, want ErrTruncated", err)
		}
		if p.Family == 0 || !p.Src.IsValid() || !p.Dst.IsValid() {
			t.Errorf("Decode of a truncated packet lost the addresses: %+v", p)
		}
	}
}

// TestDecodeTruncatedCapture cuts every valid packet at every length, as a
// short NFQUEUE copy range would: below the end of the headers Decode must
// say ErrTruncated; from there on it must decode exactly what the whole
// packet decodes to.
func TestDecodeTruncatedCapture(t *testing.T) {
	d := NewDecoder()
	for _, tc := range decodeCases() {
		if tc.err != nil || tc.want.Length == len(tc.pkt) {
			continue // a datagram that declares no length is judged as captured
		}
		var whole Parsed
		if err := d.Decode(tc.pkt, &whole); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		headerEnd := -1
		for n := 0; n <= len(tc.pkt); n++ {
			var p Parsed
			err := d.Decode(tc.pkt[:n], &p)
			switch {
			case err == nil && headerEnd < 0:
				headerEnd = n
				fallthrough
			case err == nil:
				if p != whole {
					t.Errorf("%s cut at %d: got %+v, want %+v", tc.name, n, p, whole)
				}
			case headerEnd >= 0:
				t.Errorf("%s cut at %d: %v after success at %d", tc.name, n, err, headerEnd)
			case err != ErrTruncated:
				t.Errorf("%s cut at %d: %v, want ErrTruncated", tc.name, n, err)
			}
		}
	}
	if d.foreign != 0 {
		t.Errorf("gopacket returned %d errors that the guards did not catch", d.foreign)
	}
}

// TestDecodeNoAllocs: Decode allocates nothing, for every case of the table,
// the failing ones included.
func TestDecodeNoAllocs(t *testing.T) {
	d := NewDecoder()
	var p Parsed
	for _, tc := range decodeCases() {
		// Warm up: gopacket keeps per-layer slices between calls.
		d.Decode(tc.pkt, &p)
		if n := testing.AllocsPerRun(100, func() { d.Decode(tc.pkt, &p) }); n != 0 {
			t.Errorf("%s: %v allocations per Decode, want 0", tc.name, n)
		}
	}
}

// TestDecodeNoAllocsFresh: the first call on a new Decoder allocates nothing
// either (the option slices are preallocated).
func TestDecodeNoAllocsFresh(t *testing.T) {
	pkt := build(&layers.IPv4{Version: 4, IHL: 15, TTL: 1, Protocol: layers.IPProtocolTCP,
		SrcIP: pod4a.AsSlice(), DstIP: pod4b.AsSlice(),
		Options: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1},
			{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}}},
		syn(1, 2))
	var p Parsed
	n := testing.AllocsPerRun(20, func() {
		NewDecoder().Decode(pkt, &p)
	})
	base := testing.AllocsPerRun(20, func() { _ = NewDecoder() })
	if n != base {
		t.Errorf("NewDecoder+Decode: %v allocations, NewDecoder alone %v: Decode allocated on first use", n, base)
	}
	if p.DstPort != 2 {
		t.Fatalf("Decode: %+v", p)
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, bc := range []struct {
		name string
		pkt  []byte
	}{
		{"v4/TCP", build(ip4(layers.IPProtocolTCP), syn(40000, 80))},
		{"v4/UDP", build(ip4(layers.IPProtocolUDP), udp(5353, 53), payload(30))},
		{"v4/SCTP", build(ip4(layers.IPProtocolSCTP), sctp(5000, 3868))},
		{"v4/ICMP", build(ip4(layers.IPProtocolICMPv4), icmp4(8, 0), payload(56))},
		{"v4/TCP-truncated", bigSYN4[:128]},
		{"v6/TCP", build(ip6(layers.IPProtocolTCP), syn(40000, 80))},
		{"v6/UDP", build(ip6(layers.IPProtocolUDP), udp(5353, 53), payload(30))},
		{"v6/ICMPv6", build(ip6(layers.IPProtocolICMPv6), icmp6(128, 0), payload(60))},
		{"v6/ext-headers-TCP", build(ip6(layers.IPProtocolIPv6HopByHop), hopByHop(layers.IPProtocolIPv6Destination),
			destOpts(layers.IPProtocolIPv6Routing), srh(layers.IPProtocolIPv6Fragment),
			frag6(layers.IPProtocolTCP, 0, false), syn(40000, 80))},
		{"malformed", tweak(bigSYN4, func(b []byte) { b[32] = 0x40 })},
	} {
		b.Run(bc.name, func(b *testing.B) {
			d := NewDecoder()
			var p Parsed
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.pkt)))
			for b.Loop() {
				d.Decode(bc.pkt, &p)
			}
		})
	}
}

// BenchmarkGopacketFull is the slow reference, for scale.
func BenchmarkGopacketFull(b *testing.B) {
	pkt := build(ip4(layers.IPProtocolTCP), syn(40000, 80))
	b.ReportAllocs()
	for b.Loop() {
		gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.DecodeOptions{NoCopy: true})
	}
}
