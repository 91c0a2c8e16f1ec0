package packet

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/podwall/podwall/policy/flow"
)

// Decoder decodes packets that begin with an IPv4 or IPv6 header (what
// NFQUEUE delivers) into a Parsed, without allocating.
//
// What it reads, and how strictly, follows the kernel that forwards the
// packet, not a protocol validator: Decode fails only when the fields the
// verdict needs (addresses, protocol, ports) cannot be read as the kernel
// reads them, and the datapath drops every packet Decode rejects whatever
// the failure policy (package datapath, "Failure policy"). A decoder
// stricter than the kernel would let an attacker pick which packets are
// "malformed"; one laxer than the kernel would read ports where the kernel
// and the destination see other ones. So:
//
//   - IPv4: the fixed header is read and its options are skipped by the
//     header length, never parsed. The kernel checks options with its own
//     rules (ip_options_compile, after the prerouting hook and before the
//     forward hook: a packet whose options it refuses never reaches the
//     queue) and ignores the kinds it does not know; gopacket's own rules
//     differ (it rejects an unknown option of length 2, which the kernel
//     forwards). The upper-layer protocol is the protocol field, as for
//     nft's meta l4proto.
//   - IPv6: extension headers are walked as the kernel walks them to the
//     transport header (ipv6_skip_exthdr, conntrack's; ipv6_find_hdr,
//     which sets nft's meta l4proto and th): hop-by-hop, routing (any
//     type), destination options and AH are skipped by their length field
//     without looking inside, the fragment header is read, and the first
//     header of any other type is the upper-layer protocol (59, no next
//     header, included; ESP hides what follows). One difference: nft stops
//     at AH (it asks ipv6_find_hdr for IP6_FH_F_AUTH), so its meta l4proto
//     is 51 where Decode, conntrack and the receiver see the transport
//     protocol behind it; such a packet never matches the kernel's deny
//     cache and is queued and judged every time. There is no limit on the
//     number or length of extension headers: the kernel forwards a packet
//     whatever its chain, so the datapath copies whole packets
//     (datapath.Config.CopyRange) and Decode walks as far as the capture
//     goes. The chain is one layer of the parser, however long.
//   - TCP: the source and destination ports, the flags and the header
//     length are read; options are never parsed (the kernel forwards TCP
//     whatever its options; gopacket rejects an option of length 1). The
//     header length must be at least 5 words and fit in the datagram — a
//     segment that breaks that is discarded by every receiving stack and
//     marked invalid by conntrack — but the options need not be captured.
//   - UDP, SCTP, ICMPv4, ICMPv6: gopacket's decoders behind a length guard
//     (they reject only a header shorter than its minimum, and a UDP length
//     field of 1 to 7, which every receiving stack discards too). gopacket
//     builds a fresh error (fmt.Errorf) for a bad header, which allocates:
//     the guards return ErrTruncated or ErrMalformed first, so gopacket
//     only ever sees input it accepts (FuzzDecode checks that none slips
//     through; should one, the error is reported as ErrMalformed).
//   - Stopping at the L4 header: the parse ends after TCP, UDP, SCTP or
//     ICMP (payloads are never read), and after any other protocol — for
//     IP-in-IP (4, 41) the outer header is the one the kernel forwards by.
//   - Fragments: a first fragment's L4 header is read (and must be whole:
//     RFC 1858, RFC 7112); a later fragment has none, and Decode stops
//     there with Fragment LaterFragment. With conntrack loaded the kernel
//     reassembles fragments before the forward hook, so the queue normally
//     sees whole datagrams only.
//   - Jumbo and GSO lengths: an IPv4 total length of 0 or an IPv6 payload
//     length of 0 (a jumbogram, or a GSO packet of more than 64 KiB inside
//     the kernel) declares no length: the datagram is taken to be what was
//     captured.
//
// The bytes Decode needs are the IP header and its extension headers, then
// 20 bytes of TCP, 8 of UDP or ICMPv4, 12 of SCTP, 4 of ICMPv6. When the
// capture ends before them but the IP header declares more bytes (a copy
// range shorter than the packet) Decode reports ErrTruncated; when even the
// declared datagram is too short, ErrMalformed.
//
// A Decoder is not safe for concurrent use: use one per queue reader. It
// keeps references into the last b it decoded until the next call.
type Decoder struct {
	v4, v6  *gopacket.DecodingLayerParser
	decoded []gopacket.LayerType

	ip4   ipv4Layer
	ip6   ipv6Layer
	ext   ipv6ExtLayer
	tcp   tcpLayer
	udp   udpLayer
	sctp  sctpLayer
	icmp4 icmpv4Layer
	icmp6 icmpv6Layer

	// State of the current call, written by the layers.
	p       Parsed // the result being built; copied out at the end
	missing int    // bytes the capture lacks: declared IP length - len(b), or 0
	pending bool   // a NextLayerType named a header that was not decoded yet

	// foreign counts the errors that came from gopacket rather than from
	// the guards. It stays 0 unless a guard misses a case (tests check).
	foreign uint64
}

