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
// It drives a gopacket.DecodingLayerParser over layers preallocated in the
// Decoder: gopacket's IPv4, TCP, UDP, SCTP, ICMPv4 and ICMPv6 decoders, each
// behind a thin wrapper, and this package's own IPv6 header and extension
// header decoders. Why the wrappers and the own IPv6 decoders:
//
//   - Length guards. gopacket's decoders build a fresh error (fmt.Errorf,
//     errors.New) for every malformed or short header, which allocates.
//     Each wrapper first checks the conditions gopacket would reject
//     (header shorter than its minimum, header length fields, option
//     lists) and returns ErrTruncated or ErrMalformed itself, so gopacket
//     only ever sees input it accepts. Should gopacket still fail (a guard
//     missed a case; the fuzz test checks that none does), the error is
//     reported as ErrMalformed.
//   - Stopping at the L4 header. The wrappers end the parse after TCP, UDP,
//     SCTP or ICMP (we never read payloads, so no gopacket.Payload or
//     application layer is decoded), and after an IPv4 header whose
//     protocol is anything else — gopacket would otherwise decode the
//     inner header of IP-in-IP (4, 41) into the same IPv4/IPv6 layer and
//     overwrite the outer addresses.
//   - Fragments. gopacket hands every fragment, the first included, to its
//     fragment decoder; we read the L4 header of a first fragment, and stop
//     before the (absent) L4 header of a later one.
//   - IPv6. gopacket's IPv6 decoder parses hop-by-hop options into a
//     heap-allocated struct per option, and in v1.1.19 its routing and
//     fragment headers are not DecodingLayers at all. The own IPv6 header
//     decoder reads the fixed 40 bytes; the extension header decoder skips
//     hop-by-hop, routing (any type) and destination options by their
//     length field without looking at the options, and reads the fragment
//     header. The kernel validates hop-by-hop options before the netfilter
//     hooks run, and destination options are only the final host's business.
//     Jumbograms (payload length 0) are reported as ErrMalformed: they need
//     links with an MTU above 64 KiB and never open a connection on a pod
//     network.
//
// Truncated captures. NFQUEUE copies only the first bytes of a packet (the
// copy range), so the length declared by the IP header usually exceeds
// len(b). gopacket's IPv4 and our IPv6 decoder accept that (gopacket marks
// the parse Truncated and decodes what is there); Decode succeeds as long as
// b holds every header up to and including the complete L4 header: the TCP
// header with its options (up to 60 bytes), 8 bytes of UDP, 12 of SCTP, 8 of
// ICMPv4, 4 of ICMPv6. A copy range of 128 bytes covers IPv4 with options
// plus TCP with options (120 bytes), and IPv6 plus TCP with options with up
// to 28 bytes of extension headers.
//
// A Decoder is not safe for concurrent use: use one per queue reader. It
// keeps references into the last b it decoded until the next call.
type Decoder struct {
	v4, v6  *gopacket.DecodingLayerParser
	decoded []gopacket.LayerType

	ip4                      ipv4Layer
	ip6                      ipv6Layer
	hop, routing, dest, frag ipv6ExtLayer
	tcp                      tcpLayer
	udp                      udpLayer
	sctp                     sctpLayer
	icmp4                    icmpv4Layer
	icmp6                    icmpv6Layer

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
	d := &Decoder{decoded: make([]gopacket.LayerType, 0, 16)}
	d.ip4.d, d.ip6.d = d, d
	d.hop = ipv6ExtLayer{typ: layers.LayerTypeIPv6HopByHop, d: d}
	d.routing = ipv6ExtLayer{typ: layers.LayerTypeIPv6Routing, d: d}
	d.dest = ipv6ExtLayer{typ: layers.LayerTypeIPv6Destination, d: d}
	d.frag = ipv6ExtLayer{typ: layers.LayerTypeIPv6Fragment, d: d}
	d.tcp.d, d.udp.d, d.sctp.d, d.icmp4.d, d.icmp6.d = d, d, d, d, d
	// gopacket reuses these slices from one packet to the next; sized for
	// the most options that fit in 40 bytes, they never grow.
	d.ip4.Options = make([]layers.IPv4Option, 0, 40)
	d.tcp.Options = make([]layers.TCPOption, 0, 40)

	all := []gopacket.DecodingLayer{
		&d.ip4, &d.ip6, &d.hop, &d.routing, &d.dest, &d.frag,
		&d.tcp, &d.udp, &d.sctp, &d.icmp4, &d.icmp6,
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

// IPv6 extension headers that Decode skips (RFC 8200 section 4).
const (
	ipv6HopByHop    = 0
	ipv6Routing     = 43
	ipv6Fragment    = 44
	ipv6Destination = 60
)

// ip6Type is l4Type plus the IPv6 extension headers.
func ip6Type(next flow.Proto) gopacket.LayerType {
	switch next {
	case ipv6HopByHop:
		return layers.LayerTypeIPv6HopByHop
	case ipv6Routing:
		return layers.LayerTypeIPv6Routing
	case ipv6Fragment:
		return layers.LayerTypeIPv6Fragment
	case ipv6Destination:
		return layers.LayerTypeIPv6Destination
	}
	return l4Type(next)
}

// validOptions reports whether the type-length-value options in b (IPv4
// options, TCP options) are well formed as gopacket checks them: type 0 ends
// the list, type 1 is one byte of padding, any other type has a length byte
// of at least minLen that stays within b.
func validOptions(b []byte, minLen int) bool {
	for len(b) > 0 {
		switch b[0] {
		case 0:
			return true
		case 1:
			b = b[1:]
		default:
			if len(b) < 2 {
				return false
			}
			n := int(b[1])
			if n < minLen || n > len(b) {
				return false
			}
			b = b[n:]
		}
	}
	return true
}

// ipv4Layer is gopacket's IPv4 decoder behind the guards.
type ipv4Layer struct {
	layers.IPv4
	d *Decoder
}

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
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total == 0 {
		// gopacket takes a zero total length (TCP segmentation offload)
		// to mean "all of b".
		total = len(b)
	}
	p.Length = total
	hlen := int(b[0]&0x0f) * 4
	if total < 20 || hlen < 20 || hlen > total {
		return ErrMalformed
	}
	d.missing = max(total-len(b), 0)
	if hlen > len(b) {
		return ErrTruncated
	}
	if !validOptions(b[20:hlen], 3) {
		return ErrMalformed
	}
	if err := l.IPv4.DecodeFromBytes(b, df); err != nil {
		return err
	}
	p.Proto = flow.Proto(l.Protocol)
	switch {
	case l.FragOffset != 0:
		p.Fragment = LaterFragment
	case l.Flags&layers.IPv4MoreFragments != 0:
		p.Fragment = FirstFragment
	}
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
	plen := int(binary.BigEndian.Uint16(b[4:6]))
	if plen == 0 {
		return ErrMalformed // jumbogram
	}
	p.Length = 40 + plen
	end := p.Length
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

// ipv6ExtLayer skips one IPv6 extension header of type typ; for a fragment
// header it also records the fragment state.
type ipv6ExtLayer struct {
	layers.BaseLayer
	typ gopacket.LayerType
	d   *Decoder
}

func (l *ipv6ExtLayer) CanDecode() gopacket.LayerClass { return l.typ }

func (l *ipv6ExtLayer) DecodeFromBytes(b []byte, df gopacket.DecodeFeedback) error {
	d := l.d
	d.pending = false
	n := 8 // the fragment header has a fixed length
	if l.typ != layers.LayerTypeIPv6Fragment {
		if len(b) < 2 {
			return d.cut(len(b), 2)
		}
		n = (int(b[1]) + 1) * 8
	}
	if len(b) < n {
		return d.cut(len(b), n)
	}
	p := &d.p
	p.Proto = flow.Proto(b[0])
	if l.typ == layers.LayerTypeIPv6Fragment {
		offset := binary.BigEndian.Uint16(b[2:4]) >> 3
		more := b[3]&1 != 0
		switch {
		case offset != 0:
			p.Fragment = LaterFragment
		case more && p.Fragment == NotFragment:
			p.Fragment = FirstFragment
		}
	}
	l.Contents, l.Payload = b[:n], b[n:]
	return nil
}

func (l *ipv6ExtLayer) NextLayerType() gopacket.LayerType {
	if l.d.p.Fragment == LaterFragment {
		return l.d.announce(gopacket.LayerTypeZero)
	}
	return l.d.announce(ip6Type(l.d.p.Proto))
}

// tcpLayer is gopacket's TCP decoder behind the guards.
type tcpLayer struct {
	layers.TCP
	d *Decoder
}

func (l *tcpLayer) DecodeFromBytes(b []byte, df gopacket.DecodeFeedback) error {
	d := l.d
	d.pending = false
	if len(b) < 20 {
		return d.cut(len(b), 20)
	}
	hlen := int(b[12]>>4) * 4
	if hlen < 20 {
		return ErrMalformed
	}
	if hlen > len(b) {
		return d.cut(len(b), hlen)
	}
	if !validOptions(b[20:hlen], 2) {
		return ErrMalformed
	}
	if err := l.TCP.DecodeFromBytes(b, df); err != nil {
		return err
	}
	p := &d.p
	p.SrcPort, p.DstPort = uint16(l.SrcPort), uint16(l.DstPort)
	p.TCPFlags = l.Contents[13]
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
