//go:build linux

package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"

	"github.com/podwall/podwall/policy/flow"
)

// deniedElems reads the deny cache of the table in h back from the kernel: one
// "src dst proto port" string per element, sorted, both families.
func deniedElems(t *testing.T, h netns.NsHandle) []string {
	t.Helper()
	return cacheElems(t, h, denyCache)
}

// cacheElems reads the sets of cache k in the table in h back from the kernel: one
// "src dst proto port" string per element, sorted, both families; the key's padding must be
// zero.
func cacheElems(t *testing.T, h netns.NsHandle, k cacheKind) []string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, d := range k.defs {
		elems, err := c.GetSetElements(k.newSet(newTable(), d, time.Second))
		if err != nil {
			t.Fatalf("read set %s: %v", d.name, err)
		}
		for _, e := range elems {
			n := (len(e.Key) - 8) / 2
			if n != 4 && n != 16 {
				t.Fatalf("set %s holds a %d-byte key", d.name, len(e.Key))
			}
			src, _ := netip.AddrFromSlice(e.Key[:n])
			dst, _ := netip.AddrFromSlice(e.Key[n : 2*n])
			rest := e.Key[2*n:]
			if rest[1] != 0 || rest[2] != 0 || rest[3] != 0 || rest[6] != 0 || rest[7] != 0 {
				t.Errorf("set %s: padding not zero in %x", d.name, e.Key)
			}
			out = append(out, fmt.Sprintf("%s %s %v %d", src, dst, flow.Proto(rest[0]), binary.BigEndian.Uint16(rest[4:])))
		}
	}
	slices.Sort(out)
	return out
}

func tcpFlow(src, dst string, port uint16) flow.Flow {
	return flow.Flow{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Proto: flow.TCP, Port: port}
}

