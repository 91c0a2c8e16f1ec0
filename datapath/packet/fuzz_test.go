package packet

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/podwall/podwall/policy/flow"
)

// FuzzDecode checks Decode on arbitrary bytes against gopacket as the slow
// reference:
//
//   - Decode never panics, returns nil, ErrTruncated or ErrMalformed, and no
//     input reaches a gopacket error (which would allocate): the guards in
//     front of each gopacket decoder accept exactly what that decoder accepts
//     (checkGuards).
//   - The fields both produce agree with gopacket's full decode
//     (gopacket.NewPacket): family, addresses, declared length, protocol,
//     fragment state, and for an L4 header the ports, TCP flags and ICMP
//     type and code (checkReference).
//
// Where the two differ on purpose, checkReference accounts for it:
//
//   - Fragments: gopacket decodes no L4 header in any fragment; Decode reads
//     it in a first fragment. For first fragments the reference decodes the
//     fragment's payload on its own.
//   - IPv6 extension headers: gopacket checks the option TLVs of hop-by-hop
//     and destination options headers and only knows routing type 0;
//     Decode skips all of them by their length (the kernel checks
//     hop-by-hop options before our hook, the rest is the end host's
//     business). When gopacket fails inside such a header, only the IP
//     header is compared.
//   - Jumbograms (IPv6 payload length 0): gopacket accepts them with a
//     jumbo option, Decode rejects them.
//   - IPv4 protocol numbers of IPv6 extension headers (0, 43, 44, 60) and of
//     IP-in-IP (4, 41): gopacket decodes on, Decode stops at the outer
//     header. Only Proto is compared.
//   - A header announced by its predecessor but with no byte left: gopacket
//     stops without complaint, Decode reports an error (it cannot judge a
//     TCP packet without a TCP header).
//   - Bytes after the declared IPv6 length: gopacket miscounts them when a
//     hop-by-hop header is present (it cuts the payload at the payload
//     length counted from after the hop-by-hop header), so the reference
//     gets only the declared datagram.
func FuzzDecode(f *testing.F) {
	for _, tc := range decodeCases() {
		f.Add(tc.pkt)
	}
	d := NewDecoder()
	g := NewDecoder() // for checkGuards
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Parsed
		foreign := d.foreign
		err := d.Decode(b, &p)
		if d.foreign != foreign {
			t.Fatalf("gopacket rejected input that the guards let through: Decode would allocate")
		}
		if err != nil && err != ErrTruncated && err != ErrMalformed {
			t.Fatalf("Decode returned %v, want nil, ErrTruncated or ErrMalformed", err)
		}
		checkGuards(t, g, b)
		checkReference(t, b, &p, err)
	})
}

// checkGuards feeds b to each guarded layer and to the gopacket decoder it
// wraps: both must accept or both reject, and a rejection must come from the
// guard (a sentinel), not from gopacket.
func checkGuards(t *testing.T, d *Decoder, b []byte) {
	for _, c := range []struct {
		name         string
		ours, theirs gopacket.DecodingLayer
	}{
		{"IPv4", &d.ip4, &layers.IPv4{}},
		{"TCP", &d.tcp, &layers.TCP{}},
		{"UDP", &d.udp, &layers.UDP{}},
		{"SCTP", &d.sctp, &layers.SCTP{}},
		{"ICMPv4", &d.icmp4, &layers.ICMPv4{}},
		{"ICMPv6", &d.icmp6, &layers.ICMPv6{}},
	} {
		d.missing = 0
		ours := c.ours.DecodeFromBytes(b, gopacket.NilDecodeFeedback)
		theirs := c.theirs.DecodeFromBytes(b, gopacket.NilDecodeFeedback)
		if ours != nil && ours != ErrTruncated && ours != ErrMalformed {
			t.Errorf("%s guard let through input that gopacket rejects: %v", c.name, ours)
		}
		if (ours == nil) != (theirs == nil) {
			t.Errorf("%s: guarded decoder says %v, gopacket says %v", c.name, ours, theirs)
		}
	}
}

func checkReference(t *testing.T, b []byte, p *Parsed, err error) {
	t.Helper()
	if len(b) == 0 {
		if err != ErrTruncated {
			t.Fatalf("empty input: %v, want ErrTruncated", err)
		}
		return
	}
	minHeader := 20
	if b[0]>>4 == 6 {
		minHeader = 40
	}
	if err == ErrTruncated && !(len(b) < minHeader || len(b) < p.Length) {
		t.Errorf("ErrTruncated for %d bytes of a %d-byte datagram", len(b), p.Length)
	}
	switch b[0] >> 4 {
	case 4:
		checkReference4(t, b, p, err)
	case 6:
		checkReference6(t, b, p, err)
	default:
		if err != ErrMalformed {
			t.Fatalf("IP version %d: %v, want ErrMalformed", b[0]>>4, err)
		}
	}
}

