package policy

import (
	"net/netip"
	"testing"
)

func TestAddrSet(t *testing.T) {
	type block struct {
		cidr   string
		except []string
	}
	tests := []struct {
		name   string
		blocks []block
		in     []string
		out    []string
	}{
		{"single host", []block{{"192.0.2.10/32", nil}}, []string{"192.0.2.10"}, []string{"192.0.2.9", "192.0.2.11", "::1"}},
		{"except carves a hole", []block{{"10.0.0.0/8", []string{"10.1.0.0/16"}}},
			[]string{"10.0.0.0", "10.0.255.255", "10.2.0.0", "10.255.255.255"}, []string{"10.1.0.0", "10.1.255.255", "11.0.0.0", "9.255.255.255"}},
		{"everything but", []block{{"0.0.0.0/0", []string{"10.0.0.0/8", "172.16.0.0/12"}}},
			[]string{"0.0.0.0", "255.255.255.255", "9.255.255.255", "11.0.0.0", "172.32.0.0"}, []string{"10.3.4.5", "172.16.0.1", "172.31.255.255", "fd00::1"}},
		{"ipv6 with except", []block{{"fd00:10:244::/56", []string{"fd00:10:244::/64"}}},
			[]string{"fd00:10:244:1::1", "fd00:10:244:ff:ffff:ffff:ffff:ffff"}, []string{"fd00:10:244::1", "fd00:10:245::", "10.0.0.1"}},
		{"ipv6 all", []block{{"::/0", []string{"2001:db8::/32"}}},
			[]string{"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db9::"}, []string{"2001:db8::1", "1.2.3.4"}},
		{"overlapping and adjacent merge", []block{{"10.0.0.0/25", nil}, {"10.0.0.128/25", nil}, {"10.0.0.64/26", nil}},
			[]string{"10.0.0.0", "10.0.0.127", "10.0.0.128", "10.0.0.255"}, []string{"10.0.1.0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s addrSet
			for _, b := range tt.blocks {
				var ex []netip.Prefix
				for _, e := range b.except {
					ex = append(ex, netip.MustParsePrefix(e))
				}
				s.addBlock(netip.MustParsePrefix(b.cidr), ex)
			}
			s.normalize()
			for _, a := range tt.in {
				if !s.contains(netip.MustParseAddr(a)) {
					t.Errorf("%s not in set", a)
				}
			}
			for _, a := range tt.out {
				if s.contains(netip.MustParseAddr(a)) {
					t.Errorf("%s in set", a)
				}
			}
		})
	}
}

// Many ranges switch contains from a scan to a binary search; both must agree.
func TestAddrSetManyRanges(t *testing.T) {
	var s addrSet
	for i := 0; i < 200; i += 2 {
		s.addBlock(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 0}), 24), nil)
		s.addBlock(netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 14: byte(i)}), 120), nil)
	}
	s.normalize()
	if len(s.v4) <= linearMax || len(s.v6) <= linearMax {
		t.Fatalf("want more than %d ranges, have %d and %d", linearMax, len(s.v4), len(s.v6))
	}
	for i := range 256 {
		want := i < 200 && i%2 == 0
		if got := s.contains(netip.AddrFrom4([4]byte{10, 0, byte(i), 7})); got != want {
			t.Errorf("10.0.%d.7: got %v want %v", i, got, want)
		}
		if got := s.contains(netip.AddrFrom16([16]byte{0xfd, 14: byte(i), 15: 7})); got != want {
			t.Errorf("fd00::%x07: got %v want %v", i, got, want)
		}
	}
}