// AddDenied and AddAllowed take the verdicts of the generation the last Sync installed and
// no other; Sync of a new generation empties both caches, even when the address sets stay the
// same; Program (a takeover) empties them too and refuses every generation until the next
// Sync. Only flows with ports enter, each once, keyed as the rule builds the key from a
// packet, and only into the cache they are for. Without a cache, its Add fails and it has no
// sets.
func TestLiveCacheGenerations(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		k, other cacheKind
		add      func(*Ruleset, uint64, []flow.Flow) (int, error)
		otherAdd func(*Ruleset, uint64, []flow.Flow) (int, error)
	}{
		{denyCache, allowCache, (*Ruleset).AddDenied, (*Ruleset).AddAllowed},
		{allowCache, denyCache, (*Ruleset).AddAllowed, (*Ruleset).AddDenied},
	} {
		t.Run(tc.k.name, func(t *testing.T) {
			cfg := Config{QueueCount: 1, DenyCacheTTL: 10 * time.Second, AllowCacheTTL: 10 * time.Second}
			r, _, h := newLab(t, cfg)
			iso := addrs("10.244.0.3", "fd00:10:244::3")
			if err := r.ProgramSync(1, iso, nil); err != nil {
				t.Fatal(err)
			}
			check := func(step string, want ...string) {
				t.Helper()
				if want == nil {
					want = []string{}
				}
				if got := cacheElems(t, h, tc.k); !slices.Equal(got, want) {
					t.Errorf("%s: %s cache = %q, want %q", step, tc.k.name, got, want)
				}
			}
			add := func(gen uint64, want int, wantErr error, fs ...flow.Flow) {
				t.Helper()
				n, err := tc.add(r, gen, fs)
				if n != want || !errors.Is(err, wantErr) {
					t.Errorf("add to the %s cache (%d, %d flows) = %d, %v; want %d, %v", tc.k.name, gen, len(fs), n, err, want, wantErr)
				}
			}

			add(1, 3, nil,
				tcpFlow("10.244.0.2", "10.244.0.3", 80),
				tcpFlow("10.244.0.2", "10.244.0.3", 80), // a duplicate
				flow.Flow{Src: netip.MustParseAddr("::ffff:10.244.0.2"), Dst: netip.MustParseAddr("10.244.0.3"), Proto: flow.UDP, Port: 53},
				flow.Flow{Src: netip.MustParseAddr("fd00:10:244::2"), Dst: netip.MustParseAddr("fd00:10:244::3"), Proto: flow.SCTP, Port: 9},
				flow.Flow{Src: netip.MustParseAddr("10.244.0.2"), Dst: netip.MustParseAddr("10.244.0.3"), Proto: flow.ICMP}, // no ports
				flow.Flow{Src: netip.MustParseAddr("10.244.0.2"), Dst: netip.MustParseAddr("fd00:10:244::3"), Proto: flow.TCP, Port: 1},
			)
			gen1 := []string{"10.244.0.2 10.244.0.3 TCP 80", "10.244.0.2 10.244.0.3 UDP 53", "fd00:10:244::2 fd00:10:244::3 SCTP 9"}
			check("generation 1", gen1...)
			if got := cacheElems(t, h, tc.other); len(got) != 0 {
				t.Errorf("the %s cache got %q", tc.other.name, got)
			}
			if _, err := tc.otherAdd(r, 1, []flow.Flow{tcpFlow("10.244.0.9", "10.244.0.3", 22)}); err != nil {
				t.Fatal(err)
			}
			add(1, 1, nil, tcpFlow("10.244.0.2", "10.244.0.3", 80)) // already there: not an error
			add(1, 0, nil)
			add(0, 0, ErrStale, tcpFlow("10.244.0.9", "10.244.0.3", 80))
			add(2, 0, ErrStale, tcpFlow("10.244.0.9", "10.244.0.3", 80)) // not synced yet
			check("after refused additions and one to the other cache", gen1...)

			if err := r.Sync(1, addrs("10.244.0.3"), nil); err != nil { // same generation, other sets
				t.Fatal(err)
			}
			check("after a Sync of the same generation", gen1...)
			if err := r.Sync(2, addrs("10.244.0.3"), nil); err != nil { // a new generation, same sets
				t.Fatal(err)
			}
			check("after a Sync of generation 2")
			if got := cacheElems(t, h, tc.other); len(got) != 0 {
				t.Errorf("after a Sync of generation 2 the %s cache holds %q", tc.other.name, got)
			}
			add(1, 0, ErrStale, tcpFlow("10.244.0.2", "10.244.0.3", 80))
			check("after a verdict of generation 1")
			add(2, 1, nil, tcpFlow("10.244.0.2", "10.244.0.3", 81))
			check("generation 2", "10.244.0.2 10.244.0.3 TCP 81")

			if err := r.Program(); err != nil {
				t.Fatal(err)
			}
			check("after Program")
			add(2, 0, ErrStale, tcpFlow("10.244.0.2", "10.244.0.3", 81))
			if err := r.Sync(2, addrs("10.244.0.3"), nil); err != nil {
				t.Fatal(err)
			}
			add(2, 1, nil, tcpFlow("10.244.0.2", "10.244.0.3", 82))
			check("after Program and Sync", "10.244.0.2 10.244.0.3 TCP 82")

			// Another Ruleset takes the table over (an agent restart): the earlier run's verdicts go.
			cfg.NetNS = int(h)
			r2, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer r2.Close(true)
			if err := r2.ProgramSync(1, iso, nil); err != nil {
				t.Fatal(err)
			}
			check("after a takeover")

			// Without this cache: no sets, and adding says so.
			off := Config{QueueCount: 1, NetNS: int(h)}
			if tc.k.name == "deny" {
				off.AllowCacheTTL = time.Second
			} else {
				off.DenyCacheTTL = time.Second
			}
			ro, err := New(off)
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close(true)
			if err := ro.ProgramSync(1, iso, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := tc.add(ro, 1, []flow.Flow{tcpFlow("10.244.0.2", "10.244.0.3", 80)}); err == nil {
				t.Errorf("adding without a %s cache: no error", tc.k.name)
			}
			sets, err := ro.conn.GetSets(newTable())
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range sets {
				if slices.ContainsFunc(tc.k.defs, func(d setDef) bool { return d.name == s.Name }) {
					t.Errorf("%s cache off: set %s still there", tc.k.name, s.Name)
				}
			}
		})
	}
}

