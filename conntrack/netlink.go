package conntrack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/policy/flow"
)

// ctnetlink message types and attributes (include/uapi/linux/netfilter/nfnetlink.h and
// nfnetlink_conntrack.h).
const (
	subsysCtnetlink = 1
	msgCtNew        = subsysCtnetlink << 8 // | IPCTNL_MSG_CT_NEW (0)
	msgCtGet        = subsysCtnetlink<<8 | 1
	msgCtDelete     = subsysCtnetlink<<8 | 2

	ctaTupleOrig  = 1
	ctaTupleReply = 2
	ctaStatus     = 3
	ctaProtoinfo  = 4
	ctaMark       = 8
	ctaID         = 12
	ctaZone       = 18

	ctaTupleIP    = 1
	ctaTupleProto = 2

	ctaIPv4Src = 1
	ctaIPv4Dst = 2
	ctaIPv6Src = 3
	ctaIPv6Dst = 4

	ctaProtoNum        = 1
	ctaProtoSrcPort    = 2
	ctaProtoDstPort    = 3
	ctaProtoICMPID     = 4
	ctaProtoICMPType   = 5
	ctaProtoICMPCode   = 6
	ctaProtoICMPv6ID   = 7
	ctaProtoICMPv6Type = 8
	ctaProtoICMPv6Code = 9

	ctaProtoinfoTCP      = 1
	ctaProtoinfoTCPState = 1

	nlaTypeMask = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
	nlmsgHdrLen = unix.SizeofNlMsghdr
	nfgenLen    = 4
)

// ErrInterrupted reports a dump the kernel marked inconsistent (NLM_F_DUMP_INTR): the
// table changed under it, so an entry may have been missed or delivered twice.
var ErrInterrupted = errors.New("conntrack: dump interrupted by a concurrent change")

// deleteBatch bounds the delete requests sent in one datagram.
const deleteBatch = 128

// Table reads and deletes the entries of the conntrack table of one network namespace
// over a ctnetlink socket. Its methods are safe for concurrent use (they serialise).
type Table struct {
	mu  sync.Mutex
	fd  int
	seq uint32
	buf []byte
}

// Open opens a ctnetlink socket in the calling thread's network namespace. It needs
// CAP_NET_ADMIN.
func Open() (*Table, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("conntrack: netlink socket: %w", err)
	}
	t := &Table{fd: fd, seq: uint32(time.Now().UnixNano()), buf: make([]byte, 1<<16)}
	setup := func() error {
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		// Acks carry no copy of the request: a batch of them fits any buffer.
		if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1); err != nil {
			return fmt.Errorf("NETLINK_CAP_ACK: %w", err)
		}
		// A kernel that stops answering must not hang a sweep forever.
		tv := unix.NsecToTimeval((10 * time.Second).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return fmt.Errorf("SO_RCVTIMEO: %w", err)
		}
		return nil
	}
	if err := setup(); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("conntrack: %w", err)
	}
	return t, nil
}

// Close closes the socket.
func (t *Table) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fd < 0 {
		return nil
	}
	err := unix.Close(t.fd)
	t.fd = -1
	return err
}

// Dump reads every entry of the table, both families, and calls fn for each, on the
// calling goroutine. The entry is valid only during the call. The dump streams: memory
// does not grow with the table. It returns an error wrapping ErrInterrupted when the
// kernel flagged the dump inconsistent, and the first parse error when an entry could not
// be read; in both cases every other entry was delivered. After a receive error (a kernel
// silent for 10 s) the next Dump may fail too, while the kernel finishes the abandoned one.
func (t *Table) Dump(fn func(*Entry)) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fd < 0 {
		return errors.New("conntrack: table closed")
	}
	t.seq++
	seq := t.seq
	req := appendHeader(nil, msgCtGet, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, seq, unix.AF_UNSPEC)
	putLen(req)
	if err := unix.Sendto(t.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("conntrack: dump request: %w", err)
	}
	var e Entry
	interrupted := false
	var bad error // the first entry that did not parse: the dump is read to its end anyway
	for {
		b, err := t.recv()
		if err != nil {
			return fmt.Errorf("conntrack: dump: %w", err)
		}
		for len(b) >= nlmsgHdrLen {
			l, typ, flags, s := msgHeader(b)
			if l < nlmsgHdrLen || int(l) > len(b) {
				return fmt.Errorf("conntrack: dump: bad message length %d", l)
			}
			m := b[nlmsgHdrLen:l]
			b = b[min(align(int(l)), len(b)):]
			if s != seq {
				continue // left over from an earlier, abandoned request
			}
			if flags&unix.NLM_F_DUMP_INTR != 0 {
				interrupted = true
			}
			switch typ {
			case unix.NLMSG_DONE:
				if bad != nil {
					return bad
				}
				if interrupted {
					return ErrInterrupted
				}
				return nil
			case unix.NLMSG_ERROR:
				if errno := ackErrno(m); errno != 0 {
					return fmt.Errorf("conntrack: dump: %w", errno)
				}
			case msgCtNew:
				if err := parseEntry(m, &e); err != nil {
					if bad == nil {
						bad = fmt.Errorf("conntrack: dump: %w", err)
					}
					continue
				}
				fn(&e)
			}
		}
	}
}

