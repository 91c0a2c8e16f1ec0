package conntrack

import (
	"bytes"
	"fmt"
	"net/netip"

	"github.com/podwall/podwall/policy/flow"
)

// Tuple is one direction of a connection as conntrack records it.
type Tuple struct {
	Src, Dst         netip.Addr
	Proto            flow.Proto
	SrcPort, DstPort uint16 // zero for protocols without ports (ICMP: see ICMPID)
	// ICMPType, ICMPCode and ICMPID are set for ICMP and ICMPv6 tuples.
	ICMPType, ICMPCode uint8
	ICMPID             uint16
}

func (t Tuple) String() string {
	if t.SrcPort == 0 && t.DstPort == 0 {
		return fmt.Sprintf("%v → %v proto %d", t.Src, t.Dst, t.Proto)
	}
	return fmt.Sprintf("%v → %v proto %d",
		netip.AddrPortFrom(t.Src, t.SrcPort), netip.AddrPortFrom(t.Dst, t.DstPort), t.Proto)
}

// Entry is one conntrack entry. Entries passed to a Dump callback are valid only during
// the call: keep a Clone.
type Entry struct {
	// Family is the entry's address family (unix.AF_INET or unix.AF_INET6).
	Family uint8
	// Orig is the tuple of the first packet, as it arrived; Reply the tuple replies carry,
	// which reflects NAT: after a DNAT (a Service), Reply.Src is the real destination.
	Orig, Reply Tuple
	// Zone is the conntrack zone (0 unless something puts flows in zones).
	Zone uint16
	// ID is the kernel's id of the entry; Delete removes only the entry with this id, not
	// a newer one with the same tuple.
	ID uint32
	// Status holds the IPS_* status bits (see StatusAssured and friends).
	Status uint32
	// Mark is the connection mark.
	Mark uint32
	// TCPState is conntrack's state of a TCP connection; zero for other protocols.
	TCPState TCPState

	// orig is the payload of the CTA_TUPLE_ORIG attribute as the kernel wrote it: what
	// Delete sends back.
	orig []byte
}

// Status bits of Entry.Status (include/uapi/linux/netfilter/nf_conntrack_common.h).
const (
	StatusSeenReply uint32 = 1 << 1
	StatusAssured   uint32 = 1 << 2
	StatusConfirmed uint32 = 1 << 3
	StatusSrcNAT    uint32 = 1 << 4
	StatusDstNAT    uint32 = 1 << 5
)

// TCPState is conntrack's state of a TCP connection (enum tcp_conntrack).
type TCPState uint8

// TCP states.
const (
	TCPNone TCPState = iota
	TCPSynSent
	TCPSynRecv
	TCPEstablished
	TCPFinWait
	TCPCloseWait
	TCPLastAck
	TCPTimeWait
	TCPClose
	TCPSynSent2
)

// Closed reports whether the entry is a TCP connection that has ended (TIME_WAIT or
// CLOSE): it carries no data any more, and a new connection on its tuple starts afresh.
func (e *Entry) Closed() bool {
	return e.Orig.Proto == flow.TCP && (e.TCPState == TCPTimeWait || e.TCPState == TCPClose)
}

// Flow returns the flow the datapath judged when the connection was new. The hook sees
// packets after DNAT and before SNAT, so the source is the original source and the
// destination is where the connection really goes: the reply's source address and port.
// Without NAT that is simply the original destination.
func (e *Entry) Flow() flow.Flow {
	f := flow.Flow{Src: e.Orig.Src, Dst: e.Reply.Src, Proto: e.Orig.Proto}
	if !f.Dst.IsValid() {
		f.Dst = e.Orig.Dst
	}
	if f.Proto.HasPorts() {
		f.Port = e.Reply.SrcPort
		if !e.Reply.Src.IsValid() {
			f.Port = e.Orig.DstPort
		}
	}
	return f
}

// Clone returns a copy of e that does not alias the buffer it was read from.
func (e *Entry) Clone() *Entry {
	c := *e
	c.orig = bytes.Clone(e.orig)
	return &c
}

func (e *Entry) String() string {
	s := e.Orig.String()
	if e.Reply.Src != e.Orig.Dst || e.Reply.SrcPort != e.Orig.DstPort {
		s += fmt.Sprintf(" (to %v)", netip.AddrPortFrom(e.Reply.Src, e.Reply.SrcPort))
	}
	if e.Zone != 0 {
		s += fmt.Sprintf(" zone %d", e.Zone)
	}
	return s
}
