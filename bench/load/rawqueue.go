package load

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/cmd/podwall/lab"
)

// RawQueue is an experiment, not a firewall: the leanest NFQUEUE reader this harness can
// write, to tell the cost of the queue round trip itself apart from the cost of podwall's
// reader. It accepts every packet without looking at it. Each queue gets one OS thread
// doing blocking recv(2) on a raw netlink socket into a fixed 64 KiB buffer (nothing is
// allocated; a recv returns one datagram, and the kernel sends each queued packet in its
// own), then gives the verdicts: one NFQNL_MSG_VERDICT_BATCH per recv (accept every id up
// to the last one read) with RawBatch, otherwise one NFQNL_MSG_VERDICT per packet, each in
// its own send(2). RawPoll is like the latter but waits in the Go runtime's poller on a
// goroutine, as go-nfqueue and podwall's reader do, instead of blocking a thread.
type RawMode int

// RawQueue modes.
const (
	RawBatch RawMode = iota
	RawSingle
	RawPoll
)

// RawQueue serves queues with the RawMode experiment.
type RawQueue struct {
	fds     []int
	files   []*os.File // RawPoll: the sockets, owned by the poller
	mu      sync.Mutex
	tids    []int // the reader threads
	stop    atomic.Bool
	wg      sync.WaitGroup
	packets atomic.Uint64
	reads   atomic.Uint64
	sends   atomic.Uint64
	enobufs atomic.Uint64
}

// Netfilter netlink constants (linux/netfilter/nfnetlink_queue.h).
const (
	nfnlSubsysQueue      = 3
	nfqnlMsgPacket       = 0
	nfqnlMsgVerdict      = 1
	nfqnlMsgConfig       = 2
	nfqnlMsgVerdictBatch = 3
	nfqaPacketHdr        = 1
	nfqaVerdictHdr       = 2
	nfqaCfgCmd           = 1
	nfqaCfgParams        = 2
	nfqaCfgQueueMaxlen   = 3
	nfqaCfgMask          = 4
	nfqaCfgFlags         = 5
	nfqnlCfgCmdBind      = 1
	nfqnlCopyPacket      = 2
	nfqaCfgFGSO          = 1 << 2
	nfAccept             = 1
)

// StartRawQueue binds queues first … first+n-1 in namespace ns (nothing else may be bound
// to them) and starts serving them.
func StartRawQueue(ns *lab.NS, first uint16, n int, mode RawMode) (*RawQueue, error) {
	q := &RawQueue{}
	for i := range n {
		num := first + uint16(i)
		var fd int
		err := ns.Do(func() (err error) {
			fd, err = openRawQueue(num)
			return err
		})
		if err != nil {
			q.Close()
			return nil, fmt.Errorf("load: raw queue %d: %w", num, err)
		}
		q.fds = append(q.fds, fd)
		read := func(b []byte) (int, error) { return unix.Read(fd, b) }
		if mode == RawPoll {
			if err := unix.SetNonblock(fd, true); err != nil {
				q.Close()
				return nil, err
			}
			f := os.NewFile(uintptr(fd), "nfqueue") // registers with the poller
			q.files = append(q.files, f)
			rc, err := f.SyscallConn()
			if err != nil {
				q.Close()
				return nil, err
			}
			read = func(b []byte) (n int, err error) {
				rerr := rc.Read(func(fd uintptr) bool {
					n, err = unix.Read(int(fd), b)
					return !errors.Is(err, unix.EAGAIN)
				})
				return n, cmp.Or(rerr, err)
			}
		}
		q.wg.Add(1)
		go q.serve(fd, num, mode, read)
	}
	return q, nil
}

func openRawQueue(num uint16) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return -1, err
	}
	fail := func(err error) (int, error) {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail(err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20); err != nil {
		return fail(err)
	}
	// Blocking reads wake every 100 ms so Close can stop the thread.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000}); err != nil {
		return fail(err)
	}
	be32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	for _, attrs := range [][]nlattr{
		{{nfqaCfgCmd, []byte{nfqnlCfgCmdBind, 0, 0, 0}}},
		{{nfqaCfgParams, append(be32(128), nfqnlCopyPacket)}},
		{{nfqaCfgQueueMaxlen, be32(4096)}, {nfqaCfgFlags, be32(nfqaCfgFGSO)}, {nfqaCfgMask, be32(nfqaCfgFGSO)}},
	} {
		msg := nfqMessage(nil, nfqnlMsgConfig, num, unix.NLM_F_REQUEST|unix.NLM_F_ACK, attrs...)
		if err := unix.Send(fd, msg, 0); err != nil {
			return fail(err)
		}
		if err := readAck(fd); err != nil {
			return fail(err)
		}
	}
	return fd, nil
}

type nlattr struct {
	typ  uint16
	data []byte
}

