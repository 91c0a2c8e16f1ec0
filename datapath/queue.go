package datapath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/datapath/flowcache"
	"github.com/podwall/podwall/datapath/packet"
	"github.com/podwall/podwall/policy/flow"
)

// Decider judges flows. The agent implements it over the current policy snapshot.
type Decider interface {
	// Generation returns the generation of the policy in force.
	Generation() uint64
	// Decide reports whether this node lets the flow pass, with the generation of the
	// policy that decided.
	Decide(f flow.Flow) (allow bool, gen uint64)
}

// Record describes one verdict for observers. Valid only during the callback.
type Record struct {
	Time     time.Time
	Flow     flow.Flow
	SrcPort  uint16
	Allow    bool
	CacheHit bool
	Gen      uint64
	// Malformed is set when the packet could not be decoded; Allow is then the failure
	// policy's verdict.
	Malformed error
	// Latency is the time from receiving the packet to deciding.
	Latency time.Duration
	Queue   uint16
}

// Config configures the queue readers.
type Config struct {
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
	// CopyRange is how many bytes of each packet the kernel copies: headers only. 0 means
	// 128, enough for IPv4 with options or IPv6 with a few extension headers plus TCP/UDP/SCTP.
	CopyRange uint32
	// Observe, when set, is called for every verdict from the reader's goroutine. It must
	// not block.
	Observe func(*Record)
	Log     *slog.Logger
}

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
	Cache          flowcache.Stats
}

// Queues is the set of running queue readers.
type Queues struct {
	cfg     Config
	decider Decider
	cache   *flowcache.Cache[bool]
	queues  []*nfqueue.Nfqueue
	ctx     context.Context
	cancel  context.CancelFunc

	packets, accepted, dropped, malformed, enobufs, verdictErrs, readerFailures atomic.Uint64
}

// Start opens and binds the queues and starts one reader per queue. It returns once every
// queue is bound, so packets the kernel queues from then on are served.
func Start(ctx context.Context, cfg Config, d Decider) (*Queues, error) {
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
	if cfg.CopyRange == 0 {
		cfg.CopyRange = 128
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	cache, err := flowcache.New[bool](cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	q := &Queues{cfg: cfg, decider: d, cache: cache, ctx: ctx, cancel: cancel}
	for i := range cfg.Queues {
		if err := q.open(ctx, cfg.QueueNum+i); err != nil {
			q.Close()
			return nil, err
		}
	}
	return q, nil
}

func (q *Queues) open(ctx context.Context, num uint16) error {
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
		WriteTimeout: 100 * time.Millisecond,
		Logger:       nopLogger{},
	})
	if err != nil {
		return fmt.Errorf("datapath: open queue %d: %w", num, err)
	}
	q.queues = append(q.queues, nf)
	if err := setReadBuffer(nf.Con, q.cfg.ReadBuffer); err != nil {
		return fmt.Errorf("datapath: queue %d: receive buffer: %w", num, err)
	}
	r := &reader{q: q, nf: nf, num: num, dec: packet.NewDecoder()}
	if err := nf.RegisterWithErrorFunc(ctx, r.handle, r.handleErr); err != nil {
		return fmt.Errorf("datapath: bind queue %d: %w", num, err)
	}
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
func (q *Queues) Stats() Stats {
	return Stats{
		Packets: q.packets.Load(), Accepted: q.accepted.Load(), Dropped: q.dropped.Load(),
		Malformed: q.malformed.Load(), ENOBUFS: q.enobufs.Load(), VerdictErrors: q.verdictErrs.Load(),
		ReaderFailures: q.readerFailures.Load(),
		Cache:          q.cache.Stats(),
	}
}

// Close stops the readers and closes the queues; it returns when no reader runs. Packets
// queued afterwards meet the failure policy in the kernel.
func (q *Queues) Close() {
	q.cancel()
	for _, nf := range q.queues {
		nf.Close() // waits for the library's receive goroutines
	}
}

// reader serves one queue. Its handler runs on the library's receive goroutine, one packet
// at a time, so the decoder needs no lock.
type reader struct {
	q   *Queues
	nf  *nfqueue.Nfqueue
	num uint16
	dec *packet.Decoder
	p   packet.Parsed
	rec Record
}

// handle gives exactly one verdict for the packet. It never blocks except on the verdict
// send itself, and returns 0 to keep receiving.
func (r *reader) handle(a nfqueue.Attribute) int {
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

// judge decodes a packet and decides it: from the flow cache when it holds a verdict of the
// policy generation in force, else from the Decider. It allocates nothing.
func (r *reader) judge(payload []byte) *Record {
	start := time.Now()
	q := r.q
	rec := &r.rec
	*rec = Record{Time: start, Queue: r.num}
	r.p = packet.Parsed{}
	if err := r.dec.Decode(payload, &r.p); err != nil || (r.p.Fragment == packet.LaterFragment && r.p.Proto.HasPorts()) {
		// Undecodable, or a later fragment whose ports we cannot see: the failure policy.
		if err == nil {
			err = errLaterFragment
		}
		q.malformed.Add(1)
		rec.Malformed = err
		rec.Flow = flow.Flow{Src: r.p.Src, Dst: r.p.Dst, Proto: r.p.Proto}
		rec.Allow = q.cfg.FailOpen
	} else {
		rec.Flow = flow.Flow{Src: r.p.Src, Dst: r.p.Dst, Proto: r.p.Proto, Port: r.p.DstPort}
		rec.SrcPort = r.p.SrcPort
		key := flowcache.KeyOf(rec.Flow)
		gen := q.decider.Generation()
		if allow, ok := q.cache.Get(key, gen); ok {
			rec.Allow, rec.CacheHit, rec.Gen = allow, true, gen
		} else {
			rec.Allow, rec.Gen = q.decider.Decide(rec.Flow)
			q.cache.Add(key, rec.Gen, rec.Allow)
		}
	}
	rec.Latency = time.Since(start)
	return rec
}

var errLaterFragment = errors.New("packet: non-first fragment, ports unknown")

// handleErr decides whether a receive error stops the reader: ENOBUFS (the kernel dropped
// messages for us) and timeouts do not.
func (r *reader) handleErr(err error) int {
	if errors.Is(err, syscall.ENOBUFS) {
		r.q.enobufs.Add(1)
		return 0
	}
	var op *netlink.OpError
	if errors.As(err, &op) && (op.Timeout() || op.Temporary()) {
		return 0
	}
	if r.q.ctx.Err() != nil {
		return 1
	}
	r.q.readerFailures.Add(1)
	r.q.cfg.Log.Error("queue reader stopped", "queue", r.num, "err", err)
	return 1
}

type nopLogger struct{}

func (nopLogger) Debugf(string, ...any) {}
func (nopLogger) Errorf(string, ...any) {}
