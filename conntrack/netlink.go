package conntrack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
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
	ctaTimeout    = 7
	ctaMark       = 8
	ctaID         = 12
	ctaZone       = 18
	ctaMarkMask   = 21

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

	nfgenLen = 4 // struct nfgenmsg, before the attributes
)

// ErrInterrupted reports a dump the kernel marked inconsistent (NLM_F_DUMP_INTR): the
// table changed under it, so an entry may have been missed or delivered twice.
var ErrInterrupted = errors.New("conntrack: dump interrupted by a concurrent change")

const (
	// deleteBatch bounds the delete (or mark) requests sent in one datagram.
	deleteBatch = 128
	// recvBuffer is the buffer a datagram is read into. The kernel sizes a dump's
	// datagrams by the reader's buffer, up to 32 KiB: a larger buffer means fewer of them.
	recvBuffer = 64 << 10
	// silence is how long a kernel may go without answering before an exchange fails, so
	// that a kernel that stops answering does not hang a sweep forever.
	silence = 10 * time.Second
	// refreshEvery is how many answers a dump delivers between extensions of its deadline.
	refreshEvery = 1024
	// quiet is how long drain waits for more of an abandoned exchange's answers.
	quiet = 50 * time.Millisecond
)

var errClosed = errors.New("table closed")

// Table reads and deletes the entries of the conntrack table of one network namespace
// over a ctnetlink socket. Its methods are safe for concurrent use (they serialise).
type Table struct {
	mu    sync.Mutex
	conn  *netlink.Conn // nil once closed
	stale bool          // an exchange broke off: answers to it may still come
}

// Open opens a ctnetlink socket in the calling thread's network namespace. It needs
// CAP_NET_ADMIN.
func Open() (*Table, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{MessageBufferSize: recvBuffer})
	if err != nil {
		return nil, fmt.Errorf("conntrack: netlink socket: %w", err)
	}
	// Acks carry no copy of the request: a batch of them fits any buffer.
	if err := c.SetOption(netlink.CapAcknowledge, true); err != nil {
		c.Close()
		return nil, fmt.Errorf("conntrack: NETLINK_CAP_ACK: %w", err)
	}
	return &Table{conn: c}, nil
}

// Close closes the socket.
func (t *Table) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn == nil {
		return nil
	}
	err := t.conn.Close()
	t.conn = nil
	return err
}

// Dump reads every entry of the table, both families, and calls fn for each, on the
// calling goroutine. The entry is valid only during the call. The dump streams: memory
// does not grow with the table. It returns an error wrapping ErrInterrupted when the
// kernel flagged the dump inconsistent, and the first parse error when an entry could not
// be read; in both cases every other entry was delivered.
func (t *Table) Dump(fn func(*Entry)) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var (
		e           Entry
		failed, bad error // bad: the first entry that did not parse; the dump is read to its end anyway
		interrupted bool
	)
	err := t.exchange([]netlink.Message{request(msgCtGet, netlink.Dump, unix.AF_UNSPEC, nil)},
		func(_ int, m netlink.Message, err error) {
			switch {
			case err != nil:
				failed = err
				return
			case m.Header.Flags&netlink.DumpInterrupted != 0:
				interrupted = true
			}
			if m.Header.Type != msgCtNew {
				return
			}
			if err := parseEntry(m.Data, &e); err != nil {
				bad = firstErr(bad, err)
				return
			}
			fn(&e)
		})
	switch err = firstErr(err, failed, bad); {
	case err != nil:
		return fmt.Errorf("conntrack: dump: %w", err)
	case interrupted:
		return ErrInterrupted
	}
	return nil
}

// firstErr returns the first of errs that is not nil.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Delete deletes the given entries (read by Dump, kept with Clone), each only if the
// kernel still holds that very entry (same tuple, zone and id). It returns how many it
// deleted and how many were already gone.
func (t *Table) Delete(entries []*Entry) (deleted, gone int, err error) {
	return t.each("delete", entries, func(e *Entry, ae *netlink.AttributeEncoder) netlink.Message {
		// The kernel deletes the entry only if the one it finds by tuple and zone has this id.
		ae.Uint32(ctaID, e.ID)
		return request(msgCtDelete, netlink.Acknowledge, e.Family, nil)
	})
}

