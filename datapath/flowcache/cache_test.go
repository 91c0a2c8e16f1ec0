package flowcache

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
)

// verdict is a stand-in for the datapath's cached value.
type verdict struct {
	allow bool
	rule  string
}

func mustNew[V any](t testing.TB, size int) *Cache[V] {
	t.Helper()
	c, err := New[V](size)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// key returns a distinct IPv4 TCP flow key per n.
func key(n int) Key {
	src := netip.AddrFrom4([4]byte{10, 244, byte(n >> 16), byte(n >> 8)})
	dst := netip.AddrFrom4([4]byte{10, 245, 0, byte(n)})
	return mk(src, dst, 6, 80)
}

func TestNewRejectsBadSize(t *testing.T) {
	for _, size := range []int{0, -1} {
		if _, err := New[bool](size); err == nil {
			t.Errorf("New(%d) succeeded", size)
		}
	}
}

// A snapshot swap (new generation) turns every entry into a miss.
func TestGeneration(t *testing.T) {
	c := mustNew[verdict](t, 8)
	k := key(1)
	allow := verdict{allow: true, rule: "ns/allow-web ingress[0]"}
	deny := verdict{rule: "no policy allows ingress to ns/db"}

	c.Add(k, 1, allow)
	if v, ok := c.Get(k, 1); !ok || v != allow {
		t.Fatalf("Get(gen 1) = %v, %v; want %v, true", v, ok, allow)
	}
	if v, ok := c.Get(k, 2); ok || v != (verdict{}) {
		t.Fatalf("Get(gen 2) of a gen-1 entry = %v, %v; want a miss with the zero value", v, ok)
	}
	c.Add(k, 2, deny)
	if v, ok := c.Get(k, 2); !ok || v != deny {
		t.Fatalf("Get(gen 2) = %v, %v; want %v, true", v, ok, deny)
	}
	if _, ok := c.Get(k, 1); ok {
		t.Fatalf("Get(gen 1) hit after the entry was replaced by gen 2")
	}
	if _, ok := c.Get(key(2), 2); ok {
		t.Fatalf("Get of a key never added hit")
	}
	if got, want := c.Stats(), (Stats{Hits: 2, Misses: 3}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	if c.Len() != 1 {
		t.Errorf("Len = %d, want 1", c.Len())
	}
}

// At size N the (N+1)th key evicts the least recently used one, and each
// eviction is counted once.
func TestEviction(t *testing.T) {
	const n = 16
	c := mustNew[int](t, n)
	for i := range n {
		c.Add(key(i), 1, i)
	}
	if got := c.Stats().Evictions; got != 0 {
		t.Fatalf("Evictions = %d after filling the cache, want 0", got)
	}
	c.Add(key(0), 1, 0)     // replacing an entry evicts nothing ...
	c.Get(key(1), 1)        // ... and key 1 is used: key 2 is now the oldest
	c.Add(key(n), 1, n)     // evicts key 2
	c.Add(key(n+1), 1, n+1) // evicts key 3
	if got := c.Stats().Evictions; got != 2 {
		t.Errorf("Evictions = %d, want 2", got)
	}
	if c.Len() != n {
		t.Errorf("Len = %d, want %d", c.Len(), n)
	}
	for i, want := range map[int]bool{0: true, 1: true, 2: false, 3: false, 4: true, n: true, n + 1: true} {
		if _, ok := c.Get(key(i), 1); ok != want {
			t.Errorf("key %d cached = %v, want %v", i, ok, want)
		}
	}
	for i := range 3 * n {
		c.Add(key(100+i), 1, i)
	}
	if got := c.Stats().Evictions; got != 2+3*n {
		t.Errorf("Evictions = %d, want %d", got, 2+3*n)
	}
}

func TestPurge(t *testing.T) {
	c := mustNew[int](t, 4)
	for i := range 4 {
		c.Add(key(i), 1, i)
	}
	c.Purge()
	if c.Len() != 0 {
		t.Errorf("Len = %d after Purge", c.Len())
	}
	if _, ok := c.Get(key(0), 1); ok {
		t.Errorf("Get hit after Purge")
	}
	if got := c.Stats().Evictions; got != 0 {
		t.Errorf("Purge counted as %d evictions", got)
	}
}

// Queue readers share one cache: run under -race. A hit must always return
// the value stored for exactly that key and generation.
func TestConcurrent(t *testing.T) {
	type val struct {
		k   Key
		gen uint64
	}
	const (
		workers = 8
		ops     = 20000
		keys    = 512
	)
	c := mustNew[val](t, keys/2)
	var gets [workers]uint64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range ops {
				k := key(r.IntN(keys))
				gen := uint64(i / 5000) // a few snapshot swaps
				switch r.IntN(20) {
				case 0:
					_ = c.Len()
					_ = c.Stats()
				case 1:
					if w == 0 && i%1000 == 0 {
						c.Purge()
					}
				default:
					gets[w]++
					if v, ok := c.Get(k, gen); ok {
						if v.k != k || v.gen != gen {
							t.Errorf("Get(%v, %d) = %v", k, gen, v)
							return
						}
					} else {
						c.Add(k, gen, val{k, gen})
					}
				}
			}
		}()
	}
	wg.Wait()
	var total uint64
	for _, n := range gets {
		total += n
	}
	s := c.Stats()
	if s.Hits+s.Misses != total {
		t.Errorf("Hits+Misses = %d, want %d Gets", s.Hits+s.Misses, total)
	}
	if s.Hits == 0 || s.Evictions == 0 {
		t.Errorf("Stats = %+v: the test should produce both hits and evictions", s)
	}
	if c.Len() > keys/2 {
		t.Errorf("Len = %d above the size %d", c.Len(), keys/2)
	}
}

