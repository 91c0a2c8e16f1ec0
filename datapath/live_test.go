//go:build linux

package datapath

import (
	"encoding/binary"
	"flag"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/policy/flow"
)

var record = flag.Bool("record", false, "TestLiveRecord: write the messages the kernel sends to testdata/nfqueue/")

// Kernel tests: a real queue in a throwaway network namespace (SPEC §6). The namespace is
// unnamed and held by one OS thread: it disappears with that thread and the sockets made in
// it, so nothing is left to sweep, and no traffic leaves it (loopback only).

// netNS is a fresh network namespace with loopback up; do runs a function on its thread.
type netNS struct {
	fns  chan func()
	done chan struct{}
}

func newNetNS(t *testing.T) *netNS {
	t.Helper()
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root and the kernel (not -short)")
	}
	n := &netNS{fns: make(chan func()), done: make(chan struct{})}
	errc := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		defer close(n.done)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		lo, err := vnl.LinkByName("lo")
		if err == nil {
			err = vnl.LinkSetUp(lo)
		}
		errc <- err
		if err != nil {
			return
		}
		for fn := range n.fns {
			fn()
		}
	}()
	if err := <-errc; err != nil {
		t.Skipf("new network namespace: %v", err)
	}
	t.Cleanup(func() {
		close(n.fns)
		<-n.done
	})
	return n
}

func (n *netNS) do(fn func()) {
	done := make(chan struct{})
	n.fns <- func() {
		defer close(done)
		fn()
	}
	<-done
}

const (
	liveQueue    = 300
	livePortLow  = 20000
	livePortHigh = 20009
)

// queueRules queues UDP and TCP to ports 20000–20009 in the output hook to queue 300 through
// the xt NFQUEUE target (this kernel has no nft queue expression, SPEC §6), with bypass
// when failing open, as package nft renders podwall's rules.
func queueRules(t *testing.T, failOpen bool) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tab := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "pwdatapathtest"})
	ch := c.AddChain(&nftables.Chain{Name: "out", Table: tab, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	info := make([]byte, 8) // struct xt_NFQ_info_v3: queuenum, queues_total, flags
	binary.NativeEndian.PutUint16(info[0:], liveQueue)
	binary.NativeEndian.PutUint16(info[2:], 1)
	if failOpen {
		binary.NativeEndian.PutUint16(info[4:], 1) // NFQ_FLAG_BYPASS
	}
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		x := xt.Unknown(info)
		c.AddRule(&nftables.Rule{Table: tab, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: binary.BigEndian.AppendUint16(nil, livePortLow)},
			&expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: binary.BigEndian.AppendUint16(nil, livePortHigh)},
			&expr.Target{Name: "NFQUEUE", Rev: 3, Info: &x},
		}})
	}
	if err := c.Flush(); err != nil {
		t.Skipf("queue rules (nft_compat, xt NFQUEUE): %v", err)
	}
}

// portDecider allows one destination port. slow, when set, is slept once, in the first
// decision: a reader that falls behind.
type portDecider struct {
	allow uint16
	slow  time.Duration
	once  sync.Once
	calls atomic.Int64
}

func (d *portDecider) Generation() uint64 { return 1 }
func (d *portDecider) Decide(f flow.Flow) (none, bool, uint64) {
	d.calls.Add(1)
	if d.slow > 0 {
		d.once.Do(func() { time.Sleep(d.slow) })
	}
	return none{}, f.Port == d.allow, 1
}

// udpLab has listeners on 20001 (allowed) and 20002 (denied) on 127.0.0.1 and ::1, and a
// sender.
type udpLab struct {
	ln   map[string]net.PacketConn
	send net.PacketConn
}

func newUDPLab(t *testing.T, ns *netNS) *udpLab {
	l := &udpLab{ln: map[string]net.PacketConn{}}
	ns.do(func() {
		for _, a := range []string{"127.0.0.1:20001", "127.0.0.1:20002", "[::1]:20001", "[::1]:20002"} {
			c, err := net.ListenPacket("udp", a)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			l.ln[a] = c
		}
		c, err := net.ListenPacket("udp", "[::]:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		l.send = c
	})
	return l
}

// sendN sends n datagrams to addr.
func (l *udpLab) sendN(t *testing.T, addr string, n int) {
	t.Helper()
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		if _, err := l.send.WriteTo([]byte("podwall"), to); err != nil {
			t.Fatal(err)
		}
	}
}

// received counts the datagrams addr's listener gets until it has been quiet for wait.
func (l *udpLab) received(addr string, wait time.Duration) int {
	c := l.ln[addr]
	buf := make([]byte, 64)
	n := 0
	for {
		c.SetReadDeadline(time.Now().Add(wait))
		if _, _, err := c.ReadFrom(buf); err != nil {
			return n
		}
		n++
	}
}

