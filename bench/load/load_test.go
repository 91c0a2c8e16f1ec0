package load

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy/manifests"
	"github.com/podwall/podwall/policy/synth"
)

// Generated manifests load back into the same cluster.
func TestObjectsRoundTrip(t *testing.T) {
	s := synth.Generate(synth.Config{Pods: 300, Policies: 30, Seed: 7})
	path := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := manifests.Write(path, Objects(s)...); err != nil {
		t.Fatal(err)
	}
	got, err := manifests.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Pods) != len(s.Pods) || len(got.Policies) != len(s.Policies) || len(got.Namespaces) != len(s.Namespaces) {
		t.Fatalf("loaded %d pods, %d policies, %d namespaces; want %d, %d, %d",
			len(got.Pods), len(got.Policies), len(got.Namespaces), len(s.Pods), len(s.Policies), len(s.Namespaces))
	}
	for i, p := range got.Pods {
		w := s.Pods[i]
		if p.Key() != w.Key() || p.Node != w.Node || fmt.Sprint(p.IPs) != fmt.Sprint(w.IPs) ||
			fmt.Sprint(p.Ports) != fmt.Sprint(w.Ports) || fmt.Sprint(p.Labels) != fmt.Sprint(w.Labels) {
			t.Fatalf("pod %d: got %+v, want %+v", i, p, w)
		}
	}
}

// checkLatency runs the latency phase of variant v with a few connections, one at a time:
// every one connects and is judged once, a cold run misses the cache on each, a warm one
// hits.
func checkLatency(t *testing.T, env *Env, v Variant) {
	t.Helper()
	const n = 40
	run, err := env.MeasureLatency(context.Background(), v, n, 1)
	if err != nil {
		t.Fatalf("%s latency: %v", v.Name(), err)
	}
	t.Logf("%s latency, 1 in flight: p50 %v, p99 %v, cache %d hits %d misses", v.Name(), run.P50, run.P99, run.Hits, run.Misses)
	if run.OK != n || run.Failed != 0 || run.Concurrency != 1 || run.P50 <= 0 || run.P99 < run.P50 {
		t.Errorf("%s latency: %d of %d ok, errors %v, %d in flight, p50 %v, p99 %v", v.Name(), run.OK, n, run.Errors, run.Concurrency, run.P50, run.P99)
	}
	if run.PerConn > 1 || run.PerConn < 1 && (v.NewFlows || run.PerConn < 0.95) {
		t.Errorf("%s latency: %.3f packets judged per connection, want 1", v.Name(), run.PerConn)
	}
	if v.Filter == "podwall" && v.NewFlows && run.Misses != n {
		t.Errorf("%s latency: %d cache misses, want %d (every connection new)", v.Name(), run.Misses, n)
	}
	if v.Filter == "podwall" && !v.NewFlows && run.Misses != 0 {
		t.Errorf("%s latency: %d cache misses, want 0 (warm)", v.Name(), run.Misses)
	}
}

