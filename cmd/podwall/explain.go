package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/podwall/podwall/policy/explain"
)

type explainOpts struct {
	manifests  string
	kubeconfig string
	from, to   string
	port       int
	protocol   string
	output     string
	batch      bool
	matrix     bool
	ports      string
}

func newExplainCmd() *cobra.Command {
	var o explainOpts
	cmd := &cobra.Command{
		Use:   "explain (--manifests PATH | --kubeconfig FILE) (--from EP --to EP --port N | --batch | --matrix --ports LIST)",
		Short: "Show what NetworkPolicy says about a flow, and why",
		Long: `explain prints the verdict on a flow and its reason — the policies and rules that allowed
it, or the isolation that denied it — without a datapath.

An endpoint is ns/pod (the pod's primary address, status.podIP) or an IP address (a pod's
other address, a node, an external host).

--batch reads JSON lines {"from","to","port","protocol"} on stdin and writes one JSON line per
query with the same fields plus "verdict" ("allow" or "deny") and "reason".
--matrix prints the reachability table of all pod pairs for each of --ports (80/TCP,81/UDP).

An object podwall rejects (an invalid NetworkPolicy, a pod with a bad address) is judged as
the agent judges it — an invalid policy isolates what it selects and allows nothing — and
printed as a warning on stderr; two pods claiming one address likewise.

A NetworkPolicy or ClusterNetworkPolicy annotated podwall.io/staged: "true" is staged: it is
not enforced, so the verdict ignores it; with staged policies present every answer also
carries "staged" ({"verdict","reason","policies"}: what the enforced policies plus the
staged ones would give, a staged object replacing the enforced one of its kind, namespace
and name), and the text output a "staged" line; --matrix prints the enforced table, then the
table with the staged policies.

The exit status is 0 whatever the verdicts, non-zero only for bad input.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.manifests, "manifests", "", "file or directory of Kubernetes YAML/JSON (Namespaces, Pods, Nodes, NetworkPolicies, Lists)")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file: judge the objects of that cluster instead of --manifests")
	f.StringVar(&o.from, "from", "", "source: ns/pod or an IP address")
	f.StringVar(&o.to, "to", "", "destination: ns/pod or an IP address")
	f.IntVar(&o.port, "port", 0, "destination port")
	f.StringVar(&o.protocol, "protocol", "TCP", "TCP, UDP, SCTP, ICMP or ICMPv6")
	f.StringVarP(&o.output, "output", "o", "text", "text or json")
	f.BoolVar(&o.batch, "batch", false, "read JSON-lines queries on stdin, write JSON-lines answers")
	f.BoolVar(&o.matrix, "matrix", false, "print the reachability table of all pod pairs")
	f.StringVar(&o.ports, "ports", "80/TCP", "with --matrix: comma-separated PORT/PROTOCOL list")
	return cmd
}

func (o *explainOpts) run(ctx context.Context, in io.Reader, out, errOut io.Writer) error {
	if o.output != "text" && o.output != "json" {
		return fmt.Errorf("--output: want text or json, got %q", o.output)
	}
	if err := validateSource(o.manifests, o.kubeconfig, false); err != nil {
		return err
	}
	if o.batch && o.matrix {
		return errors.New("--batch and --matrix exclude each other")
	}
	state, name, err := o.load(ctx)
	if err != nil {
		return err
	}
	snap, staged, err := explain.Compile(state)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	// Objects rejected alone are judged as the agent judges them (an invalid policy
	// fail-closed): a warning, not an error.
	for _, p := range snap.Problems() {
		fmt.Fprintln(errOut, "podwall explain: warning:", p.String())
	}
	for _, c := range snap.Conflicts() {
		fmt.Fprintln(errOut, "podwall explain: warning: address", c.String()+": judged with every claimant (deny unless all allow)")
	}
	for _, p := range snap.ClusterProblems() { // enforced fail-closed, or a priority tie
		fmt.Fprintln(errOut, "podwall explain: warning:", p)
	}
	switch {
	case o.batch:
		bad, err := explain.BatchStaged(snap, staged, in, out, func(msg string) { fmt.Fprintln(errOut, "podwall explain:", msg) })
		if err == nil && bad > 0 {
			err = fmt.Errorf("%d bad queries: %w", bad, errBadInput)
		}
		return err
	case o.matrix:
		ports, err := explain.ParsePorts(o.ports)
		if err != nil {
			return fmt.Errorf("--ports %w", err)
		}
		if o.output == "json" {
			return explain.MatrixJSONStaged(out, snap, staged, ports)
		}
		if err := explain.Matrix(out, snap, ports); err != nil || staged == nil {
			return err
		}
		fmt.Fprintln(out, "\nWith the staged policies (enforced plus staged):")
		return explain.Matrix(out, staged.Snap, ports)
	}
	q := explain.Query{From: o.from, To: o.to, Port: json.Number(strconv.Itoa(o.port)), Protocol: o.protocol}
	if o.from == "" || o.to == "" {
		return errors.New("--from and --to are required (or use --batch or --matrix)")
	}
	res := explain.JudgeStaged(snap, staged, q)
	if res.Error != "" {
		return errors.New(res.Error)
	}
	if o.output == "json" {
		return json.NewEncoder(out).Encode(res)
	}
	return writeText(out, res)
}

func writeText(w io.Writer, r explain.Answer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s (%s) -> %s (%s) %s: %s\n", r.From, r.Src, r.To, r.Dst, portText(r), strings.ToUpper(r.Verdict))
	fmt.Fprintf(tw, "  egress\t%s\t%s\n", r.Egress.Verdict, r.Egress.Reason)
	fmt.Fprintf(tw, "  ingress\t%s\t%s\n", r.Ingress.Verdict, r.Ingress.Reason)
	if r.Staged != nil {
		fmt.Fprintf(tw, "  staged\t%s\t%s", r.Staged.Verdict, r.Staged.Reason)
		if len(r.Staged.Policies) > 0 {
			fmt.Fprintf(tw, " (%s)", strings.Join(r.Staged.Policies, ", "))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func portText(r explain.Answer) string {
	p := strings.ToUpper(r.Protocol)
	if p == "" {
		p = "TCP"
	}
	if r.Port != "" && r.Port != "0" {
		return p + "/" + r.Port.String()
	}
	return p
}
