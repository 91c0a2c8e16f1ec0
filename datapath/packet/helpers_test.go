package packet

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Addresses from the lab plan (SPEC §6).
var (
	pod4a = netip.MustParseAddr("10.244.1.2")
	pod4b = netip.MustParseAddr("10.244.2.3")
	pod6a = netip.MustParseAddr("fd00:10:244:1::2")
	pod6b = netip.MustParseAddr("fd00:10:244:2::3")
)

// build serializes ls the way a kernel would put them on the wire: lengths
// and checksums filled in. The first layer is the IP header.
func build(ls ...gopacket.SerializableLayer) []byte {
	nl := ls[0].(gopacket.NetworkLayer)
	for _, l := range ls[1:] {
		if c, ok := l.(interface {
			SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
		}); ok {
			if err := c.SetNetworkLayerForChecksum(nl); err != nil {
				panic(err)
			}
		}
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		panic(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// tweak returns a copy of b changed by f.
func tweak(b []byte, f func(b []byte)) []byte {
	b = append([]byte(nil), b...)
	f(b)
	return b
}

// ip4 is an IPv4 header from pod4a to pod4b.
func ip4(proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 1, Protocol: proto,
		SrcIP: pod4a.AsSlice(), DstIP: pod4b.AsSlice()}
}

// frag4 is ip4 as a fragment at offset bytes (a multiple of 8).
func frag4(proto layers.IPProtocol, offset uint16, more bool) *layers.IPv4 {
	ip := ip4(proto)
	ip.FragOffset = offset / 8
	if more {
		ip.Flags = layers.IPv4MoreFragments
	}
	return ip
}

// ip6 is an IPv6 header from pod6a to pod6b.
func ip6(next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next,
		SrcIP: pod6a.AsSlice(), DstIP: pod6b.AsSlice()}
}

// syn is a TCP SYN with the options Linux sends.
func syn(sport, dport uint16) *layers.TCP {
	return &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport),
		Seq: 1, SYN: true, Window: 64240, Options: []layers.TCPOption{
			{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
			{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
			{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)},
			{OptionType: layers.TCPOptionKindNop, OptionLength: 1},
			{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
		}}
}

func udp(sport, dport uint16) *layers.UDP {
	return &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
}

func sctp(sport, dport uint16) *layers.SCTP {
	return &layers.SCTP{SrcPort: layers.SCTPPort(sport), DstPort: layers.SCTPPort(dport), VerificationTag: 7}
}

func icmp4(typ, code uint8) *layers.ICMPv4 {
	return &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Id: 1, Seq: 1}
}

func icmp6(typ, code uint8) *layers.ICMPv6 {
	return &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)}
}

// payload is n bytes of application data.
func payload(n int) gopacket.Payload { return make(gopacket.Payload, n) }

// hopByHop is a hop-by-hop options header with a router alert option,
// padded by hand to 8 bytes (gopacket's own padding gets 6 wrong).
func hopByHop(next layers.IPProtocol) *layers.IPv6HopByHop {
	h := &layers.IPv6HopByHop{Options: []*layers.IPv6HopByHopOption{
		{OptionType: 5, OptionData: []byte{0, 0}}, // router alert: MLD
		{OptionType: 1}, // PadN, 2 bytes
	}}
	h.NextHeader = next
	return h
}

// destOpts is a destination options header with one PadN option.
func destOpts(next layers.IPProtocol) *layers.IPv6Destination {
	h := &layers.IPv6Destination{Options: []*layers.IPv6DestinationOption{
		{OptionType: 1, OptionData: []byte{0, 0, 0, 0}},
	}}
	h.NextHeader = next
	return h
}

// srh is a segment routing header (routing type 4) with one segment and
// segments left 0: gopacket serializes no routing header, so it is raw.
func srh(next layers.IPProtocol) gopacket.Payload {
	b := make([]byte, 24)
	b[0], b[1], b[2] = byte(next), 2, 4
	copy(b[8:], pod6b.AsSlice())
	return b
}

// frag6 is an IPv6 fragment header (raw: gopacket serializes none).
func frag6(next layers.IPProtocol, offset uint16, more bool) gopacket.Payload {
	b := make([]byte, 8)
	b[0] = byte(next)
	v := offset &^ 7
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(b[2:4], v)
	binary.BigEndian.PutUint32(b[4:8], 0xcafe)
	return b
}

// synWithOptions is syn(40000, dport) behind ip with raw TCP option bytes
// (a multiple of 4, at most 40): gopacket serializes only options it would
// decode.
func synWithOptions(ip *layers.IPv4, dport uint16, opts []byte) []byte {
	tcp := build(ip4(layers.IPProtocolTCP), &layers.TCP{SrcPort: 40000, DstPort: layers.TCPPort(dport),
		Seq: 1, SYN: true, Window: 64240})[20:]
	tcp[12] = byte(5+len(opts)/4) << 4
	seg := append(append(tcp[:20:20], opts...), tcp[20:]...)
	return build(ip, gopacket.Payload(seg))
}

// ipv4WithOptions is ip4(proto) with raw option bytes (a multiple of 4, at
// most 40).
func ipv4WithOptions(proto layers.IPProtocol, opts []byte) *layers.IPv4 {
	ip := ip4(proto)
	ip.IHL = uint8(5 + len(opts)/4)
	ip.Options = []layers.IPv4Option{{OptionType: opts[0], OptionLength: uint8(len(opts)), OptionData: opts[2:]}}
	return ip
}

// ah is an IPv6 authentication header (RFC 4302) with 12 bytes of ICV:
// payload length (24/4)-2 = 4.
func ah(next layers.IPProtocol) gopacket.Payload {
	b := make([]byte, 24)
	b[0], b[1] = byte(next), 4
	binary.BigEndian.PutUint32(b[4:8], 0x100) // SPI
	binary.BigEndian.PutUint32(b[8:12], 1)    // sequence number
	return b
}

// bigDestOpts is a destination options header of n bytes (a multiple of 8)
// of PadN options.
func bigDestOpts(next layers.IPProtocol, n int) gopacket.Payload {
	b := make([]byte, n)
	b[0], b[1] = byte(next), byte(n/8-1)
	for i := 2; i < n; {
		l := min(n-i, 7) // RFC 8200: PadN of at most 7 bytes in a row
		if l == 1 {
			i++ // Pad1: the zero byte
			continue
		}
		b[i], b[i+1] = 1, byte(l-2)
		i += l
	}
	return b
}

// destChain is n destination options headers of 8 bytes, the last naming
// next.
func destChain(n int, next layers.IPProtocol) []gopacket.SerializableLayer {
	out := make([]gopacket.SerializableLayer, n)
	for i := range out {
		nh := layers.IPProtocolIPv6Destination
		if i == n-1 {
			nh = next
		}
		out[i] = bigDestOpts(nh, 8)
	}
	return out
}
