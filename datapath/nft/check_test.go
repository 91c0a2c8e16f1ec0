package nft

import (
	"fmt"
	"net/netip"
	"regexp"
	"testing"
)

var handleRe = regexp.MustCompile(`# handle (\d+)`)

// Damage sees every way an operator's command takes isolation away — the ruleset
// flushed, the table deleted, the chain emptied, a rule deleted, the table made dormant —
// and nothing on a table as Program left it; ProgramSync restores it, elements included.
func TestLiveDamage(t *testing.T) {
	requireRoot(t)
	requireNft(t)
	cfg := goldenConfig(false)
	cfg.PodInterfacePrefixes = []string{"pw"}
	r, ns, _ := newLab(t, cfg)
	in, eg := addrs("10.244.1.3", "fd00::3"), addrs("10.244.1.9")
	if err := r.ProgramSync(1, in, eg); err != nil {
		t.Fatal(err)
	}
	intact := listTable(t, ns)
	for _, tc := range []struct {
		name string
		nft  []string
	}{
		{"flush ruleset", []string{"flush", "ruleset"}},
		{"delete table", []string{"delete", "table", "inet", TableName}},
		{"flush chain", []string{"flush", "chain", "inet", TableName, ChainName}},
		{"delete a rule", []string{"-a", "list", "chain", "inet", TableName, ChainName}}, // handle filled in below
		{"dormant", []string{"add", "table", "inet", TableName, "{", "flags", "dormant", ";", "}"}},
		{"flush input chain", []string{"flush", "chain", "inet", TableName, InputChainName}},
		{"delete output chain", []string{"delete", "chain", "inet", TableName, OutputChainName}},
		{"flush set", []string{"flush", "set", "inet", TableName, SetIngress6}},
		{"delete element", []string{"delete", "element", "inet", TableName, SetEgress4, "{", "10.244.1.9", "}"}},
		{"add element", []string{"add", "element", "inet", TableName, SetEgress4, "{", "10.244.1.10", "}"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d, err := r.Damage(true); err != nil || d != "" {
				t.Fatalf("before: damage %q, %v", d, err)
			}
			args := tc.nft
			if tc.name == "delete a rule" {
				args = []string{"delete", "rule", "inet", TableName, ChainName, "handle", lastHandle(t, ns)}
			}
			if _, err := nftIn(ns, args...); err != nil {
				t.Fatal(err)
			}
			d, err := r.Damage(true)
			if err != nil || d == "" {
				t.Fatalf("after nft %v: damage %q, %v; want a description", args, d, err)
			}
			t.Logf("nft %v: %s", args, d)
			if err := r.ProgramSync(1, in, eg); err != nil {
				t.Fatal(err)
			}
			if got := listTable(t, ns); got != intact {
				t.Errorf("restored table differs\n--- got\n%s\n--- want\n%s", got, intact)
			}
		})
	}
}

// lastHandle returns the handle of the chain's last rule, from `nft -a list chain`.
func lastHandle(t *testing.T, ns string) string {
	t.Helper()
	out, err := nftIn(ns, "-a", "list", "chain", "inet", TableName, ChainName)
	if err != nil {
		t.Fatal(err)
	}
	m := handleRe.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		t.Fatalf("no rule handles in\n%s", out)
	}
	return m[len(m)-1][1]
}

// BenchmarkDamage is what the agent's table check costs each time (every 200 ms, with the
// elements of the sets every other time), with 110 local pods isolated both ways.
func BenchmarkDamage(b *testing.B) {
	requireRoot(b)
	r, _, _ := newLab(b, goldenConfig(false))
	var pods []netip.Addr
	for i := range 110 {
		pods = append(pods, netip.AddrFrom4([4]byte{10, 244, 1, byte(i + 2)}),
			netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, byte(i + 2)}))
	}
	if err := r.ProgramSync(1, pods, pods); err != nil {
		b.Fatal(err)
	}
	for _, elements := range []bool{false, true} {
		b.Run(fmt.Sprintf("elements=%v", elements), func(b *testing.B) { benchDamage(b, r, elements) })
	}
}

func benchDamage(b *testing.B, r *Ruleset, elements bool) {
	b.ReportAllocs()
	for b.Loop() {
		if d, err := r.Damage(elements); err != nil || d != "" {
			b.Fatal(d, err)
		}
	}
}
