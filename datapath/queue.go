package datapath

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/datapath/flowcache"
	"github.com/podwall/podwall/datapath/packet"
	"github.com/podwall/podwall/policy/flow"
)

// Decider judges flows. The agent implements it over the current policy snapshot; D is its
// decision, which the datapath never looks into: it keeps it in the flow cache with the
// verdict and hands it to observers in the Record, so that a packet is decided once.
type Decider[D any] interface {
	// Generation returns the generation of the policy in force.
	Generation() uint64
	// Decide judges the flow: the decision, whether this node lets the flow pass, and the
	// generation of the policy that decided.
	Decide(f flow.Flow) (d D, allow bool, gen uint64)
}

// cached is what the flow cache keeps of a decision.
type cached[D any] struct {
	allow bool
	d     D
}

// Record describes one verdict for observers. Valid only during the callback.
type Record[D any] struct {
	Time     time.Time
	Flow     flow.Flow
	SrcPort  uint16
	Allow    bool
	CacheHit bool
	// Gen is the generation of the policy that decided; Decision is its decision (the cached
	// one on a cache hit). Both are zero when Malformed is set.
	Gen      uint64
	Decision D
	// Malformed is set when the packet could not be judged: its headers could not be read
	// (packet.ErrTruncated, packet.ErrMalformed: Allow is false in both failure modes), it
	// is a later fragment of a protocol with ports, or its NFQUEUE message could not be read
	// (Allow is then the failure policy's verdict), or it is ErrHoldExpired when it was held
	// and no policy knew its pod in time (Allow is the failure policy's verdict). See the
	// package doc, "Failure policy".
	Malformed error
	// Held is how long the packet was held for the policy to know its pod (see Waiter); 0
	// when it was judged at once.
	Held time.Duration
	// Latency is the time from receiving the packet to deciding.
	Latency time.Duration
	Queue   uint16
}

// Config configures the queue readers.
type Config[D any] struct {
	// QueueNum is the first queue; Queues the number of queues (one reader each).
	QueueNum, Queues uint16
	// FailOpen is the single failure policy (see the package doc).
	FailOpen bool
	// CacheSize is the number of flows the verdict cache holds.
	CacheSize int
	// MaxQueueLen is the kernel's queue length per queue; 0 means 4096.
	MaxQueueLen uint32
	// ReadBuffer is the netlink socket receive buffer in bytes; 0 means 16 MiB. The
	// default buffer lost 2-5 % of queued packets at 512-1024 concurrent new connections on
	// these machines; 16 MiB lost none.
	ReadBuffer int
	// CopyRange is how many bytes of each packet the kernel copies. 0 means MaxCopyRange,
	// the whole packet: the kernel forwards an IPv6 packet whatever the length of its
	// extension header chain, so no shorter range holds the ports of every packet it passes
	// (a packet whose headers end beyond the range is dropped, see the package doc).
	CopyRange uint32
	// HoldTimeout bounds how long a packet the Decider cannot judge yet is held (see
	// Waiter); 0 means DefaultHoldTimeout. MaxHeld is how many packets each reader holds at
	// most; 0 means DefaultMaxHeld.
	HoldTimeout time.Duration
	MaxHeld     int
	// Observe, when set, is called for every verdict from the reader's goroutine. It must
	// not block.
	Observe func(*Record[D])
	Log     *slog.Logger
}

// MaxCopyRange is the most the kernel copies of a queued packet (NFQNL_MAX_COPY_RANGE: the
// largest netlink attribute, 0xffff, less its 4-byte header): every IP packet but a GSO
// packet beyond 64 KiB whole. The copy costs little where it matters: the first packet of a
// connection is small (a SYN), and the kernel hands paged data to the netlink message
// without copying it (skb_zerocopy); only the read into the reader's buffer copies it.
const MaxCopyRange = 0xffff - 4

