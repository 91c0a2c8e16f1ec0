//go:build linux

package nft

import (
	"bufio"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// ProgramSync creates the table with its first elements in one transaction — `nft
// monitor` shows the chain, its rules and the elements before a single "new generation" —
// and, over a table an earlier run left, reconciles the kept sets in the same way.
func TestLiveProgramSync(t *testing.T) {
	requireRoot(t)
	requireNft(t)
	r, ns, h := newLab(t, Config{QueueCount: 1, PodInterfacePrefixes: []string{"pw"}})

	mon := exec.Command("ip", "netns", "exec", ns, "nft", "monitor")
	out, err := mon.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { mon.Process.Kill(); mon.Wait() }()
	lines := make(chan string, 256)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	// transaction returns the events of the next transaction the monitor reports, skipping
	// the capability probes of New (a throwaway table of their own).
	transaction := func() []string {
		t.Helper()
		var evs []string
		deadline := time.After(5 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("nft monitor ended; so far %q", evs)
				}
				if !strings.HasPrefix(l, "# new generation") {
					evs = append(evs, l)
				} else if !slices.ContainsFunc(evs, func(l string) bool { return strings.Contains(l, "podwall_probe") }) {
					return evs
				} else {
					evs = nil
				}
			case <-deadline:
				t.Fatalf("no transaction from nft monitor; so far %q", evs)
			}
		}
	}
	// The monitor is listening once it reports a throwaway transaction (it may miss the
	// first ones while it starts: retry). Then wait for quiet, so that what follows is ours.
	for ready := false; !ready; {
		if _, err := nftIn(ns, "add", "table", "inet", "pwready"); err != nil {
			t.Fatal(err)
		}
		if _, err := nftIn(ns, "delete", "table", "inet", "pwready"); err != nil {
			t.Fatal(err)
		}
		select {
		case l := <-lines:
			ready = strings.Contains(l, "pwready")
		case <-time.After(100 * time.Millisecond):
		}
	}
	for quiet := false; !quiet; {
		select {
		case <-lines:
		case <-time.After(50 * time.Millisecond):
			quiet = true
		}
	}

	if err := r.ProgramSync(1, addrs("10.244.0.2", "fd00:10:244::2"), addrs("10.244.0.3")); err != nil {
		t.Fatal(err)
	}
	evs := transaction()
	has := func(prefix string) bool {
		return slices.ContainsFunc(evs, func(l string) bool { return strings.HasPrefix(l, prefix) })
	}
	for _, want := range []string{"add table inet podwall", "add chain inet podwall forward", "add rule inet podwall forward",
		"add element inet podwall ingress4", "add element inet podwall ingress6", "add element inet podwall egress4"} {
		if !has(want) {
			t.Errorf("first transaction lacks %q:\n%s", want, strings.Join(evs, "\n"))
		}
	}
	for set, want := range map[string][]string{SetIngress4: {"10.244.0.2"}, SetIngress6: {"fd00:10:244::2"}, SetEgress4: {"10.244.0.3"}, SetEgress6: {}} {
		if got := setElems(t, ns, set); !slices.Equal(got, want) {
			t.Errorf("set %s = %q, want %q", set, got, want)
		}
	}

	// A restart: the table stays, the next agent's policy differs.
	if err := r.Close(true); err != nil {
		t.Fatal(err)
	}
	r2, err := New(Config{QueueCount: 1, PodInterfacePrefixes: []string{"pw"}, NetNS: int(h)})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close(true)
	if err := r2.ProgramSync(1, addrs("10.244.0.2", "10.244.0.4"), nil); err != nil {
		t.Fatal(err)
	}
	evs = transaction()
	if !has("delete element inet podwall egress4") || !has("add element inet podwall ingress4") {
		t.Errorf("takeover transaction does not reconcile the sets:\n%s", strings.Join(evs, "\n"))
	}
	if has("delete table") || has("delete chain") {
		t.Errorf("takeover unhooked the chain:\n%s", strings.Join(evs, "\n"))
	}
	for set, want := range map[string][]string{SetIngress4: {"10.244.0.2", "10.244.0.4"}, SetIngress6: {}, SetEgress4: {}, SetEgress6: {}} {
		if got := setElems(t, ns, set); !slices.Equal(got, want) {
			t.Errorf("after takeover: set %s = %q, want %q", set, got, want)
		}
	}
}