func checkReference4(t *testing.T, b []byte, p *Parsed, err error) {
	var ip layers.IPv4
	if ipErr := ip.DecodeFromBytes(b, gopacket.NilDecodeFeedback); ipErr != nil {
		if err == nil {
			t.Fatalf("Decode accepted an IPv4 header that gopacket rejects: %v", ipErr)
		}
		return
	}
	wantIP(t, p, 4, ip.SrcIP, ip.DstIP)
	if p.Length != int(ip.Length) {
		t.Errorf("Length %d, gopacket %d", p.Length, ip.Length)
	}
	frag := NotFragment
	switch {
	case ip.FragOffset != 0:
		frag = LaterFragment
	case ip.Flags&layers.IPv4MoreFragments != 0:
		frag = FirstFragment
	}
	pkt := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.DecodeOptions{NoCopy: true})
	chain := pkt.Layers()
	if frag == FirstFragment {
		// gopacket does not look into fragments: decode the first
		// fragment's payload on its own.
		sub := gopacket.NewPacket(ip.Payload, ip.Protocol.LayerType(), gopacket.DecodeOptions{NoCopy: true})
		chain = append([]gopacket.Layer{chain[0]}, sub.Layers()...)
	}
	compareChain(t, p, err, chain, flow.Proto(ip.Protocol), frag)
}

func checkReference6(t *testing.T, b []byte, p *Parsed, err error) {
	if len(b) < 40 {
		if err != ErrTruncated {
			t.Fatalf("%d bytes of IPv6: %v, want ErrTruncated", len(b), err)
		}
		return
	}
	plen := int(binary.BigEndian.Uint16(b[4:6]))
	wantIP(t, p, 6, b[8:24], b[24:40])
	if plen == 0 {
		if err != ErrMalformed {
			t.Fatalf("jumbogram: %v, want ErrMalformed", err)
		}
		return
	}
	if p.Length != 40+plen {
		t.Errorf("Length %d, want %d", p.Length, 40+plen)
	}
	if len(b) > 40+plen {
		b = b[:40+plen] // see FuzzDecode on gopacket's count
	}
	var ip layers.IPv6
	ipErr := ip.DecodeFromBytes(b, gopacket.NilDecodeFeedback)
	pkt := gopacket.NewPacket(b, layers.LayerTypeIPv6, gopacket.DecodeOptions{NoCopy: true})
	chain := pkt.Layers()
	// Walk the extension headers as gopacket decoded them.
	next := flow.Proto(ip.NextHeader)
	frag := NotFragment
	i := 1
walk:
	for ; i < len(chain); i++ {
		switch l := chain[i].(type) {
		case *layers.IPv6HopByHop:
			next = flow.Proto(l.NextHeader)
		case *layers.IPv6Routing:
			next = flow.Proto(l.NextHeader)
		case *layers.IPv6Destination:
			next = flow.Proto(l.NextHeader)
		case *layers.IPv6Fragment:
			next = flow.Proto(l.NextHeader)
			switch {
			case l.FragmentOffset != 0:
				frag = LaterFragment
			case l.MoreFragments && frag == NotFragment:
				frag = FirstFragment
			}
			if frag == LaterFragment {
				i++
				break walk
			}
			// As for IPv4: gopacket stops at any fragment; decode the
			// rest of a first or atomic fragment on its own.
			sub := gopacket.NewPacket(l.Payload, layers.IPProtocol(next).LayerType(), gopacket.DecodeOptions{NoCopy: true})
			chain = append(chain[:i+1:i+1], sub.Layers()...)
		default:
			break walk
		}
	}
	// Did gopacket fail in an extension header (or in the hop-by-hop
	// header, inside its IPv6 decoder)? A DecodeFailure after the chain
	// can also be the L4 decoder's: compareL4 judges that.
	extErr := ipErr
	if i < len(chain) {
		if f, ok := chain[i].(*gopacket.DecodeFailure); ok && extErr == nil {
			extErr = f.Error()
		}
	}
	if extErr != nil {
		switch msg := extErr.Error(); {
		case hasPrefix(msg, "Invalid ip6-extension header", "Invalid ip6-fragment header"):
			// A header length that gopacket checks, and so do we.
			if err == nil {
				t.Fatalf("Decode accepted an extension header that gopacket rejects: %v", extErr)
			}
			return
		case hasPrefix(msg, "IPv6 header option too small", "IPv6 header TLV option too small",
			"Unknown IPv6 routing header type", "Invalid IPv6 source routing",
			"IPv6 has jumbo length", "Jumbo length"):
			// Option TLVs, routing types, jumbo options: Decode does not
			// look at them. Nothing more to compare.
			return
		case ipErr != nil:
			t.Fatalf("gopacket's IPv6 decoder failed in an unexpected way: %v", ipErr)
		}
	}
	compareChain(t, p, err, chain[:1], next, frag)
	if frag == LaterFragment {
		return
	}
	if ip6Type(next) != l4Type(next) {
		// gopacket stopped at an extension header with no byte left.
		if err == nil {
			t.Errorf("extension header %d announced but absent: Decode accepted it", next)
		}
		return
	}
	compareL4(t, p, err, chain[i-1], chain[i:], next)
}

