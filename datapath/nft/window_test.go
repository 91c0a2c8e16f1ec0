//go:build linux

package nft

import (
	"net/netip"
	"slices"
	"testing"
)

// The window's sets: the local sets by difference, the pod ranges as intervals (a range
// inside another left out), replaced when they change; Sync without a window keeps them,
// and a takeover with a window refills the ranges.
func TestLiveSyncWindow(t *testing.T) {
	requireRoot(t)
	requireNft(t)
	r, ns, h := newLab(t, Config{QueueCount: 1, PodInterfacePrefixes: []string{"pw"}})
	check := func(step string, want map[string][]string) {
		t.Helper()
		for _, name := range []string{SetLocal4, SetLocal6, SetPodRanges4, SetPodRanges6} {
			w := want[name]
			if w == nil {
				w = []string{}
			}
			if got := setElems(t, ns, name); !slices.Equal(got, w) {
				t.Errorf("%s: set %s = %q, want %q", step, name, got, w)
			}
		}
	}
	ranges := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24"), netip.MustParsePrefix("10.244.0.128/25"),
		netip.MustParsePrefix("fd00:10:244::/64"), netip.MustParsePrefix("255.255.255.0/24")}
	w := Window{Local: addrs("10.244.0.2", "fd00:10:244::2", "::ffff:10.244.0.9"), PodRanges: ranges}
	if err := r.ProgramSyncWindow(1, nil, nil, w); err != nil {
		t.Fatal(err)
	}
	first := map[string][]string{
		SetLocal4:     {"10.244.0.2", "10.244.0.9"},
		SetLocal6:     {"fd00:10:244::2"},
		SetPodRanges4: {"map[prefix:map[addr:10.244.0.0 len:24]]", "map[prefix:map[addr:255.255.255.0 len:24]]"},
		SetPodRanges6: {"map[prefix:map[addr:fd00:10:244:: len:64]]"},
	}
	check("program", first)

	if err := r.Sync(2, addrs("10.244.0.2"), nil); err != nil {
		t.Fatal(err)
	}
	check("sync without a window", first)

	w = Window{Local: addrs("10.244.0.3"), PodRanges: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}}
	if err := r.SyncWindow(3, nil, nil, w); err != nil {
		t.Fatal(err)
	}
	second := map[string][]string{
		SetLocal4:     {"10.244.0.3"},
		SetPodRanges4: {"map[prefix:map[addr:10.244.1.0 len:24]]"},
	}
	check("sync with new ranges", second)

	// A new Ruleset takes the table over: same ranges, refilled in its first transaction.
	r2, err := New(withNetNS(Config{QueueCount: 1, PodInterfacePrefixes: []string{"pw"}}, int(h)))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close(true)
	if err := r2.ProgramSyncWindow(4, nil, nil, w); err != nil {
		t.Fatal(err)
	}
	check("takeover", second)
}