// The latency table pairs each run with kernel-only's of the same round, port pattern and
// connects in flight, and gives the median of those ratios.
func TestLatencySummaries(t *testing.T) {
	ms := func(x float64) time.Duration { return time.Duration(x * float64(time.Millisecond)) }
	kernel, cold, warm := Variant{Filter: "kernel", NewFlows: true}, Variant{Filter: "podwall", Queues: 1, NewFlows: true}, Variant{Filter: "podwall", Queues: 1}
	r := Report{Latency: []Run{
		{Variant: kernel, Rep: 0, Concurrency: 1, P50: ms(1), P99: ms(2)},
		{Variant: kernel, Rep: 1, Concurrency: 1, P50: ms(4), P99: ms(8)},
		{Variant: kernel, Rep: 2, Concurrency: 1, P50: ms(2), P99: ms(4)},
		{Variant: kernel, Rep: 0, Concurrency: 4, P50: ms(10), P99: ms(10)},
		{Variant: cold, Rep: 0, Concurrency: 1, P50: ms(3), P99: ms(2)},  // 3.0, 1.0
		{Variant: cold, Rep: 1, Concurrency: 1, P50: ms(4), P99: ms(4)},  // 1.0, 0.5
		{Variant: cold, Rep: 2, Concurrency: 1, P50: ms(3), P99: ms(12)}, // 1.5, 3.0
		{Variant: cold, Rep: 0, Concurrency: 4, P50: ms(5), P99: ms(20)}, // 0.5, 2.0
		{Variant: warm, Rep: 0, Concurrency: 1, P50: ms(1), P99: ms(1)},  // no one-port baseline
	}}
	got := map[string]LatencySummary{}
	for _, s := range r.latencySummaries() {
		got[fmt.Sprintf("%s/%d", s.Variant.Name(), s.InFlight)] = s
	}
	for name, want := range map[string][3]float64{ // P50 in ms, paired p50, paired p99
		"kernel-only, new ports/1": {2, 1, 1},
		"podwall q1 cold/1":        {3, 1.5, 1},
		"podwall q1 cold/4":        {5, 0.5, 2},
	} {
		s, ok := got[name]
		if !ok {
			t.Errorf("%s: no summary", name)
			continue
		}
		if s.P50 != ms(want[0]) || s.PairedP50 != want[1] || s.PairedP99 != want[2] {
			t.Errorf("%s: p50 %v, paired p50 %g, p99 %g; want %v, %g, %g", name, s.P50, s.PairedP50, s.PairedP99, ms(want[0]), want[1], want[2])
		}
	}
	if s := got["podwall q1 warm/1"]; s.PairedP50 != 0 || s.PairedP99 != 0 {
		t.Errorf("podwall q1 warm: paired %g, %g without a baseline, want 0 (JSON holds no NaN)", s.PairedP50, s.PairedP99)
	}
	if _, err := json.Marshal(r.latencySummaries()); err != nil {
		t.Error(err)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{{[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{math.NaN(), 5}, 5}} {
		if got := median(c.xs); got != c.want {
			t.Errorf("median(%v) = %g, want %g", c.xs, got, c.want)
		}
	}
}

// TestLoadSmoke runs the harness with tiny loads, to keep it from rotting: every filter
// passes every connection, each new connection is judged exactly once (one queued packet
// for podwall, one hit of the baseline's accept rule), the queue drops nothing, and a
// bulk transfer arrives whole. It needs root; the real measurement is `make bench-load`.
func TestLoadSmoke(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables); skipped with -short")
	}
	if _, err := lab.Sweep(lab.DefaultPrefix, 0); err != nil {
		t.Log("sweep:", err)
	}
	binary := filepath.Join(t.TempDir(), "podwall")
	build := exec.Command("go", "build", "-o", binary, "../../cmd/podwall")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building podwall: %v\n%s", err, out)
	}
	env, err := NewEnv(binary, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := env.Close(); err != nil {
			t.Error(err)
		}
	}()
	env.Threads = 2
	env.Alt = binary
	ctx := context.Background()
	const n = 300
	installed := Variant{Filter: "none"}
	for _, v := range []Variant{
		{Filter: "none", NewFlows: true},
		{Filter: "kernel", NewFlows: true},
		{Filter: "kernel"},
		{Filter: "podwall", Queues: 2, NewFlows: true},
		{Filter: "podwall", Queues: 2},
		{Filter: "rawq", Queues: 1, NewFlows: true},
		{Filter: "podwall-alt", Queues: 1, NewFlows: true}, // a second build: here the same one
		{Filter: "podwall-ac", Queues: 1},                  // the allow cache: the kernel takes over
	} {
		if v.Filter != installed.Filter || v.Queues != installed.Queues {
			if err := env.SetFilter(ctx, v.Filter, v.Queues); err != nil {
				t.Fatal(err)
			}
			installed = v
		}
		run, err := env.Measure(ctx, v, n, 16)
		if err != nil {
			t.Fatalf("%s: %v", v.Name(), err)
		}
		t.Logf("%s: %.0f conn/s, p50 %v, pkts/conn %.3f, cache %d hits %d misses", v.Name(), run.Rate, run.P50, run.PerConn, run.Hits, run.Misses)
		if run.OK != n || run.Failed != 0 {
			t.Errorf("%s: %d of %d connections ok, errors %v", v.Name(), run.OK, n, run.Errors)
		}
		// With one destination port a new connection may reuse the 4-tuple of one just
		// reset, and its SYN overtake that RST on the other CPU: conntrack then still calls
		// it established and nothing judges it (rare; any conntrack firewall does the same).
		// With the allow cache, one port: the flow is judged once (in the warm-up or the
		// first connections) and the kernel accepts the others from its cache.
		if v.Filter == "podwall-ac" && run.PerConn > 0.1 {
			t.Errorf("%s: %.3f packets judged per connection, want the first few of %d connections", v.Name(), run.PerConn, n)
		}
		if v.Filter != "none" && v.Filter != "podwall-ac" && (run.PerConn > 1 || run.PerConn < 1 && (v.NewFlows || run.PerConn < 0.99)) {
			t.Errorf("%s: %.3f packets judged per connection, want 1", v.Name(), run.PerConn)
		}
		if run.QueueDrops != 0 || run.ENOBUFS != 0 {
			t.Errorf("%s: queue drops %d, ENOBUFS %d", v.Name(), run.QueueDrops, run.ENOBUFS)
		}
		if (v.Filter == "podwall" || v.Filter == "podwall-alt") && v.NewFlows && run.Misses != n {
			t.Errorf("%s: %d cache misses, want %d (every connection new)", v.Name(), run.Misses, n)
		}
		if v.Filter == "podwall" && !v.NewFlows && (run.Hits < n*99/100 || run.Misses != 0) {
			t.Errorf("%s: %d cache hits and %d misses, want %d hits (warm)", v.Name(), run.Hits, run.Misses, n)
		}
		if v.Filter == "kernel" || v.Filter == "podwall" {
			checkLatency(t, env, v)
		}
		if v.Filter == "podwall" && !v.NewFlows {
			res, err := env.sink.Stream(env.Client.NS, env.ServerAddr(StreamPort).String(), 64<<20, 30*time.Second)
			if err != nil {
				t.Fatalf("stream through podwall: %v", err)
			}
			t.Logf("stream through podwall: %.2f Gbit/s", res.Gbps())
		}
	}
}
