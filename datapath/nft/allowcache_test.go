//go:build linux

package nft

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/podwall/podwall/policy/flow"
)

// The allow cache with real packets, failing closed and nobody reading the queue, so that
// every queued packet is dropped and only the allow cache lets one through: a cached flow's
// new connections pass in the kernel, counted, never queued; another port, the other
// family, and the very next connection after a new generation are queued (and dropped).
func TestLiveAllowCacheTraffic(t *testing.T) {
	requireRoot(t)
	l, r, iso, passes, dropped := newCacheTrafficLab(t, Config{AllowCacheTTL: 10 * time.Second})
	counters := func() Counters { return mustCounters(t, r) }
	f := flow.Flow{Src: l.addrs["a4"], Dst: l.addrs["b4"], Proto: flow.UDP, Port: echoPort}

	if !dropped("a4", "b4") {
		t.Fatal("fail closed, nobody reading: a new connection passed the queue")
	}
	other := f
	other.Port++
	if _, err := r.AddAllowed(1, []flow.Flow{other}); err != nil {
		t.Fatal(err)
	}
	c0 := counters()
	if !dropped("a4", "b4") {
		t.Error("a connection to a port next to the cached one passed")
	}
	if _, err := r.AddAllowed(1, []flow.Flow{f}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if !passes("a4", "b4") {
			t.Fatalf("attempt %d of a cached allowed flow was dropped", i)
		}
	}
	if !dropped("a6", "b6") {
		t.Error("the IPv6 flow, not in the cache, passed")
	}
	c1 := counters()
	if d := c1.AllowCached - c0.AllowCached; d != 3 {
		t.Errorf("allow cache counted %d accepts, want 3", d)
	}
	if d := c1.Ingress4 - c0.Ingress4; d != 1 {
		t.Errorf("%d IPv4 packets queued, want 1 (the one to the other port)", d)
	}

	// A new generation: the very next attempt is queued (and dropped), not accepted.
	if err := r.Sync(2, iso, nil); err != nil {
		t.Fatal(err)
	}
	if !dropped("a4", "b4") {
		t.Error("the first attempt after a new generation passed: the old policy's allow shadowed it")
	}
	if c := counters(); c.AllowCached != c1.AllowCached {
		t.Errorf("after the new generation the allow cache accepted %d more", c.AllowCached-c1.AllowCached)
	}
}

// What one AddAllowed transaction costs as the allow cache fills. Each op adds a batch of 1
// or 64 new flows to a cache prefilled with n (the TTL keeps them all). (An interval set of
// port ranges, tried for caching a flow's whole port span, cost 80 µs to 2.6 ms a
// transaction of one: the kernel rebuilds such a set on every commit.)
func BenchmarkLiveAddAllowed(b *testing.B) {
	requireRoot(b)
	for _, n := range []int{0, 1000, 10000, 60000} {
		for _, batch := range []int{1, 64} {
			if n+batch > AllowCacheSize {
				continue
			}
			b.Run(fmt.Sprintf("held=%d/batch=%d", n, batch), func(b *testing.B) {
				r, _, _ := newLab(b, Config{QueueCount: 1, AllowCacheTTL: time.Minute})
				if err := r.ProgramSync(1, addrs("10.244.0.3"), nil); err != nil {
					b.Fatal(err)
				}
				next := 0
				flows := func(k int) []flow.Flow {
					out := make([]flow.Flow, k)
					for i := range out {
						src := netip.AddrFrom4([4]byte{10, byte(100 + next>>16), byte(next >> 8), byte(next)})
						out[i] = flow.Flow{Src: src, Dst: netip.MustParseAddr("10.244.0.3"), Proto: flow.TCP, Port: 20000}
						next++
					}
					return out
				}
				for chunk := n; chunk > 0; chunk -= min(chunk, maxCachedPerBatch) {
					if _, err := r.AddAllowed(1, flows(min(chunk, maxCachedPerBatch))); err != nil {
						b.Fatal(err)
					}
				}
				for b.Loop() {
					if next+batch > AllowCacheSize {
						b.Skip("cache full")
					}
					if _, err := r.AddAllowed(1, flows(batch)); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
