package datapath

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/podwall/podwall/datapath/flowcache"
	"github.com/podwall/podwall/datapath/packet"
	"github.com/podwall/podwall/policy/flow"
)

// denyPort is a Decider that denies one destination port and counts its calls.
type denyPort struct {
	port  uint16
	gen   uint64
	calls int
}

func (d *denyPort) Generation() uint64 { return d.gen }
func (d *denyPort) Decide(f flow.Flow) (none, bool, uint64) {
	d.calls++
	return none{}, f.Port != d.port, d.gen
}

func newTestReader(t *testing.T, d Decider[none], failOpen bool) *reader[none] {
	t.Helper()
	cache, err := flowcache.New[cached[none]](128)
	if err != nil {
		t.Fatal(err)
	}
	q := &Queues[none]{cfg: Config[none]{FailOpen: failOpen}, decider: d, cache: cache}
	return &reader[none]{q: q, num: 7, dec: packet.NewDecoder()}
}

func tcpSYN(t testing.TB, src, dst string, sport, dport uint16) []byte {
	t.Helper()
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), SYN: true, Window: 64240}
	var ip gopacket.SerializableLayer
	if s.Is4() {
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.IP(s.AsSlice()), DstIP: net.IP(d.AsSlice())}
		tcp.SetNetworkLayerForChecksum(ip4)
		ip = ip4
	} else {
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: net.IP(s.AsSlice()), DstIP: net.IP(d.AsSlice())}
		tcp.SetNetworkLayerForChecksum(ip6)
		ip = ip6
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestJudge(t *testing.T) {
	d := &denyPort{port: 3306, gen: 1}
	r := newTestReader(t, d, false)

	rec := r.judge(tcpSYN(t, "10.244.1.10", "10.244.1.12", 40000, 3306))
	if rec.Allow || rec.CacheHit || rec.Flow.Port != 3306 || rec.SrcPort != 40000 || rec.Queue != 7 {
		t.Errorf("first SYN to 3306: %+v, want a denied cache miss", *rec)
	}
	// A retransmitted SYN (another source port, same flow key) is answered by the cache.
	rec = r.judge(tcpSYN(t, "10.244.1.10", "10.244.1.12", 40001, 3306))
	if rec.Allow || !rec.CacheHit || d.calls != 1 {
		t.Errorf("second SYN: %+v after %d decisions, want a denied cache hit", *rec, d.calls)
	}
	// A new policy generation invalidates the cached verdict.
	d.gen = 2
	rec = r.judge(tcpSYN(t, "10.244.1.10", "10.244.1.12", 40002, 3306))
	if rec.CacheHit || d.calls != 2 || rec.Gen != 2 {
		t.Errorf("after a policy change: %+v after %d decisions, want a fresh decision", *rec, d.calls)
	}
	rec = r.judge(tcpSYN(t, "fd00::1", "fd00::2", 40000, 80))
	if !rec.Allow || rec.Flow.Src != netip.MustParseAddr("fd00::1") {
		t.Errorf("IPv6 SYN to 80: %+v, want allowed", *rec)
	}
}

// countingDecider's decision is the number of its call: which call decided a packet shows.
type countingDecider struct{ calls int }

func (d *countingDecider) Generation() uint64 { return 1 }
func (d *countingDecider) Decide(flow.Flow) (int, bool, uint64) {
	d.calls++
	return d.calls, true, 1
}

// A packet is decided once: the Record carries the decision that made its verdict, and a
// cache hit carries the cached decision, not a new one.
func TestJudgeCarriesTheDecision(t *testing.T) {
	d := &countingDecider{}
	cache, err := flowcache.New[cached[int]](128)
	if err != nil {
		t.Fatal(err)
	}
	r := &reader[int]{q: &Queues[int]{decider: d, cache: cache}, dec: packet.NewDecoder()}
	for i, want := range []struct {
		decision int
		hit      bool
	}{{1, false}, {1, true}, {1, true}} {
		rec := r.judge(tcpSYN(t, "10.244.1.10", "10.244.1.12", uint16(40000+i), 80))
		if rec.Decision != want.decision || rec.CacheHit != want.hit || rec.Gen != 1 {
			t.Errorf("packet %d: decision %d hit %v gen %d, want decision %d hit %v gen 1", i, rec.Decision, rec.CacheHit, rec.Gen, want.decision, want.hit)
		}
	}
	if rec := r.judge(tcpSYN(t, "10.244.1.10", "10.244.1.13", 40000, 80)); rec.Decision != 2 || rec.CacheHit {
		t.Errorf("another flow: decision %d hit %v, want a new decision 2", rec.Decision, rec.CacheHit)
	}
}

// Malformed packets get the failure policy's verdict, with the reason.
func TestJudgeMalformed(t *testing.T) {
	for _, failOpen := range []bool{false, true} {
		d := &denyPort{port: 1}
		r := newTestReader(t, d, failOpen)
		pkt := tcpSYN(t, "10.244.1.10", "10.244.1.12", 40000, 80)
		rec := r.judge(pkt[:24]) // IPv4 header and half a TCP header
		if rec.Allow != failOpen || rec.Malformed == nil || d.calls != 0 {
			t.Errorf("failOpen=%v: truncated packet got %+v with %d decisions", failOpen, *rec, d.calls)
		}
		if !errors.Is(rec.Malformed, packet.ErrTruncated) && !errors.Is(rec.Malformed, packet.ErrMalformed) {
			t.Errorf("reason %v, want a decode error", rec.Malformed)
		}
		if r.q.malformed.Load() != 1 {
			t.Errorf("malformed counter %d, want 1", r.q.malformed.Load())
		}
	}
}

// Decoding, the cache and deciding allocate nothing per packet (the Decider here is
// allocation-free like the real engine, whose Decide is tested apart).
func TestJudgeDoesNotAllocate(t *testing.T) {
	d := &denyPort{port: 3306, gen: 1}
	r := newTestReader(t, d, false)
	hit := tcpSYN(t, "10.244.1.10", "10.244.1.12", 40000, 3306)
	r.judge(hit)
	if n := testing.AllocsPerRun(500, func() { r.judge(hit) }); n != 0 {
		t.Errorf("judge on a cache hit allocates %v times, want 0", n)
	}
	v6 := tcpSYN(t, "fd00::1", "fd00::2", 40000, 80)
	if n := testing.AllocsPerRun(500, func() { d.gen++; r.judge(v6) }); n > 0 {
		t.Logf("judge on a cache miss allocates %v times (the LRU's insert)", n)
	}
}

func BenchmarkJudge(b *testing.B) {
	for _, tc := range []struct {
		name string
		miss bool
	}{{"cache-hit", false}, {"cache-miss", true}} {
		b.Run(tc.name, func(b *testing.B) {
			d := &denyPort{port: 3306, gen: 1}
			cache, _ := flowcache.New[cached[none]](1 << 16)
			r := &reader[none]{q: &Queues[none]{decider: d, cache: cache}, dec: packet.NewDecoder()}
			pkt := tcpSYN(b, "10.244.1.10", "10.244.1.12", 40000, 3306)
			b.ReportAllocs()
			for b.Loop() {
				if tc.miss {
					d.gen++
				}
				r.judge(pkt)
			}
		})
	}
}

// none is the decision of the tests' Deciders: the datapath carries it without looking.
type none = struct{}