// Stats counts what the readers did.
type Stats struct {
	Packets, Accepted, Dropped, Malformed uint64
	// ENOBUFS counts socket overruns: the kernel could not deliver queued packets to us.
	ENOBUFS uint64
	// VerdictErrors counts verdicts the kernel did not take.
	VerdictErrors uint64
	// ReaderFailures counts queue readers stopped by a receive error: their queue is then
	// served by the kernel's failure policy only. Non-zero means the agent is unhealthy.
	ReaderFailures uint64
	// Held counts packets held because the Decider did not know their pod yet (Waiter);
	// Released those of them answered once it did, Expired those given the failure policy's
	// verdict at the bound (or when the reader stopped), HeldOverflow those given it at once
	// because the reader held Config.MaxHeld already. Holding is how many are held now.
	Held, Released, Expired, HeldOverflow uint64
	Holding                               int64
	Cache                                 flowcache.Stats
}

// Queues is the set of running queue readers.
type Queues[D any] struct {
	cfg     Config[D]
	decider Decider[D]
	cache   *flowcache.Cache[cached[D]]
	queues  []*nfqueue.Nfqueue
	readers []*reader[D]
	ctx     context.Context
	cancel  context.CancelFunc
	// stopping tells the readers to return: set by Close and when Start's context ends.
	stopping atomic.Bool

	packets, accepted, dropped, malformed, enobufs, verdictErrs, readerFailures atomic.Uint64

	// waiter is the Decider's Waiter, nil when it has none: nothing is held.
	waiter                                             Waiter
	heldTotal, heldReleased, heldExpired, heldOverflow atomic.Uint64
	holding                                            atomic.Int64
}

