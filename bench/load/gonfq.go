package load

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/cmd/podwall/lab"
)

// GoNFQueue is the other half of the RawQueue experiment: an accept-all reader built on
// github.com/florianl/go-nfqueue/v2, configured as podwall's datapath configures it (copy
// 128 bytes, GSO, queue length 4096, 16 MiB receive buffer) but receiving and answering
// through the library, with a handler that only gives the verdict: podwall's datapath
// before it served the hot path itself (it then also set a 100 ms write timeout). Between
// it and RawQueue lies the library's receive and verdict path; podwall now binds and
// configures with the library and reads the way RawQueue does.
type GoNFQueue struct {
	queues  []*nfqueue.Nfqueue
	cancel  context.CancelFunc
	packets atomic.Uint64
	enobufs atomic.Uint64
}

// StartGoNFQueue binds queues first … first+n-1 in namespace ns. writeTimeout is the
// library's WriteTimeout (podwall's setting was 100 ms; 0: none, which skips a
// SetWriteDeadline per verdict).
func StartGoNFQueue(ns *lab.NS, first uint16, n int, writeTimeout time.Duration) (*GoNFQueue, error) {
	ctx, cancel := context.WithCancel(context.Background())
	g := &GoNFQueue{cancel: cancel}
	for i := range n {
		num := first + uint16(i)
		var nf *nfqueue.Nfqueue
		err := ns.Do(func() (err error) {
			nf, err = nfqueue.Open(&nfqueue.Config{
				NfQueue: num, MaxPacketLen: 128, MaxQueueLen: 4096, Copymode: nfqueue.NfQnlCopyPacket,
				Flags: nfqueue.NfQaCfgFlagGSO, AfFamily: unix.AF_UNSPEC, WriteTimeout: writeTimeout,
			})
			return err
		})
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("load: go-nfqueue %d: %w", num, err)
		}
		g.queues = append(g.queues, nf)
		rc, err := nf.Con.SyscallConn()
		if err == nil {
			rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20) })
		}
		err = nf.RegisterWithErrorFunc(ctx, func(a nfqueue.Attribute) int {
			if a.PacketID != nil {
				g.packets.Add(1)
				nf.SetVerdict(*a.PacketID, nfqueue.NfAccept)
			}
			return 0
		}, func(err error) int {
			if errors.Is(err, unix.ENOBUFS) {
				g.enobufs.Add(1)
				return 0
			}
			var op *netlink.OpError
			if errors.As(err, &op) && (op.Timeout() || op.Temporary()) {
				return 0
			}
			return 1
		})
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("load: go-nfqueue %d: %w", num, err)
		}
	}
	return g, nil
}

// Stats returns packets judged and ENOBUFS seen.
func (g *GoNFQueue) Stats() RawQueueStats {
	return RawQueueStats{Packets: g.packets.Load(), ENOBUFS: g.enobufs.Load()}
}

// Close stops the readers and unbinds the queues.
func (g *GoNFQueue) Close() {
	g.cancel()
	for _, nf := range g.queues {
		nf.Close()
	}
	g.queues = nil
}
