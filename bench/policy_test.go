package bench

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"testing"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/policytest"
	"github.com/podwall/podwall/policy/synth"
)

var sizes = []struct{ pods, policies int }{{100, 10}, {1000, 100}, {10000, 1000}}

func name(pods, policies int) string { return fmt.Sprintf("pods=%d,policies=%d", pods, policies) }

// sampleFlows picks flows between random pods (v4 and v6) on the ports the synthetic
// policies use, so that rules are scanned rather than short-circuited.
func sampleFlows(s policy.State, n int) []flow.Flow {
	r := rand.New(rand.NewPCG(1, 2))
	protos := []flow.Proto{flow.TCP, flow.TCP, flow.TCP, flow.UDP}
	ports := []uint16{8080, 5000, 3306, 9090, 53, 8200}
	out := make([]flow.Flow, n)
	for i := range out {
		a, b := s.Pods[r.IntN(len(s.Pods))], s.Pods[r.IntN(len(s.Pods))]
		fam := r.IntN(2)
		out[i] = flow.Flow{Src: a.IPs[fam], Dst: b.IPs[fam], Proto: protos[r.IntN(len(protos))], Port: ports[r.IntN(len(ports))]}
	}
	return out
}

// worstCase adds to s a namespace in which 100 policies all select one server pod for
// ingress, each with one rule from its own pod selector and an ipBlock, on the port of the
// flow it returns, from a client pod of the same namespace to the server.
//
// With inPeers false, the client belongs to none of the rules' peers: no rule admits it,
// and the rules differ only in their peers. With inPeers true, it belongs to the peers of
// all the rules but the first, and the policies come in reverse order, so that the peer ids
// run against the rules' order: the worst case of the rule table's walk (see ruleTable in
// package policy), the remote pod in many peers and the first rule's peer, which it is not
// in, last in id order.
func worstCase(s policy.State, inPeers bool) (policy.State, flow.Flow) {
	const ns = "worst"
	client, server := netip.MustParseAddr("10.245.0.1"), netip.MustParseAddr("10.245.0.2")
	clientLabels := map[string]string{"app": "client", "tier": "backend", "version": "v1"}
	s.Namespaces = append(slices.Clip(s.Namespaces), policy.Namespace{Name: ns,
		Labels: map[string]string{"team": "red", "env": "prod", "kubernetes.io/metadata.name": ns}})
	s.Policies = slices.Clip(s.Policies)
	for i := 99; i >= 0; i-- {
		if inPeers && i > 0 {
			clientLabels[fmt.Sprintf("client-%d", i)] = "yes"
		}
		s.Policies = append(s.Policies, policytest.NetworkPolicy(ns, fmt.Sprintf("worst-%03d", i),
			policytest.Selector("app", "server"),
			policytest.Ingress(policytest.From(
				policytest.Pods(policytest.Selector(fmt.Sprintf("client-%d", i), "yes")),
				policytest.CIDR(fmt.Sprintf("192.168.%d.0/24", i)),
				policytest.Port("80/TCP")))))
	}
	s.Pods = append(slices.Clip(s.Pods),
		policy.Pod{Namespace: ns, Name: "client", IPs: []netip.Addr{client}, Node: "node-0", Phase: "Running",
			Labels: clientLabels},
		policy.Pod{Namespace: ns, Name: "server", IPs: []netip.Addr{server}, Node: "node-0", Phase: "Running",
			Labels: map[string]string{"app": "server", "tier": "backend", "version": "v1"}})
	return s, flow.Flow{Src: client, Dst: server, Proto: flow.TCP, Port: 80}
}

