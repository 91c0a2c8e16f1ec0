package conntrack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
)

// parseEntry decodes the payload of an IPCTNL_MSG_CT_NEW message (nfgenmsg and
// attributes) into e.
func parseEntry(m []byte, e *Entry) error {
	if len(m) < nfgenLen {
		return errors.New("short conntrack message")
	}
	*e = Entry{Family: m[0]}
	ad, err := netlink.NewAttributeDecoder(m[nfgenLen:])
	if err != nil {
		return err
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		switch ad.Type() {
		case ctaTupleOrig:
			e.orig = ad.Bytes()
			ad.Nested(func(ad *netlink.AttributeDecoder) error { return decodeTuple(ad, &e.Orig) })
		case ctaTupleReply:
			ad.Nested(func(ad *netlink.AttributeDecoder) error { return decodeTuple(ad, &e.Reply) })
		case ctaZone:
			e.Zone = ad.Uint16()
		case ctaID:
			e.ID = ad.Uint32()
		case ctaStatus:
			e.Status = ad.Uint32()
		case ctaMark:
			e.Mark = ad.Uint32()
		case ctaProtoinfo:
			ad.Nested(func(ad *netlink.AttributeDecoder) error {
				for ad.Next() {
					if ad.Type() == ctaProtoinfoTCP {
						ad.Nested(func(ad *netlink.AttributeDecoder) error {
							for ad.Next() {
								if ad.Type() == ctaProtoinfoTCPState {
									e.TCPState = TCPState(ad.Uint8())
								}
							}
							return nil
						})
					}
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return err
	}
	if e.orig == nil {
		return errors.New("conntrack entry without an original tuple")
	}
	return nil
}

func decodeTuple(ad *netlink.AttributeDecoder, t *Tuple) error {
	for ad.Next() {
		switch ad.Type() {
		case ctaTupleIP:
			ad.Nested(func(ad *netlink.AttributeDecoder) error {
				for ad.Next() {
					switch ad.Type() {
					case ctaIPv4Src, ctaIPv6Src:
						ad.Do(addr(&t.Src))
					case ctaIPv4Dst, ctaIPv6Dst:
						ad.Do(addr(&t.Dst))
					}
				}
				return nil
			})
		case ctaTupleProto:
			ad.Nested(func(ad *netlink.AttributeDecoder) error {
				for ad.Next() {
					switch ad.Type() {
					case ctaProtoNum:
						t.Proto = ad.Uint8()
					case ctaProtoSrcPort:
						t.SrcPort = ad.Uint16()
					case ctaProtoDstPort:
						t.DstPort = ad.Uint16()
					case ctaProtoICMPID, ctaProtoICMPv6ID:
						t.ICMPID = ad.Uint16()
					case ctaProtoICMPType, ctaProtoICMPv6Type:
						t.ICMPType = ad.Uint8()
					case ctaProtoICMPCode, ctaProtoICMPv6Code:
						t.ICMPCode = ad.Uint8()
					}
				}
				return nil
			})
		}
	}
	return nil
}

// addr returns a decoder of a 4- or 16-byte address into a.
func addr(a *netip.Addr) func([]byte) error {
	return func(b []byte) error {
		var ok bool
		if *a, ok = netip.AddrFromSlice(b); !ok {
			return fmt.Errorf("address of %d bytes", len(b))
		}
		return nil
	}
}
