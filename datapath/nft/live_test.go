//go:build linux

package nft

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// liveModes returns the queue renderings the lab kernel accepts, probing
// in a throwaway namespace.
func liveModes(t *testing.T) []QueueMode {
	t.Helper()
	_, h := labNS(t)
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	caps, err := Probe(c)
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	var modes []QueueMode
	if caps.NativeQueue {
		modes = append(modes, ModeNative)
	}
	if caps.CompatQueue {
		modes = append(modes, ModeCompat)
	}
	if len(modes) == 0 {
		t.Skip("kernel has no way to queue from nftables")
	}
	return modes
}

// The probe leaves nothing behind, and Auto picks native when the kernel
// has it, compat otherwise; a mode the kernel lacks fails in New.
func TestLiveProbe(t *testing.T) {
	requireRoot(t)
	requireNft(t)
	ns, h := labNS(t)
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	caps, err := Probe(c)
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	t.Logf("kernel capabilities: %+v", caps)
	if out, err := nftIn(ns, "list", "ruleset"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("probe left a ruleset behind (err %v):\n%s", err, out)
	}

	r, err := New(Config{QueueCount: 1, NetNS: int(h)})
	if err != nil {
		t.Fatalf("New(auto): %v", err)
	}
	defer r.Close(true)
	want := ModeCompat
	if caps.NativeQueue {
		want = ModeNative
	}
	if r.Mode() != want {
		t.Errorf("auto mode = %v, want %v", r.Mode(), want)
	}
	for _, m := range []struct {
		mode QueueMode
		ok   bool
	}{{ModeNative, caps.NativeQueue}, {ModeCompat, caps.CompatQueue}} {
		r, err := New(Config{QueueCount: 1, Mode: m.mode, NetNS: int(h)})
		if m.ok != (err == nil) {
			t.Errorf("New(%v) with %+v: err %v", m.mode, caps, err)
		}
		if err == nil {
			r.Close(true)
		}
	}
}

// Program installs exactly the rendered ruleset: the kernel's own view of
// the rules equals what build rendered, `nft list table` equals the live
// golden file, and a second Program leaves the same table (no duplicates).
func TestLiveProgram(t *testing.T) {
	requireRoot(t)
	requireNft(t)
	for _, mode := range liveModes(t) {
		for _, failOpen := range []bool{false, true} {
			cfg := goldenConfig(failOpen)
			cfg.Mode = mode
			name := mode.String()
			if failOpen {
				name += "-failopen"
			}
			t.Run(name, func(t *testing.T) {
				r, ns, h := newLab(t, cfg)
				if err := r.Program(); err != nil {
					t.Fatalf("Program: %v", err)
				}
				if got, want := kernelExprs(t, h), builtExprs(cfg, mode); !reflect.DeepEqual(got, want) {
					t.Errorf("kernel rules differ from the rendering\n got: %q\nwant: %q", got, want)
				}
				first := listTable(t, ns)
				if !failOpen {
					golden := "live-" + mode.String() + ".nft"
					if _, err := os.Stat(filepath.Join("testdata", golden)); err == nil || *update {
						compareGolden(t, golden, []byte(first))
					} else {
						t.Logf("no testdata/%s yet: run go test -update on a kernel with %v queueing", golden, mode)
					}
				}

				if err := r.Program(); err != nil {
					t.Fatalf("second Program: %v", err)
				}
				if again := listTable(t, ns); again != first {
					t.Errorf("second Program changed the table\n--- first\n%s\n--- second\n%s", first, again)
				}
				if n := len(kernelExprs(t, h)); n != len(build(cfg, mode).rules) {
					t.Errorf("after second Program: %d rules, want %d", n, len(build(cfg, mode).rules))
				}
			})
		}
	}
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// Sync makes the sets equal to its arguments, family by family, and changes
// nothing when given an invalid address.
func TestLiveSync(t *testing.T) {
	requireRoot(t)
	requireNft(t)
	r, ns, _ := newLab(t, Config{QueueCount: 1, PodInterfacePrefixes: []string{"pw"}})
	if err := r.Program(); err != nil {
		t.Fatal(err)
	}
	check := func(step string, want map[string][]string) {
		t.Helper()
		for _, d := range setDefs {
			w := want[d.name]
			if w == nil {
				w = []string{}
			}
			if got := setElems(t, ns, d.name); !slices.Equal(got, w) {
				t.Errorf("%s: set %s = %q, want %q", step, d.name, got, w)
			}
		}
	}

	steps := []struct {
		name            string
		ingress, egress []netip.Addr
		want            map[string][]string
	}{
		{"fill, families mixed, mapped v4 and zone normalised",
			addrs("10.244.0.2", "fd00:10:244::2", "::ffff:10.244.0.9", "10.244.0.2"),
			addrs("10.244.0.3", "fe80::1%pw0"),
			map[string][]string{
				SetIngress4: {"10.244.0.2", "10.244.0.9"},
				SetIngress6: {"fd00:10:244::2"},
				SetEgress4:  {"10.244.0.3"},
				SetEgress6:  {"fe80::1"},
			}},
		{"same again",
			addrs("10.244.0.9", "10.244.0.2", "fd00:10:244::2"),
			addrs("fe80::1", "10.244.0.3"),
			map[string][]string{
				SetIngress4: {"10.244.0.2", "10.244.0.9"},
				SetIngress6: {"fd00:10:244::2"},
				SetEgress4:  {"10.244.0.3"},
				SetEgress6:  {"fe80::1"},
			}},
		{"add and remove",
			addrs("10.244.0.2", "10.244.0.4", "fd00:10:244::4"),
			nil,
			map[string][]string{
				SetIngress4: {"10.244.0.2", "10.244.0.4"},
				SetIngress6: {"fd00:10:244::4"},
			}},
	}
	for i, s := range steps {
		if err := r.Sync(uint64(i+1), s.ingress, s.egress); err != nil {
			t.Fatalf("%s: Sync: %v", s.name, err)
		}
		check(s.name, s.want)
	}

	last := steps[len(steps)-1].want
	if err := r.Sync(99, []netip.Addr{{}}, addrs("10.244.0.7")); err == nil {
		t.Error("Sync with an invalid address: no error")
	}
	check("after rejected Sync", last)

	// Many elements: more than one netlink message per set, one batch.
	var many []netip.Addr
	for i := range 3 * maxElemsPerMsg / 2 {
		many = append(many, netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)}))
	}
	if err := r.Sync(100, many, nil); err != nil {
		t.Fatalf("Sync %d addresses: %v", len(many), err)
	}
	if got := setElems(t, ns, SetIngress4); len(got) != len(many) {
		t.Errorf("after big Sync: %d elements, want %d", len(got), len(many))
	}
	if err := r.Sync(1, nil, nil); err != nil {
		t.Fatal(err)
	}
	check("emptied", nil)
}