// compareChain compares what follows the IP header: protocol and fragment
// state; for IPv4 also the L4 header, which follows directly.
func compareChain(t *testing.T, p *Parsed, err error, chain []gopacket.Layer, next flow.Proto, frag Fragment) {
	t.Helper()
	if p.Proto != next {
		t.Errorf("Proto %d, gopacket %d", p.Proto, next)
	}
	if p.Fragment != frag {
		t.Errorf("Fragment %v, gopacket %v", p.Fragment, frag)
	}
	if frag == LaterFragment {
		if err != nil {
			t.Errorf("later fragment: %v, want nil", err)
		}
		if p.SrcPort|p.DstPort != 0 || p.TCPFlags|p.ICMPType|p.ICMPCode != 0 {
			t.Errorf("later fragment with L4 fields: %+v", p)
		}
		return
	}
	if chain[0].LayerType() == layers.LayerTypeIPv4 {
		compareL4(t, p, err, chain[0], chain[1:], next)
	}
}

// compareL4 compares the L4 header that follows prev: rest[0] in gopacket's
// decode, if it got that far.
func compareL4(t *testing.T, p *Parsed, err error, prev gopacket.Layer, rest []gopacket.Layer, next flow.Proto) {
	t.Helper()
	typ := l4Type(next)
	if typ == gopacket.LayerTypeZero {
		if err != nil {
			t.Errorf("protocol %d without an L4 header to read: %v, want nil", next, err)
		}
		if p.SrcPort|p.DstPort != 0 || p.TCPFlags|p.ICMPType|p.ICMPCode != 0 {
			t.Errorf("protocol %d with L4 fields: %+v", next, p)
		}
		return
	}
	data := prev.LayerPayload()
	if len(data) == 0 {
		if err == nil {
			t.Errorf("protocol %d with no L4 header: Decode accepted it", next)
		}
		return
	}
	// The L4 decoder on its own tells whether gopacket accepts the header
	// (the full decode may also fail later, in an application layer).
	var ref gopacket.DecodingLayer
	switch next {
	case flow.TCP:
		ref = &layers.TCP{}
	case flow.UDP:
		ref = &layers.UDP{}
	case flow.SCTP:
		ref = &layers.SCTP{}
	case flow.ICMP:
		ref = &layers.ICMPv4{}
	case flow.ICMPv6:
		ref = &layers.ICMPv6{}
	}
	refErr := ref.DecodeFromBytes(data, gopacket.NilDecodeFeedback)
	if (err == nil) != (refErr == nil) {
		t.Fatalf("protocol %d: Decode says %v, gopacket says %v", next, err, refErr)
	}
	if err != nil {
		return
	}
	if len(rest) == 0 || rest[0].LayerType() != typ {
		t.Fatalf("gopacket's decode has no %v layer after %v", typ, prev.LayerType())
	}
	var sport, dport uint16
	var flags, icmpType, icmpCode uint8
	switch l := rest[0].(type) {
	case *layers.TCP:
		sport, dport = uint16(l.SrcPort), uint16(l.DstPort)
		for i, f := range []bool{l.FIN, l.SYN, l.RST, l.PSH, l.ACK, l.URG, l.ECE, l.CWR} {
			if f {
				flags |= 1 << i
			}
		}
	case *layers.UDP:
		sport, dport = uint16(l.SrcPort), uint16(l.DstPort)
	case *layers.SCTP:
		sport, dport = uint16(l.SrcPort), uint16(l.DstPort)
	case *layers.ICMPv4:
		icmpType, icmpCode = l.TypeCode.Type(), l.TypeCode.Code()
	case *layers.ICMPv6:
		icmpType, icmpCode = l.TypeCode.Type(), l.TypeCode.Code()
	}
	if p.SrcPort != sport || p.DstPort != dport || p.TCPFlags != flags || p.ICMPType != icmpType || p.ICMPCode != icmpCode {
		t.Errorf("L4 fields %+v, gopacket ports %d>%d flags %#x icmp %d/%d", p, sport, dport, flags, icmpType, icmpCode)
	}
}

func wantIP(t *testing.T, p *Parsed, family uint8, src, dst []byte) {
	t.Helper()
	s, _ := netip.AddrFromSlice(src)
	d, _ := netip.AddrFromSlice(dst)
	if p.Family != family || p.Src != s || p.Dst != d {
		t.Fatalf("IP header: family %d %v > %v, gopacket %d %v > %v", p.Family, p.Src, p.Dst, family, s, d)
	}
}

func hasPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