// NewDecoder returns a Decoder with all its layers allocated.
func NewDecoder() *Decoder {
	d := &Decoder{decoded: make([]gopacket.LayerType, 0, 8)}
	d.ip4.d, d.ip6.d, d.ext.d = d, d, d
	d.tcp.d, d.udp.d, d.sctp.d, d.icmp4.d, d.icmp6.d = d, d, d, d, d
	all := []gopacket.DecodingLayer{
		&d.ip4, &d.ip6, &d.ext, &d.tcp, &d.udp, &d.sctp, &d.icmp4, &d.icmp6,
	}
	d.v4 = newParser(layers.LayerTypeIPv4, all)
	d.v6 = newParser(layers.LayerTypeIPv6, all)
	return d
}

// newParser returns a parser starting at first. The sparse container
// indexes decoders by LayerType: the fastest of gopacket's containers.
// Panics inside a decoder are recovered by the parser (IgnorePanic false)
// and reported by Decode as ErrMalformed.
func newParser(first gopacket.LayerType, ls []gopacket.DecodingLayer) *gopacket.DecodingLayerParser {
	p := gopacket.NewDecodingLayerParser(first)
	p.SetDecodingLayerContainer(gopacket.DecodingLayerSparse(nil))
	for _, l := range ls {
		p.AddDecodingLayer(l)
	}
	return p
}

// Decode decodes the packet in b into *p. b starts with the IP header; the
// version nibble picks IPv4 or IPv6.
//
// It returns nil, ErrTruncated or ErrMalformed, and never allocates. A
// protocol without a decoded L4 header (GRE, ESP, AH, ...) is not an error:
// Proto is set and the ports stay 0. Nor is a LaterFragment. On error, *p
// holds what was decoded before the failure (see Parsed).
func (d *Decoder) Decode(b []byte, p *Parsed) error {
	d.p = Parsed{}
	d.missing = 0
	d.pending = false
	var err error
	switch {
	case len(b) == 0:
		err = ErrTruncated
	case b[0]>>4 == 4:
		err = d.v4.DecodeLayers(b, &d.decoded)
	case b[0]>>4 == 6:
		err = d.v6.DecodeLayers(b, &d.decoded)
	default:
		err = ErrMalformed
	}
	switch {
	case err == nil:
		if d.pending {
			// The last header named a next header that we decode, but
			// no byte of it was left (the parser stops on an empty
			// payload).
			err = d.cut(0, 1)
		}
	case err == ErrTruncated || err == ErrMalformed:
	default:
		d.foreign++
		err = ErrMalformed
	}
	*p = d.p
	return err
}

// unknownLength is Decoder.missing for a datagram that declares no length
// (IPv4 total length 0, IPv6 payload length 0): the capture may lack any
// number of bytes.
const unknownLength = 1 << 16

// cut returns the error for a header that needs need bytes where the layer
// got only have: ErrTruncated when the bytes the capture lacks could hold
// the rest, ErrMalformed when even the full datagram is too short.
func (d *Decoder) cut(have, need int) error {
	if need <= have+d.missing {
		return ErrTruncated
	}
	return ErrMalformed
}

// announce records whether t is a layer the parser will decode next, so
// that Decode can tell a parse that ended early from a complete one.
func (d *Decoder) announce(t gopacket.LayerType) gopacket.LayerType {
	d.pending = t != gopacket.LayerTypeZero
	return t
}

// l4Type is the layer that decodes protocol proto, or LayerTypeZero to stop.
// ICMPv6 in IPv4 (and ICMPv4 in IPv6) is decoded as gopacket does; it is
// nonsense, but harmless.
func l4Type(proto flow.Proto) gopacket.LayerType {
	switch proto {
	case flow.TCP:
		return layers.LayerTypeTCP
	case flow.UDP:
		return layers.LayerTypeUDP
	case flow.SCTP:
		return layers.LayerTypeSCTP
	case flow.ICMP:
		return layers.LayerTypeICMPv4
	case flow.ICMPv6:
		return layers.LayerTypeICMPv6
	}
	return gopacket.LayerTypeZero
}

// IPv6 extension headers that Decode walks, as the kernel's ipv6_ext_hdr
// lists them (RFC 8200 section 4; AH, RFC 4302). 59, no next header, is in
// the kernel's list too, but ends the chain: it is the upper-layer protocol.
const (
	ipv6HopByHop    = 0
	ipv6Routing     = 43
	ipv6Fragment    = 44
	ipv6AH          = 51
	ipv6Destination = 60
)