// The readers on a real queue: allowed packets are delivered, denied ones are not; after
// Close the queue is unbound and the kernel applies the failure policy (fail closed: the
// rule has no bypass, packets are dropped; fail open: bypass, they pass).
func TestLiveQueue(t *testing.T) {
	for _, failOpen := range []bool{false, true} {
		ns := newNetNS(t)
		lab := newUDPLab(t, ns)
		var q *Queues[none]
		ns.do(func() {
			queueRules(t, failOpen)
			var err error
			q, err = Start(t.Context(), Config[none]{QueueNum: liveQueue, Queues: 1, FailOpen: failOpen}, &portDecider{allow: 20001})
			if err != nil {
				t.Fatal(err)
			}
		})
		for _, a := range []string{"127.0.0.1:20001", "127.0.0.1:20002", "[::1]:20001", "[::1]:20002"} {
			lab.sendN(t, a, 5)
		}
		for a, want := range map[string]int{"127.0.0.1:20001": 5, "[::1]:20001": 5, "127.0.0.1:20002": 0, "[::1]:20002": 0} {
			if got := lab.received(a, 300*time.Millisecond); got != want {
				t.Errorf("failOpen=%v: %s received %d of 5, want %d", failOpen, a, got, want)
			}
		}
		if s := q.Stats(); s.Packets != 20 || s.Accepted != 10 || s.Dropped != 10 || s.Malformed+s.VerdictErrors+s.ENOBUFS+s.ReaderFailures != 0 {
			t.Errorf("failOpen=%v: stats %+v", failOpen, s)
		}
		q.Close()
		ns.do(func() {
			stats, err := ReadQueueStats()
			if err != nil || len(stats) != 0 {
				t.Errorf("failOpen=%v: after Close: queues %+v (%v), want none bound", failOpen, stats, err)
			}
		})
		want := 0
		if failOpen {
			want = 3
		}
		lab.sendN(t, "127.0.0.1:20001", 3)
		if got := lab.received("127.0.0.1:20001", 300*time.Millisecond); got != want {
			t.Errorf("failOpen=%v: after Close %d of 3 delivered, want %d", failOpen, got, want)
		}
	}
}

// A reader that falls behind loses packets to a full socket (ENOBUFS): it counts them and
// keeps serving.
func TestLiveENOBUFS(t *testing.T) {
	ns := newNetNS(t)
	lab := newUDPLab(t, ns)
	d := &portDecider{allow: 20001, slow: 300 * time.Millisecond}
	var q *Queues[none]
	ns.do(func() {
		queueRules(t, false)
		var err error
		q, err = Start(t.Context(), Config[none]{QueueNum: liveQueue, Queues: 1, ReadBuffer: 4096}, d)
		if err != nil {
			t.Fatal(err)
		}
	})
	defer q.Close()
	lab.sendN(t, "127.0.0.1:20001", 300)
	got := lab.received("127.0.0.1:20001", 500*time.Millisecond)
	s := q.Stats()
	if s.ENOBUFS == 0 || got >= 300 || s.ReaderFailures != 0 {
		t.Fatalf("300 datagrams at a stalled reader with a 4 KiB buffer: %d delivered, stats %+v; want ENOBUFS counted, no reader failure", got, s)
	}
	lab.sendN(t, "127.0.0.1:20001", 3)
	if got := lab.received("127.0.0.1:20001", 300*time.Millisecond); got != 3 {
		t.Errorf("after the overrun: %d of 3 delivered, want 3", got)
	}
	if s := q.Stats(); s.ReaderFailures != 0 || uint64(got)+s.Accepted < 3 {
		t.Errorf("after the overrun: stats %+v", s)
	}
	ns.do(func() {
		stats, _ := ReadQueueStats()
		if len(stats) != 1 || stats[0].UserDropped == 0 {
			t.Errorf("kernel's queue counters %+v, want user drops", stats)
		}
	})
}

// TestLiveRecord, with -record, writes one message of each kind the kernel sends for a
// UDP datagram and a TCP SYN, IPv4 and IPv6, to testdata/nfqueue/: the seeds of
// FuzzParseMessages and the stream of BenchmarkLoop.
func TestLiveRecord(t *testing.T) {
	if !*record {
		t.Skip("-record not set")
	}
	ns := newNetNS(t)
	lab := newUDPLab(t, ns)
	got := make(chan []byte, 1)
	var q *Queues[none]
	ns.do(func() {
		queueRules(t, false)
		var err error
		q, err = Start(t.Context(), Config[none]{QueueNum: liveQueue, Queues: 1, Observe: func(*Record[none]) {
			b := q.readers[0].buf
			got <- append([]byte(nil), b[:binary.NativeEndian.Uint32(b)]...)
		}}, &portDecider{allow: 20001})
		if err != nil {
			t.Fatal(err)
		}
	})
	defer q.Close()
	for _, tc := range []struct{ name, addr string }{
		{"udp4", "127.0.0.1:20001"}, {"udp6", "[::1]:20001"}, {"tcp4-syn", "127.0.0.1:20003"}, {"tcp6-syn", "[::1]:20003"},
	} {
		if tc.name[:3] == "udp" {
			lab.sendN(t, tc.addr, 1)
		} else {
			ns.do(func() {
				c, err := net.DialTimeout("tcp", tc.addr, 200*time.Millisecond) // the SYN is dropped
				if err == nil {
					c.Close()
				}
			})
		}
		var b []byte
		select {
		case b = <-got:
		case <-time.After(2 * time.Second):
			t.Fatalf("%s: nothing queued", tc.name)
		}
		if err := os.WriteFile(filepath.Join("testdata", "nfqueue", tc.name+".bin"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		for len(got) > 0 { // a retransmitted SYN
			<-got
		}
	}
}