// Delete deletes the given entries (read by Dump, kept with Clone), each only if the
// kernel still holds that very entry (same tuple, zone and id). It returns how many it
// deleted and how many were already gone.
func (t *Table) Delete(entries []*Entry) (deleted, gone int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fd < 0 {
		return 0, 0, errors.New("conntrack: table closed")
	}
	var errs []error
	for len(entries) > 0 {
		batch := entries[:min(deleteBatch, len(entries))]
		entries = entries[len(batch):]
		d, g, err := t.deleteBatch(batch)
		deleted, gone = deleted+d, gone+g
		if err != nil {
			errs = append(errs, err)
			if len(errs) > 3 {
				errs = append(errs, errors.New("conntrack: delete: giving up"))
				break
			}
		}
	}
	return deleted, gone, errors.Join(errs...)
}

func (t *Table) deleteBatch(batch []*Entry) (deleted, gone int, err error) {
	first := t.seq + 1
	var req []byte
	for _, e := range batch {
		if len(e.origAttr) == 0 {
			// A delete without a tuple flushes the whole table: never send one.
			return deleted, gone, errors.New("conntrack: delete: entry without its original tuple (not read by Dump?)")
		}
		t.seq++
		start := len(req)
		req = appendHeader(req, msgCtDelete, unix.NLM_F_REQUEST|unix.NLM_F_ACK, t.seq, e.Family)
		for _, a := range [][]byte{e.origAttr, e.zoneAttr, e.idAttr} {
			req = append(req, a...)
			req = append(req, make([]byte, align(len(a))-len(a))...)
		}
		putLen(req[start:])
	}
	if err := unix.Sendto(t.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, 0, fmt.Errorf("conntrack: delete: %w", err)
	}
	var errs []error
	for answered := 0; answered < len(batch); {
		b, err := t.recv()
		if err != nil {
			return deleted, gone, fmt.Errorf("conntrack: delete: %w", err)
		}
		for len(b) >= nlmsgHdrLen {
			l, typ, _, s := msgHeader(b)
			if l < nlmsgHdrLen || int(l) > len(b) {
				return deleted, gone, fmt.Errorf("conntrack: delete: bad message length %d", l)
			}
			m := b[nlmsgHdrLen:l]
			b = b[min(align(int(l)), len(b)):]
			if typ != unix.NLMSG_ERROR || s < first || s >= first+uint32(len(batch)) {
				continue
			}
			answered++
			switch errno := ackErrno(m); errno {
			case 0:
				deleted++
			case unix.ENOENT:
				gone++
			default:
				errs = append(errs, fmt.Errorf("conntrack: delete %v: %w", batch[s-first], errno))
			}
		}
	}
	return deleted, gone, errors.Join(errs...)
}

// Get returns the entry whose original tuple is orig (zone 0), or nil when the table has
// none. It is a single lookup, not a dump: cheap enough to poll.
func (t *Table) Get(orig Tuple) (*Entry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fd < 0 {
		return nil, errors.New("conntrack: table closed")
	}
	fam := uint8(unix.AF_INET)
	if orig.Src.Is6() {
		fam = unix.AF_INET6
	}
	t.seq++
	seq := t.seq
	req := appendHeader(nil, msgCtGet, unix.NLM_F_REQUEST, seq, fam)
	req = append(req, tupleAttr(ctaTupleOrig, orig)...)
	putLen(req)
	if err := unix.Sendto(t.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("conntrack: get: %w", err)
	}
	for {
		b, err := t.recv()
		if err != nil {
			return nil, fmt.Errorf("conntrack: get: %w", err)
		}
		for len(b) >= nlmsgHdrLen {
			l, typ, _, s := msgHeader(b)
			if l < nlmsgHdrLen || int(l) > len(b) {
				return nil, fmt.Errorf("conntrack: get: bad message length %d", l)
			}
			m := b[nlmsgHdrLen:l]
			b = b[min(align(int(l)), len(b)):]
			if s != seq {
				continue
			}
			switch typ {
			case unix.NLMSG_ERROR:
				switch errno := ackErrno(m); errno {
				case unix.ENOENT:
					return nil, nil
				case 0:
					continue
				default:
					return nil, fmt.Errorf("conntrack: get %v: %w", orig, errno)
				}
			case msgCtNew:
				var e Entry
				if err := parseEntry(m, &e); err != nil {
					return nil, fmt.Errorf("conntrack: get: %w", err)
				}
				return e.Clone(), nil
			}
		}
	}
}

