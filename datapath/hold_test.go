package datapath

import (
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podwall/podwall/policy/flow"
)

// podWindow is a Decider and Waiter over a node whose pods take addresses from podRange:
// it denies one port, and an address of the range is known when the current view lists
// it. A test publishes a new view (and generation) with learn.
type podWindow struct {
	port uint16
	view atomic.Pointer[podView]
}

type podView struct {
	gen   uint64
	known map[netip.Addr]bool
}

var podRange = netip.MustParsePrefix("10.244.1.0/24")

func newPodWindow(port uint16, known ...string) *podWindow {
	w := &podWindow{port: port}
	w.view.Store(&podView{gen: 1, known: map[netip.Addr]bool{}})
	w.learn(known...)
	return w
}

// learn puts a generation in force that also knows addrs.
func (w *podWindow) learn(addrs ...string) {
	old := w.view.Load()
	v := &podView{gen: old.gen + 1, known: map[netip.Addr]bool{}}
	for a := range old.known {
		v.known[a] = true
	}
	for _, a := range addrs {
		v.known[netip.MustParseAddr(a)] = true
	}
	w.view.Store(v)
}

func (w *podWindow) Generation() uint64 { return w.view.Load().gen }
func (w *podWindow) Decide(f flow.Flow) (none, bool, uint64) {
	return none{}, f.Port != w.port, w.view.Load().gen
}
func (w *podWindow) Unknown(f flow.Flow, gen uint64) bool {
	v := w.view.Load()
	for _, a := range []netip.Addr{f.Src, f.Dst} {
		if podRange.Contains(a) && !v.known[a] {
			return true
		}
	}
	return false
}

// newHoldPair is newPair over a Waiter, able to hold packets as Start's readers are.
func newHoldPair(t testing.TB, cfg Config[none], w *podWindow) *pair {
	t.Helper()
	if cfg.HoldTimeout == 0 {
		cfg.HoldTimeout = time.Minute // the tests that do not expire never reach it
	}
	if cfg.MaxHeld == 0 {
		cfg.MaxHeld = DefaultMaxHeld
	}
	p := newPair(t, cfg, w)
	p.q.waiter = w
	p.r.setDeadline = p.f.SetReadDeadline
	return p
}