// Start opens and binds the queues and starts one reader per queue. It returns once every
// queue is bound and its reader serves it, so packets the kernel queues from then on are
// served.
func Start[D any](ctx context.Context, cfg Config[D], d Decider[D]) (*Queues[D], error) {
	if cfg.Queues == 0 {
		return nil, errors.New("datapath: Queues must be at least 1")
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 65536
	}
	if cfg.MaxQueueLen == 0 {
		cfg.MaxQueueLen = 4096
	}
	if cfg.ReadBuffer == 0 {
		cfg.ReadBuffer = 16 << 20
	}
	if cfg.CopyRange == 0 || cfg.CopyRange > MaxCopyRange {
		cfg.CopyRange = MaxCopyRange
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.HoldTimeout <= 0 {
		cfg.HoldTimeout = DefaultHoldTimeout
	}
	if cfg.MaxHeld <= 0 {
		cfg.MaxHeld = DefaultMaxHeld
	}
	cache, err := flowcache.New[cached[D]](cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	q := &Queues[D]{cfg: cfg, decider: d, cache: cache, ctx: ctx, cancel: cancel}
	q.waiter, _ = d.(Waiter)
	context.AfterFunc(ctx, func() { q.stopping.Store(true) })
	for i := range cfg.Queues {
		if err := q.open(cfg.QueueNum + i); err != nil {
			q.Close()
			return nil, err
		}
	}
	return q, nil
}

// open opens, configures and binds queue num with go-nfqueue, then takes the socket over.
//
// go-nfqueue binds a queue only in RegisterWithErrorFunc, which also starts the library's
// receive goroutine. open makes that goroutine the queue's reader: it sets the socket's read
// deadline in the past, so the library's receive fails and calls reader.takeOver, which
// waits there until open has cleared the deadline and then serves the queue until the
// reader stops. When takeOver returns, the library unbinds the queue. A packet the library
// receives before the takeover is judged in reader.handleAttr through the library.
func (q *Queues[D]) open(num uint16) error {
	flags := uint32(nfqueue.NfQaCfgFlagGSO)
	if q.cfg.FailOpen {
		flags |= nfqueue.NfQaCfgFlagFailOpen
	}
	nf, err := nfqueue.Open(&nfqueue.Config{
		NfQueue:      num,
		MaxPacketLen: q.cfg.CopyRange,
		MaxQueueLen:  q.cfg.MaxQueueLen,
		Copymode:     nfqueue.NfQnlCopyPacket,
		Flags:        flags,
		AfFamily:     unix.AF_UNSPEC,
		Logger:       nopLogger{},
	})
	if err != nil {
		return fmt.Errorf("datapath: open queue %d: %w", num, err)
	}
	q.queues = append(q.queues, nf)
	if err := setReadBuffer(nf.Con, q.cfg.ReadBuffer); err != nil {
		return fmt.Errorf("datapath: queue %d: receive buffer: %w", num, err)
	}
	rc, err := nf.Con.SyscallConn()
	if err != nil {
		return fmt.Errorf("datapath: queue %d: %w", num, err)
	}
	r := newReader(q, num, rc)
	r.nf = nf
	r.setDeadline = nf.Con.SetReadDeadline
	q.readers = append(q.readers, r)
	if err := nf.RegisterWithErrorFunc(q.ctx, r.handleAttr, r.takeOver); err != nil {
		return fmt.Errorf("datapath: bind queue %d: %w", num, err)
	}
	if err := nf.Con.SetReadDeadline(time.Unix(1, 0)); err != nil {
		return fmt.Errorf("datapath: queue %d: %w", num, err)
	}
	select {
	case <-r.parked:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("datapath: queue %d: the library's receive loop did not stop", num)
	}
	if err := nf.Con.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("datapath: queue %d: %w", num, err)
	}
	close(r.start)
	return nil
}

// setReadBuffer raises the socket receive buffer beyond net.core.rmem_max (root only).
func setReadBuffer(c *netlink.Conn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	if serr != nil { // not privileged: take what rmem_max allows
		return c.SetReadBuffer(n)
	}
	return nil
}

// Stats returns the counters so far.
func (q *Queues[D]) Stats() Stats {
	return Stats{
		Packets: q.packets.Load(), Accepted: q.accepted.Load(), Dropped: q.dropped.Load(),
		Malformed: q.malformed.Load(), ENOBUFS: q.enobufs.Load(), VerdictErrors: q.verdictErrs.Load(),
		ReaderFailures: q.readerFailures.Load(),
		Held:           q.heldTotal.Load(), Released: q.heldReleased.Load(), Expired: q.heldExpired.Load(),
		HeldOverflow: q.heldOverflow.Load(), Holding: q.holding.Load(),
		Cache: q.cache.Stats(),
	}
}

// Close stops the readers and closes the queues; it returns when no reader runs. A reader
// first sends the verdicts it holds. Closing a queue's socket unbinds it (the library also
// sends an explicit unbind as its reader returns): packets queued afterwards meet the failure
// policy in the kernel; packets still waiting in the queue are dropped as it is unbound.
func (q *Queues[D]) Close() {
	q.stopping.Store(true)
	q.cancel() // the library sets each socket's read deadline in the past: waiting readers wake
	for _, nf := range q.queues {
		nf.Close() // closes the socket, then waits for the reader (the library's goroutine)
	}
}

// maxBatch is the most verdicts a reader holds before it sends them in one sendmsg.
const maxBatch = 16

// reader serves one queue on the socket go-nfqueue opened and bound. It reads one netlink
// datagram at a time into its own buffer, parses the messages in place, judges each packet
// and writes its verdict message into its own buffer. It sends the verdicts it holds, in one
// sendmsg, when the socket has nothing more to read or maxBatch are waiting; then it hands
// their Records to Observe. It runs on one goroutine (the library's, see Queues.open), so
// nothing in it needs a lock, and it allocates nothing per packet.
type reader[D any] struct {
	q   *Queues[D]
	nf  *nfqueue.Nfqueue // verdicts through the library, before the takeover
	num uint16
	dec *packet.Decoder
	p   packet.Parsed

	rc  syscall.RawConn
	buf []byte // one datagram: one packet message, as the kernel sends them
	// out holds the verdict messages not yet sent, recs their Records; n counts them.
	out  [maxBatch * verdictLen]byte
	recs [maxBatch]Record[D]
	n    int
	// serveFD is r.serveOn as a func value made once: a method value made per read would
	// allocate; releaseFD is r.releaseOn.
	serveFD   func(fd uintptr) bool
	releaseFD func(fd uintptr)
	err       error // why serveOn returned true; nil: stopping

	// held are the packets held for the Decider to know their pod (hold.go), at most
	// Config.MaxHeld; nil when the Decider is no Waiter or setDeadline is nil: nothing is
	// held. heldGen is the generation release last judged them by. pending is set by judge
	// when the Decider could not judge the packet. deadline reports that release set the
	// socket's read deadline, through setDeadline.
	held        []heldPacket
	heldGen     uint64
	pending     bool
	deadline    bool
	wakeAt      time.Time // the deadline set, valid when deadline
	setDeadline func(time.Time) error

	parked chan struct{} // closed when takeOver has the library's goroutine
	start  chan struct{} // closed when the socket's read deadline is cleared
}

func newReader[D any](q *Queues[D], num uint16, rc syscall.RawConn) *reader[D] {
	r := &reader[D]{q: q, num: num, dec: packet.NewDecoder(), rc: rc,
		buf:    make([]byte, int(q.cfg.CopyRange)+8192),
		parked: make(chan struct{}), start: make(chan struct{})}
	r.serveFD = r.serveOn
	r.releaseFD = r.releaseOn
	return r
}

// canHold reports whether the reader holds packets the Decider cannot judge yet: the
// Decider is a Waiter and the reader can set its socket's read deadline.
func (r *reader[D]) canHold() bool {
	if r.held == nil && r.q.waiter != nil && r.setDeadline != nil {
		r.held = make([]heldPacket, 0, r.q.cfg.MaxHeld)
	}
	return r.held != nil
}

// takeOver is the library's error callback: the first error it reports (the expired read
// deadline Queues.open set, or an earlier ENOBUFS) hands its goroutine to the reader, which
// serves the queue until it stops. Returning 1 ends the library's loop, which unbinds the
// queue.
func (r *reader[D]) takeOver(err error) int {
	if errors.Is(err, unix.ENOBUFS) {
		r.q.enobufs.Add(1)
	}
	close(r.parked)
	select {
	case <-r.start:
	case <-r.q.ctx.Done():
		return 1
	}
	r.serve()
	return 1
}

// serve reads the queue until Close, the end of Start's context, or a receive error that
// stops the reader (counted in ReaderFailures: the queue is then served by the kernel's
// failure policy only).
func (r *reader[D]) serve() {
	err := r.rc.Read(r.serveFD)
	for r.woken(err) { // a held packet's wake-up (hold.go)
		if err = r.rc.Control(r.releaseFD); err == nil {
			err = r.rc.Read(r.serveFD)
		}
	}
	if len(r.held) > 0 { // stopped outside the loop: the failure policy for what it held
		_ = r.rc.Control(func(fd uintptr) {
			r.release(int(fd), true)
			r.flush(int(fd))
		})
	}
	if err == nil {
		err = r.err
	}
	if err == nil || r.q.stopping.Load() || r.q.ctx.Err() != nil {
		return
	}
	r.q.readerFailures.Add(1)
	r.q.cfg.Log.Error("queue reader stopped", "queue", r.num, "err", err)
}

// serveOn is the receive loop, run by the Go poller on the socket's descriptor: it reads
// until the socket is empty, sends the verdicts it holds and returns false to wait for the
// next datagram; it returns true to stop. The verdicts of the first read after a wait are
// sent at once, before the next read: a lone packet (an idle queue woken by one new
// connection) does not wait for a read that finds the socket empty; a busy queue, which
// seldom waits, still sends the rest in batches. ENOBUFS (the kernel could not deliver
// messages to us) is counted and does not stop it.
func (r *reader[D]) serveOn(fd uintptr) bool {
	first := true
	for !r.q.stopping.Load() {
		n, err := readRaw(int(fd), r.buf)
		switch err {
		case 0:
			if n == 0 { // end of file: not from netlink, but a loop on it would spin
				r.flush(int(fd))
				r.err = io.EOF
				return true
			}
			r.handleRead(int(fd), r.buf[:n])
			if first {
				first = false
				r.flush(int(fd))
			}
			if len(r.held) > 0 { // a busy queue may not run dry for a while
				r.release(int(fd), false)
			}
		case unix.EAGAIN:
			r.release(int(fd), false)
			r.flush(int(fd))
			return false
		case unix.EINTR:
		case unix.ENOBUFS:
			r.q.enobufs.Add(1)
		default:
			r.flush(int(fd))
			r.err = err
			return true
		}
	}
	r.release(int(fd), true)
	r.flush(int(fd))
	return true
}

// handleRead judges the packets of one read and holds their verdicts. A packet message
// without a readable id gets no verdict (there is no id to give one to: the kernel keeps
// the packet until the queue is unbound) and is counted as malformed, as is a read whose
// messages cannot be framed. An error message is a verdict the kernel refused.
func (r *reader[D]) handleRead(fd int, b []byte) {
	msgs := messages{b: b}
	for {
		typ, body, cut, ok := msgs.next()
		if !ok {
			break
		}
		switch typ {
		case msgPacket:
			r.q.packets.Add(1)
			m := parsePacket(body)
			if cut && m.err == nil {
				m.err = errMessageCut
			}
			if !m.hasID {
				r.q.malformed.Add(1)
				continue
			}
			rec := r.judgeMessage(&m)
			if r.pending {
				r.pending = false
				r.park(fd, m.id, rec)
				continue
			}
			r.hold(fd, m.id, rec)
		case nlmsgError:
			if errno, ok := parseError(body); ok && errno != 0 {
				r.q.verdictErrs.Add(1)
			}
		}
	}
	if msgs.broken {
		r.q.malformed.Add(1)
	}
}

// hold writes the verdict of packet id, judged in rec, into the send buffer; a full buffer
// is sent at once.
func (r *reader[D]) hold(fd int, id uint32, rec *Record[D]) {
	v := uint32(nfDrop)
	if rec.Allow {
		v = nfAccept
		r.q.accepted.Add(1)
	} else {
		r.q.dropped.Add(1)
	}
	putVerdict(r.out[r.n*verdictLen:], r.num, id, v)
	r.n++
	if r.n == maxBatch {
		r.flush(fd)
	}
}

// flush sends the verdicts held, in one sendmsg, then hands their Records to Observe.
func (r *reader[D]) flush(fd int) {
	if r.n == 0 {
		return
	}
	for {
		err := writeRaw(fd, r.out[:r.n*verdictLen])
		if err == unix.EINTR {
			continue
		}
		if err != 0 {
			r.q.verdictErrs.Add(uint64(r.n))
		}
		break
	}
	if observe := r.q.cfg.Observe; observe != nil {
		for i := range r.n {
			observe(&r.recs[i])
		}
	}
	r.n = 0
}

// handleAttr gives the verdict of a packet the library received before the takeover (see
// Queues.open), through the library, and returns 0 to keep it receiving.
func (r *reader[D]) handleAttr(a nfqueue.Attribute) int {
	if a.PacketID == nil {
		return 0
	}
	q := r.q
	q.packets.Add(1)
	var payload []byte
	if a.Payload != nil {
		payload = *a.Payload
	}
	rec := r.judge(payload)
	if r.pending { // no holding through the library: the failure policy
		r.pending = false
		rec.Allow, rec.Malformed, rec.Decision, rec.Gen = q.cfg.FailOpen, ErrHoldExpired, *new(D), 0
		q.heldOverflow.Add(1)
	}
	v := nfqueue.NfDrop
	if rec.Allow {
		v = nfqueue.NfAccept
		q.accepted.Add(1)
	} else {
		q.dropped.Add(1)
	}
	if err := r.nf.SetVerdict(*a.PacketID, v); err != nil {
		q.verdictErrs.Add(1)
	}
	if q.cfg.Observe != nil {
		q.cfg.Observe(rec)
	}
	return 0
}

// judgeMessage judges a packet message: a well-formed one by its payload (judge), a
// malformed one by the failure policy, with its addresses when the payload shows them. A
// message the kernel built and the reader cannot read is the agent's failure, not
// something a packet's bytes can cause: the failure policy decides it.
func (r *reader[D]) judgeMessage(m *packetMsg) *Record[D] {
	if m.err == nil {
		return r.judge(m.payload)
	}
	q := r.q
	q.malformed.Add(1)
	rec := &r.recs[r.n]
	*rec = Record[D]{Time: time.Now(), Queue: r.num, Malformed: m.err, Allow: q.cfg.FailOpen}
	r.p = packet.Parsed{}
	_ = r.dec.Decode(m.payload, &r.p) // only to say who sent it
	rec.Flow = flow.Flow{Src: r.p.Src, Dst: r.p.Dst, Proto: r.p.Proto}
	return rec
}

// judge decodes a packet and decides it: from the flow cache when it holds a verdict of the
// policy generation in force, else from the Decider. The Record is the next free slot of the
// reader's pending verdicts. It allocates nothing.
func (r *reader[D]) judge(payload []byte) *Record[D] {
	start := time.Now()
	q := r.q
	rec := &r.recs[r.n]
	*rec = Record[D]{Time: start, Queue: r.num}
	r.p = packet.Parsed{}
	if err := r.dec.Decode(payload, &r.p); err != nil {
		// Headers that cannot be read as the kernel forwards them: dropped whatever the
		// failure policy, which is about the agent's availability, not about packets.
		q.malformed.Add(1)
		rec.Malformed = err
		rec.Flow = flow.Flow{Src: r.p.Src, Dst: r.p.Dst, Proto: r.p.Proto}
	} else if r.p.Fragment == packet.LaterFragment && r.p.Proto.HasPorts() {
		// A later fragment, whose ports are in the first: the failure policy (conntrack
		// reassembles fragments before the forward hook, so these do not normally reach
		// the queue; see the package doc).
		q.malformed.Add(1)
		rec.Malformed = errLaterFragment
		rec.Flow = flow.Flow{Src: r.p.Src, Dst: r.p.Dst, Proto: r.p.Proto}
		rec.Allow = q.cfg.FailOpen
	} else {
		rec.Flow = flow.Flow{Src: r.p.Src, Dst: r.p.Dst, Proto: r.p.Proto, Port: r.p.DstPort}
		rec.SrcPort = r.p.SrcPort
		key := flowcache.KeyOf(rec.Flow)
		gen := q.decider.Generation()
		if c, ok := q.cache.Get(key, gen); ok {
			rec.Allow, rec.Decision, rec.CacheHit, rec.Gen = c.allow, c.d, true, gen
		} else {
			rec.Decision, rec.Allow, rec.Gen = q.decider.Decide(rec.Flow)
			if r.canHold() && q.waiter.Unknown(rec.Flow, rec.Gen) {
				r.pending = true // not cached: the policy could not judge it
			} else {
				q.cache.Add(key, rec.Gen, cached[D]{rec.Allow, rec.Decision})
			}
		}
	}
	rec.Latency = time.Since(start)
	return rec
}

// readRaw and writeRaw are read(2) and write(2) on the queue's socket without the Go
// runtime's system call bookkeeping (entersyscall, exitsyscall), which matters on an idle
// queue: when every P is idle the runtime's sysmon thread sleeps, and a system call entered
// normally wakes it (a futex wake before the read of a new connection's packet), after
// which it naps 20 µs at a time for a millisecond or more — thousands of thread wake-ups a
// second competing for the CPUs with the connections the reader serves (bench/README.md,
// "Connect latency"). Both calls return at once: the socket is non-blocking (the Go
// poller's), a read of an empty socket fails with EAGAIN, and a netlink write to the
// kernel never waits for room. The P stays with the reader during the call, which the
// verdict's write (the kernel forwards the accepted packets inside it) can make tens of
// microseconds; the other Ps run the agent's other goroutines meanwhile.
func readRaw(fd int, b []byte) (int, unix.Errno) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	return int(n), e
}

func writeRaw(fd int, b []byte) unix.Errno {
	_, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	return e
}

var errLaterFragment = errors.New("packet: non-first fragment, ports unknown")

type nopLogger struct{}

func (nopLogger) Debugf(string, ...any) {}
func (nopLogger) Errorf(string, ...any) {}