// Mark sets the bits of mark in the connection mark of the given entries (read by Dump,
// kept with Clone), leaving the mark's other bits as they are. The entries stay in the
// table. It returns how many it marked and how many were already gone.
//
// The kernel finds the entry by tuple and zone only (it ignores the id on an update): if
// the connection was meanwhile replaced by a new one on the same tuple, the new one is
// marked. Being the same flow, the policy that denied the old one denies it too.
func (t *Table) Mark(entries []*Entry, mark uint32) (marked, gone int, err error) {
	if mark == 0 {
		return 0, 0, errors.New("conntrack: mark: no bits to set")
	}
	return t.each("mark", entries, func(e *Entry, ae *netlink.AttributeEncoder) netlink.Message {
		// An update (IPCTNL_MSG_CT_NEW without NLM_F_CREATE): ENOENT when the entry is gone.
		// The kernel sets mark = (mark & ~CTA_MARK_MASK) ^ CTA_MARK.
		ae.Uint32(ctaMark, mark)
		ae.Uint32(ctaMarkMask, mark)
		return request(msgCtNew, netlink.Acknowledge, e.Family, nil)
	})
}

// each sends one request per entry, in batches: the original tuple as the kernel wrote it,
// the zone, and what req adds to the attributes; req returns the request without them.
// It returns how many the kernel acknowledged and how many entries were gone.
func (t *Table) each(verb string, entries []*Entry, req func(*Entry, *netlink.AttributeEncoder) netlink.Message) (done, gone int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for len(entries) > 0 {
		batch := entries[:min(deleteBatch, len(entries))]
		entries = entries[len(batch):]
		d, g, err := t.batch(verb, batch, req)
		done, gone = done+d, gone+g
		if err != nil {
			errs = append(errs, err)
			if len(errs) > 3 {
				errs = append(errs, fmt.Errorf("conntrack: %s: giving up", verb))
				break
			}
		}
	}
	return done, gone, errors.Join(errs...)
}

func (t *Table) batch(verb string, batch []*Entry, req func(*Entry, *netlink.AttributeEncoder) netlink.Message) (done, gone int, err error) {
	reqs := make([]netlink.Message, len(batch))
	for i, e := range batch {
		if len(e.orig) == 0 {
			// A delete without a tuple flushes the whole table: never send one.
			return 0, 0, fmt.Errorf("conntrack: %s: entry without its original tuple (not read by Dump?)", verb)
		}
		ae := encoder()
		ae.Bytes(netlink.Nested|ctaTupleOrig, e.orig)
		if e.Zone != 0 {
			ae.Uint16(ctaZone, e.Zone)
		}
		m := req(e, ae)
		attrs, err := ae.Encode()
		if err != nil {
			return 0, 0, fmt.Errorf("conntrack: %s %v: %w", verb, e, err)
		}
		m.Data = append(m.Data, attrs...)
		reqs[i] = m
	}
	var errs []error
	err = t.exchange(reqs, func(i int, _ netlink.Message, err error) {
		switch {
		case err == nil:
			done++
		case errors.Is(err, unix.ENOENT):
			gone++
		default:
			errs = append(errs, fmt.Errorf("conntrack: %s %v: %w", verb, batch[i], err))
		}
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("conntrack: %s: %w", verb, err))
	}
	return done, gone, errors.Join(errs...)
}

// Get returns the entry whose original tuple is orig (zone 0), or nil when the table has
// none. It is a single lookup, not a dump: cheap enough to poll.
func (t *Table) Get(orig Tuple) (*Entry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ae := encoder()
	encodeTuple(ae, ctaTupleOrig, orig)
	attrs, err := ae.Encode()
	if err != nil {
		return nil, fmt.Errorf("conntrack: get %v: %w", orig, err)
	}
	var got *Entry
	var failed error
	err = t.exchange([]netlink.Message{request(msgCtGet, 0, family(orig), attrs)},
		func(_ int, m netlink.Message, err error) {
			switch {
			case errors.Is(err, unix.ENOENT):
			case err != nil:
				failed = err
			case m.Header.Type == msgCtNew:
				var e Entry
				if failed = parseEntry(m.Data, &e); failed == nil {
					got = e.Clone()
				}
			}
		})
	if err = firstErr(err, failed); err != nil {
		return nil, fmt.Errorf("conntrack: get %v: %w", orig, err)
	}
	return got, nil
}

