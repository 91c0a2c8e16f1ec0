package bench

import (
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/synth"
)

// clusterSize is the ClusterNetworkPolicy target of issue 12: 10k pods, 1k NetworkPolicies,
// 100 ClusterNetworkPolicies (both tiers, every action and peer kind: synth.ClusterPolicy).
var clusterSize = struct{ pods, policies, cnps int }{10000, 1000, 100}

// BenchmarkDecideCluster is BenchmarkDecide with ClusterNetworkPolicies: random flows
// between pods, and between pods and nodes. Target: ≤ 1 µs and 0 allocs.
func BenchmarkDecideCluster(b *testing.B) {
	sz := clusterSize
	s := synth.Generate(synth.Config{Pods: sz.pods, Policies: sz.policies, ClusterPolicies: sz.cnps, Seed: 42})
	snap, err := policy.Compile(s)
	if err != nil {
		b.Fatal(err)
	}
	flows := sampleFlows(s, 4096)
	for i := range 512 { // an eighth of the flows: pod → node, as kubelet probes and node-local DNS go
		flows[i*8].Dst = s.Nodes[i%len(s.Nodes)].IPs[0]
	}
	// The same cluster and flows without the ClusterNetworkPolicies, for comparison.
	np := s
	np.ClusterPolicies = nil
	npSnap, err := policy.Compile(np)
	if err != nil {
		b.Fatal(err)
	}
	b.Run(name(sz.pods, sz.policies)+",cnps=0", func(b *testing.B) {
		cpu, i := threadCPU(b), 0
		for b.Loop() {
			npSnap.Decide(flows[i&4095])
			i++
		}
		cpu.report(i)
	})
	b.Run(name(sz.pods, sz.policies)+",cnps=100", func(b *testing.B) {
		b.ReportAllocs()
		cpu := threadCPU(b)
		denied, cluster, i := 0, 0, 0
		for b.Loop() {
			d := snap.Decide(flows[i&4095])
			if d.Verdict == policy.Deny {
				denied++
			}
			if d.Egress.Code >= policy.ClusterAccepted || d.Ingress.Code >= policy.ClusterAccepted {
				cluster++
			}
			i++
		}
		cpu.report(i)
		b.ReportMetric(float64(denied)/float64(i), "deny-ratio")
		b.ReportMetric(float64(cluster)/float64(i), "cnp-decided-ratio")
	})
}

// BenchmarkUpdateCluster measures one ClusterNetworkPolicy changed on a compiled cluster, up
// to the new snapshot. Target: ≤ 10 ms at 10k pods/1k NetworkPolicies/100 CNPs. cnp-edit
// gives a policy new rules and a new priority, as an administrator edits one; cnp-replace
// a whole new random policy (a new subject, often one no other policy has, so that the pods
// it and the old one select are re-evaluated).
func BenchmarkUpdateCluster(b *testing.B) {
	sz := clusterSize
	s := synth.Generate(synth.Config{Pods: sz.pods, Policies: sz.policies, ClusterPolicies: sz.cnps, Seed: 42})
	c := policy.NewCompiler("node-0")
	if err := c.Replace(s); err != nil {
		b.Fatal(err)
	}
	c.Snapshot()
	r, replaced := rand.New(rand.NewPCG(6, 6)), 0
	b.Run(name(sz.pods, sz.policies)+",cnps=100/cnp-edit", func(b *testing.B) {
		b.ReportAllocs()
		cpu, n := threadCPU(b), 0
		for b.Loop() {
			n++
			old := s.ClusterPolicies[replaced%len(s.ClusterPolicies)]
			p := synth.ClusterPolicy(r, old.Name)
			p.Spec.Tier, p.Spec.Subject = old.Spec.Tier, old.Spec.Subject
			if err := c.SetClusterPolicy(p); err != nil {
				b.Fatal(err)
			}
			s.ClusterPolicies[replaced%len(s.ClusterPolicies)] = p
			c.Snapshot()
			replaced++
		}
		cpu.report(n)
	})
	b.Run(name(sz.pods, sz.policies)+",cnps=100/cnp-replace", func(b *testing.B) {
		b.ReportAllocs()
		cpu, n := threadCPU(b), 0
		for b.Loop() {
			n++
			old := s.ClusterPolicies[replaced%len(s.ClusterPolicies)]
			p := synth.ClusterPolicy(r, old.Name)
			if err := c.SetClusterPolicy(p); err != nil {
				b.Fatal(err)
			}
			s.ClusterPolicies[replaced%len(s.ClusterPolicies)] = p
			c.Snapshot()
			replaced++
		}
		cpu.report(n)
	})
}

// cpuClock measures the CPU time of the benchmark's thread: on a machine shared with other
// work, ns/op counts the time the thread waited for a CPU too, cpu-ns/op only its own.
type cpuClock struct {
	b     *testing.B
	start time.Duration
}

// threadCPU locks the benchmark goroutine to its thread (for the rest of the benchmark
// function) and starts measuring that thread's CPU time.
func threadCPU(b *testing.B) cpuClock {
	runtime.LockOSThread()
	b.Cleanup(runtime.UnlockOSThread)
	return cpuClock{b, threadTime()}
}

// report adds cpu-ns/op for n operations.
func (c cpuClock) report(n int) {
	if n > 0 {
		c.b.ReportMetric(float64(threadTime()-c.start)/float64(n), "cpu-ns/op")
	}
}

func threadTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
