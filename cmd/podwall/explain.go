package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/explain"
	"github.com/podwall/podwall/policy/flow"
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
	snap, err := policy.Compile(state)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	switch {
	case o.batch:
		return explainBatch(snap, in, out, errOut)
	case o.matrix:
		return o.explainMatrix(snap, out)
	}
	q := explain.Query{From: o.from, To: o.to, Port: json.Number(strconv.Itoa(o.port)), Protocol: o.protocol}
	if o.from == "" || o.to == "" {
		return errors.New("--from and --to are required (or use --batch or --matrix)")
	}
	res := explain.Judge(snap, q)
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

// explainBatch answers JSON-lines queries. It flushes whenever it has consumed all input
// available so far, so it serves a pipeline as well as a line-by-line coprocess.
func explainBatch(snap *policy.Snapshot, in io.Reader, out, errOut io.Writer) error {
	rd := bufio.NewReaderSize(in, 1<<16)
	w := bufio.NewWriterSize(out, 1<<16)
	enc := json.NewEncoder(w)
	bad := 0
	for lineNo := 1; ; lineNo++ {
		line, err := rd.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			var q explain.Query
			dec := json.NewDecoder(bytes.NewReader(line))
			dec.UseNumber()
			var r explain.Answer
			if derr := dec.Decode(&q); derr != nil {
				r = explain.Answer{Error: fmt.Sprintf("line %d: %v", lineNo, derr)}
			} else {
				r = explain.Judge(snap, q)
				if r.Error != "" {
					r.Error = fmt.Sprintf("line %d: %s", lineNo, r.Error)
				}
			}
			if r.Error != "" {
				bad++
				fmt.Fprintln(errOut, "podwall explain:", r.Error)
			}
			if eerr := enc.Encode(r); eerr != nil {
				return eerr
			}
		}
		if rd.Buffered() == 0 || err != nil {
			if ferr := w.Flush(); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d bad queries: %w", bad, errBadInput)
	}
	return nil
}

type portProto struct {
	port  int
	proto string
}

func parsePorts(s string) ([]portProto, error) {
	var out []portProto
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		num, proto, ok := strings.Cut(item, "/")
		if !ok {
			proto = "TCP"
		}
		p, err := flow.ParseProto(proto)
		if err != nil {
			return nil, fmt.Errorf("--ports %q: %w", item, err)
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 0 || n > 65535 || (p.HasPorts() && n == 0) {
			return nil, fmt.Errorf("--ports %q: bad port number", item)
		}
		out = append(out, portProto{n, p.String()})
	}
	if len(out) == 0 {
		return nil, errors.New("--ports: empty list")
	}
	return out, nil
}

// explainMatrix prints, per port, the reachability of every pod pair on their primary
// addresses: rows are sources, columns destinations, "." allowed, "X" denied — the layout
// of the upstream e2e truth tables.
func (o *explainOpts) explainMatrix(snap *policy.Snapshot, out io.Writer) error {
	ports, err := parsePorts(o.ports)
	if err != nil {
		return err
	}
	var pods []*policy.Pod
	for _, p := range snap.Pods() {
		if len(p.IPs) > 0 && !p.HostNetwork && !p.Terminated() {
			pods = append(pods, p)
		}
	}
	w := bufio.NewWriter(out)
	defer w.Flush()
	if o.output == "json" {
		enc := json.NewEncoder(w)
		for _, pp := range ports {
			for _, a := range pods {
				for _, b := range pods {
					if a.IPs[0].Is4() != b.IPs[0].Is4() {
						continue
					}
					r := explain.Judge(snap, explain.Query{From: a.Key(), To: b.Key(), Port: json.Number(strconv.Itoa(pp.port)), Protocol: pp.proto})
					if err := enc.Encode(r); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	for i, pp := range ports {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s/%d  (rows: from, columns: to; . allow, X deny)\n", pp.proto, pp.port)
		tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
		fmt.Fprint(tw, "-")
		for _, b := range pods {
			fmt.Fprint(tw, "\t"+b.Key())
		}
		fmt.Fprintln(tw)
		denied := 0
		for _, a := range pods {
			fmt.Fprint(tw, a.Key())
			for _, b := range pods {
				cell := "."
				if a.IPs[0].Is4() != b.IPs[0].Is4() {
					cell = "-"
				} else {
					proto, _ := flow.ParseProto(pp.proto)
					f := flow.Flow{Src: a.IPs[0], Dst: b.IPs[0], Proto: proto}
					if proto.HasPorts() {
						f.Port = uint16(pp.port)
					}
					if snap.Decide(f).Verdict == policy.Deny {
						cell = "X"
						denied++
					}
				}
				fmt.Fprint(tw, "\t"+cell)
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
		fmt.Fprintf(w, "%d of %d pairs denied\n", denied, len(pods)*len(pods))
	}
	return nil
}
