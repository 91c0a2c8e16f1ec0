package packet

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/podwall/podwall/policy/flow"
)

// FuzzDecode checks Decode on arbitrary bytes against two slow references:
//
//   - the kernel's own view (kernelView, written from the kernel's rules:
//     nft_set_pktinfo_ipv4_validate and ip_rcv for IPv4,
//     nft_set_pktinfo_ipv6_validate and ipv6_find_hdr for IPv6 — what nft's
//     meta l4proto and th sport/dport read, but for AH, which it walks
//     past as conntrack's ipv6_skip_exthdr and the receiver do — plus the
//     minimum transport header every receiving stack requires; the e2e test
//     TestDecodeAgreesWithKernel checks the same against nft on real
//     packets): Decode succeeds exactly when
//     the kernel can read the transport header and it is one a receiver
//     would take, and then its protocol, ports and fragment state are the
//     kernel's. This is the property that keeps a crafted packet from being
//     judged by other ports than the ones the destination sees, and from
//     being "malformed" where the kernel forwards it.
//   - gopacket's full, allocating decode (gopacket.NewPacket): where it
//     decodes the packet without any error and reaches the same transport
//     protocol, the ports agree. gopacket is stricter than the kernel
//     (option lists, routing types) and does not look into fragments, so
//     it is consulted only where it has no complaint.
//
// Besides: Decode never panics, returns only nil, ErrTruncated or
// ErrMalformed, reports ErrTruncated only for a capture shorter than the
// datagram, and no input reaches a gopacket error (which would allocate):
// the guards in front of the gopacket decoders it keeps accept exactly what
// those decoders accept (checkGuards).
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
		checkKernel(t, b, &p, err)
		checkGopacket(t, b, &p, err)
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

// view is what the kernel reads of a packet, as kernelView computes it.
type view struct {
	family   uint8
	src, dst netip.Addr
	length   int  // declared datagram length; len(b) when none is declared
	declared bool // the header declares a length
	// bad: the kernel drops the packet before any hook (ip_rcv,
	// ip6_rcv_core) or nft cannot find its transport header in the datagram
	// (pktinfo not validated).
	bad bool
	// cut: the capture ends before the kernel's walk does.
	cut   bool
	proto flow.Proto // meta l4proto
	thoff int        // transport header offset (th)
	later bool       // a non-first fragment
	first bool       // a first fragment
}

