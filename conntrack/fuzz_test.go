package conntrack

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/policy/flow"
)

// FuzzParseEntry: whatever bytes a conntrack message holds, parseEntry never panics, never
// returns an entry without its original tuple (whose delete would flush the table), and
// reads what mdlayher/netlink's AttributeDecoder — the slow reference — reads from the same
// bytes. The reference copies every attribute; the fast walk reads them in place
// (parse.go), so the two share no framing code.
//
// Long runs are not part of CI: `make fuzz` (10 minutes per target by default).
func FuzzParseEntry(f *testing.F) {
	for _, e := range []*Entry{
		entry(tcp("10.244.1.2", "10.244.1.3", 40000, 80)),
		entry(udp("fd00:10:244:1::2", "fd00:10:244:1::3", 40001, 53)),
		entry(icmp("10.244.1.2", "10.244.1.3", 7)),
		entry(icmp("fd00:10:244:1::2", "fd00:10:244:1::3", 8)),
		dnat(tcp("10.244.1.2", "10.96.0.10", 40002, 80), "10.244.2.7", 8080),
		func() *Entry { e := entry(tcp("10.244.1.2", "10.244.1.3", 1, 2)); e.Zone, e.Mark = 5, 0x10; return e }(),
	} {
		e.Status, e.ID, e.TCPState = StatusConfirmed|StatusAssured, 0xdeadbeef, TCPEstablished
		f.Add(entryMessage(e).Data)
	}
	f.Add([]byte{unix.AF_INET, 0, 0, 0})
	f.Add([]byte{unix.AF_INET, 0, 0, 0, 4, 0, 1, 0})
	f.Fuzz(func(t *testing.T, msg []byte) {
		var got Entry
		err := parseEntry(msg, &got)
		if err != nil {
			return
		}
		if got.orig == nil {
			t.Fatal("entry without an original tuple accepted")
		}
		want, rerr := referenceEntry(msg)
		if rerr != nil {
			return // the reference is stricter on framing (e.g. zero-length attributes); no verdict
		}
		if got.Family != want.Family || got.Orig != want.Orig || got.Reply != want.Reply || got.Zone != want.Zone ||
			got.ID != want.ID || got.Status != want.Status || got.Mark != want.Mark || got.TCPState != want.TCPState ||
			!slices.Equal(got.orig, want.orig) {
			t.Fatalf("parseEntry read\n %+v\nthe reference\n %+v", got, want)
		}
		c := got.Clone()
		clear(msg)
		if !slices.Equal(c.orig, want.orig) {
			t.Fatal("the clone aliases the message")
		}
	})
}

// referenceEntry decodes what parseEntry decodes, with netlink.AttributeDecoder: the same
// fields, the last attribute of a type winning, values read as parse.go reads them.
func referenceEntry(m []byte) (Entry, error) {
	if len(m) < nfgenLen {
		return Entry{}, errors.New("short")
	}
	e := Entry{Family: m[0]}
	err := walk(m[nfgenLen:], func(typ uint16, v []byte) error {
		switch typ {
		case ctaTupleOrig:
			e.orig = slices.Clone(v)
			return refTuple(v, &e.Orig)
		case ctaTupleReply:
			return refTuple(v, &e.Reply)
		case ctaZone:
			return refUint(v, 2, func(x uint64) { e.Zone = uint16(x) })
		case ctaID:
			return refUint(v, 4, func(x uint64) { e.ID = uint32(x) })
		case ctaStatus:
			return refUint(v, 4, func(x uint64) { e.Status = uint32(x) })
		case ctaMark:
			return refUint(v, 4, func(x uint64) { e.Mark = uint32(x) })
		case ctaProtoinfo:
			return walk(v, func(typ uint16, v []byte) error {
				if typ != ctaProtoinfoTCP {
					return nil
				}
				return walk(v, func(typ uint16, v []byte) error {
					if typ == ctaProtoinfoTCPState && len(v) > 0 {
						e.TCPState = TCPState(v[0])
					}
					return nil
				})
			})
		}
		return nil
	})
	if err == nil && e.orig == nil {
		err = errors.New("no original tuple")
	}
	return e, err
}

func refTuple(b []byte, t *Tuple) error {
	return walk(b, func(typ uint16, v []byte) error {
		switch typ {
		case ctaTupleIP:
			return walk(v, func(typ uint16, v []byte) error {
				var a *netip.Addr
				switch typ {
				case ctaIPv4Src, ctaIPv6Src:
					a = &t.Src
				case ctaIPv4Dst, ctaIPv6Dst:
					a = &t.Dst
				default:
					return nil
				}
				var ok bool
				if *a, ok = netip.AddrFromSlice(v); !ok {
					return errors.New("address length")
				}
				return nil
			})
		case ctaTupleProto:
			return walk(v, func(typ uint16, v []byte) error {
				switch typ {
				case ctaProtoNum:
					return refUint(v, 1, func(x uint64) { t.Proto = flow.Proto(x) })
				case ctaProtoSrcPort:
					return refUint(v, 2, func(x uint64) { t.SrcPort = uint16(x) })
				case ctaProtoDstPort:
					return refUint(v, 2, func(x uint64) { t.DstPort = uint16(x) })
				case ctaProtoICMPID, ctaProtoICMPv6ID:
					return refUint(v, 2, func(x uint64) { t.ICMPID = uint16(x) })
				case ctaProtoICMPType, ctaProtoICMPv6Type:
					return refUint(v, 1, func(x uint64) { t.ICMPType = uint8(x) })
				case ctaProtoICMPCode, ctaProtoICMPv6Code:
					return refUint(v, 1, func(x uint64) { t.ICMPCode = uint8(x) })
				}
				return nil
			})
		}
		return nil
	})
}

// walk calls fn for each attribute of b, as netlink.AttributeDecoder reads them.
func walk(b []byte, fn func(typ uint16, v []byte) error) error {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return err
	}
	for ad.Next() {
		if err := fn(ad.Type(), ad.Bytes()); err != nil {
			return err
		}
	}
	return ad.Err()
}

// refUint reads a big-endian value of n bytes from the start of v (ctnetlink's values are
// network order; longer values are cut as parse.go cuts them).
func refUint(v []byte, n int, set func(uint64)) error {
	if len(v) < n {
		return errors.New("short value")
	}
	var x uint64
	switch n {
	case 1:
		x = uint64(v[0])
	case 2:
		x = uint64(binary.BigEndian.Uint16(v))
	case 4:
		x = uint64(binary.BigEndian.Uint32(v))
	}
	set(x)
	return nil
}