// nfqMessage appends one nfnetlink queue message to b.
func nfqMessage(b []byte, msgType uint8, queue uint16, flags uint16, attrs ...nlattr) []byte {
	start := len(b)
	b = binary.NativeEndian.AppendUint32(b, 0) // length, below
	b = binary.NativeEndian.AppendUint16(b, nfnlSubsysQueue<<8|uint16(msgType))
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, 0) // seq
	b = binary.NativeEndian.AppendUint32(b, 0) // portid
	b = append(b, unix.AF_UNSPEC, unix.NFNETLINK_V0)
	b = binary.BigEndian.AppendUint16(b, queue)
	for _, a := range attrs {
		b = binary.NativeEndian.AppendUint16(b, uint16(4+len(a.data)))
		b = binary.NativeEndian.AppendUint16(b, a.typ)
		b = append(b, a.data...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

func readAck(fd int) error {
	buf := make([]byte, 8192)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return err
	}
	if n < 16+4 || binary.NativeEndian.Uint16(buf[4:]) != unix.NLMSG_ERROR {
		return errors.New("no netlink ack")
	}
	if e := int32(binary.NativeEndian.Uint32(buf[16:])); e != 0 {
		return unix.Errno(-e)
	}
	return nil
}

func (q *RawQueue) serve(fd int, num uint16, mode RawMode, read func([]byte) (int, error)) {
	defer q.wg.Done()
	batch := mode == RawBatch
	if mode != RawPoll {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		q.mu.Lock()
		q.tids = append(q.tids, unix.Gettid())
		q.mu.Unlock()
	}
	buf := make([]byte, 64<<10)
	var out []byte
	verdict := make([]byte, 8)
	for !q.stop.Load() {
		n, err := read(buf)
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				q.enobufs.Add(1)
			} else if errors.Is(err, os.ErrClosed) {
				return
			}
			continue // EAGAIN after SO_RCVTIMEO, EINTR
		}
		q.reads.Add(1)
		out = out[:0]
		var last uint32
		seen := 0
		for b := buf[:n]; len(b) >= 16; {
			l := int(binary.NativeEndian.Uint32(b))
			if l < 16 || l > len(b) {
				break
			}
			typ := binary.NativeEndian.Uint16(b[4:])
			if typ == nfnlSubsysQueue<<8|nfqnlMsgPacket {
				if id, ok := packetID(b[16:l]); ok {
					seen++
					last = id
					if !batch {
						binary.BigEndian.PutUint32(verdict, nfAccept)
						binary.BigEndian.PutUint32(verdict[4:], id)
						out = nfqMessage(out[:0], nfqnlMsgVerdict, num, unix.NLM_F_REQUEST, nlattr{nfqaVerdictHdr, verdict})
						unix.Send(fd, out, 0)
						q.sends.Add(1)
					}
				}
			}
			b = b[min((l+3)&^3, len(b)):]
		}
		q.packets.Add(uint64(seen))
		if batch && seen > 0 {
			binary.BigEndian.PutUint32(verdict, nfAccept)
			binary.BigEndian.PutUint32(verdict[4:], last)
			out = nfqMessage(out[:0], nfqnlMsgVerdictBatch, num, unix.NLM_F_REQUEST, nlattr{nfqaVerdictHdr, verdict})
			unix.Send(fd, out, 0)
			q.sends.Add(1)
		}
	}
}

// packetID finds NFQA_PACKET_HDR in a packet message's body (after nlmsghdr).
func packetID(body []byte) (uint32, bool) {
	if len(body) < 4 {
		return 0, false
	}
	for a := body[4:]; len(a) >= 4; {
		l := int(binary.NativeEndian.Uint16(a))
		if l < 4 || l > len(a) {
			return 0, false
		}
		if binary.NativeEndian.Uint16(a[2:])&0x7fff == nfqaPacketHdr && l >= 8 {
			return binary.BigEndian.Uint32(a[4:]), true
		}
		a = a[min((l+3)&^3, len(a)):]
	}
	return 0, false
}

// RawQueueStats counts what a RawQueue did.
type RawQueueStats struct{ Packets, Reads, Sends, ENOBUFS uint64 }

// Stats returns the counters so far.
func (q *RawQueue) Stats() RawQueueStats {
	return RawQueueStats{q.packets.Load(), q.reads.Load(), q.sends.Load(), q.enobufs.Load()}
}

// CPU returns the CPU seconds the reader threads have used.
func (q *RawQueue) CPU() float64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	var s float64
	for _, tid := range q.tids {
		c, _ := ProcCPU(os.Getpid(), tid)
		s += c
	}
	return s
}

// Close stops the readers (within 100 ms) and closes the sockets, which unbinds the queues.
func (q *RawQueue) Close() {
	q.stop.Store(true)
	for _, f := range q.files {
		f.Close() // wakes the poller
	}
	q.wg.Wait()
	if q.files == nil {
		for _, fd := range q.fds {
			unix.Close(fd)
		}
	}
	q.fds, q.files = nil, nil
}