// kernelView reads b as the kernel's IPv4/IPv6 input and nft's pktinfo do.
// It is written independently of Decode, from the kernel sources: plain
// offsets, no gopacket.
func kernelView(b []byte) view {
	var v view
	if len(b) < 1 {
		v.cut = true
		return v
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			v.cut = true
			return v
		}
		v.family = 4
		v.src, v.dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		ihl := int(b[0]&0xf) * 4
		tot := int(binary.BigEndian.Uint16(b[2:4]))
		v.declared = tot != 0
		if tot == 0 { // iph_totlen: GSO
			tot = len(b)
		}
		v.length = tot
		if ihl < 20 || tot < ihl {
			v.bad = true
			return v
		}
		v.proto = flow.Proto(b[9])
		v.thoff = ihl
		fragoff := binary.BigEndian.Uint16(b[6:8]) & 0x1fff
		v.later = fragoff != 0
		v.first = !v.later && b[6]&0x20 != 0
		if ihl > len(b) {
			v.cut = true
		}
		return v
	case 6:
		if len(b) < 40 {
			v.cut = true
			return v
		}
		v.family = 6
		v.src, v.dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		plen := int(binary.BigEndian.Uint16(b[4:6]))
		v.declared = plen != 0
		v.length = 40 + plen
		if plen == 0 {
			v.length = len(b)
		}
		// ipv6_find_hdr(skb, &thoff, -1, &fragoff, &flags), on the skb the kernel trimmed
		// to the declared length (ip6_rcv_core): a header beyond it is bad, one beyond the
		// capture is cut.
		next, start := b[6], 40
		for {
			if !kernelExt(next) || next == 59 {
				break
			}
			if start+2 > v.length {
				v.bad = true
				return v
			}
			if start+2 > len(b) {
				v.cut = true
				return v
			}
			var hdrlen int
			switch next {
			case 44:
				hdrlen = 8
			case 51:
				hdrlen = (int(b[start+1]) + 2) << 2 // ipv6_authlen
			default:
				hdrlen = (int(b[start+1]) + 1) << 3 // ipv6_optlen
			}
			// The kernel reads only the first bytes of each header on its
			// way, but the receiver pulls whole headers (ipv6_parse_hopopts,
			// ipv6_destopt_rcv, ipv6_rthdr_rcv, ipv6_frag_rcv, ah6) and
			// discards a packet whose header overruns it.
			if start+hdrlen > v.length {
				v.bad = true
				return v
			}
			if start+hdrlen > len(b) {
				v.cut = true
				return v
			}
			if next == 44 {
				fo := binary.BigEndian.Uint16(b[start+2:start+4]) &^ 7
				if fo != 0 {
					// ipv6_find_hdr returns the fragment's next header
					// when it is not an extension header, else -ENOENT
					// (nft knows no l4proto; conntrack stops at the
					// fragment header too): a later fragment without
					// ports either way, judged by the protocol its
					// fragment header names.
					v.later = true
					v.proto = flow.Proto(b[start])
					return v
				}
				if b[start+3]&1 != 0 {
					v.first = true
				}
			}
			next = b[start]
			start += hdrlen
		}
		v.proto = flow.Proto(next)
		v.thoff = start
		return v
	}
	v.bad = true
	return v
}

// kernelExt is the kernel's ipv6_ext_hdr.
func kernelExt(nh byte) bool {
	switch nh {
	case 0, 43, 44, 51, 59, 60:
		return true
	}
	return false
}

// minTransport is the transport header a receiving stack requires before it
// looks at a segment (tcp_v4_rcv, __udp4_lib_rcv, sctp_rcv, icmp_rcv,
// icmpv6_rcv as far as the ports and types go), and whether proto has one
// Decode reads.
func minTransport(proto flow.Proto) (int, bool) {
	switch proto {
	case flow.TCP:
		return 20, true
	case flow.UDP, flow.ICMP:
		return 8, true
	case flow.SCTP:
		return 12, true
	case flow.ICMPv6:
		return 4, true
	}
	return 0, false
}