// The race the generation check exists for, run many times: an adder hands in verdicts of
// the generation it last saw in force while policies change under it, each change done as
// the agent does it — Sync the new generation, then publish it. Right after each Sync the
// cache must be empty (verdicts of the new generation cannot exist yet, those of the old one
// must be refused or flushed), and at the end it holds only the last generation's verdicts.
// Each verdict's port is its generation, so a survivor would show which one it came from.
func TestLiveDenyCacheNoStaleSurvivor(t *testing.T) {
	requireRoot(t)
	r, _, h := newLab(t, Config{QueueCount: 1, DenyCacheTTL: 10 * time.Second})
	iso := addrs("10.244.0.3")
	var inForce atomic.Uint64
	inForce.Store(1)
	if err := r.ProgramSync(1, iso, nil); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer halt() // also when the test fails early: the adders end before the Ruleset closes
	var added, stale atomic.Int64
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				gen := inForce.Load()
				// A verdict decided now, handed in a little later (as from the agent's channel).
				f := tcpFlow(fmt.Sprintf("10.244.%d.%d", w, i%250+1), "10.244.0.3", uint16(gen))
				time.Sleep(time.Duration(i%3) * 50 * time.Microsecond)
				switch _, err := r.AddDenied(gen, []flow.Flow{f}); {
				case err == nil:
					added.Add(1)
				case errors.Is(err, ErrStale):
					stale.Add(1)
				default:
					t.Error(err)
					return
				}
			}
		}()
	}
	const last = 60
	for gen := uint64(2); gen <= last; gen++ {
		time.Sleep(2 * time.Millisecond) // let verdicts of the generation in force land
		if err := r.Sync(gen, iso, nil); err != nil {
			t.Fatal(err)
		}
		if got := deniedElems(t, h); len(got) != 0 {
			t.Fatalf("right after Sync(%d), before it is in force, the cache holds %q", gen, got)
		}
		inForce.Store(gen)
	}
	// Let verdicts of the last generation land, then stop the adders.
	for n, deadline := added.Load(), time.Now().Add(2*time.Second); added.Load() < n+10 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	halt()
	got := deniedElems(t, h)
	for _, e := range got {
		var src, dst, proto string
		var port int
		fmt.Sscan(e, &src, &dst, &proto, &port)
		if port != last {
			t.Errorf("element %q of generation %d survived into generation %d", e, port, last)
		}
	}
	t.Logf("%d verdicts added, %d refused as stale; %d in the cache at the end", added.Load(), stale.Load(), len(got))
	if added.Load() == 0 || stale.Load() == 0 || len(got) == 0 {
		t.Errorf("the race did not happen: %d added, %d stale, %d at the end", added.Load(), stale.Load(), len(got))
	}
}

// The deny cache with real packets, nobody reading the queues and failing open, so that a
// queued packet passes (bypass) and only the deny cache drops: a denied flow's new
// connections are dropped in the kernel, counted, never queued, for the TTL; then the flow
// is queued again. A Sync of a new generation lets the very next connection through. Other
// flows (the other family) are not touched.
func TestLiveDenyCacheTraffic(t *testing.T) {
	requireRoot(t)
	const ttl = time.Second
	l, r, iso, passes, dropped := newCacheTrafficLab(t, Config{FailOpen: true, DenyCacheTTL: ttl})
	counters := func() Counters { return mustCounters(t, r) }
	denied := flow.Flow{Src: l.addrs["a4"], Dst: l.addrs["b4"], Proto: flow.UDP, Port: echoPort}

	if !passes("a4", "b4") {
		t.Fatal("fail open, nobody reading: a new connection did not pass the queue")
	}
	c0 := counters()
	start := time.Now()
	if _, err := r.AddDenied(1, []flow.Flow{denied}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if !dropped("a4", "b4") {
			t.Fatalf("attempt %d of a cached denied flow passed", i)
		}
	}
	if !passes("a6", "b6") {
		t.Error("the IPv6 flow, not in the cache, was dropped")
	}
	c1 := counters()
	if took := time.Since(start); took > ttl {
		t.Fatalf("the attempts took %v, longer than the TTL: machine too slow for this test", took)
	}
	if d := c1.DenyCached - c0.DenyCached; d != 3 {
		t.Errorf("deny cache counted %d drops, want 3", d)
	}
	if d := c1.Ingress4 - c0.Ingress4; d != 0 {
		t.Errorf("%d packets of the cached flow were queued, want 0", d)
	}

	// The TTL passes: the flow is queued again (and bypassed).
	time.Sleep(time.Until(start.Add(ttl + 200*time.Millisecond)))
	if !passes("a4", "b4") {
		t.Error("after the TTL, the flow is still dropped")
	}
	if d := counters().Ingress4 - c1.Ingress4; d != 1 {
		t.Errorf("after the TTL: %d packets queued, want 1", d)
	}

	// A new generation: the very next attempt is queued (and passes), not dropped.
	if _, err := r.AddDenied(1, []flow.Flow{denied}); err != nil {
		t.Fatal(err)
	}
	if !dropped("a4", "b4") {
		t.Fatal("re-added flow passed")
	}
	if err := r.Sync(2, iso, nil); err != nil {
		t.Fatal(err)
	}
	c2 := counters()
	if !passes("a4", "b4") {
		t.Error("the first attempt after a new generation was dropped: the old policy's deny shadowed it")
	}
	if c := counters(); c.DenyCached != c2.DenyCached || c.Ingress4 != c2.Ingress4+1 {
		t.Errorf("after the new generation: deny cache %d → %d, queued %d → %d; want the same, and one more",
			c2.DenyCached, c.DenyCached, c2.Ingress4, c.Ingress4)
	}
}

