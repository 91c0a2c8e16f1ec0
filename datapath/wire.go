package datapath

import (
	"encoding/binary"
	"errors"
)

// The netlink and nfnetlink_queue wire format the reader's hot path reads and writes by hand
// (linux/netlink.h, linux/netfilter/nfnetlink.h, linux/netfilter/nfnetlink_queue.h). Opening,
// binding and configuring a queue stay with github.com/florianl/go-nfqueue; only what every
// queued packet costs is here: walking the messages of one read in place, finding a packet
// message's id and payload, and writing verdict messages into a buffer the reader owns. Header
// fields of netlink are in host byte order; nfnetlink's res_id and the NFQUEUE structures are
// big-endian.
const (
	nlmsgHdrLen  = 16 // struct nlmsghdr
	nlaHdrLen    = 4  // struct nlattr
	nfgenHdrLen  = 4  // struct nfgenmsg: family, version, res_id (the queue number)
	nlaTypeMask  = 0x3fff
	packetHdrLen = 7 // struct nfqnl_msg_packet_hdr (packed): __be32 packet_id, __be16 hw_protocol, __u8 hook

	nlmsgError = 2 // NLMSG_ERROR: an ack, or the error of a request (always sent for a failed one)

	nfnlSubsysQueue = 3
	nfqnlMsgPacket  = 0
	nfqnlMsgVerdict = 1
	msgPacket       = nfnlSubsysQueue<<8 | nfqnlMsgPacket
	msgVerdict      = nfnlSubsysQueue<<8 | nfqnlMsgVerdict

	nfqaPacketHdr  = 1
	nfqaVerdictHdr = 2
	nfqaPayload    = 10

	nlmFRequest = 1

	nfDrop   = 0
	nfAccept = 1

	// verdictLen is the size of one NFQNL_MSG_VERDICT message: nlmsghdr, nfgenmsg and one
	// NFQA_VERDICT_HDR attribute holding struct nfqnl_msg_verdict_hdr (verdict, id).
	verdictLen = nlmsgHdrLen + nfgenHdrLen + nlaHdrLen + 8
)

// Why a packet message could not be judged. Fixed values, so that the hot path never formats
// an error; Record.Malformed carries them like packet.ErrTruncated and packet.ErrMalformed.
var (
	errMessageMalformed = errors.New("datapath: malformed NFQUEUE message")
	errMessageCut       = errors.New("datapath: NFQUEUE message cut short by the read")
	errNoPayload        = errors.New("datapath: NFQUEUE message without payload")
)

func align4(n int) int { return (n + 3) &^ 3 }

// messages walks the netlink messages of one read in place, by the rules of the kernel's
// nlmsg_ok/nlmsg_next: a message declares its length, at least a header's; the next starts
// at that length rounded up to 4; fewer than a header's bytes at the end are ignored.
type messages struct {
	b []byte
	// broken is set when a header declared less than a header's length: nothing after it
	// can be framed, so the walk stops there.
	broken bool
}

// next returns the type and body (the bytes after the header) of the next message and
// reports whether there was one. cut reports a message that declares more bytes than the read
// holds: its body is what arrived, and it is the last one.
func (m *messages) next() (typ uint16, body []byte, cut, ok bool) {
	if len(m.b) < nlmsgHdrLen {
		return 0, nil, false, false
	}
	l := int(binary.NativeEndian.Uint32(m.b))
	typ = binary.NativeEndian.Uint16(m.b[4:])
	switch {
	case l < nlmsgHdrLen:
		m.broken, m.b = true, nil
		return 0, nil, false, false
	case l > len(m.b):
		body, m.b = m.b[nlmsgHdrLen:], nil
		return typ, body, true, true
	}
	body = m.b[nlmsgHdrLen:l]
	m.b = m.b[min(align4(l), len(m.b)):]
	return typ, body, false, true
}

// packetMsg is an NFQUEUE packet message parsed in place; payload points into the read
// buffer and is valid until the next read.
type packetMsg struct {
	// id is the kernel's packet id, valid when hasID: read from a whole NFQA_PACKET_HDR.
	id    uint32
	hasID bool
	// payload is NFQA_PAYLOAD: the packet from its network header, up to the copy range.
	payload []byte
	// err says why the message cannot be judged (the packet then gets the failure policy's
	// verdict, if it has an id); nil for a well-formed message.
	err error
}

// parsePacket parses the body of an NFQNL_MSG_PACKET message (after its nlmsghdr): the
// nfgenmsg header, then attributes by the rules of the kernel's nla_ok/nla_next (a length of
// at least an attribute header, within the message; the next at that length rounded up to 4).
// It keeps the first NFQA_PACKET_HDR and NFQA_PAYLOAD and ignores attributes it does not use.
// Anything else makes the message malformed: bytes that do not frame as attributes, a packet
// header shorter than its struct, a second packet header or payload, no payload. The id stays
// valid whenever a whole packet header came before the fault, so that the packet still gets
// a verdict. It never allocates.
func parsePacket(body []byte) packetMsg {
	var m packetMsg
	if len(body) < nfgenHdrLen {
		m.err = errMessageMalformed
		return m
	}
	hasPayload := false
	for a := body[nfgenHdrLen:]; len(a) > 0; {
		if len(a) < nlaHdrLen {
			m.err = errMessageMalformed
			return m
		}
		l := int(binary.NativeEndian.Uint16(a))
		if l < nlaHdrLen || l > len(a) {
			m.err = errMessageMalformed
			return m
		}
		data := a[nlaHdrLen:l]
		switch binary.NativeEndian.Uint16(a[2:]) & nlaTypeMask {
		case nfqaPacketHdr:
			if m.hasID || len(data) < packetHdrLen {
				m.err = errMessageMalformed
				return m
			}
			m.id, m.hasID = binary.BigEndian.Uint32(data), true
		case nfqaPayload:
			if hasPayload {
				m.err = errMessageMalformed
				return m
			}
			m.payload, hasPayload = data, true
		}
		a = a[min(align4(l), len(a)):]
	}
	if !hasPayload {
		m.err = errNoPayload
	}
	return m
}

// parseError returns the error code of an NLMSG_ERROR message's body (0 is an ack) and
// reports whether the body holds one.
func parseError(body []byte) (errno int32, ok bool) {
	if len(body) < 4 {
		return 0, false
	}
	return int32(binary.NativeEndian.Uint32(body)), true
}

// putVerdict writes the NFQNL_MSG_VERDICT message giving verdict (nfAccept or nfDrop) to
// packet id of queue into b[:verdictLen].
func putVerdict(b []byte, queue uint16, id, verdict uint32) {
	_ = b[verdictLen-1]
	binary.NativeEndian.PutUint32(b[0:], verdictLen)
	binary.NativeEndian.PutUint16(b[4:], msgVerdict)
	binary.NativeEndian.PutUint16(b[6:], nlmFRequest)
	binary.NativeEndian.PutUint32(b[8:], 0)  // sequence
	binary.NativeEndian.PutUint32(b[12:], 0) // port id: the kernel
	b[16], b[17] = 0, 0                      // AF_UNSPEC, NFNETLINK_V0
	binary.BigEndian.PutUint16(b[18:], queue)
	binary.NativeEndian.PutUint16(b[20:], nlaHdrLen+8)
	binary.NativeEndian.PutUint16(b[22:], nfqaVerdictHdr)
	binary.BigEndian.PutUint32(b[24:], verdict)
	binary.BigEndian.PutUint32(b[28:], id)
}
