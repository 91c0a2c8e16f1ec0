//go:build linux

package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"

	"github.com/podwall/podwall/policy/flow"
)

// allowedElems reads the allow cache of the table in h back from the kernel: one
// "src dst proto first-last" string per element, sorted, both families.
func allowedElems(t *testing.T, h netns.NsHandle) []string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, d := range allowedDefs {
		elems, err := c.GetSetElements(allowCache.newSet(newTable(), d, time.Second))
		if err != nil {
			t.Fatalf("read set %s: %v", d.name, err)
		}
		for _, e := range elems {
			n := (len(e.Key) - 8) / 2
			if n != 4 && n != 16 || len(e.KeyEnd) != len(e.Key) {
				t.Fatalf("set %s holds a %d-byte key ending in a %d-byte one", d.name, len(e.Key), len(e.KeyEnd))
			}
			src, _ := netip.AddrFromSlice(e.Key[:n])
			dst, _ := netip.AddrFromSlice(e.Key[n : 2*n])
			if string(e.Key[:2*n+4]) != string(e.KeyEnd[:2*n+4]) {
				t.Errorf("set %s: an element spans more than destination ports: %x-%x", d.name, e.Key, e.KeyEnd)
			}
			rest, end := e.Key[2*n:], e.KeyEnd[2*n:]
			out = append(out, fmt.Sprintf("%s %s %v %d-%d", src, dst, flow.Proto(rest[0]),
				binary.BigEndian.Uint16(rest[4:]), binary.BigEndian.Uint16(end[4:])))
		}
	}
	slices.Sort(out)
	return out
}

func allowed(f flow.Flow, first, last uint16) Allowed {
	return Allowed{Flow: f, First: first, Last: last}
}

