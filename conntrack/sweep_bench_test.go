package conntrack

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/podwall/podwall/policy/flow"
)

// The revocation sweep against the kernel, in a throwaway network namespace filled with n
// established TCP entries (both families, all from egress-isolated pods): entries/s for a
// whole sweep (dump, judge, mark the 10 % the policy denies) and for the dump alone.
// bench/README.md records the figures. Root only; skipped with -short.
//
//	go test -run '^$' -bench 'Sweep|Dump' -benchmem -count 3 ./conntrack/
func BenchmarkSweep(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			inNetNS(b, func() {
				tab, fill := benchTable(b, n)
				defer tab.Close()
				r := NewRevoker(Config{Kernel: tab, LocalAddrs: func() ([]netip.Addr, error) { return nil, nil }})
				p := benchPolicy{}
				b.ReportAllocs()
				for b.Loop() {
					res := r.Sweep(p)
					if res.Err != nil || res.Scanned != n || res.Revoked != n/10 {
						panic(fmt.Sprintf("sweep: scanned %d, revoked %d, %v; want %d, %d, nil", res.Scanned, res.Revoked, res.Err, n, n/10))
					}
					b.StopTimer()
					unmark(tab) // put the revoked entries back, unmarked
					fill(true)
					b.StartTimer()
				}
				b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
			})
		})
	}
}

func BenchmarkDump(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			inNetNS(b, func() {
				tab, _ := benchTable(b, n)
				defer tab.Close()
				b.ReportAllocs()
				for b.Loop() {
					got := 0
					if err := tab.Dump(func(*Entry) { got++ }); err != nil || got != n {
						panic(fmt.Sprintf("dump: %d entries, %v; want %d", got, err, n))
					}
				}
				b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
			})
		})
	}
}

// benchPolicy isolates benchPods for egress and denies destination port 81.
type benchPolicy struct{}

func (benchPolicy) Generation() uint64                       { return 1 }
func (benchPolicy) Isolated() (ingress, egress []netip.Addr) { return nil, benchPods }
func (benchPolicy) Allow(f flow.Flow) bool                   { return f.Port != 81 }

var benchPods = func() []netip.Addr {
	var pods []netip.Addr
	for i := range 16 {
		pods = append(pods, netip.AddrFrom4([4]byte{10, 244, 1, byte(1 + i)}),
			netip.MustParseAddr("fd00:10:244:1::"+strconv.Itoa(1+i)))
	}
	return pods
}()

// benchEntry returns the i-th entry of the bench table: from one of benchPods, alternately
// IPv4 and IPv6, to a distinct destination on port 80 or, for every tenth, 81.
func benchEntry(i int) Tuple {
	src := benchPods[i%len(benchPods)]
	port := uint16(80)
	if i%10 == 0 {
		port = 81
	}
	var dst netip.Addr
	if src.Is4() {
		dst = netip.AddrFrom4([4]byte{10, byte(100 + i>>16), byte(i >> 8), byte(i)})
	} else {
		var a [16]byte
		copy(a[:], netip.MustParseAddr("fd00:10:245::").AsSlice())
		binary.BigEndian.PutUint32(a[12:], uint32(i))
		dst = netip.AddrFrom16(a)
	}
	return Tuple{Src: src, Dst: dst, Proto: flow.TCP, SrcPort: uint16(20000 + i%40000), DstPort: port}
}

// unmark deletes the marked entries of the table.
func unmark(tab *Table) {
	var marked []*Entry
	if err := tab.Dump(func(e *Entry) {
		if e.Mark != 0 {
			marked = append(marked, e.Clone())
		}
	}); err != nil {
		panic(err)
	}
	if _, _, err := tab.Delete(marked); err != nil {
		panic(err)
	}
}

// benchTable opens the namespace's table and fills it with n entries. fill(true) creates the
// denied tenth again (after unmark deleted it).
func benchTable(tb testing.TB, n int) (*Table, func(denied bool)) {
	if max, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_max"); err == nil {
		// Read-only in a network namespace other than the initial one: the limit is global.
		if m, _ := strconv.Atoi(strings.TrimSpace(string(max))); m < n+1000 {
			tb.Skipf("nf_conntrack_max is %d, below %d entries", m, n)
		}
	}
	tab, err := Open()
	if err != nil {
		panic(err)
	}
	fill := func(denied bool) {
		var es []*Entry
		for i := range n {
			if !denied || i%10 == 0 {
				es = append(es, entry(benchEntry(i)))
			}
		}
		if err := create(tab, es...); err != nil {
			panic(err)
		}
	}
	fill(false)
	return tab, fill
}
