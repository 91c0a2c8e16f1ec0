package flowcache

import (
	"net/netip"
	"strconv"
	"testing"
	"unsafe"

	"github.com/podwall/podwall/policy/flow"
)

// mk is KeyOf of the flow with these fields.
func mk(src, dst netip.Addr, proto flow.Proto, port uint16) Key {
	return KeyOf(flow.Flow{Src: src, Dst: dst, Proto: proto, Port: port})
}

func TestKeyOf(t *testing.T) {
	for _, tc := range []struct {
		src, dst string
		proto    flow.Proto
		port     uint16
		str      string
	}{
		{"10.244.1.2", "10.244.2.3", 6, 80, "TCP 10.244.1.2 → 10.244.2.3:80"},
		{"fd00:10:244:1::2", "fd00:10:244:2::3", 17, 53, "UDP fd00:10:244:1::2 → [fd00:10:244:2::3]:53"},
		{"::ffff:10.244.1.2", "::ffff:10.244.2.3", 132, 65535, "SCTP ::ffff:10.244.1.2 → [::ffff:10.244.2.3]:65535"},
		{"192.0.2.1", "10.244.2.3", 1, 0, "ICMP 192.0.2.1 → 10.244.2.3"},
		{"192.0.2.1", "10.244.2.3", 47, 0, "proto-47 192.0.2.1 → 10.244.2.3"},
	} {
		f := flow.Flow{Src: netip.MustParseAddr(tc.src), Dst: netip.MustParseAddr(tc.dst), Proto: tc.proto, Port: tc.port}
		k := KeyOf(f)
		if got := k.Flow(); got != f {
			t.Errorf("KeyOf(%v).Flow() = %v", f, got)
		}
		if k.String() != tc.str {
			t.Errorf("String = %q, want %q", k.String(), tc.str)
		}
		if k != KeyOf(f) {
			t.Errorf("equal flows give different keys")
		}
	}
}

// Every field takes part in equality, and an IPv4 flow differs from the
// IPv6 flow between the IPv4-mapped addresses.
func TestKeyDistinct(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	base := mk(a, b, 6, 80)
	for name, k := range map[string]Key{
		"src":         mk(netip.MustParseAddr("10.0.0.3"), b, 6, 80),
		"dst":         mk(a, netip.MustParseAddr("10.0.0.3"), 6, 80),
		"direction":   mk(b, a, 6, 80),
		"proto":       mk(a, b, 17, 80),
		"port":        mk(a, b, 6, 81),
		"port order":  mk(a, b, 6, 80<<8),
		"4-in-6 flow": mk(netip.AddrFrom16(a.As16()), netip.AddrFrom16(b.As16()), 6, 80),
	} {
		if k == base {
			t.Errorf("%s: key equals the base key", name)
		}
	}
	if z := netip.MustParseAddr("fe80::1%eth0"); mk(z, b, 6, 80) != mk(z.WithZone(""), b, 6, 80) {
		t.Errorf("zone changes the key")
	}
	if s := unsafe.Sizeof(Key{}); s != 36 {
		t.Errorf("Key is %d bytes, want 36", s)
	}
}

// BenchmarkMapKey measures the reason Key is packed: map lookups with the
// packed key, a struct of netip.AddrPorts, and a string built per packet,
// in a map that fits the CPU caches and in one that does not.
func BenchmarkMapKey(b *testing.B) {
	type addrPorts struct {
		src, dst netip.AddrPort
		proto    uint8
	}
	for _, n := range []int{1000, 100_000} {
		src := make([]netip.Addr, n)
		dst := make([]netip.Addr, n)
		for i := range n {
			src[i] = netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)})
			dst[i] = netip.AddrFrom4([4]byte{10, 245, byte(i >> 8), byte(i)})
		}
		b.Run("packed/"+strconv.Itoa(n), func(b *testing.B) {
			m := make(map[Key]bool, n)
			for i := range n {
				m[mk(src[i], dst[i], 6, 80)] = true
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				j := i % n
				_ = m[mk(src[j], dst[j], 6, 80)]
				i++
			}
		})
		b.Run("addrports/"+strconv.Itoa(n), func(b *testing.B) {
			m := make(map[addrPorts]bool, n)
			for i := range n {
				m[addrPorts{netip.AddrPortFrom(src[i], 0), netip.AddrPortFrom(dst[i], 80), 6}] = true
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				j := i % n
				_ = m[addrPorts{netip.AddrPortFrom(src[j], 0), netip.AddrPortFrom(dst[j], 80), 6}]
				i++
			}
		})
		b.Run("string/"+strconv.Itoa(n), func(b *testing.B) {
			str := func(j int) string {
				return src[j].String() + ">" + dst[j].String() + ":80/" + strconv.Itoa(6)
			}
			m := make(map[string]bool, n)
			for i := range n {
				m[str(i)] = true
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_ = m[str(i%n)]
				i++
			}
		})
	}
}
