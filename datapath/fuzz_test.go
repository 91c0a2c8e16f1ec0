package datapath

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/datapath/flowcache"
	"github.com/podwall/podwall/datapath/packet"
)

// recorded returns the messages TestLiveRecord took from the kernel (testdata/nfqueue).
func recorded(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "nfqueue", "*.bin"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no recorded messages in testdata/nfqueue: %v", err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

// FuzzParseMessages gives arbitrary bytes to the reader as one read from the netlink socket
// (handleRead on at most a read buffer's worth, then the flush of the verdicts held), for
// both failure policies, and checks
// the verdict messages it sends:
//
//   - nothing panics, and every verdict is accept or drop for a packet id that the input
//     holds as the data of a whole NFQA_PACKET_HDR attribute: no verdict for an id that was
//     not read;
//   - against a slow reference (the messages framed by the kernel's rules, their attributes
//     by mdlayher/netlink's AttributeDecoder, the library go-nfqueue parses with), every
//     well-formed packet message gets exactly one verdict, in order, with the verdict the
//     Decider gives its payload (a drop when its headers cannot be read, the failure
//     policy for a later fragment); a malformed message gets at most one,
//     the failure policy's, with a message-level reason; nothing else gets a verdict;
//   - the counters agree: packets, verdicts, error messages.
//
// Where the reference differs from the kernel's rules on purpose: AttributeDecoder skips an
// attribute of length 0, which nla_ok (and parsePacket) does not accept; the reference
// counts such a message as malformed.
func FuzzParseMessages(f *testing.F) {
	rec := recorded(f)
	for _, b := range rec {
		f.Add(b)
		f.Add(b[:len(b)-7])                                    // cut inside the payload
		f.Add(append(append([]byte(nil), b...), b...))         // two messages, unaligned gap
		f.Add(append(errorMessage(-int32(unix.ENOENT)), b...)) // a refused verdict, then a packet
	}
	syn := rec["tcp4-syn.bin"]
	f.Add(append(errorMessage(0), bytes.Repeat(syn[:len(syn):len(syn)], 3)...))
	f.Add(appendMessage(nil, msgPacket, append(packetBody(1, nil), 0, 0, 1, 0)))
	f.Add(appendMessage(nil, msgPacket, packetBody(2, []byte{0x45})))

	readers := [2]*fuzzReader{newFuzzReader(f, false), newFuzzReader(f, true)}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, fr := range readers {
			fr.check(t, b)
		}
	})
}

// fuzzReader is a reader whose verdicts go to one end of a socket pair, drained at the other.
type fuzzReader struct {
	r        *reader[none]
	fd, peer int
	recs     []Record[none]
	buf      []byte
	d        *denyPort
}

func newFuzzReader(t testing.TB, failOpen bool) *fuzzReader {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	if err := unix.SetNonblock(fds[1], true); err != nil {
		t.Fatal(err)
	}
	cache, err := flowcache.New[cached[none]](1024)
	if err != nil {
		t.Fatal(err)
	}
	fr := &fuzzReader{fd: fds[0], peer: fds[1], buf: make([]byte, 1<<16), d: &denyPort{port: 3306, gen: 1}}
	q := &Queues[none]{cfg: Config[none]{FailOpen: failOpen, CopyRange: MaxCopyRange, Log: slog.New(slog.DiscardHandler),
		Observe: func(r *Record[none]) { fr.recs = append(fr.recs, *r) }}, decider: fr.d, cache: cache, ctx: context.Background()}
	fr.r = newReader(q, 7, nil)
	return fr
}

func (fr *fuzzReader) check(t *testing.T, b []byte) {
	// A read returns at most the reader's buffer (a longer datagram is cut). This also
	// bounds the verdicts of one input, which the socket pair holds until they are read.
	b = b[:min(len(b), len(fr.r.buf))]
	q := fr.r.q
	before := q.Stats()
	fr.recs = fr.recs[:0]
	fr.r.handleRead(fr.fd, b)
	fr.r.flush(fr.fd)
	var got []verdict
	for {
		n, err := unix.Read(fr.peer, fr.buf)
		if err != nil {
			break
		}
		got = append(got, parseVerdicts(t, fr.buf[:n])...)
	}
	failOpen := q.cfg.FailOpen
	if len(got) != len(fr.recs) {
		t.Fatalf("%d verdicts, %d records", len(got), len(fr.recs))
	}
	for _, v := range got {
		if !idReadable(b, v.id) {
			t.Fatalf("verdict for packet id %d, which the input holds in no packet header", v.id)
		}
	}

	ref := reference(b)
	i := 0
	packets, refused := 0, 0
	for _, m := range ref {
		switch {
		case m.errno != 0:
			refused++
			continue
		case !m.packet:
			continue
		}
		packets++
		if m.ok {
			if i >= len(got) || got[i].id != m.id {
				t.Fatalf("well-formed packet %d: verdicts %v from %d on, want its verdict next", m.id, got, i)
			}
			want, malformed := expected(m.payload, failOpen)
			if got[i].accept != want || (fr.recs[i].Malformed != nil) != malformed || isMessageError(fr.recs[i].Malformed) {
				t.Fatalf("packet %d: accept %v, record %+v; want accept %v, malformed %v", m.id, got[i].accept, fr.recs[i], want, malformed)
			}
			i++
			continue
		}
		// Malformed: at most one verdict, the failure policy's, with a message-level reason.
		if i < len(got) && isMessageError(fr.recs[i].Malformed) {
			if got[i].accept != failOpen {
				t.Fatalf("malformed message: accept %v, want the failure policy's %v", got[i].accept, failOpen)
			}
			i++
		}
	}
	if i != len(got) {
		t.Fatalf("verdicts %v: only %d belong to packet messages", got, i)
	}
	s := q.Stats()
	if s.Packets-before.Packets != uint64(packets) || s.VerdictErrors-before.VerdictErrors != uint64(refused) ||
		(s.Accepted+s.Dropped)-(before.Accepted+before.Dropped) != uint64(len(got)) {
		t.Fatalf("stats went %+v → %+v for %d packet messages, %d refusals, %d verdicts", before, s, packets, refused, len(got))
	}
}

