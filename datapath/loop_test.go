package datapath

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/datapath/flowcache"
	"github.com/podwall/podwall/datapath/packet"
)

// The reader's loop is tested over a socket pair standing in for the netlink socket: an
// AF_UNIX SOCK_SEQPACKET pair keeps datagram boundaries as netlink does. The test plays the
// kernel on the other end: it writes NFQUEUE messages and reads the verdict messages.

// nlAttr is one netlink attribute of a message a test builds.
type nlAttr struct {
	typ  uint16
	data []byte
}

// appendAttrs appends attributes as the kernel lays them out (nla_put: length, type, data,
// padding to 4).
func appendAttrs(b []byte, attrs ...nlAttr) []byte {
	for _, a := range attrs {
		b = binary.NativeEndian.AppendUint16(b, uint16(nlaHdrLen+len(a.data)))
		b = binary.NativeEndian.AppendUint16(b, a.typ)
		b = append(b, a.data...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	return b
}

// appendMessage appends a netlink message of type typ with body.
func appendMessage(b []byte, typ uint16, body []byte) []byte {
	b = binary.NativeEndian.AppendUint32(b, uint32(nlmsgHdrLen+len(body)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, 0)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = append(b, body...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// packetHdr is the data of NFQA_PACKET_HDR: id, hw_protocol 0x0800, hook 3 (forward).
func packetHdr(id uint32) []byte {
	return append(binary.BigEndian.AppendUint32(nil, id), 0x08, 0x00, 3)
}

// packetBody is the body of an NFQUEUE packet message of queue 7 (after nlmsghdr) with the
// attributes the kernel sends first and last.
func packetBody(id uint32, payload []byte, extra ...nlAttr) []byte {
	b := []byte{unix.AF_INET, 0, 0, 7}
	attrs := append([]nlAttr{{nfqaPacketHdr, packetHdr(id)}}, extra...)
	return appendAttrs(b, append(attrs, nlAttr{nfqaPayload, payload})...)
}

func packetMessage(id uint32, payload []byte) []byte {
	return appendMessage(nil, msgPacket, packetBody(id, payload))
}

// errorMessage is an NLMSG_ERROR message answering a verdict with errno (0: an ack).
func errorMessage(errno int32) []byte {
	body := binary.NativeEndian.AppendUint32(nil, uint32(errno))
	var v [verdictLen]byte
	putVerdict(v[:], 7, 1, nfAccept)
	return appendMessage(nil, nlmsgError, append(body, v[:nlmsgHdrLen]...))
}

// verdict is one verdict message as the kernel would read it.
type verdict struct {
	id     uint32
	accept bool
}

// parseVerdicts splits a datagram the reader sent into verdict messages and checks each.
func parseVerdicts(t testing.TB, b []byte) []verdict {
	t.Helper()
	if len(b)%verdictLen != 0 {
		t.Fatalf("verdict datagram of %d bytes, want a multiple of %d", len(b), verdictLen)
	}
	var out []verdict
	for ; len(b) > 0; b = b[verdictLen:] {
		m := b[:verdictLen]
		if binary.NativeEndian.Uint32(m) != verdictLen || binary.NativeEndian.Uint16(m[4:]) != msgVerdict ||
			binary.NativeEndian.Uint16(m[6:]) != nlmFRequest || binary.BigEndian.Uint16(m[18:]) != 7 ||
			binary.NativeEndian.Uint16(m[20:]) != 12 || binary.NativeEndian.Uint16(m[22:]) != nfqaVerdictHdr {
			t.Fatalf("bad verdict message % x", m)
		}
		v := binary.BigEndian.Uint32(m[24:])
		if v != nfAccept && v != nfDrop {
			t.Fatalf("verdict %d, want accept or drop", v)
		}
		out = append(out, verdict{id: binary.BigEndian.Uint32(m[28:]), accept: v == nfAccept})
	}
	return out
}

// pair is a reader serving one end of a socket pair; the test is the kernel at the other.
type pair struct {
	q    *Queues[none]
	r    *reader[none]
	f    *os.File // the reader's end
	peer int      // the kernel's end, blocking with a 2 s receive timeout
	buf  []byte
	done chan struct{}
}

// newPair makes the pair and the reader; start runs it.
func newPair(t testing.TB, cfg Config[none], d Decider[none]) *pair {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptTimeval(fds[1], unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2}); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "reader")
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = 1 << 16
	}
	if cfg.CopyRange == 0 {
		cfg.CopyRange = MaxCopyRange
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	cache, err := flowcache.New[cached[none]](cfg.CacheSize)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	q := &Queues[none]{cfg: cfg, decider: d, cache: cache, ctx: ctx, cancel: cancel}
	p := &pair{q: q, r: newReader(q, 7, rc), f: f, peer: fds[1], buf: make([]byte, 1<<16), done: make(chan struct{})}
	t.Cleanup(func() {
		p.stop()
		f.Close()
		unix.Close(p.peer)
	})
	return p
}

func (p *pair) start() *pair {
	go func() {
		defer close(p.done)
		p.r.serve()
	}()
	return p
}

// stop stops the reader as Close does and waits for it.
func (p *pair) stop() {
	p.q.stopping.Store(true)
	p.q.cancel()
	p.f.SetReadDeadline(time.Unix(1, 0))
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		panic("reader did not stop")
	}
}

func (p *pair) send(t testing.TB, b []byte) {
	t.Helper()
	if _, err := peerWrite(p.peer, b); err != nil {
		t.Fatal(err)
	}
}

// peerRead and peerWrite are the blocking system calls of the test's end, retried when a
// signal (the Go runtime's preemption) interrupts them.
func peerRead(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err != unix.EINTR {
			return n, err
		}
	}
}

func peerWrite(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Write(fd, b)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// recv reads one datagram of verdicts.
func (p *pair) recv(t testing.TB) []verdict {
	t.Helper()
	n, err := peerRead(p.peer, p.buf)
	if err != nil {
		t.Fatalf("no verdict: %v", err)
	}
	return parseVerdicts(t, p.buf[:n])
}

// records collects what Observe receives; Observe runs after the verdict is sent, so a test
// that has read a verdict waits here for its Record[none].
type records chan Record[none]

func (c records) observe(r *Record[none]) { c <- *r }

func (c records) next(t testing.TB) Record[none] {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(2 * time.Second):
		t.Fatal("no record")
		return Record[none]{}
	}
}

// Every packet gets one verdict, sent as soon as the socket has nothing more to read, and
// its Record[none] reaches Observe after the verdict is sent.
func TestReaderVerdicts(t *testing.T) {
	d := &denyPort{port: 3306, gen: 1}
	c := make(records, 16)
	p := newPair(t, Config[none]{Observe: c.observe}, d)
	p.start()
	p.send(t, packetMessage(1, tcpSYN(t, "10.244.1.10", "10.244.1.12", 40000, 80)))
	if got := p.recv(t); !slices.Equal(got, []verdict{{1, true}}) {
		t.Errorf("SYN to 80: %v, want accept 1", got)
	}
	p.send(t, packetMessage(2, tcpSYN(t, "fd00::1", "fd00::2", 40000, 3306)))
	if got := p.recv(t); !slices.Equal(got, []verdict{{2, false}}) {
		t.Errorf("SYN to 3306: %v, want drop 2", got)
	}
	// Two messages in one datagram (the kernel sends one per datagram, the reader takes
	// any number): two verdicts in one sendmsg.
	two := append(packetMessage(3, tcpSYN(t, "10.244.1.10", "10.244.1.12", 40001, 80)),
		packetMessage(4, tcpSYN(t, "10.244.1.10", "10.244.1.12", 40002, 3306))...)
	p.send(t, two)
	if got := p.recv(t); !slices.Equal(got, []verdict{{3, true}, {4, false}}) {
		t.Errorf("two in one datagram: %v, want accept 3, drop 4 in one send", got)
	}
	p.stop()
	s := p.q.Stats()
	if s.Packets != 4 || s.Accepted != 2 || s.Dropped != 2 || s.Malformed != 0 || s.ReaderFailures != 0 {
		t.Errorf("stats %+v", s)
	}
	recs := []Record[none]{c.next(t), c.next(t), c.next(t), c.next(t)}
	if !recs[0].Allow || recs[1].Allow || recs[1].Flow.Port != 3306 || !recs[2].CacheHit || recs[0].Queue != 7 {
		t.Errorf("records %+v", recs)
	}
}

// The verdicts of the first read after a wait go out at once, before the next read (a lone
// packet waits for nothing); what waits in the socket after it is read before the verdicts
// go out, up to maxBatch verdicts per sendmsg.
func TestReaderBatches(t *testing.T) {
	p := newPair(t, Config[none]{}, &denyPort{port: 3306, gen: 1})
	syn := tcpSYN(t, "10.244.1.10", "10.244.1.12", 40000, 80)
	const n = maxBatch + 4
	for i := range n {
		p.send(t, packetMessage(uint32(100+i), syn))
	}
	p.start()
	var ids []uint32
	var sizes []int
	for len(ids) < n {
		got := p.recv(t)
		sizes = append(sizes, len(got))
		for _, v := range got {
			ids = append(ids, v.id)
		}
	}
	if !slices.Equal(sizes, []int{1, maxBatch, 3}) {
		t.Errorf("verdicts per sendmsg %v, want [1 %d 3]", sizes, maxBatch)
	}
	for i, id := range ids {
		if id != uint32(100+i) {
			t.Fatalf("verdict ids %v, want 100…%d in order", ids, 100+n-1)
		}
	}
}

// A packet message the reader can read an id from but not read gets the failure policy's
// verdict, a packet whose headers it cannot read a drop in both modes; a message without
// an id gets none (it has none to give), and all are counted.
func TestReaderMalformed(t *testing.T) {
	syn := tcpSYN(t, "10.244.1.10", "10.244.1.12", 40000, 80)
	badAttr := packetBody(5, syn)
	badAttr = append(badAttr, 3, 0, 1, 0) // an attribute of length 3
	noPayload := appendAttrs([]byte{unix.AF_INET, 0, 0, 7}, nlAttr{nfqaPacketHdr, packetHdr(6)})
	shortHdr := appendAttrs([]byte{unix.AF_INET, 0, 0, 7}, nlAttr{nfqaPacketHdr, packetHdr(7)[:6]}, nlAttr{nfqaPayload, syn})
	cut := packetMessage(8, syn)
	binary.NativeEndian.PutUint32(cut, uint32(len(cut)+100))
	for _, failOpen := range []bool{false, true} {
		c := make(records, 16)
		p := newPair(t, Config[none]{FailOpen: failOpen, Observe: c.observe}, &denyPort{gen: 1})
		p.start()
		for _, tc := range []struct {
			name   string
			msg    []byte
			want   []verdict
			reason error
		}{
			{"bad attribute after the id", appendMessage(nil, msgPacket, badAttr), []verdict{{5, failOpen}}, errMessageMalformed},
			{"no payload", appendMessage(nil, msgPacket, noPayload), []verdict{{6, failOpen}}, errNoPayload},
			{"cut short", cut, []verdict{{8, failOpen}}, errMessageCut},
			{"truncated packet", packetMessage(9, syn[:30]), []verdict{{9, false}}, packet.ErrTruncated},
		} {
			p.send(t, tc.msg)
			if got := p.recv(t); !slices.Equal(got, tc.want) {
				t.Errorf("failOpen=%v, %s: %v, want %v", failOpen, tc.name, got, tc.want)
			}
			if rec := c.next(t); rec.Malformed == nil || rec.Allow != tc.want[0].accept || !errors.Is(rec.Malformed, tc.reason) {
				t.Errorf("failOpen=%v, %s: record %+v, want reason %v", failOpen, tc.name, rec, tc.reason)
			}
		}
		// No id: no verdict. The next packet's verdict is the next thing sent.
		p.send(t, appendMessage(nil, msgPacket, shortHdr))
		p.send(t, packetMessage(10, syn))
		if got := p.recv(t); !slices.Equal(got, []verdict{{10, true}}) {
			t.Errorf("failOpen=%v, short packet header then a good packet: %v, want only accept 10", failOpen, got)
		}
		p.stop()
		if s := p.q.Stats(); s.Packets != 6 || s.Malformed != 5 || s.Accepted+s.Dropped != 5 {
			t.Errorf("failOpen=%v: stats %+v, want 6 packets, 5 malformed, 5 verdicts", failOpen, s)
		}
	}
}

// An error message from the kernel is a verdict it did not take; an ack is not.
func TestReaderVerdictErrors(t *testing.T) {
	p := newPair(t, Config[none]{}, &denyPort{gen: 1}).start()
	p.send(t, errorMessage(0))
	p.send(t, errorMessage(-int32(unix.ENOENT)))
	p.send(t, packetMessage(1, tcpSYN(t, "10.244.1.10", "10.244.1.12", 40000, 80)))
	p.recv(t) // read in order: the errors came first
	if s := p.q.Stats(); s.VerdictErrors != 1 || s.Packets != 1 {
		t.Errorf("stats %+v, want 1 verdict error", s)
	}
}

// A receive error other than ENOBUFS stops the reader and counts a reader failure (the
// agent's /healthz then fails); stopping does not.
func TestReaderFailure(t *testing.T) {
	p := newPair(t, Config[none]{}, &denyPort{gen: 1}).start()
	unix.Shutdown(p.peer, unix.SHUT_WR) // the reader reads end of file
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Fatal("reader still running after end of file")
	}
	if s := p.q.Stats(); s.ReaderFailures != 1 {
		t.Errorf("stats %+v, want 1 reader failure", s)
	}

	p = newPair(t, Config[none]{}, &denyPort{gen: 1}).start()
	p.stop()
	if s := p.q.Stats(); s.ReaderFailures != 0 {
		t.Errorf("after a stop: stats %+v, want no reader failure", s)
	}
}

