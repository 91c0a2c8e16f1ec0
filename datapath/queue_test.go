package datapath

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
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

// A packet whose headers cannot be read is dropped in both failure modes (fail-open is
// about the agent's availability, not about packets), with the reason; a later fragment,
// whose ports are in the first, gets the failure policy.
func TestJudgeMalformed(t *testing.T) {
	for _, failOpen := range []bool{false, true} {
		d := &denyPort{port: 1}
		r := newTestReader(t, d, failOpen)
		pkt := tcpSYN(t, "10.244.1.10", "10.244.1.12", 40000, 80)
		rec := r.judge(pkt[:24]) // IPv4 header and half a TCP header
		if rec.Allow || rec.Malformed == nil || d.calls != 0 {
			t.Errorf("failOpen=%v: truncated packet got %+v with %d decisions, want a drop", failOpen, *rec, d.calls)
		}
		if !errors.Is(rec.Malformed, packet.ErrTruncated) && !errors.Is(rec.Malformed, packet.ErrMalformed) {
			t.Errorf("reason %v, want a decode error", rec.Malformed)
		}
		later := slices.Clone(pkt)
		later[6], later[7] = 0, 4 // fragment offset 32 bytes
		rec = r.judge(later)
		if rec.Allow != failOpen || !errors.Is(rec.Malformed, errLaterFragment) || d.calls != 0 {
			t.Errorf("failOpen=%v: later fragment got %+v with %d decisions, want the failure policy", failOpen, *rec, d.calls)
		}
		if r.q.malformed.Load() != 2 {
			t.Errorf("malformed counter %d, want 2", r.q.malformed.Load())
		}
	}
}

// Headers the kernel forwards are judged by their ports, however odd their options or
// long their extension header chain: a crafted SYN to a denied port is denied and one to
// an allowed port allowed, in both failure modes.
func TestJudgeOddHeaders(t *testing.T) {
	for _, failOpen := range []bool{false, true} {
		for _, c := range []struct {
			name string
			pkt  func(dport uint16) []byte
		}{
			{"TCP option of length 1", func(dport uint16) []byte {
				b := tcpSYN(t, "10.244.1.10", "10.244.1.12", 40000, dport)
				return withTCPOptions(b, 20, []byte{0xfe, 1, 1, 1})
			}},
			{"unknown IPv4 option of length 2", func(dport uint16) []byte {
				return withIPv4Options(tcpSYN(t, "10.244.1.10", "10.244.1.12", 40000, dport), []byte{0x1e, 2, 1, 0})
			}},
			{"IPv6 TCP behind 200 bytes of destination options", func(dport uint16) []byte {
				return withDestOpts(tcpSYN(t, "fd00:10:244:1::10", "fd00:10:244:1::12", 40000, dport), 200)
			}},
		} {
			d := &denyPort{port: 3306, gen: 1}
			r := newTestReader(t, d, failOpen)
			if rec := r.judge(c.pkt(3306)); rec.Allow || rec.Malformed != nil || rec.Flow.Port != 3306 {
				t.Errorf("failOpen=%v, %s to a denied port: %+v, want judged and denied", failOpen, c.name, *rec)
			}
			if rec := r.judge(c.pkt(80)); !rec.Allow || rec.Malformed != nil || rec.Flow.Port != 80 {
				t.Errorf("failOpen=%v, %s to an allowed port: %+v, want judged and allowed", failOpen, c.name, *rec)
			}
		}
	}
}

// withTCPOptions inserts TCP option bytes (a multiple of 4) into an IPv4 TCP packet whose
// TCP header starts at off, fixing the lengths (checksums are not the verdict's business).
func withTCPOptions(b []byte, off int, opts []byte) []byte {
	out := slices.Concat(b[:off+20], opts, b[off+20:])
	out[off+12] = byte(5+len(opts)/4) << 4
	binary.BigEndian.PutUint16(out[2:4], uint16(len(out)))
	return out
}

// withIPv4Options inserts IPv4 option bytes (a multiple of 4) into an IPv4 packet.
func withIPv4Options(b []byte, opts []byte) []byte {
	out := slices.Concat(b[:20], opts, b[20:])
	out[0] = 0x40 | byte(5+len(opts)/4)
	binary.BigEndian.PutUint16(out[2:4], uint16(len(out)))
	return out
}

// withDestOpts puts a destination options header of n bytes (a multiple of 8, padding
// only) between an IPv6 header and its upper-layer header.
func withDestOpts(b []byte, n int) []byte {
	h := make([]byte, n)
	h[0], h[1] = b[6], byte(n/8-1)
	for i := 2; i < n; {
		l := min(n-i, 7)
		if l == 1 {
			i++
			continue
		}
		h[i], h[i+1] = 1, byte(l-2)
		i += l
	}
	out := slices.Concat(b[:40], h, b[40:])
	out[6] = 60
	binary.BigEndian.PutUint16(out[4:6], uint16(len(out)-40))
	return out
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
