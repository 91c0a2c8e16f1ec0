package flow

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Proto is an IP protocol number (IANA): the IPv4 protocol field or the IPv6 next header
// after the extension headers.
type Proto uint8

// The protocols podwall tells apart. Any other number is a valid Proto too.
const (
	ICMP   Proto = 1
	TCP    Proto = 6
	UDP    Proto = 17
	ICMPv6 Proto = 58
	SCTP   Proto = 132
)

// HasPorts reports whether the protocol carries ports that NetworkPolicy can match: TCP,
// UDP and SCTP. Only for these does a Flow's Port mean anything.
func (p Proto) HasPorts() bool { return p == TCP || p == UDP || p == SCTP }

// String returns the Kubernetes spelling (TCP, UDP, SCTP), ICMP, ICMPv6 or "proto-N".
func (p Proto) String() string {
	if s := p.name(); s != "" {
		return s
	}
	return "proto-" + strconv.Itoa(int(p))
}

// AppendTo appends String's text to b without allocating.
func (p Proto) AppendTo(b []byte) []byte {
	if s := p.name(); s != "" {
		return append(b, s...)
	}
	return strconv.AppendUint(append(b, "proto-"...), uint64(p), 10)
}

func (p Proto) name() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	case SCTP:
		return "SCTP"
	case ICMP:
		return "ICMP"
	case ICMPv6:
		return "ICMPv6"
	}
	return ""
}

// ParseProto parses TCP, UDP, SCTP, ICMP or ICMPv6, case-insensitively.
func ParseProto(s string) (Proto, error) {
	switch strings.ToUpper(s) {
	case "TCP":
		return TCP, nil
	case "UDP":
		return UDP, nil
	case "SCTP":
		return SCTP, nil
	case "ICMP":
		return ICMP, nil
	case "ICMPV6":
		return ICMPv6, nil
	}
	return 0, fmt.Errorf("unknown protocol %q (want TCP, UDP, SCTP, ICMP or ICMPv6)", s)
}

// Flow is what is judged about a connection: its source, its real destination (after any
// DNAT), the protocol and the destination port. Port is 0 when Proto has no ports (and for a
// packet whose ports could not be read). The source port is left out: no policy depends on
// it, so all connections from one client to one service are one Flow.
//
// Flow is a small comparable value; IPv4 addresses are 4-byte (never 4-in-6).
type Flow struct {
	Src, Dst netip.Addr
	Proto    Proto
	Port     uint16
}

// String formats f as "TCP 10.0.0.1 → 10.0.0.2:80" (no port for protocols without ports).
func (f Flow) String() string {
	b := f.Proto.AppendTo(make([]byte, 0, 64))
	b = append(b, ' ')
	b = f.Src.AppendTo(b)
	b = append(b, " → "...)
	if f.Proto.HasPorts() {
		b = netip.AddrPortFrom(f.Dst, f.Port).AppendTo(b)
	} else {
		b = f.Dst.AppendTo(b)
	}
	return string(b)
}
