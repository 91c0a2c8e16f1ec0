package policy

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// The address index finds what the map it stands for holds, through inserts, updates and
// removals in any order (removal shifts probe chains back), growth, both families, and
// addresses it leaves to the map.
func TestAddrIndexEqualsMap(t *testing.T) {
	for _, n := range []int{15, 300} { // few: probe chains wrap around the end of a small table
		addrIndexEqualsMap(t, n)
	}
}

func addrIndexEqualsMap(t *testing.T, size int) {
	r := rand.New(rand.NewPCG(1, uint64(size)))
	var pool []netip.Addr
	for i := range size {
		pool = append(pool, netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)}),
			netip.AddrFrom16([16]byte{0xfd, 15: byte(i), 14: byte(i >> 8)}))
	}
	pool = append(pool, netip.MustParseAddr("::ffff:10.244.0.1"), netip.MustParseAddr("fe80::1%eth0"))
	entries := make([]podEntry, 8)
	want := map[netip.Addr]*podEntry{}
	var x addrIndex
	for step := range 20000 {
		a := pool[r.IntN(len(pool))]
		var e *podEntry
		if r.IntN(3) > 0 {
			e = &entries[r.IntN(len(entries))]
		}
		if step%5000 == 4999 { // a snapshot's copy
			x = x.clone()
		}
		x.set(a, e)
		if e == nil {
			delete(want, a)
		} else {
			want[a] = e
		}
		s := &Snapshot{byIP: want, addrs: x}
		for _, b := range pool {
			if got := s.entryOf(b); got != want[b] {
				t.Fatalf("step %d: entry of %v: %p, want %p", step, b, got, want[b])
			}
		}
	}
	n := 0
	for a := range want {
		if indexed(a) {
			n++
		}
	}
	if x.n != n {
		t.Errorf("index counts %d addresses, the map %d", x.n, n)
	}
}

// Removing the first of two addresses whose probe chain wraps around the end of the table
// leaves the second reachable.
func TestAddrIndexRemoveWraps(t *testing.T) {
	var x addrIndex
	x.grow()
	last := len(x.slots) - 1
	var atEnd []netip.Addr // addresses whose home is the last slot
	for i := 0; len(atEnd) < 2; i++ {
		a := netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)})
		if x.home(addrKey(a)) == last {
			atEnd = append(atEnd, a)
		}
	}
	e := &podEntry{}
	x.set(atEnd[0], e)
	x.set(atEnd[1], e) // in slot 0
	x.set(atEnd[0], nil)
	if got := x.get(addrKey(atEnd[1])); got != e {
		t.Errorf("%v, whose chain wrapped, is lost once %v is removed", atEnd[1], atEnd[0])
	}
}