// waitHolding waits until the reader holds n packets.
func (p *pair) waitHolding(t testing.TB, n int64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for p.q.Stats().Holding != n {
		if time.Now().After(deadline) {
			t.Fatalf("reader holds %d packets, want %d", p.q.Stats().Holding, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A packet from or to a pod address the policy does not know yet gets no verdict until a
// policy that knows it is in force; then it is judged by that policy. Packets of known
// pods are judged at once meanwhile.
func TestHoldUntilKnown(t *testing.T) {
	w := newPodWindow(3306, "10.244.1.12")
	c := make(records, 16)
	p := newHoldPair(t, Config[none]{Observe: c.observe}, w).start()
	p.send(t, packetMessage(1, tcpSYN(t, "10.244.1.50", "10.244.1.12", 40000, 3306))) // from a new pod
	p.send(t, packetMessage(2, tcpSYN(t, "10.244.1.12", "10.244.1.51", 40001, 80)))   // to a new pod
	p.waitHolding(t, 2)
	p.send(t, packetMessage(3, tcpSYN(t, "192.0.2.10", "10.244.1.12", 40002, 80))) // known pods only
	if got := p.recv(t); !slices.Equal(got, []verdict{{3, true}}) {
		t.Fatalf("while two are held: %v, want only accept 3", got)
	}
	if r := c.next(t); r.Held != 0 {
		t.Errorf("packet judged at once has Held %v", r.Held)
	}

	w.learn("10.244.1.50") // one of the two
	gen := w.Generation()
	if got := p.recv(t); !slices.Equal(got, []verdict{{1, false}}) {
		t.Fatalf("after the source is known: %v, want drop 1 (its port is denied)", got)
	}
	if r := c.next(t); r.Held <= 0 || r.Malformed != nil || r.Gen != gen || r.Allow {
		t.Errorf("released record %+v: want held, judged by generation %d, denied", r, gen)
	}
	p.waitHolding(t, 1)
	w.learn("10.244.1.51")
	if got := p.recv(t); !slices.Equal(got, []verdict{{2, true}}) {
		t.Fatalf("after the destination is known: %v, want accept 2", got)
	}
	p.stop()
	s := p.q.Stats()
	if s.Held != 2 || s.Released != 2 || s.Expired != 0 || s.HeldOverflow != 0 || s.Holding != 0 || s.Packets != 3 {
		t.Errorf("stats %+v", s)
	}
}

// A packet no policy learns the pod of within the bound gets the failure policy's verdict:
// drop failing closed, accept failing open, with ErrHoldExpired as its reason.
func TestHoldExpires(t *testing.T) {
	for _, failOpen := range []bool{false, true} {
		w := newPodWindow(3306)
		c := make(records, 16)
		p := newHoldPair(t, Config[none]{Observe: c.observe, FailOpen: failOpen, HoldTimeout: 20 * time.Millisecond}, w).start()
		p.send(t, packetMessage(1, tcpSYN(t, "10.244.1.99", "192.0.2.10", 40000, 80)))
		w.learn() // a new generation that still does not know it: held on
		if got := p.recv(t); !slices.Equal(got, []verdict{{1, failOpen}}) {
			t.Fatalf("fail open %v: %v, want the failure policy's verdict", failOpen, got)
		}
		if r := c.next(t); r.Malformed != ErrHoldExpired || r.Allow != failOpen || r.Held < 20*time.Millisecond {
			t.Errorf("fail open %v: record %+v", failOpen, r)
		}
		p.stop()
		if s := p.q.Stats(); s.Held != 1 || s.Expired != 1 || s.Released != 0 || s.Holding != 0 {
			t.Errorf("fail open %v: stats %+v", failOpen, s)
		}
	}
}

// A reader holds at most MaxHeld packets: the next gets the failure policy's verdict at
// once. A reader that stops gives it to every packet it holds.
func TestHoldBounded(t *testing.T) {
	w := newPodWindow(3306)
	p := newHoldPair(t, Config[none]{MaxHeld: 1}, w).start()
	p.send(t, packetMessage(1, tcpSYN(t, "10.244.1.98", "192.0.2.10", 40000, 80)))
	p.waitHolding(t, 1)
	p.send(t, packetMessage(2, tcpSYN(t, "10.244.1.99", "192.0.2.10", 40000, 80)))
	if got := p.recv(t); !slices.Equal(got, []verdict{{2, false}}) {
		t.Fatalf("table full: %v, want drop 2 at once", got)
	}
	p.stop()
	if got := p.recv(t); !slices.Equal(got, []verdict{{1, false}}) {
		t.Fatalf("stopped: %v, want drop 1", got)
	}
	if s := p.q.Stats(); s.Held != 1 || s.HeldOverflow != 1 || s.Expired != 1 || s.Holding != 0 {
		t.Errorf("stats %+v", s)
	}
}

// With a Waiter, a packet of known pods still costs no allocation.
func TestLoopWithWaiterDoesNotAllocate(t *testing.T) {
	w := newPodWindow(3306, "10.244.1.10", "10.244.1.12")
	p := newHoldPair(t, Config[none]{Observe: func(*Record[none]) {}}, w).start()
	msg := packetMessage(1, tcpSYN(t, "10.244.1.10", "10.244.1.12", 40000, 80))
	round := func() {
		if _, err := peerWrite(p.peer, msg); err != nil {
			t.Fatal(err)
		}
		if n, err := peerRead(p.peer, p.buf); err != nil || n != verdictLen {
			t.Fatalf("verdict: %d bytes, %v", n, err)
		}
	}
	round()
	if n := testing.AllocsPerRun(1000, round); n != 0 {
		t.Errorf("known pods, cache hit: %v allocations per packet, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() { w.view.Load().gen++; round() }); n != 0 {
		t.Errorf("known pods, cache miss: %v allocations per packet, want 0", n)
	}
}

// BenchmarkLoopWaiter is BenchmarkLoop's cache-miss case over a Waiter: a packet of known
// pods, judged anew each time (a new generation), so every packet pays the Unknown check.
func BenchmarkLoopWaiter(b *testing.B) {
	w := newPodWindow(3306, "10.244.1.10", "10.244.1.12")
	p := newHoldPair(b, Config[none]{Observe: func(*Record[none]) {}}, w).start()
	msg := packetMessage(1, tcpSYN(b, "10.244.1.10", "10.244.1.12", 40000, 80))
	b.ReportAllocs()
	for b.Loop() {
		w.view.Load().gen++
		if _, err := peerWrite(p.peer, msg); err != nil {
			b.Fatal(err)
		}
		if n, err := peerRead(p.peer, p.buf); err != nil || n != verdictLen {
			b.Fatalf("verdict: %d bytes, %v", n, err)
		}
	}
}