// exchange sends reqs in one datagram and reads their answers: one multi-part series for
// a dump (which must then be the only request), one message otherwise (an ack or an
// error for a delete, the entry or an error for a get). It calls fn for each answer with
// the index of the request it answers; a netlink error comes as err. The kernel sends
// each of those single answers in a datagram of its own, so the library, which ends a
// read at the first error of a datagram, never drops one. exchange itself fails only when
// the socket does: then answers may be left unread, and the next exchange first drains
// them.
func (t *Table) exchange(reqs []netlink.Message, fn func(i int, m netlink.Message, err error)) error {
	if t.conn == nil {
		return errClosed
	}
	if t.stale {
		t.drain()
	}
	// Fails only on a closed socket (which the exchange then reports) or on a fake one.
	_ = t.conn.SetDeadline(time.Now().Add(silence))
	sent, err := t.conn.SendMessages(reqs)
	if err != nil {
		return err
	}
	t.stale = true
	first, dump := sent[0].Header.Sequence, sent[0].Header.Flags&netlink.Dump != 0
	n := 0
	for answered := 0; answered < len(sent); {
		for m, err := range t.conn.ReceiveIter() {
			seq := m.Header.Sequence
			if err != nil {
				var nerr *netlink.OpError
				if !errors.As(err, &nerr) || nerr.Sequence == 0 {
					return err // the socket failed, not a request
				}
				seq = nerr.Sequence
			}
			i := int(seq - first)
			if i < 0 || i >= len(sent) {
				return fmt.Errorf("answer %d to no request of %d–%d", seq, first, first+uint32(len(sent))-1)
			}
			fn(i, m, err)
			if dump {
				if n++; n%refreshEvery == 0 {
					_ = t.conn.SetReadDeadline(time.Now().Add(silence))
				}
				continue
			}
			if answered++; answered == len(sent) && m.Header.Flags&netlink.Multi != 0 {
				// ctnetlink flags its answer to a get NLM_F_MULTI, and no NLMSG_DONE
				// follows: ReceiveIter would wait for one (mdlayher/netlink#315). An
				// expired deadline ends its wait; nothing else is coming.
				_ = t.conn.SetReadDeadline(time.Unix(1, 0))
				break
			}
		}
		if dump {
			answered++ // ReceiveIter reads a multi-part series to its end
		}
	}
	t.stale = false
	return nil
}

// drain reads and drops what an exchange that broke off left on the socket (the kernel
// writes the rest of a dump as it is read), until the kernel has nothing more for quiet.
func (t *Table) drain() {
	for {
		_ = t.conn.SetReadDeadline(time.Now().Add(quiet))
		read := false
		for _, err := range t.conn.ReceiveIter() {
			var nerr *netlink.OpError
			if err != nil && (!errors.As(err, &nerr) || nerr.Sequence == 0) {
				t.stale = false // silent (or failing: the next exchange will say)
				return
			}
			read = true
		}
		if !read {
			t.stale = false
			return
		}
	}
}

// request returns a ctnetlink request: the netlink header, an nfgenmsg and attrs.
func request(typ uint16, flags netlink.HeaderFlags, family uint8, attrs []byte) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request | flags},
		Data:   append([]byte{family, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
}

// encoder returns an encoder for ctnetlink attributes, whose integers are big-endian.
func encoder() *netlink.AttributeEncoder {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	return ae
}

func family(t Tuple) uint8 {
	if t.Src.Is6() {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// encodeTuple encodes t as attribute typ (CTA_TUPLE_ORIG or CTA_TUPLE_REPLY).
func encodeTuple(ae *netlink.AttributeEncoder, typ uint16, t Tuple) {
	ae.Nested(typ, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(ctaTupleIP, func(ae *netlink.AttributeEncoder) error {
			src, dst := uint16(ctaIPv4Src), uint16(ctaIPv4Dst)
			if t.Src.Is6() {
				src, dst = ctaIPv6Src, ctaIPv6Dst
			}
			ae.Bytes(src, t.Src.AsSlice())
			ae.Bytes(dst, t.Dst.AsSlice())
			return nil
		})
		ae.Nested(ctaTupleProto, func(ae *netlink.AttributeEncoder) error {
			ae.Uint8(ctaProtoNum, uint8(t.Proto))
			switch t.Proto {
			case flow.ICMP:
				ae.Uint16(ctaProtoICMPID, t.ICMPID)
				ae.Uint8(ctaProtoICMPType, t.ICMPType)
				ae.Uint8(ctaProtoICMPCode, t.ICMPCode)
			case flow.ICMPv6:
				ae.Uint16(ctaProtoICMPv6ID, t.ICMPID)
				ae.Uint8(ctaProtoICMPv6Type, t.ICMPType)
				ae.Uint8(ctaProtoICMPv6Code, t.ICMPCode)
			default:
				ae.Uint16(ctaProtoSrcPort, t.SrcPort)
				ae.Uint16(ctaProtoDstPort, t.DstPort)
			}
			return nil
		})
		return nil
	})
}
