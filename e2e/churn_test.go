package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy/manifests"
	"github.com/podwall/podwall/policy/policytest"
)

// 1,000 policy updates in a row, each applied before the next is written, while four
// flows are probed without pause. No probe may see a wrong verdict, defined so that it
// does not depend on when exactly the agent switched:
//
// Update i is written (renamed into place) at W_i and is seen in force (/readyz reports its
// generation) at R_i; the agent switches to it at some moment in (W_i, R_i]. So state i
// may be the one in force at any moment in (W_i, R_{i+1}], and no other state can be. A
// probe that starts at S and ends at E may be judged by any state i whose interval
// overlaps [S, E]: W_i < E and R_{i+1} > S. Its outcome (connected and echoed, or not)
// must equal the verdict of at least one of those states. A TCP probe's SYN is judged
// once (its timeout, 800 ms, ends before the first retransmission; it is that long so that
// a slow machine does not pass for a drop); a UDP probe sends one datagram from a
// source port used by no earlier probe, so it never rides on an older connection's
// conntrack entry.
//
//	node-1: a, b, c
func TestChurn(t *testing.T) {
	const updates = 1000
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/a", "app/b", "app/c")
	base := []any{policytest.Namespace("app", nil)}
	for _, k := range []string{"app/a", "app/b", "app/c"} {
		base = append(base, e.podObject(k, map[string]string{"app": k[4:]}))
	}
	a, c := policytest.Pods(policytest.Selector("app", "a")), policytest.Pods(policytest.Selector("app", "c"))
	bIn := func(rules ...networkingv1.NetworkPolicyIngressRule) *networkingv1.NetworkPolicy {
		return policytest.NetworkPolicy("app", "b-in", policytest.Selector("app", "b"), policytest.Ingress(rules...))
	}
	out := func(pod string, rules ...networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
		return policytest.NetworkPolicy("app", pod+"-out", policytest.Selector("app", pod), policytest.Egress(rules...))
	}
	flows := []probe{
		{from: "app/a", to: "app/b", port: 80},
		{from: "app/c", to: "app/b", port: 80},
		{from: "app/a", to: "app/b", port: 81, proto: "UDP"},
		{from: "app/b", to: "app/c", port: 80},
	}
	// Each state and its verdict on each flow.
	states := []struct {
		policies []any
		allow    []bool
	}{
		{nil, []bool{true, true, true, true}},
		{[]any{bIn(policytest.From(a, policytest.Port("80/TCP"))), out("b")}, []bool{true, false, false, false}},
		{[]any{bIn(policytest.From(c))}, []bool{false, true, false, true}},
		{[]any{bIn(policytest.From(a)), out("b", policytest.To(c, policytest.Port("80/TCP")))}, []bool{true, false, true, true}},
		{[]any{bIn(policytest.From(a, policytest.Port("81/UDP"))), out("c")}, []bool{false, false, true, true}},
	}
	objs := func(s int) []any { return append(slices.Clone(base), states[s].policies...) }
	e.Serve(80, 81)
	e.Warm()
	e.write(objs(0)...)
	e.start()
	// The table of verdicts is right: every state, both families.
	for s := range states {
		if s > 0 { // 0 is in force
			e.rewrite(objs(s)...)
		}
		var ps []probe
		for f, p := range flows {
			p.allow = states[s].allow[f]
			ps = append(ps, p)
		}
		e.check(ps...)
	}
	e.rewrite(objs(0)...)

	type update struct {
		state            int
		written, applied time.Time
	}
	gen, err := e.Agents["node-1"].Generation(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	timeline := []update{{state: 0, applied: time.Now()}}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var mu sync.Mutex
	var recs []churnProbe
	var wg sync.WaitGroup
	var udpPort atomic.Uint32
	udpPort.Store(10000) // below the ephemeral range: never picked by the kernel
	for f, p := range flows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				start := time.Now()
				var err error
				if p.proto == "UDP" {
					port := udpPort.Add(1)
					if port >= 32000 {
						return
					}
					err = probeUDPFrom(e.Pods[p.from].NS, uint16(port), netip.AddrPortFrom(e.Addr(p.to, "IPv6"), p.port), 800*time.Millisecond)
				} else {
					err = e.probe("IPv4", p, 800*time.Millisecond)
				}
				mu.Lock()
				recs = append(recs, churnProbe{flow: f, start: start, end: time.Now(), ok: err == nil, err: err})
				mu.Unlock()
				time.Sleep(3 * time.Millisecond) // pace: each TCP probe leaves a socket in TIME_WAIT
			}
		}()
	}

	staging := filepath.Join(t.TempDir(), "cluster.yaml")
	rng := rand.New(rand.NewPCG(6, 1000))
	var toReadyz []time.Duration
	for range updates {
		cur := timeline[len(timeline)-1].state
		next := (cur + 1 + rng.IntN(len(states)-1)) % len(states)
		if err := manifests.Write(staging, objs(next)...); err != nil {
			t.Fatal(err)
		}
		written := time.Now()
		if err := os.Rename(staging, e.manifests); err != nil {
			t.Fatal(err)
		}
		applied := e.waitGeneration("node-1", gen)
		gen++
		timeline = append(timeline, update{state: next, written: written, applied: applied})
		toReadyz = append(toReadyz, applied.Sub(written))
	}
	stop()
	wg.Wait()
	if g, _ := e.Agents["node-1"].Generation(context.Background()); g != gen {
		t.Errorf("agent at generation %d after %d updates, want %d: an update was skipped or doubled", g, updates, gen)
	}

	// Judge every probe against the states that may have been in force during it.
	var wrong, ambiguous int
	perFlow := make([]int, len(flows))
	for _, r := range recs {
		perFlow[r.flow]++
		var may []int
		for i, u := range timeline {
			if (i == 0 || u.written.Before(r.end)) && (i == len(timeline)-1 || timeline[i+1].applied.After(r.start)) {
				may = append(may, u.state)
			}
		}
		verdicts := map[bool]bool{}
		for _, s := range may {
			verdicts[states[s].allow[r.flow]] = true
		}
		if len(verdicts) > 1 {
			ambiguous++
		}
		if !verdicts[r.ok] {
			wrong++
			if wrong <= 10 {
				t.Errorf("wrong verdict: %s connected = %v at %v..%v; states possibly in force %v (err: %v)",
					flowName(flows[r.flow]), r.ok, r.start.Sub(timeline[0].applied).Round(time.Microsecond),
					r.end.Sub(timeline[0].applied).Round(time.Microsecond), may, r.err)
			}
		}
	}
	t.Logf("%d updates in %v; edit -> /readyz generation: %s", updates,
		timeline[len(timeline)-1].applied.Sub(timeline[1].written).Round(time.Millisecond), quantiles(toReadyz))
	t.Logf("%d probes (%v per flow), %d spanning a change of verdict, %d wrong", len(recs), perFlow, ambiguous, wrong)
	if slices.Min(perFlow) < 25 {
		t.Errorf("too few probes per flow: %v", perFlow)
	}
	revoked := e.metric("node-1", "podwall_conntrack_revoked_total")
	sweeps := e.metric("node-1", "podwall_conntrack_sweeps_total")
	t.Logf("conntrack: %v sweeps, %v entries revoked", sweeps, revoked)
}

type churnProbe struct {
	flow       int
	start, end time.Time
	ok         bool
	err        error
}

func flowName(p probe) string { return fmt.Sprintf("%s %s -> %s:%d", proto(p), p.from, p.to, p.port) }

// probeUDPFrom is lab.ProbeUDP from a chosen source port.
func probeUDPFrom(from *lab.NS, srcPort uint16, to netip.AddrPort, timeout time.Duration) error {
	var c *net.UDPConn
	laddr := &net.UDPAddr{Port: int(srcPort)}
	if err := from.Do(func() (err error) {
		c, err = net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(to))
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	return lab.Echo(context.Background(), c, timeout)
}