// newCacheTrafficLab is the pod lab with a Ruleset of cfg (queue 100, pod interfaces "pw*")
// in force, b4 and b6 isolated for ingress, nobody reading the queue. passes opens a new UDP
// connection (a new source port) and reports whether it echoed; dropped the same, with a
// short wait, so that several fit in one TTL (an echo in the lab takes well under a
// millisecond; the counters say which rule dropped).
func newCacheTrafficLab(t *testing.T, cfg Config) (l *podLab, r *Ruleset, iso []netip.Addr, passes, dropped func(src, dst string) bool) {
	t.Helper()
	l = newPodLab(t)
	cfg.QueueNum, cfg.QueueCount, cfg.PodInterfacePrefixes = 100, 1, []string{"pw"}
	r, err := New(withNetNS(cfg, int(l.node)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(true) })
	iso = l.list("b4", "b6")
	if err := r.ProgramSync(1, iso, nil); err != nil {
		t.Fatal(err)
	}
	passes = func(src, dst string) bool { return l.dial(t, src, dst).echo(t) }
	dropped = func(src, dst string) bool { return !l.dial(t, src, dst).echoWithin(t, 100*time.Millisecond) }
	return l, r, iso, passes, dropped
}

// A full deny cache refuses the transaction that would overfill it, and the Ruleset goes on
// working: the next Sync succeeds (and empties the cache), and additions work again.
func TestLiveDenyCacheFull(t *testing.T) {
	requireRoot(t)
	r, _, h := newLab(t, Config{QueueCount: 1, DenyCacheTTL: 10 * time.Second})
	iso := addrs("10.244.0.3")
	if err := r.ProgramSync(1, iso, nil); err != nil {
		t.Fatal(err)
	}
	flows := func(from, n int) []flow.Flow {
		var out []flow.Flow
		for i := from; i < from+n; i++ {
			out = append(out, flow.Flow{Src: netip.AddrFrom4([4]byte{10, 245, byte(i >> 8), byte(i)}), Dst: netip.MustParseAddr("10.244.0.3"),
				Proto: flow.UDP, Port: uint16(i%7 + 1)})
		}
		return out
	}
	if n, err := r.AddDenied(1, flows(0, DenyCacheSize)); err != nil || n != DenyCacheSize {
		t.Fatalf("filling the cache: %d, %v", n, err)
	}
	if _, err := r.AddDenied(1, flows(DenyCacheSize, 10)); err == nil || !strings.Contains(err.Error(), "deny cache full") {
		t.Errorf("adding to a full cache: %v, want a deny cache full error", err)
	}
	if err := r.Sync(2, iso, nil); err != nil {
		t.Fatalf("Sync after a refused addition: %v", err)
	}
	if got := deniedElems(t, h); len(got) != 0 {
		t.Errorf("after Sync: %d elements", len(got))
	}
	if n, err := r.AddDenied(2, flows(0, 3)); err != nil || n != 3 {
		t.Errorf("adding after Sync: %d, %v", n, err)
	}
	if c, err := r.Counters(); err != nil {
		t.Errorf("Counters: %+v, %v", c, err)
	}
}