// stream plays the kernel for the allocation test and the benchmark: a recorded message
// whose packet id (and, for new flows, destination port) it rewrites in place before each
// send, and a buffer for the verdict.
type stream struct {
	p   *pair
	msg []byte
	id  uint32
	d   *denyPort
}

// Offsets in the TCP SYN 127.0.0.1 → 127.0.0.1:20003 as the kernel queued it
// (testdata/nfqueue/tcp4-syn.bin): the packet id in NFQA_PACKET_HDR, and in the payload
// (NFQA_PAYLOAD's data starts at 0x34) the IPv4 destination and the TCP destination port.
const (
	synIDOffset   = nlmsgHdrLen + nfgenHdrLen + nlaHdrLen
	synDstOffset  = 0x34 + 16
	synPortOffset = 0x34 + 20 + 2
)

func newStream(t testing.TB) *stream {
	d := &denyPort{port: 3306, gen: 1}
	s := &stream{p: newPair(t, Config[none]{Observe: func(*Record[none]) {}}, d).start(), d: d,
		msg: append([]byte(nil), recorded(t)["tcp4-syn.bin"]...)}
	if port := binary.BigEndian.Uint16(s.msg[synPortOffset:]); port != 20003 {
		t.Fatalf("recorded SYN: port %d at %d, want 20003", port, synPortOffset)
	}
	return s
}

