package explain

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/podwall/podwall/policy"
)

// A pod endpoint is its primary address, unless the other endpoint is an address of the
// other family or a pod without an address of that family (SPEC §4).
func TestParseFlowFamilies(t *testing.T) {
	pod := func(name string, ips ...string) policy.Pod {
		p := policy.Pod{Namespace: "ns", Name: name, Phase: "Running"}
		for _, ip := range ips {
			p.IPs = append(p.IPs, netip.MustParseAddr(ip))
		}
		return p
	}
	snap, err := policy.Compile(policy.State{Pods: []policy.Pod{
		pod("dual", "10.244.0.1", "fd00::1"),
		pod("dual6", "fd00::2", "10.244.0.2"), // IPv6 primary
		pod("v4", "10.244.0.3"),
		pod("v6", "fd00::4"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		from, to string
		src, dst string // want
		err      string
	}{
		{from: "ns/dual", to: "ns/v4", src: "10.244.0.1", dst: "10.244.0.3"},
		{from: "ns/dual", to: "fd00::9", src: "fd00::1", dst: "fd00::9"},
		{from: "2001:db8::1", to: "ns/dual", src: "2001:db8::1", dst: "fd00::1"},
		{from: "192.0.2.1", to: "ns/dual6", src: "192.0.2.1", dst: "10.244.0.2"},
		{from: "ns/dual", to: "ns/dual6", src: "10.244.0.1", dst: "10.244.0.2"}, // the source's primary family
		{from: "ns/dual6", to: "ns/dual", src: "fd00::2", dst: "fd00::1"},
		{from: "ns/dual", to: "ns/v6", src: "fd00::1", dst: "fd00::4"}, // v6 has no IPv4
		{from: "ns/v6", to: "ns/dual", src: "fd00::4", dst: "fd00::1"},
		{from: "ns/v4", to: "ns/v6", err: "from ns/v4 (IPv4 10.244.0.3) and to ns/v6 (IPv6 fd00::4) have no IP family in common"},
		{from: "ns/v4", to: "2001:db8::1", err: "have no IP family in common"},
		{from: "192.0.2.1", to: "2001:db8::1", err: "different IP families"},
	} {
		f, err := ParseFlow(snap, Query{From: tc.from, To: tc.to, Port: "80"})
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s → %s: error %v, want %q", tc.from, tc.to, err, tc.err)
			}
		case err != nil:
			t.Errorf("%s → %s: %v", tc.from, tc.to, err)
		case f.Src.String() != tc.src || f.Dst.String() != tc.dst:
			t.Errorf("%s → %s: %s → %s, want %s → %s", tc.from, tc.to, f.Src, f.Dst, tc.src, tc.dst)
		}
	}
}