// recv reads one datagram.
func (t *Table) recv() ([]byte, error) {
	for {
		n, _, flags, _, err := unix.Recvmsg(t.fd, t.buf, nil, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if flags&unix.MSG_TRUNC != 0 {
			return nil, fmt.Errorf("netlink message truncated (%d-byte buffer)", len(t.buf))
		}
		return t.buf[:n], nil
	}
}

func align(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// appendHeader appends a netlink header (length filled in by putLen) and an nfgenmsg.
func appendHeader(b []byte, typ, flags uint16, seq uint32, family uint8) []byte {
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	return append(b, family, unix.NFNETLINK_V0, 0, 0)
}

// putLen sets the length of the message that starts at msg[0] and ends at len(msg).
func putLen(msg []byte) { binary.NativeEndian.PutUint32(msg, uint32(len(msg))) }

func msgHeader(b []byte) (l uint32, typ, flags uint16, seq uint32) {
	return binary.NativeEndian.Uint32(b), binary.NativeEndian.Uint16(b[4:]),
		binary.NativeEndian.Uint16(b[6:]), binary.NativeEndian.Uint32(b[8:])
}

// ackErrno returns the error of an NLMSG_ERROR payload; 0 for an ack.
func ackErrno(m []byte) unix.Errno {
	if len(m) < 4 {
		return unix.EINVAL
	}
	return unix.Errno(-int32(binary.NativeEndian.Uint32(m)))
}

// attr is one netlink attribute: its type (flags masked off), value, and the whole
// attribute as it appeared (header included, padding excluded).
type attr struct {
	typ      uint16
	val, raw []byte
}

// nextAttr splits the first attribute off b.
func nextAttr(b []byte) (a attr, rest []byte, err error) {
	if len(b) < 4 {
		return a, nil, fmt.Errorf("attribute header: %d bytes left", len(b))
	}
	l := int(binary.NativeEndian.Uint16(b))
	if l < 4 || l > len(b) {
		return a, nil, fmt.Errorf("attribute length %d of %d bytes", l, len(b))
	}
	a = attr{typ: binary.NativeEndian.Uint16(b[2:]) & nlaTypeMask, val: b[4:l], raw: b[:l]}
	return a, b[min(align(l), len(b)):], nil
}

// eachAttr calls fn for every attribute of b, in order, and stops at the first error.
func eachAttr(b []byte, fn func(attr) error) error {
	for len(b) > 0 {
		a, rest, err := nextAttr(b)
		if err != nil {
			return err
		}
		b = rest
		if err := fn(a); err != nil {
			return err
		}
	}
	return nil
}

// parseEntry decodes the payload of an IPCTNL_MSG_CT_NEW message (nfgenmsg and
// attributes) into e, which then aliases m.
func parseEntry(m []byte, e *Entry) error {
	if len(m) < nfgenLen {
		return errors.New("short conntrack message")
	}
	*e = Entry{Family: m[0]}
	err := eachAttr(m[nfgenLen:], func(a attr) (err error) {
		switch a.typ {
		case ctaTupleOrig:
			e.origAttr = a.raw
			err = parseTuple(a.val, &e.Orig)
		case ctaTupleReply:
			err = parseTuple(a.val, &e.Reply)
		case ctaZone:
			e.zoneAttr = a.raw
			e.Zone, err = be16(a.val)
		case ctaID:
			e.idAttr = a.raw
			e.ID, err = be32(a.val)
		case ctaStatus:
			e.Status, err = be32(a.val)
		case ctaMark:
			e.Mark, err = be32(a.val)
		case ctaProtoinfo:
			err = parseTCPState(a.val, e)
		}
		if err != nil {
			return fmt.Errorf("attribute %d: %w", a.typ, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if e.origAttr == nil {
		return errors.New("conntrack entry without an original tuple")
	}
	return nil
}

// parseTCPState reads CTA_PROTOINFO_TCP_STATE from a CTA_PROTOINFO payload.
func parseTCPState(b []byte, e *Entry) error {
	return eachAttr(b, func(a attr) error {
		if a.typ != ctaProtoinfoTCP {
			return nil
		}
		return eachAttr(a.val, func(s attr) error {
			if s.typ == ctaProtoinfoTCPState && len(s.val) > 0 {
				e.TCPState = TCPState(s.val[0])
			}
			return nil
		})
	})
}

func parseTuple(b []byte, t *Tuple) error {
	return eachAttr(b, func(a attr) error {
		switch a.typ {
		case ctaTupleIP:
			return parseIP(a.val, t)
		case ctaTupleProto:
			return parseProto(a.val, t)
		}
		return nil
	})
}

func parseIP(b []byte, t *Tuple) error {
	return eachAttr(b, func(a attr) error {
		var addr netip.Addr
		switch a.typ {
		case ctaIPv4Src, ctaIPv4Dst:
			if len(a.val) != 4 {
				return fmt.Errorf("IPv4 address of %d bytes", len(a.val))
			}
			addr = netip.AddrFrom4([4]byte(a.val))
		case ctaIPv6Src, ctaIPv6Dst:
			if len(a.val) != 16 {
				return fmt.Errorf("IPv6 address of %d bytes", len(a.val))
			}
			addr = netip.AddrFrom16([16]byte(a.val))
		default:
			return nil
		}
		if a.typ == ctaIPv4Src || a.typ == ctaIPv6Src {
			t.Src = addr
		} else {
			t.Dst = addr
		}
		return nil
	})
}

func parseProto(b []byte, t *Tuple) error {
	return eachAttr(b, func(a attr) (err error) {
		switch a.typ {
		case ctaProtoNum:
			if len(a.val) < 1 {
				return errors.New("empty protocol number")
			}
			t.Proto = flow.Proto(a.val[0])
		case ctaProtoSrcPort:
			t.SrcPort, err = be16(a.val)
		case ctaProtoDstPort:
			t.DstPort, err = be16(a.val)
		case ctaProtoICMPID, ctaProtoICMPv6ID:
			t.ICMPID, err = be16(a.val)
		case ctaProtoICMPType, ctaProtoICMPv6Type:
			if len(a.val) > 0 {
				t.ICMPType = a.val[0]
			}
		case ctaProtoICMPCode, ctaProtoICMPv6Code:
			if len(a.val) > 0 {
				t.ICMPCode = a.val[0]
			}
		}
		return err
	})
}

func be16(b []byte) (uint16, error) {
	if len(b) < 2 {
		return 0, fmt.Errorf("%d bytes for a 16-bit value", len(b))
	}
	return binary.BigEndian.Uint16(b), nil
}

func be32(b []byte) (uint32, error) {
	if len(b) < 4 {
		return 0, fmt.Errorf("%d bytes for a 32-bit value", len(b))
	}
	return binary.BigEndian.Uint32(b), nil
}

// Attribute encoders, for requests.

func nla(typ uint16, val []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(val)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, val...)
	return append(b, make([]byte, align(len(b))-len(b))...)
}

func nested(typ uint16, children ...[]byte) []byte {
	var v []byte
	for _, c := range children {
		v = append(v, c...)
	}
	return nla(typ|unix.NLA_F_NESTED, v)
}

func u8(v uint8) []byte   { return []byte{v} }
func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// tupleAttr encodes t as attribute typ (CTA_TUPLE_ORIG or CTA_TUPLE_REPLY).
func tupleAttr(typ uint16, t Tuple) []byte {
	src, dst := uint16(ctaIPv4Src), uint16(ctaIPv4Dst)
	if t.Src.Is6() {
		src, dst = ctaIPv6Src, ctaIPv6Dst
	}
	proto := [][]byte{nla(ctaProtoNum, u8(uint8(t.Proto)))}
	switch t.Proto {
	case flow.ICMP:
		proto = append(proto, nla(ctaProtoICMPID, u16(t.ICMPID)), nla(ctaProtoICMPType, u8(t.ICMPType)), nla(ctaProtoICMPCode, u8(t.ICMPCode)))
	case flow.ICMPv6:
		proto = append(proto, nla(ctaProtoICMPv6ID, u16(t.ICMPID)), nla(ctaProtoICMPv6Type, u8(t.ICMPType)), nla(ctaProtoICMPv6Code, u8(t.ICMPCode)))
	default:
		proto = append(proto, nla(ctaProtoSrcPort, u16(t.SrcPort)), nla(ctaProtoDstPort, u16(t.DstPort)))
	}
	return nested(typ,
		nested(ctaTupleIP, nla(src, t.Src.AsSlice()), nla(dst, t.Dst.AsSlice())),
		nested(ctaTupleProto, proto...))
}
