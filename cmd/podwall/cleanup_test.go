package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestParseMark(t *testing.T) {
	for _, tc := range []struct {
		in         string
		mark, mask uint32
		ok         bool
	}{
		{"0x100", 0x100, 0x100, true},
		{"0x100/0xff00", 0x100, 0xff00, true},
		{"256/256", 256, 256, true},
		{"0", 0, 0, false},       // every unmarked connection
		{"0x100/0", 0, 0, false}, // likewise
		{"0x300/0x100", 0, 0, false},
		{"mark", 0, 0, false},
		{"0x1/0x1/0x1", 0, 0, false},
		{"0x100000000", 0, 0, false},
	} {
		mark, mask, err := parseMark(tc.in)
		if (err == nil) != tc.ok || mark != tc.mark || mask != tc.mask {
			t.Errorf("%q: %#x/%#x, %v", tc.in, mark, mask, err)
		}
	}
}

// `podwall cleanup` in a node's network namespace (a throwaway one here) removes the table
// the agent left, sets and all, and a second run finds nothing and succeeds. The command
// runs as this test binary re-executed inside the namespace (TestCleanupCommandHelper).
func TestCleanupCommand(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root and a kernel (not -short)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft binary to program the table with")
	}
	ns := fmt.Sprintf("pwtest-cleanup-%d", os.Getpid())
	var table string // what nft -f - reads
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	in := func(env string, args ...string) (string, error) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
		cmd.Env = append(os.Environ(), env)
		cmd.Stdin = strings.NewReader(table)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	table = "table inet podwall {\n set ingress4 { type ipv4_addr; elements = { 10.244.1.2 } }\n" +
		" chain forward { type filter hook forward priority filter; policy accept; ip daddr @ingress4 drop; }\n}\n" +
		"table inet other {\n chain c {\n }\n}\n"
	if out, err := in("", "nft", "-f", "-"); err != nil {
		t.Fatalf("program: %v %s", err, out)
	}
	cleanup := func() string {
		t.Helper()
		out, err := in("PODWALL_CLEANUP_HELPER=1", os.Args[0], "-test.run=^TestCleanupCommandHelper$")
		if err != nil {
			t.Fatalf("podwall cleanup: %v\n%s", err, out)
		}
		return out
	}
	if out := cleanup(); !strings.Contains(out, "removed table inet podwall") {
		t.Errorf("first cleanup said:\n%s", out)
	}
	if out, _ := in("", "nft", "list", "tables"); strings.Contains(out, "podwall") || !strings.Contains(out, "other") {
		t.Errorf("tables after cleanup:\n%s", out)
	}
	if out := cleanup(); !strings.Contains(out, "nothing to remove") {
		t.Errorf("second cleanup said:\n%s", out)
	}
}

// TestCleanupCommandHelper is `podwall cleanup --conntrack`, run by TestCleanupCommand.
func TestCleanupCommandHelper(t *testing.T) {
	if os.Getenv("PODWALL_CLEANUP_HELPER") != "1" {
		t.Skip("run by TestCleanupCommand")
	}
	root := newRoot()
	root.SetArgs([]string{"cleanup", "--conntrack"})
	root.SetOut(os.Stdout)
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
}