func isMessageError(err error) bool {
	return errors.Is(err, errMessageMalformed) || errors.Is(err, errMessageCut) || errors.Is(err, errNoPayload)
}

// expected is the verdict on a well-formed message's payload: denyPort's; a drop when its
// headers cannot be read, whatever the failure policy; the failure policy's for a later
// fragment with no ports to judge.
func expected(payload []byte, failOpen bool) (accept, malformed bool) {
	var p packet.Parsed
	if err := packet.NewDecoder().Decode(payload, &p); err != nil {
		return false, true
	}
	if p.Fragment == packet.LaterFragment && p.Proto.HasPorts() {
		return failOpen, true
	}
	return p.DstPort != 3306, false
}

// idReadable reports whether b holds id as the first four bytes of the data of an
// attribute that says it is an NFQA_PACKET_HDR of full length, behind at least a netlink
// and an nfgenmsg header.
func idReadable(b []byte, id uint32) bool {
	for p := nlmsgHdrLen + nfgenHdrLen; p+nlaHdrLen+packetHdrLen <= len(b); p++ {
		if binary.NativeEndian.Uint16(b[p+2:])&nlaTypeMask == nfqaPacketHdr &&
			binary.NativeEndian.Uint16(b[p:]) >= nlaHdrLen+packetHdrLen &&
			binary.BigEndian.Uint32(b[p+nlaHdrLen:]) == id {
			return true
		}
	}
	return false
}

// refMessage is what the reference reads from one netlink message.
type refMessage struct {
	packet  bool   // an NFQUEUE packet message
	ok      bool   // well-formed: exactly one whole packet header and one payload, not cut
	id      uint32 // when ok
	payload []byte // when ok
	errno   int32  // of an NLMSG_ERROR message
}

// reference walks the messages with offsets (nlmsg_ok: a length of at least a header;
// the next at the length rounded up to 4; a message longer than the input is cut and last)
// and reads packet messages' attributes with mdlayher/netlink.
func reference(b []byte) []refMessage {
	var out []refMessage
	for off := 0; len(b)-off >= 16; {
		l := int(binary.NativeEndian.Uint32(b[off:]))
		if l < 16 {
			break
		}
		end, cut := off+l, false
		if l > len(b)-off {
			end, cut = len(b), true
		}
		body := b[off+16 : end]
		switch binary.NativeEndian.Uint16(b[off+4:]) {
		case msgPacket:
			m := refPacket(body)
			m.ok = m.ok && !cut
			out = append(out, m)
		case nlmsgError:
			if len(body) >= 4 {
				out = append(out, refMessage{errno: int32(binary.NativeEndian.Uint32(body))})
			}
		}
		if cut {
			break
		}
		off += (l + 3) &^ 3
	}
	return out
}

func refPacket(body []byte) refMessage {
	m := refMessage{packet: true}
	if len(body) < 4 {
		return m
	}
	ad, err := netlink.NewAttributeDecoder(body[4:])
	if err != nil {
		return m
	}
	headers, payloads := 0, 0
	var hdr []byte
	for ad.Next() {
		switch ad.Type() {
		case nfqaPacketHdr:
			headers++
			hdr = ad.Bytes()
		case nfqaPayload:
			payloads++
			m.payload = ad.Bytes()
		}
	}
	if ad.Err() != nil || zeroLength(body[4:]) || headers != 1 || payloads != 1 || len(hdr) < packetHdrLen {
		return m
	}
	m.ok, m.id = true, binary.BigEndian.Uint32(hdr)
	return m
}

// zeroLength reports whether attrs holds an attribute of length 0, which AttributeDecoder
// skips and the kernel's rules reject.
func zeroLength(attrs []byte) bool {
	for i := 0; len(attrs)-i >= 4; {
		l := int(binary.NativeEndian.Uint16(attrs[i:]))
		if l == 0 {
			return true
		}
		i += (max(l, 4) + 3) &^ 3
	}
	return false
}