// roundTrip sends the next packet and reads its verdict.
func (s *stream) roundTrip(t testing.TB) {
	s.id++
	binary.BigEndian.PutUint32(s.msg[synIDOffset:], s.id)
	if _, err := peerWrite(s.p.peer, s.msg); err != nil {
		t.Fatal(err)
	}
	n, err := peerRead(s.p.peer, s.p.buf)
	if err != nil || n != verdictLen || binary.BigEndian.Uint32(s.p.buf[28:]) != s.id {
		t.Fatalf("verdict for %d: % x, %v", s.id, s.p.buf[:max(n, 0)], err)
	}
}

// The whole loop — read, parse, decode, cache, decide, verdict, Observe — allocates nothing
// per packet, on a cache hit and on a miss of a flow the cache holds from an older policy
// generation. (A flow the cache has never seen costs one allocation: the LRU's list
// element, see flowcache.Cache.Add and BenchmarkLoop/new-flow.)
func TestLoopDoesNotAllocate(t *testing.T) {
	s := newStream(t)
	s.roundTrip(t)
	if n := testing.AllocsPerRun(1000, func() { s.roundTrip(t) }); n != 0 {
		t.Errorf("cache hit: %v allocations per packet, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() { s.d.gen++; s.roundTrip(t) }); n != 0 {
		t.Errorf("cache miss (new generation): %v allocations per packet, want 0", n)
	}
}

// BenchmarkLoop measures one packet through the reader's whole loop over a socket pair:
// the recorded SYN written by the "kernel", read, parsed, decoded, judged (cache hit; a miss
// after a generation change; a flow never seen), its verdict sent and read back. The time
// includes both ends' system calls and the wake-up of the reader in the Go poller.
func BenchmarkLoop(b *testing.B) {
	for _, tc := range []struct {
		name string
		next func(s *stream)
	}{
		{"cache-hit", func(*stream) {}},
		{"cache-miss", func(s *stream) { s.d.gen++ }},
		{"new-flow", func(s *stream) {
			// Destination port and the last two bytes of the destination address: a new
			// cache key for 2³² packets (the decoder checks no checksum).
			binary.BigEndian.PutUint16(s.msg[synPortOffset:], uint16(s.id))
			binary.BigEndian.PutUint16(s.msg[synDstOffset+2:], uint16(s.id>>16))
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := newStream(b)
			b.ReportAllocs()
			for b.Loop() {
				tc.next(s)
				s.roundTrip(b)
			}
		})
	}
}
