package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy/manifests"
	"github.com/podwall/podwall/policy/synth"
)

// Size is a synthetic cluster size.
type Size struct{ Pods, Policies int }

// RSS is the agent's memory at one cluster size.
type RSS struct {
	Size
	// Format is how the manifests were written: "list" (one v1 List) or "docs" (one YAML
	// document per object).
	Format string
	// LocalPods is how many pods the agent's node holds (synth spreads pods over
	// Pods/100 nodes; the agent runs as node-0).
	LocalPods int
	// ManifestBytes is the size of the generated manifests file.
	ManifestBytes int64
	// Ready is the time from start to /readyz.
	Ready time.Duration
	// Mem is read a few seconds after ready; its HWM is the peak, start-up included.
	Mem
	// HeapInuse is go_memstats_heap_inuse_bytes at the same time.
	HeapInuse float64
}

// MeasureRSS starts the agent on each generated cluster in turn, in each format ("list",
// "docs"), inside a lab node, and reads its memory once it is ready and has settled for
// settle. The node has no pods: only the policy state and the kernel sets (node-0's pods)
// matter here. extraArgs go to `podwall run`.
func MeasureRSS(ctx context.Context, binary string, sizes []Size, formats []string, settle time.Duration, logf func(string, ...any), extraArgs ...string) ([]RSS, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	dir, err := os.MkdirTemp("", "podwall-rss-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	l, err := lab.New(lab.Options{})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	node, err := lab.Plan(0).AddNode(l, "node-0")
	if err != nil {
		return nil, err
	}
	var out []RSS
	for _, sz := range sizes {
		for _, format := range formats {
			r, err := measureRSS(ctx, node, binary, dir, sz, format, settle, extraArgs)
			if err != nil {
				return out, fmt.Errorf("rss at %d pods / %d policies (%s): %w", sz.Pods, sz.Policies, format, err)
			}
			logf("%d pods / %d policies (%d local), %s: ready in %v, VmRSS %.1f MB, VmHWM %.1f MB",
				sz.Pods, sz.Policies, r.LocalPods, format, r.Ready.Round(time.Millisecond), mb(r.RSS), mb(r.HWM))
			out = append(out, r)
		}
	}
	return out, nil
}

func measureRSS(ctx context.Context, node *lab.Node, binary, dir string, sz Size, format string, settle time.Duration, extraArgs []string) (RSS, error) {
	s := synth.Generate(synth.Config{Pods: sz.Pods, Policies: sz.Policies, Seed: 42})
	r := RSS{Size: sz, Format: format}
	for _, p := range s.Pods {
		if p.Node == "node-0" {
			r.LocalPods++
		}
	}
	path := filepath.Join(dir, fmt.Sprintf("cluster-%d-%d-%s.yaml", sz.Pods, sz.Policies, format))
	write := manifests.WriteList
	if format == "docs" {
		write = manifests.Write
	}
	if err := write(path, Objects(s)...); err != nil {
		return r, err
	}
	defer os.Remove(path)
	if fi, err := os.Stat(path); err == nil {
		r.ManifestBytes = fi.Size()
	}
	start := time.Now()
	a, err := node.StartAgent(lab.AgentConfig{Binary: binary, Manifests: path, NodeName: "node-0", Args: extraArgs})
	if err != nil {
		return r, err
	}
	err = func() error {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if _, err := a.WaitGeneration(wctx, 0); err != nil {
			return err
		}
		r.Ready = time.Since(start)
		select {
		case <-time.After(settle):
		case <-ctx.Done():
			return ctx.Err()
		}
		var err error
		if r.Mem, err = ProcStatus(a.Pid()); err != nil {
			return err
		}
		m, err := a.Metrics(ctx)
		if err != nil {
			return err
		}
		r.HeapInuse = m.Sum("go_memstats_heap_inuse_bytes")
		return nil
	}()
	return r, errors.Join(err, a.Stop(syscall.SIGTERM, 10*time.Second), nft(node.NS, "add table inet podwall\ndelete table inet podwall\n"))
}

// mb returns n in megabytes (10⁶ bytes), the unit of the targets.
func mb(n int64) float64 { return float64(n) / 1e6 }

// Target is a memory target at one cluster size, in MB (10⁶ bytes): VmRSS once settled
// and VmHWM, the peak, start-up included. 0 is no target.
type Target struct{ Steady, Peak int64 }

// met returns "≤ limit MB" and whether v (bytes) meets it, or "" when there is no limit.
func met(v, limit int64) string {
	if limit == 0 {
		return ""
	}
	mark := "✓"
	if mb(v) > float64(limit) {
		mark = "✗"
	}
	return fmt.Sprintf("≤ %d MB %s", limit, mark)
}

// PrintRSS writes the RSS table (MB = 10⁶ bytes), with each size's target and whether the
// run met it.
func PrintRSS(w io.Writer, rs []RSS, target func(Size) Target) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pods\tpolicies\tlocal pods\tmanifests\t\tready in\tVmRSS\t(anon\tfile)\tVmHWM\theap in use\ttarget steady\tpeak\t")
	for _, r := range rs {
		t := target(r.Size)
		steady, peak := met(r.RSS, t.Steady), met(r.HWM, t.Peak)
		if steady == "" {
			steady = "-"
		}
		if peak == "" {
			peak = "-"
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%.1f MB\t%s\t%v\t%.1f MB\t%.1f\t%.1f)\t%.1f MB\t%.1f MB\t%s\t%s\t\n", r.Pods, r.Policies, r.LocalPods,
			mb(r.ManifestBytes), r.Format, r.Ready.Round(time.Millisecond), mb(r.RSS), mb(r.RSSAnon), mb(r.RSSFile), mb(r.HWM), r.HeapInuse/1e6, steady, peak)
	}
	tw.Flush()
}
