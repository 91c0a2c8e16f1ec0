package datapath

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// QueueStat is the kernel's view of one NFQUEUE queue instance: one line of
// /proc/net/netfilter/nfnetlink_queue. The kernel prints, per bound queue,
//
//	queue_num peer_portid queue_total copy_mode copy_range queue_dropped queue_user_dropped id_sequence 1
//
// (net/netfilter/nfnetlink_queue.c, seq_show; checked on this project's 6.x kernels). The file
// belongs to a network namespace: it lists the queues bound in the namespace of the thread
// that reads it.
type QueueStat struct {
	Queue uint16
	// PortID is the netlink port of the process bound to the queue.
	PortID uint32
	// Len is queue_total: packets waiting for a verdict right now.
	Len uint32
	// CopyMode and CopyRange say what the kernel copies to userspace (2 = packet, bytes).
	CopyMode  uint8
	CopyRange uint32
	// Dropped is queue_dropped: packets dropped because the queue was full (the queue length
	// reached its maximum and the queue does not fail open). Counted since the queue was bound.
	Dropped uint64
	// UserDropped is queue_user_dropped: packets the kernel could not hand to the reader
	// because its netlink socket was full (the reader sees ENOBUFS). Dropped or, failing
	// open, accepted.
	UserDropped uint64
	// IDSequence is the id of the last packet queued: packets queued since the queue was
	// bound (32 bits, wraps).
	IDSequence uint32
}

// queueStatPaths are tried in order: the reading thread's namespace first (a goroutine locked
// to a thread in another namespace reads that namespace's queues), then the process's.
var queueStatPaths = []string{
	"/proc/thread-self/net/netfilter/nfnetlink_queue",
	"/proc/self/net/netfilter/nfnetlink_queue",
}

// ReadQueueStats reads the queue instances of the calling thread's network namespace. With
// no queue bound (or nfnetlink_queue not loaded) it returns none and no error.
func ReadQueueStats() ([]QueueStat, error) {
	for _, p := range queueStatPaths {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		defer f.Close()
		stats, err := ParseQueueStats(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		return stats, nil
	}
	return nil, nil
}

// ParseQueueStats parses the text of /proc/net/netfilter/nfnetlink_queue.
func ParseQueueStats(r io.Reader) ([]QueueStat, error) {
	var out []QueueStat
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) < 8 {
			return nil, fmt.Errorf("line %d: want at least 8 fields, got %d: %q", line, len(f), sc.Text())
		}
		var n [8]uint64
		for i := range n {
			v, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("line %d field %d: %w", line, i+1, err)
			}
			n[i] = v
		}
		out = append(out, QueueStat{Queue: uint16(n[0]), PortID: uint32(n[1]), Len: uint32(n[2]),
			CopyMode: uint8(n[3]), CopyRange: uint32(n[4]), Dropped: n[5], UserDropped: n[6], IDSequence: uint32(n[7])})
	}
	return out, sc.Err()
}