// ipv6ExtType is the layer type the parser knows the extension header
// chain by.
var ipv6ExtType = layers.LayerTypeIPv6HopByHop

// ip6Type is l4Type, or the extension header chain when next is an
// extension header.
func ip6Type(next flow.Proto) gopacket.LayerType {
	switch next {
	case ipv6HopByHop, ipv6Routing, ipv6Fragment, ipv6AH, ipv6Destination:
		return ipv6ExtType
	}
	return l4Type(next)
}

// ipv4Layer decodes the IPv4 header: the fixed 20 bytes; options are
// skipped by the header length.
type ipv4Layer struct {
	layers.BaseLayer
	d *Decoder
}

func (l *ipv4Layer) CanDecode() gopacket.LayerClass { return layers.LayerTypeIPv4 }

func (l *ipv4Layer) DecodeFromBytes(b []byte, df gopacket.DecodeFeedback) error {
	d := l.d
	d.pending = false
	if len(b) < 20 {
		return ErrTruncated
	}
	p := &d.p
	p.Family = 4
	p.Src = netip.AddrFrom4([4]byte(b[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	p.Proto = flow.Proto(b[9])
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total == 0 {
		// TCP segmentation offload, BIG TCP: no length declared.
		total = len(b)
		d.missing = unknownLength
	}
	p.Length = total
	hlen := int(b[0]&0x0f) * 4
	if total < 20 || hlen < 20 || hlen > total {
		return ErrMalformed // the kernel drops these in ip_rcv
	}
	end := total
	if end > len(b) {
		df.SetTruncated()
		d.missing = end - len(b)
		end = len(b)
	}
	if hlen > end {
		return ErrTruncated
	}
	frag := binary.BigEndian.Uint16(b[6:8]) // flags (3 bits), fragment offset (13)
	switch {
	case frag&0x1fff != 0:
		p.Fragment = LaterFragment
	case frag&0x2000 != 0: // more fragments
		p.Fragment = FirstFragment
	}
	l.Contents, l.Payload = b[:hlen], b[hlen:end]
	return nil
}

func (l *ipv4Layer) NextLayerType() gopacket.LayerType {
	if l.d.p.Fragment == LaterFragment {
		return l.d.announce(gopacket.LayerTypeZero)
	}
	return l.d.announce(l4Type(l.d.p.Proto))
}

// ipv6Layer decodes the fixed IPv6 header.
type ipv6Layer struct {
	layers.BaseLayer
	d *Decoder
}

func (l *ipv6Layer) CanDecode() gopacket.LayerClass { return layers.LayerTypeIPv6 }

func (l *ipv6Layer) DecodeFromBytes(b []byte, df gopacket.DecodeFeedback) error {
	d := l.d
	d.pending = false
	if len(b) < 40 {
		return ErrTruncated
	}
	p := &d.p
	p.Family = 6
	p.Src = netip.AddrFrom16([16]byte(b[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	p.Proto = flow.Proto(b[6])
	end := 40 + int(binary.BigEndian.Uint16(b[4:6]))
	if end == 40 {
		// A jumbogram or a GSO packet: no length declared.
		end = len(b)
		d.missing = unknownLength
	}
	p.Length = end
	if end > len(b) {
		df.SetTruncated()
		d.missing = end - len(b)
		end = len(b)
	}
	l.Contents, l.Payload = b[:40], b[40:end]
	return nil
}

func (l *ipv6Layer) NextLayerType() gopacket.LayerType {
	return l.d.announce(ip6Type(l.d.p.Proto))
}

// ipv6ExtLayer walks the whole IPv6 extension header chain, as the kernel's
// ipv6_find_hdr does: hop-by-hop, routing, destination options and AH are
// skipped by their length; a fragment header is read. It ends at the first
// header of another type (the upper-layer protocol, in Parsed.Proto) or
// after the fragment header of a later fragment.
type ipv6ExtLayer struct {
	layers.BaseLayer
	d *Decoder
}

func (l *ipv6ExtLayer) CanDecode() gopacket.LayerClass { return ipv6ExtType }

func (l *ipv6ExtLayer) DecodeFromBytes(b []byte, df gopacket.DecodeFeedback) error {
	d := l.d
	d.pending = false
	p := &d.p
	off := 0
	for ip6Type(p.Proto) == ipv6ExtType && p.Fragment != LaterFragment {
		rest := b[off:]
		if len(rest) < 2 {
			return d.cut(len(rest), 2)
		}
		var n int
		switch p.Proto {
		case ipv6Fragment:
			n = 8
		case ipv6AH:
			n = (int(rest[1]) + 2) * 4
		default:
			n = (int(rest[1]) + 1) * 8
		}
		if len(rest) < n {
			return d.cut(len(rest), n)
		}
		if p.Proto == ipv6Fragment {
			offset := binary.BigEndian.Uint16(rest[2:4]) >> 3
			more := rest[3]&1 != 0
			switch {
			case offset != 0:
				p.Fragment = LaterFragment
			case more && p.Fragment == NotFragment:
				p.Fragment = FirstFragment
			}
		}
		p.Proto = flow.Proto(rest[0])
		off += n
	}
	l.Contents, l.Payload = b[:off], b[off:]
	return nil
}

func (l *ipv6ExtLayer) NextLayerType() gopacket.LayerType {
	if l.d.p.Fragment == LaterFragment {
		return l.d.announce(gopacket.LayerTypeZero)
	}
	return l.d.announce(l4Type(l.d.p.Proto))
}

// tcpLayer decodes the fixed TCP header: ports, flags and the header length;
// options are never parsed.
type tcpLayer struct {
	layers.BaseLayer
	d *Decoder
}

func (l *tcpLayer) CanDecode() gopacket.LayerClass { return layers.LayerTypeTCP }

func (l *tcpLayer) DecodeFromBytes(b []byte, df gopacket.DecodeFeedback) error {
	d := l.d
	d.pending = false
	if len(b) < 20 {
		return d.cut(len(b), 20)
	}
	hlen := int(b[12]>>4) * 4
	if hlen < 20 || hlen > len(b)+d.missing {
		return ErrMalformed
	}
	p := &d.p
	p.SrcPort = binary.BigEndian.Uint16(b[0:2])
	p.DstPort = binary.BigEndian.Uint16(b[2:4])
	p.TCPFlags = b[13]
	hlen = min(hlen, len(b))
	l.Contents, l.Payload = b[:hlen], b[hlen:]
	return nil
}

func (l *tcpLayer) NextLayerType() gopacket.LayerType { return gopacket.LayerTypeZero }

// udpLayer is gopacket's UDP decoder behind the guards.
type udpLayer struct {
	layers.UDP
	d *Decoder
}

func (l *udpLayer) DecodeFromBytes(b []byte, df gopacket.DecodeFeedback) error {
	d := l.d
	d.pending = false
	if len(b) < 8 {
		return d.cut(len(b), 8)
	}
	// gopacket rejects a UDP length below the header size; 0 means a
	// jumbogram.
	if n := binary.BigEndian.Uint16(b[4:6]); n != 0 && n < 8 {
		return ErrMalformed
	}
	if err := l.UDP.DecodeFromBytes(b, df); err != nil {
		return err
	}
	d.p.SrcPort, d.p.DstPort = uint16(l.SrcPort), uint16(l.DstPort)
	return nil
}

func (l *udpLayer) NextLayerType() gopacket.LayerType { return gopacket.LayerTypeZero }

// sctpLayer is gopacket's SCTP common header decoder behind the guards.
type sctpLayer struct {
	layers.SCTP
	d *Decoder
}

func (l *sctpLayer) DecodeFromBytes(b []byte, df gopacket.DecodeFeedback) error {
	d := l.d
	d.pending = false
	if len(b) < 12 {
		return d.cut(len(b), 12)
	}
	if err := l.SCTP.DecodeFromBytes(b, df); err != nil {
		return err
	}
	d.p.SrcPort, d.p.DstPort = uint16(l.SrcPort), uint16(l.DstPort)
	return nil
}

func (l *sctpLayer) NextLayerType() gopacket.LayerType { return gopacket.LayerTypeZero }

// icmpv4Layer is gopacket's ICMPv4 decoder behind the guards.
type icmpv4Layer struct {
	layers.ICMPv4
	d *Decoder
}

func (l *icmpv4Layer) DecodeFromBytes(b []byte, df gopacket.DecodeFeedback) error {
	d := l.d
	d.pending = false
	if len(b) < 8 {
		return d.cut(len(b), 8)
	}
	if err := l.ICMPv4.DecodeFromBytes(b, df); err != nil {
		return err
	}
	d.p.ICMPType, d.p.ICMPCode = l.TypeCode.Type(), l.TypeCode.Code()
	return nil
}

func (l *icmpv4Layer) NextLayerType() gopacket.LayerType { return gopacket.LayerTypeZero }

// icmpv6Layer is gopacket's ICMPv6 decoder behind the guards.
type icmpv6Layer struct {
	layers.ICMPv6
	d *Decoder
}

func (l *icmpv6Layer) DecodeFromBytes(b []byte, df gopacket.DecodeFeedback) error {
	d := l.d
	d.pending = false
	if len(b) < 4 {
		return d.cut(len(b), 4)
	}
	if err := l.ICMPv6.DecodeFromBytes(b, df); err != nil {
		return err
	}
	d.p.ICMPType, d.p.ICMPCode = l.TypeCode.Type(), l.TypeCode.Code()
	return nil
}

func (l *icmpv6Layer) NextLayerType() gopacket.LayerType { return gopacket.LayerTypeZero }