// BenchmarkDecide measures one verdict on the compiled snapshot: the per-new-connection cost
// in the datapath before the flow cache. Target: ≤ 1 µs and 0 allocs at 10k pods/1k policies,
// for random flows and for the worst cases (worstCase) alike.
func BenchmarkDecide(b *testing.B) {
	for _, sz := range sizes {
		s := synth.Generate(synth.Config{Pods: sz.pods, Policies: sz.policies, Seed: 42})
		snap, err := policy.Compile(s)
		if err != nil {
			b.Fatal(err)
		}
		flows := sampleFlows(s, 4096)
		b.Run(name(sz.pods, sz.policies), func(b *testing.B) {
			b.ReportAllocs()
			denied := 0
			i := 0
			for b.Loop() {
				if snap.Decide(flows[i&4095]).Verdict == policy.Deny {
					denied++
				}
				i++
			}
			b.ReportMetric(float64(denied)/float64(i), "deny-ratio")
		})

		for _, w := range []struct {
			name    string
			inPeers bool
			want    policy.Code
		}{
			{"worst-case 100 policies selecting the pod, none admitting", false, policy.NoRuleAllows},
			{"worst-case 100 policies selecting the pod, client in 99 of their peers", true, policy.Allowed},
		} {
			ws, f := worstCase(s, w.inPeers)
			worst, err := policy.Compile(ws)
			if err != nil {
				b.Fatal(err)
			}
			if d := worst.Decide(f); d.Ingress.Code != w.want {
				b.Fatalf("%s: ingress %v, want %v", w.name, d.Ingress.Code, w.want)
			}
			b.Run(name(sz.pods, sz.policies)+"/"+w.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					worst.Decide(f)
				}
			})
		}
	}
}

// BenchmarkCompile measures a full compile of a cluster. Target: ≤ 500 ms at 10k/1k. It also
// reports, as live-B, the heap that a compiler and its snapshot of the cluster hold once
// compiled — what the agent keeps besides the objects themselves (the policies' copies
// included).
func BenchmarkCompile(b *testing.B) {
	for _, sz := range sizes {
		s := synth.Generate(synth.Config{Pods: sz.pods, Policies: sz.policies, Seed: 42})
		b.Run(name(sz.pods, sz.policies), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := policy.Compile(s); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(liveHeap(b, s)), "live-B")
		})
	}
}

// liveHeap returns the growth of the live heap while a compiler holds s and its snapshot.
func liveHeap(b *testing.B, s policy.State) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := policy.NewCompiler("node-0")
	if err := c.Replace(s); err != nil {
		b.Fatal(err)
	}
	snap := c.Snapshot()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(c)
	runtime.KeepAlive(snap)
	return after.HeapAlloc - before.HeapAlloc
}

// BenchmarkUpdate measures the cost of one change on a compiled cluster, up to the new
// snapshot: a pod relabelled, a pod added, a policy replaced.
func BenchmarkUpdate(b *testing.B) {
	for _, sz := range sizes {
		s := synth.Generate(synth.Config{Pods: sz.pods, Policies: sz.policies, Seed: 42})
		c := policy.NewCompiler("node-0")
		if err := c.Replace(s); err != nil {
			b.Fatal(err)
		}
		c.Snapshot()
		// The counters and the random source outlive each b.Run: with -count N the same
		// compiler runs again, and repeating the first run's changes would change nothing.
		relabels := 0
		b.Run(name(sz.pods, sz.policies)+"/pod-relabel", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p := s.Pods[relabels%len(s.Pods)]
				l := map[string]string{"app": []string{"web", "api", "db"}[relabels%3], "tier": "backend", "version": "v1"}
				p.Labels = l
				c.SetPod(p)
				c.Snapshot()
				relabels++
			}
		})
		b.Run(name(sz.pods, sz.policies)+"/pod-add-delete", func(b *testing.B) {
			b.ReportAllocs()
			p := s.Pods[0]
			p.Name = "bench-new"
			p.IPs = []netip.Addr{netip.MustParseAddr("10.250.0.1"), netip.MustParseAddr("fd00:250::1")}
			for b.Loop() {
				c.SetPod(p)
				c.Snapshot()
				c.DeletePod(p.Namespace, p.Name)
				c.Snapshot()
			}
		})
		r, replaced := rand.New(rand.NewPCG(5, 5)), 0
		b.Run(name(sz.pods, sz.policies)+"/policy-replace", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				old := s.Policies[replaced%len(s.Policies)]
				if err := c.SetPolicy(synth.Policy(r, old.Namespace, old.Name)); err != nil {
					b.Fatal(err)
				}
				c.Snapshot()
				replaced++
			}
		})
	}
}
