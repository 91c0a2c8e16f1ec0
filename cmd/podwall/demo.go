package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/manifests"
)

func newDemoCmd() *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Enforce the seeds' 3-tier example in a network-namespace lab and show every verdict (root)",
		Long: `demo builds a small lab in network namespaces — a node, the pods web, api and db of
namespace prod, and an outside user — enforces db-policy (only name=api-pod may reach
role=db on TCP 3306) with the real datapath, attempts every connection of the 3-tier flow
and a few forbidden ones, shows each with its verdict and reason, and cleans up.
It touches nothing outside the namespaces it creates.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDemo(cmd.Context(), cmd.OutOrStdout(), keep) },
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "leave the lab running until Ctrl-C (to explore with ip netns exec)")
	return cmd
}

func runDemo(ctx context.Context, out io.Writer, keep bool) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("demo: needs root (it creates network namespaces and nftables rules inside them)")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if _, err := lab.Sweep(lab.DefaultPrefix, 0); err != nil {
		fmt.Fprintln(out, "warning: sweeping stale lab namespaces:", err)
	}
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }

	start := time.Now()
	l, err := lab.New(lab.Options{})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := l.Close(); cerr != nil && err == nil {
			err = cerr
		}
		say("\nCleaned up: lab namespaces removed.")
	}()
	tt, err := l.AddThreeTier()
	if err != nil {
		return err
	}
	node, pods := tt.Node, tt.Pods

	dir, err := os.MkdirTemp("", "podwall-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "cluster.yaml")
	if err := manifests.Write(file, tt.Objects...); err != nil {
		return err
	}
	state, err := manifests.Load(file)
	if err != nil {
		return err
	}
	snap, err := policy.Compile(state)
	if err != nil {
		return err
	}
	for name, port := range map[string]uint16{"web": 80, "api": 5000, "db": 3306} {
		if _, err := pods[name].ServeTCP(port); err != nil {
			return err
		}
	}
	say("Lab %s: node-1 routes for pods prod/web %s, prod/api %s, prod/db %s and an outside user %s (built in %v).",
		l.RunID(), pods["web"].IPv4, pods["api"].IPv4, pods["db"].IPv4, pods["user"].IPv4, time.Since(start).Round(time.Millisecond))
	say("Policy prod/db-policy: pods role=db accept TCP 3306 only from pods name=api-pod.\n")

	a, err := node.StartAgent(lab.AgentConfig{Binary: self, Manifests: file, NodeName: "node-1", Args: []string{"--queues", "1"}})
	if err != nil {
		return err
	}
	defer a.Stop(syscall.SIGTERM, 5*time.Second)
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := a.WaitReady(rctx); err != nil {
		return err
	}
	say("podwall is enforcing on node-1 (ready in %v).\n", time.Since(start).Round(time.Millisecond))

	steps := []struct {
		from, to string
		port     uint16
		what     string
	}{
		{"user", "web", 80, "a user opens the web site"},
		{"web", "api", 5000, "web calls the API"},
		{"api", "db", 3306, "the API queries the database"},
		{"web", "db", 3306, "web tries the database directly"},
		{"user", "db", 3306, "the outside user tries the database"},
		{"api", "db", 22, "the API tries another port on the database"},
	}
	mismatches := 0
	for _, fam := range []string{"IPv4", "IPv6"} {
		say("%s:", fam)
		for _, s := range steps {
			from, to := pods[s.from], pods[s.to]
			src, dst := from.IPv4, to.IPv4
			if fam == "IPv6" {
				src, dst = from.IPv6, to.IPv6
			}
			t0 := time.Now()
			perr := lab.ProbeTCP(ctx, from.NS, netip.AddrPortFrom(dst, s.port), 500*time.Millisecond)
			took := time.Since(t0)
			x := snap.Explain(flow.Flow{Src: src, Dst: dst, Proto: flow.TCP, Port: s.port})
			observed := "allowed"
			mark := "✔"
			detail := fmt.Sprintf("connected and echoed in %v", took.Round(100*time.Microsecond))
			if perr != nil {
				observed, mark = "blocked", "✘"
				detail = fmt.Sprintf("no answer within %v", took.Round(time.Millisecond))
			}
			if (perr == nil) != (x.Verdict == policy.Allow) {
				mark = "!"
				mismatches++
			}
			say("  %s %-7s %-5s -> %-4s TCP/%-5d %-40s %s", mark, observed, s.from, s.to, s.port, s.what, detail)
			say("      why: %s", x.Reason)
		}
	}
	m, _ := a.Metrics(ctx) // without metrics, the counts say 0
	say("\npodwall judged %v queued packets: %v allowed, %v denied; every later packet of an allowed connection stayed in the kernel (conntrack).",
		m.Sum("podwall_datapath_packets_total"),
		m.Sum("podwall_datapath_verdicts_total", "verdict", "allow"),
		m.Sum("podwall_datapath_verdicts_total", "verdict", "deny"))
	if keep {
		say("\nLab kept: try `ip netns exec %sweb curl ...`; Ctrl-C to clean up.", l.Prefix())
		<-ctx.Done()
	}
	if mismatches > 0 {
		return fmt.Errorf("demo: %d connections did not match the policy's verdict", mismatches)
	}
	return nil
}