// AddAllowed takes port spans of the generation the last Sync installed and no other; a
// Sync of a new generation empties the cache, Program too; only flows with ports enter,
// each span once; a span given backwards is its first port alone.
func TestLiveAllowCacheGenerations(t *testing.T) {
	requireRoot(t)
	r, _, h := newLab(t, Config{QueueCount: 1, AllowCacheTTL: 10 * time.Second, DenyCacheTTL: 10 * time.Second})
	iso := addrs("10.244.0.3", "fd00:10:244::3")
	if err := r.ProgramSync(1, iso, nil); err != nil {
		t.Fatal(err)
	}
	check := func(step string, want ...string) {
		t.Helper()
		if want == nil {
			want = []string{}
		}
		if got := allowedElems(t, h); !slices.Equal(got, want) {
			t.Errorf("%s: allow cache = %q, want %q", step, got, want)
		}
	}
	add := func(gen uint64, want int, wantErr error, as ...Allowed) {
		t.Helper()
		n, err := r.AddAllowed(gen, as)
		if n != want || !errors.Is(err, wantErr) {
			t.Errorf("AddAllowed(%d, %d flows) = %d, %v; want %d, %v", gen, len(as), n, err, want, wantErr)
		}
	}
	add(1, 4, nil,
		allowed(tcpFlow("10.244.0.2", "10.244.0.3", 0), 20000, 59999),
		allowed(tcpFlow("10.244.0.2", "10.244.0.3", 0), 20000, 59999), // a duplicate
		allowed(tcpFlow("10.244.0.2", "10.244.0.3", 0), 5001, 5001),
		allowed(flow.Flow{Src: netip.MustParseAddr("fd00:10:244::2"), Dst: netip.MustParseAddr("fd00:10:244::3"), Proto: flow.UDP}, 53, 0), // backwards
		allowed(flow.Flow{Src: netip.MustParseAddr("10.244.0.2"), Dst: netip.MustParseAddr("10.244.0.3"), Proto: flow.ICMP}, 0, 0),         // no ports
		allowed(flow.Flow{Src: netip.MustParseAddr("10.244.0.7"), Dst: netip.MustParseAddr("10.244.0.3"), Proto: flow.SCTP}, 0, 65535),
	)
	gen1 := []string{"10.244.0.2 10.244.0.3 TCP 20000-59999", "10.244.0.2 10.244.0.3 TCP 5001-5001",
		"10.244.0.7 10.244.0.3 SCTP 0-65535", "fd00:10:244::2 fd00:10:244::3 UDP 53-53"}
	check("generation 1", gen1...)
	if got := deniedElems(t, h); len(got) != 0 {
		t.Errorf("the deny cache got %q", got)
	}
	add(1, 1, nil, allowed(tcpFlow("10.244.0.2", "10.244.0.3", 0), 20000, 59999)) // there already
	add(2, 0, ErrStale, allowed(tcpFlow("10.244.0.9", "10.244.0.3", 0), 80, 80))
	check("after a refused addition", gen1...)

	if err := r.Sync(1, addrs("10.244.0.3"), nil); err != nil {
		t.Fatal(err)
	}
	check("after a Sync of the same generation", gen1...)
	if err := r.Sync(2, addrs("10.244.0.3"), nil); err != nil {
		t.Fatal(err)
	}
	check("after a Sync of generation 2")
	add(1, 0, ErrStale, allowed(tcpFlow("10.244.0.2", "10.244.0.3", 0), 80, 80))
	add(2, 1, nil, allowed(tcpFlow("10.244.0.2", "10.244.0.3", 0), 1, 1024))
	check("generation 2", "10.244.0.2 10.244.0.3 TCP 1-1024")
	if err := r.Program(); err != nil {
		t.Fatal(err)
	}
	check("after Program")
	add(2, 0, ErrStale, allowed(tcpFlow("10.244.0.2", "10.244.0.3", 0), 80, 80))

	off, err := New(Config{QueueCount: 1, NetNS: int(h)})
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close(true)
	if err := off.ProgramSync(1, iso, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := off.AddAllowed(1, []Allowed{allowed(tcpFlow("10.244.0.2", "10.244.0.3", 0), 80, 80)}); err == nil {
		t.Error("AddAllowed without an allow cache: no error")
	}
	sets, err := off.conn.GetSets(newTable())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sets {
		if s.Name == SetAllowed4 || s.Name == SetAllowed6 {
			t.Errorf("allow cache off: set %s still there", s.Name)
		}
	}
}

// The allow cache with real packets, failing closed and nobody reading the queue, so that
// every queued packet is dropped and only the allow cache lets one through: a cached flow's
// new connections pass in the kernel, counted, never queued, while its port is in the
// element's span; a port outside it, the other family, and the very next connection after
// a new generation are queued (and dropped).
func TestLiveAllowCacheTraffic(t *testing.T) {
	requireRoot(t)
	l := newPodLab(t)
	cfg := Config{QueueNum: 100, QueueCount: 1, PodInterfacePrefixes: []string{"pw"}, AllowCacheTTL: 10 * time.Second}
	r, err := New(withNetNS(cfg, int(l.node)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(true)
	iso := l.list("b4", "b6")
	if err := r.ProgramSync(1, iso, nil); err != nil {
		t.Fatal(err)
	}
	counters := func() Counters { return mustCounters(t, r) }
	passes := func(src, dst string) bool { return l.dial(t, src, dst).echo(t) }
	dropped := func(src, dst string) bool { return !l.dial(t, src, dst).echoWithin(t, 100*time.Millisecond) }
	f := flow.Flow{Src: l.addrs["a4"], Dst: l.addrs["b4"], Proto: flow.UDP}

	if !dropped("a4", "b4") {
		t.Fatal("fail closed, nobody reading: a new connection passed the queue")
	}
	// A span next to the port, not over it: still queued.
	if _, err := r.AddAllowed(1, []Allowed{allowed(f, echoPort+1, echoPort+100)}); err != nil {
		t.Fatal(err)
	}
	c0 := counters()
	if !dropped("a4", "b4") {
		t.Error("a connection outside the cached span passed")
	}
	if _, err := r.AddAllowed(1, []Allowed{allowed(f, echoPort-10, echoPort)}); err != nil {
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
		t.Errorf("%d IPv4 packets queued, want 1 (the one outside the span)", d)
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