// Program takes over what an earlier run left: rules are replaced (a
// different queue, failure policy and prefixes before), matching sets keep
// their elements, stray chains and sets and a mistyped set are removed, and
// a base chain at another priority is re-created.
func TestLiveTakeover(t *testing.T) {
	requireRoot(t)
	requireNft(t)
	modes := liveModes(t)
	mode := modes[len(modes)-1] // compat when available: its golden exists here
	cfg := goldenConfig(false)
	cfg.Mode = mode
	golden, err := os.ReadFile(filepath.Join("testdata", "live-"+mode.String()+".nft"))
	if err != nil {
		t.Skipf("no live golden for %v: %v", mode, err)
	}

	t.Run("earlier run of another configuration", func(t *testing.T) {
		ns, h := labNS(t)
		old, err := New(Config{QueueNum: 7, QueueCount: 1, FailOpen: true, PodInterfacePrefixes: []string{"cali"}, Mode: mode, NetNS: int(h)})
		if err != nil {
			t.Fatal(err)
		}
		if err := old.Program(); err != nil {
			t.Fatal(err)
		}
		if err := old.Sync(1, addrs("10.244.0.5", "fd00:10:244::5"), addrs("10.244.0.6")); err != nil {
			t.Fatal(err)
		}
		if err := old.Close(true); err != nil { // the crash: the table stays
			t.Fatal(err)
		}

		// Leftovers of an imagined other version: a stray regular chain
		// holding a rule that references a stray set, jumped to from the
		// base chain, and ingress6 with the wrong key type.
		c, err := nftables.New(nftables.WithNetNSFd(int(h)))
		if err != nil {
			t.Fatal(err)
		}
		tbl := newTable()
		stray := &nftables.Set{Table: tbl, Name: "stray", KeyType: nftables.TypeIPAddr}
		if err := c.AddSet(stray, nil); err != nil {
			t.Fatal(err)
		}
		strayChain := c.AddChain(&nftables.Chain{Name: "stray", Table: tbl})
		c.AddRule(&nftables.Rule{Table: tbl, Chain: strayChain, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: "stray"},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
		c.AddRule(&nftables.Rule{Table: tbl, Chain: newChain(tbl), Exprs: []expr.Any{
			&expr.Verdict{Kind: expr.VerdictJump, Chain: "stray"},
		}})
		if err := c.Flush(); err != nil {
			t.Fatalf("add leftovers: %v", err)
		}
		c.FlushChain(newChain(tbl))
		c.DelSet(&nftables.Set{Table: tbl, Name: SetIngress6})
		if err := c.AddSet(&nftables.Set{Table: tbl, Name: SetIngress6, KeyType: nftables.TypeIPAddr}, nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatalf("mistype ingress6: %v", err)
		}

		r, err := New(withNetNS(cfg, int(h)))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(true)
		if err := r.Program(); err != nil {
			t.Fatalf("Program over leftovers: %v", err)
		}
		if got := setElems(t, ns, SetIngress4); !slices.Equal(got, []string{"10.244.0.5"}) {
			t.Errorf("ingress4 after takeover = %q, want the earlier run's element kept", got)
		}
		if got := setElems(t, ns, SetEgress4); !slices.Equal(got, []string{"10.244.0.6"}) {
			t.Errorf("egress4 after takeover = %q, want the earlier run's element kept", got)
		}
		if got := setElems(t, ns, SetIngress6); len(got) != 0 {
			t.Errorf("re-created ingress6 = %q, want empty", got)
		}
		if err := r.Sync(1, nil, nil); err != nil {
			t.Fatal(err)
		}
		// A re-created set is listed after the kept ones: compare with the
		// golden regardless of the order of the sets.
		if got := listTable(t, ns); sortedBlocks(got) != sortedBlocks(string(golden)) {
			t.Errorf("table after takeover differs from the golden\n--- got\n%s\n--- want\n%s", got, golden)
		}
	})

	t.Run("base chain at another priority", func(t *testing.T) {
		ns, h := labNS(t)
		c, err := nftables.New(nftables.WithNetNSFd(int(h)))
		if err != nil {
			t.Fatal(err)
		}
		tbl := c.AddTable(newTable())
		old := newChain(tbl)
		old.Priority = nftables.ChainPriorityFilter
		c.AddChain(old)
		c.AddRule(&nftables.Rule{Table: tbl, Chain: old, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		r, err := New(withNetNS(cfg, int(h)))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(true)
		if err := r.Program(); err != nil {
			t.Fatalf("Program over a chain at priority 0: %v", err)
		}
		if got := listTable(t, ns); got != string(golden) {
			t.Errorf("table differs from the golden\n--- got\n%s\n--- want\n%s", got, golden)
		}
	})
}

// Close(true) leaves the table enforcing; Close(false) removes it, also
// when it is already gone; a closed Ruleset refuses work.
func TestLiveClose(t *testing.T) {
	requireRoot(t)
	requireNft(t)
	r, ns, h := newLab(t, Config{QueueCount: 1})
	if err := r.Program(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(true); err != nil {
		t.Fatalf("Close(true): %v", err)
	}
	if _, err := nftIn(ns, "list", "table", "inet", TableName); err != nil {
		t.Errorf("table gone after Close(true): %v", err)
	}
	if err := r.Close(false); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := nftIn(ns, "list", "table", "inet", TableName); err != nil {
		t.Errorf("second Close (a no-op) removed the table: %v", err)
	}
	if err := r.Program(); !errors.Is(err, ErrClosed) {
		t.Errorf("Program after Close: %v, want ErrClosed", err)
	}
	if err := r.Sync(1, nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Close: %v, want ErrClosed", err)
	}

	r2, err := New(Config{QueueCount: 1, NetNS: int(h)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Close(false); err != nil {
		t.Fatalf("Close(false): %v", err)
	}
	if out, err := nftIn(ns, "list", "ruleset"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("ruleset after Close(false) (err %v):\n%s", err, out)
	}
	r3, err := New(Config{QueueCount: 1, NetNS: int(h)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r3.Close(false); err != nil {
		t.Errorf("Close(false) without a table: %v", err)
	}
}

// sortedBlocks returns an nft listing with its blank-line separated blocks
// (the sets, the chain) in sorted order.
func sortedBlocks(listing string) string {
	blocks := strings.Split(listing, "\n\n")
	slices.Sort(blocks)
	return strings.Join(blocks, "\n\n")
}

// withNetNS returns c programming the namespace of fd.
func withNetNS(c Config, fd int) Config {
	c.NetNS = fd
	return c
}

// mustCounters reads r's rule counters or fails the test.
func mustCounters(t *testing.T, r *Ruleset) Counters {
	t.Helper()
	c, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}
