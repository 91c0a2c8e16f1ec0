package load

import (
	"context"
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
		if v.Filter != "none" && (run.PerConn > 1 || run.PerConn < 1 && (v.NewFlows || run.PerConn < 0.99)) {
			t.Errorf("%s: %.3f packets judged per connection, want 1", v.Name(), run.PerConn)
		}
		if run.QueueDrops != 0 || run.ENOBUFS != 0 {
			t.Errorf("%s: queue drops %d, ENOBUFS %d", v.Name(), run.QueueDrops, run.ENOBUFS)
		}
		if v.Filter == "podwall" && v.NewFlows && run.Misses != n {
			t.Errorf("%s: %d cache misses, want %d (every connection new)", v.Name(), run.Misses, n)
		}
		if v.Filter == "podwall" && !v.NewFlows && (run.Hits < n*99/100 || run.Misses != 0) {
			t.Errorf("%s: %d cache hits and %d misses, want %d hits (warm)", v.Name(), run.Hits, run.Misses, n)
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
