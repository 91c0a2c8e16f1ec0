package packet

import (
	"errors"
	"net/netip"
	"strconv"

	"github.com/podwall/podwall/policy/flow"
)

// TCP flag bits of Parsed.TCPFlags (byte 13 of the TCP header).
const (
	TCPFin uint8 = 0x01
	TCPSyn uint8 = 0x02
	TCPRst uint8 = 0x04
	TCPPsh uint8 = 0x08
	TCPAck uint8 = 0x10
	TCPUrg uint8 = 0x20
	TCPEce uint8 = 0x40
	TCPCwr uint8 = 0x80
)

// Fragment says whether a packet is an IP fragment, and which kind.
type Fragment uint8

const (
	// NotFragment is a whole datagram. An IPv6 "atomic fragment" (a
	// fragment header with offset 0 and no more fragments, RFC 6946) is a
	// whole datagram too.
	NotFragment Fragment = iota
	// FirstFragment is the fragment at offset 0 of a fragmented datagram.
	// It carries the L4 header; Decode requires that header to be complete
	// (RFC 1858, RFC 7112) and fails with ErrMalformed otherwise.
	FirstFragment
	// LaterFragment is a fragment at a non-zero offset. It carries no L4
	// header: its ports, TCP flags and ICMP type are unknown (zero).
	LaterFragment
)

func (f Fragment) String() string {
	switch f {
	case NotFragment:
		return "none"
	case FirstFragment:
		return "first"
	case LaterFragment:
		return "later"
	}
	return "Fragment(" + strconv.Itoa(int(f)) + ")"
}

// Errors returned by Decoder.Decode. They are fixed values so that the hot
// path never formats an error; compare with ==.
var (
	// ErrTruncated means b ended before the headers Decode needs, where
	// the IP header declares more bytes than b holds (or b is shorter than
	// an IP header): the packet may be fine, but the capture (the NFQUEUE
	// copy range) was too short to judge it.
	ErrTruncated = errors.New("packet: truncated before the end of the headers")
	// ErrMalformed means the headers contradict themselves or the
	// packet's own declared length: not IPv4 or IPv6, a header length
	// below its minimum, options that overrun their header, an L4 header
	// that does not fit in the (first fragment of the) datagram.
	ErrMalformed = errors.New("packet: malformed headers")
)

// Parsed is the decoded header of one packet: a small value with no
// pointers into the packet buffer, filled by Decoder.Decode.
//
// When Decode returns an error, the fields decoded before the failure stay
// set (Family, Src and Dst once the IP header was read), so the caller can
// still say who sent the bad packet.
type Parsed struct {
	// Src and Dst are the addresses of the IP header. Valid when Family
	// is not 0. IPv4 addresses are 4-byte (Is4), never 4-in-6.
	Src, Dst netip.Addr
	// Length is the length of the IP datagram (or fragment) declared by its
	// header: IPv4 total length, or 40 + IPv6 payload length. It can exceed
	// the captured bytes when NFQUEUE copied only a prefix.
	Length int
	// SrcPort and DstPort are the TCP, UDP or SCTP ports; 0 for other
	// protocols and for LaterFragment.
	SrcPort, DstPort uint16
	// Family is 4 or 6, or 0 when not even the IP header could be read.
	Family uint8
	// Proto is the upper-layer protocol number: the IPv4 protocol field, or
	// for IPv6 the next header after the hop-by-hop, routing, destination
	// options and fragment extension headers. For a LaterFragment it is the
	// next header named by the fragment header.
	Proto flow.Proto
	// TCPFlags holds the flag bits (TCPSyn, TCPAck, ...) when Proto is
	// TCP and the packet is not a LaterFragment.
	TCPFlags uint8
	// ICMPType and ICMPCode are the ICMP (Proto ICMP) or ICMPv6
	// (Proto ICMPv6) type and code, unless the packet is a LaterFragment.
	ICMPType, ICMPCode uint8
	// Fragment says whether the datagram is fragmented and which part
	// this packet is.
	Fragment Fragment
}

// HasPorts reports whether Proto is TCP, UDP or SCTP and the ports were
// read (the packet is not a LaterFragment).
func (p *Parsed) HasPorts() bool {
	return p.Fragment != LaterFragment && p.Proto.HasPorts()
}

// String formats p for logs and test failures, e.g.
// "TCP 10.0.0.1:3456 > 10.0.0.2:80 [S] len=60". It allocates; do not call
// it on the hot path.
func (p *Parsed) String() string {
	if p.Family == 0 {
		return "invalid"
	}
	b := make([]byte, 0, 96)
	b = p.Proto.AppendTo(b)
	b = append(b, ' ')
	b = appendEndpoint(b, p.Src, p.SrcPort, p.HasPorts())
	b = append(b, " > "...)
	b = appendEndpoint(b, p.Dst, p.DstPort, p.HasPorts())
	switch {
	case p.Fragment == LaterFragment:
	case p.Proto == flow.TCP:
		b = append(b, " ["...)
		for i, c := range "FSRPAUEC" {
			if p.TCPFlags&(1<<i) != 0 {
				b = append(b, byte(c))
			}
		}
		b = append(b, ']')
	case p.Proto == flow.ICMP || p.Proto == flow.ICMPv6:
		b = append(b, " type="...)
		b = strconv.AppendUint(b, uint64(p.ICMPType), 10)
		b = append(b, " code="...)
		b = strconv.AppendUint(b, uint64(p.ICMPCode), 10)
	}
	b = append(b, " len="...)
	b = strconv.AppendInt(b, int64(p.Length), 10)
	if p.Fragment != NotFragment {
		b = append(b, " frag="...)
		b = append(b, p.Fragment.String()...)
	}
	return string(b)
}

func appendEndpoint(b []byte, a netip.Addr, port uint16, hasPort bool) []byte {
	if hasPort {
		return netip.AddrPortFrom(a, port).AppendTo(b)
	}
	return a.AppendTo(b)
}