func checkKernel(t *testing.T, b []byte, p *Parsed, err error) {
	t.Helper()
	v := kernelView(b)
	if v.family != 0 && (p.Family != v.family || p.Src != v.src || p.Dst != v.dst) {
		t.Fatalf("IP header: %+v, kernel %d %v > %v", p, v.family, v.src, v.dst)
	}
	if err == ErrTruncated && v.declared && len(b) >= v.length && !(v.family == 0 && v.cut) {
		t.Fatalf("ErrTruncated for %d bytes of a %d-byte datagram", len(b), v.length)
	}
	if v.bad || v.cut {
		if err == nil {
			t.Fatalf("Decode accepted a packet the kernel cannot read the transport header of (%+v): %+v", v, p)
		}
		if v.cut && !v.bad && err != ErrTruncated {
			t.Fatalf("capture cut inside the headers: %v, want ErrTruncated", err)
		}
		return
	}
	if v.later {
		if err != nil || p.Fragment != LaterFragment || p.Proto != v.proto || p.SrcPort|p.DstPort != 0 {
			t.Fatalf("later fragment of %d: %v %+v", v.proto, err, p)
		}
		return
	}
	need, has := minTransport(v.proto)
	if !has {
		if err != nil || p.Proto != v.proto || p.SrcPort|p.DstPort != 0 {
			t.Fatalf("protocol %d without ports: %v %+v", v.proto, err, p)
		}
		return
	}
	l4len := v.length - v.thoff // declared bytes from the transport header on
	if !v.declared {
		l4len = 1 << 30 // no length declared: the capture may be cut anywhere
	}
	capLen := len(b) - v.thoff
	var bad bool
	switch {
	case l4len < need:
		bad = true
	case capLen < need:
		if err != ErrTruncated {
			t.Fatalf("capture ends inside the %d-byte %d header: %v, want ErrTruncated", need, v.proto, err)
		}
		return
	case v.proto == flow.TCP:
		doff := int(b[v.thoff+12]>>4) * 4
		bad = doff < 20 || doff > l4len
	case v.proto == flow.UDP:
		ulen := binary.BigEndian.Uint16(b[v.thoff+4:])
		bad = ulen != 0 && ulen < 8
	}
	if bad {
		if err == nil {
			t.Fatalf("transport header no receiver takes (%+v): Decode accepted it: %+v", v, p)
		}
		return
	}
	if err != nil {
		t.Fatalf("Decode: %v, but the kernel reads protocol %d at %d: %+v", err, v.proto, v.thoff, v)
	}
	frag := NotFragment
	if v.first {
		frag = FirstFragment
	}
	if p.Proto != v.proto || p.Fragment != frag || p.Length != v.length {
		t.Fatalf("Decode %+v, kernel %+v", p, v)
	}
	th := b[v.thoff:]
	switch v.proto {
	case flow.ICMP, flow.ICMPv6:
		if p.ICMPType != th[0] || p.ICMPCode != th[1] {
			t.Fatalf("ICMP %d/%d, kernel %d/%d", p.ICMPType, p.ICMPCode, th[0], th[1])
		}
	default: // th sport, th dport
		if p.SrcPort != binary.BigEndian.Uint16(th) || p.DstPort != binary.BigEndian.Uint16(th[2:]) {
			t.Fatalf("ports %d > %d, kernel's th sport/dport %d > %d", p.SrcPort, p.DstPort,
				binary.BigEndian.Uint16(th), binary.BigEndian.Uint16(th[2:]))
		}
		if v.proto == flow.TCP && p.TCPFlags != th[13] {
			t.Fatalf("TCP flags %#x, kernel %#x", p.TCPFlags, th[13])
		}
	}
}

// checkGopacket compares the ports with gopacket's full decode where that
// decode has no complaint, reaches the transport layer Decode read, and no
// fragment is involved.
func checkGopacket(t *testing.T, b []byte, p *Parsed, err error) {
	t.Helper()
	if err != nil || !p.HasPorts() || p.Fragment != NotFragment || p.Length != len(b) {
		return // gopacket's view of captures cut short differs; see TestDecodeTruncatedCapture
	}
	first := layers.LayerTypeIPv4
	if p.Family == 6 {
		first = layers.LayerTypeIPv6
	}
	pkt := gopacket.NewPacket(b, first, gopacket.DecodeOptions{NoCopy: true})
	if pkt.ErrorLayer() != nil {
		return
	}
	var sport, dport uint16
	switch l := pkt.TransportLayer().(type) {
	case *layers.TCP:
		if p.Proto != flow.TCP {
			return
		}
		sport, dport = uint16(l.SrcPort), uint16(l.DstPort)
	case *layers.UDP:
		if p.Proto != flow.UDP {
			return
		}
		sport, dport = uint16(l.SrcPort), uint16(l.DstPort)
	case *layers.SCTP:
		if p.Proto != flow.SCTP {
			return
		}
		sport, dport = uint16(l.SrcPort), uint16(l.DstPort)
	default:
		return
	}
	for _, l := range pkt.Layers() {
		switch l.LayerType() {
		case layers.LayerTypeIPv6Fragment, layers.LayerTypeIPv4:
			if p.Family == 6 {
				return // IP-in-IPv6 or a fragment: gopacket's layers are not the kernel's
			}
		}
	}
	if p.SrcPort != sport || p.DstPort != dport {
		t.Fatalf("ports %d > %d, gopacket %d > %d", p.SrcPort, p.DstPort, sport, dport)
	}
}
