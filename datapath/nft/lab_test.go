//go:build linux

package nft

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
)

// Lab rules (SPEC §6): every live test works in network namespaces it
// creates, named labPrefix<pid>-<n>, and deletes them on the way out, also
// on failure. TestMain sweeps namespaces of earlier runs whose process is
// gone. Nothing here touches the root namespace's ruleset, addresses or
// routes.
const labPrefix = "pwtest-nft-"

var nsSeq atomic.Int32

func TestMain(m *testing.M) {
	flag.Parse()
	if os.Geteuid() == 0 {
		sweepLabNamespaces()
	}
	os.Exit(m.Run())
}

// sweepLabNamespaces deletes lab namespaces left by runs that died before
// their cleanup.
func sweepLabNamespaces() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), labPrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = netns.DeleteNamed(e.Name())
		}
	}
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("live nftables test: needs root")
	}
}

func requireNft(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("live nftables test: no nft binary to list the table with")
	}
}

// labNS creates a named network namespace for this test and deletes it
// when the test ends.
func labNS(t testing.TB) (string, netns.NsHandle) {
	t.Helper()
	requireRoot(t)
	name := fmt.Sprintf("%s%d-%d", labPrefix, os.Getpid(), nsSeq.Add(1))
	type result struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan result)
	go func() {
		// NewNamed moves this thread into the new namespace. The thread
		// stays locked, so the runtime discards it when the goroutine
		// ends instead of reusing it in the wrong namespace.
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		ch <- result{h, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("create netns %s: %v", name, r.err)
	}
	t.Cleanup(func() {
		_ = r.h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return name, r.h
}

// inNS runs fn on a thread inside the namespace h. Sockets fn opens stay in
// that namespace.
func inNS(h netns.NsHandle, fn func() error) error {
	errc := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is discarded
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// run runs a command, failing the test with its output on error.
func run(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// nftIn runs nft in namespace ns and returns its standard output.
func nftIn(ns string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, "nft"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("nft %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

var counterValues = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// listTable returns `nft list table inet podwall` in ns with counter values
// zeroed.
func listTable(t *testing.T, ns string) string {
	t.Helper()
	out, err := nftIn(ns, "list", "table", "inet", TableName)
	if err != nil {
		t.Fatal(err)
	}
	return counterValues.ReplaceAllString(out, "counter packets 0 bytes 0")
}

// setElems returns the elements of one of the table's sets, as nft prints
// them, sorted.
func setElems(t *testing.T, ns, set string) []string {
	t.Helper()
	out, err := nftIn(ns, "-j", "list", "set", "inet", TableName, set)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []any `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("nft -j list set %s: %v\n%s", set, err, out)
	}
	elems := []string{}
	for _, o := range doc.Nftables {
		if o.Set == nil {
			continue
		}
		for _, e := range o.Set.Elem {
			elems = append(elems, fmt.Sprint(e))
		}
	}
	slices.Sort(elems)
	return elems
}

// kernelExprs reads the forward chain back from the kernel of h and formats
// each rule's expressions the way Render does.
func kernelExprs(t *testing.T, h netns.NsHandle) [][]string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	tbl := newTable()
	rules, err := c.GetRules(tbl, newChain(tbl))
	if err != nil {
		t.Fatalf("read rules: %v", err)
	}
	var out [][]string
	for _, r := range rules {
		var lines []string
		for _, e := range r.Exprs {
			lines = append(lines, exprString(e))
		}
		out = append(out, lines)
	}
	return out
}

// builtExprs formats the expressions that build would program.
func builtExprs(cfg Config, mode QueueMode) [][]string {
	var out [][]string
	for _, r := range build(cfg, mode).rules {
		var lines []string
		for _, e := range r.exprs {
			lines = append(lines, exprString(e))
		}
		out = append(out, lines)
	}
	return out
}

// newLab returns a Ruleset for cfg in a fresh lab namespace, closed (keeping
// the table, which dies with the namespace) when the test ends.
func newLab(t testing.TB, cfg Config) (*Ruleset, string, netns.NsHandle) {
	t.Helper()
	ns, h := labNS(t)
	r, err := New(withNetNS(cfg, int(h)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = r.Close(true) })
	return r, ns, h
}