// Get allocates nothing, hit or miss; nor does replacing a cached entry.
func TestNoAllocs(t *testing.T) {
	c := mustNew[verdict](t, 1024)
	hit, miss := key(1), key(2)
	v := verdict{allow: true, rule: "ns/p ingress[0]"}
	c.Add(hit, 7, v)
	for name, f := range map[string]func(){
		"Get hit":          func() { c.Get(hit, 7) },
		"Get miss":         func() { c.Get(miss, 7) },
		"Get stale":        func() { c.Get(hit, 6) },
		"Add existing key": func() { c.Add(hit, 7, v) },
		"KeyOf":            func() { _ = mk(pod4, pod4b, 6, 80) },
		"KeyOf+Get (v6)":   func() { c.Get(mk(pod6, pod6b, 17, 53), 7) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocations, want 0", name, n)
		}
	}
}

var (
	pod4  = netip.MustParseAddr("10.244.1.2")
	pod4b = netip.MustParseAddr("10.244.2.3")
	pod6  = netip.MustParseAddr("fd00:10:244:1::2")
	pod6b = netip.MustParseAddr("fd00:10:244:2::3")
)

func BenchmarkGet(b *testing.B) {
	const size = 100_000
	c := mustNew[verdict](b, size)
	ks := make([]Key, size)
	for i := range ks {
		ks[i] = key(i)
		c.Add(ks[i], 1, verdict{allow: true})
	}
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			c.Get(ks[i%size], 1)
			i++
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			c.Get(ks[i%size], 2)
			i++
		}
	})
	b.Run("hit-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(size)
			for pb.Next() {
				c.Get(ks[i%size], 1)
				i++
			}
		})
	})
}

func BenchmarkAdd(b *testing.B) {
	const size = 100_000
	b.Run("new-key-evicting", func(b *testing.B) {
		// Steady state of a full cache: every Add of a new flow evicts
		// the oldest.
		c := mustNew[verdict](b, size)
		for i := range size {
			c.Add(key(i), 1, verdict{})
		}
		b.ReportAllocs()
		i := size
		for b.Loop() {
			c.Add(key(i), 1, verdict{allow: true})
			i++
		}
	})
	b.Run("existing-key", func(b *testing.B) {
		c := mustNew[verdict](b, size)
		for i := range size {
			c.Add(key(i), 1, verdict{})
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			c.Add(key(i%size), 2, verdict{allow: true})
			i++
		}
	})
}
