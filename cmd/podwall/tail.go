package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/podwall/podwall/policy/decisions"
)

type tailOpts struct {
	addr   string
	filter decisions.Filter
	output string
	color  string
	// stagedDiff keeps only decisions whose staged verdict differs from the verdict.
	stagedDiff bool
	// backoff is the first wait before reconnecting; it doubles up to maxBackoff and starts
	// over once a connection is made.
	backoff, maxBackoff time.Duration
}

func newTailCmd() *cobra.Command {
	o := tailOpts{backoff: 250 * time.Millisecond, maxBackoff: 5 * time.Second}
	cmd := &cobra.Command{
		Use:   "tail [--addr HOST:PORT] [--namespace NS] [--pod POD] [--verdict allow|deny] [--direction egress|ingress] [--policy POLICY]",
		Short: "Follow an agent's live decisions: every verdict with the policy that made it",
		Long: `tail follows the decision stream of a running agent (/debug/decisions on its debug
listener) and prints every verdict as it is given, with its reason and the policies that
made it.

On a terminal it prints aligned columns, denials red and allowed connections green;
otherwise, or with -o json, one JSON object per line exactly as the agent sends them (see
the README for the fields). When the agent goes away, tail reconnects, waiting longer each
time up to 5s. Ctrl-C ends it.

Filters (repeat a flag or separate values with commas for alternatives):
  --namespace NS     the source or destination pod is in NS
  --pod NAME|NS/NAME the source or destination pod
  --verdict V        allow or deny: this node's verdict
  --direction D      egress or ingress: this node judged that direction by policy
  --policy NAME|NS/NAME  the policy took part
  --staged-diff      only flows whose verdict staged policies would change

With staged policies (podwall.io/staged: "true") present, a decision whose verdict they
would change, or in which one took part, ends with a marker: "staged: DENY by POLICY (why)"
(the "staged" field of the JSON).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.addr, "addr", "127.0.0.1:9091", "the agent's debug listener: HOST:PORT or a URL")
	f.StringSliceVarP(&o.filter.Namespace, "namespace", "n", nil, "only decisions with a pod in this namespace")
	f.StringSliceVar(&o.filter.Pod, "pod", nil, "only decisions with this pod (name or namespace/name) at either end")
	f.StringVar(&o.filter.Verdict, "verdict", "", "only this verdict: allow or deny")
	f.StringVar(&o.filter.Direction, "direction", "", "only decisions where this node judged this direction by policy: egress or ingress")
	f.StringSliceVar(&o.filter.Policy, "policy", nil, "only decisions this policy (name or namespace/name) took part in")
	f.StringVarP(&o.output, "output", "o", "", "text or json (default: text on a terminal, json otherwise)")
	f.StringVar(&o.color, "color", "auto", "auto (on a terminal, unless NO_COLOR is set), always or never")
	f.BoolVar(&o.stagedDiff, "staged-diff", false, "only decisions whose verdict the staged policies would change")
	return cmd
}

func (o *tailOpts) run(ctx context.Context, out, errOut io.Writer) error {
	var errs []error
	if o.output != "" && o.output != "text" && o.output != "json" {
		errs = append(errs, fmt.Errorf("--output: want text or json, got %q", o.output))
	}
	if o.color != "auto" && o.color != "always" && o.color != "never" {
		errs = append(errs, fmt.Errorf("--color: want auto, always or never, got %q", o.color))
	}
	filter, err := decisions.ParseFilter(o.filter.Values())
	if err != nil {
		errs = append(errs, err)
	}
	u, err := decisions.StreamURL(o.addr, filter)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	tty := isTerminal(out)
	p := &printer{w: bufio.NewWriter(out), json: o.output == "json" || (o.output == "" && !tty), stagedDiff: o.stagedDiff,
		color: o.color == "always" || (o.color == "auto" && tty && os.Getenv("NO_COLOR") == "")}
	return decisions.Follow(ctx, decisions.FollowConfig{
		URL: u, Line: p.line, Flush: p.w.Flush, Backoff: o.backoff, MaxBackoff: o.maxBackoff,
		Log: func(msg string) { fmt.Fprintln(errOut, "podwall tail:", msg) },
	})
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// printer writes stream lines as they are (json) or as aligned, coloured columns.
type printer struct {
	w     *bufio.Writer
	json  bool
	color bool
	// stagedDiff: print only the decisions whose staged verdict differs from the verdict
	// (lost-decision reports still print).
	stagedDiff bool
	// widths of the padded columns so far: protocol, source, destination, policies. They only
	// grow, so columns stay aligned as long as the values are no wider than seen before.
	widths [4]int
}

const (
	red    = "\x1b[31m"
	green  = "\x1b[32m"
	yellow = "\x1b[33m"
	bold   = "\x1b[1m"
	reset  = "\x1b[0m"
)

// maxWidth caps a column's padding; longer values push the rest of their line right.
const maxWidth = 48

func (p *printer) line(b []byte) error {
	if p.stagedDiff {
		var e decisions.Event
		if err := json.Unmarshal(b, &e); err != nil {
			return fmt.Errorf("the agent sent a line that is not JSON: %w", err)
		}
		if e.Type == decisions.TypeDecision && (e.Staged == nil || e.Staged.Verdict == e.Verdict) {
			return nil
		}
	}
	if p.json {
		b = bytes.TrimRight(b, "\r\n")
		p.w.Write(b)
		return p.w.WriteByte('\n')
	}
	var e decisions.Event
	if err := json.Unmarshal(b, &e); err != nil {
		return fmt.Errorf("the agent sent a line that is not JSON: %w", err)
	}
	switch e.Type {
	case decisions.TypeDecision:
		p.decision(&e)
	case decisions.TypeDropped:
		p.paint(yellow, fmt.Sprintf("… %d decisions lost: this reader was too slow for the agent", e.Count))
		p.w.WriteByte('\n')
	}
	return nil
}

func (p *printer) decision(e *decisions.Event) {
	proto := e.Protocol
	if e.DstPort != 0 {
		proto += "/" + strconv.Itoa(int(e.DstPort))
	}
	pols := strings.Join(e.Policies, ",")
	if pols == "" {
		pols = "-"
	}
	colour := green
	if e.Verdict != "allow" {
		colour = red
	}
	p.w.WriteString(e.Time.Local().Format("15:04:05.000"))
	p.w.WriteString("  ")
	p.paint(bold+colour, fmt.Sprintf("%-5s", strings.ToUpper(e.Verdict)))
	p.w.WriteString("  ")
	p.pad(0, proto, "")
	p.pad(1, or(e.SrcPod, e.Src), "")
	p.w.WriteString("→ ")
	p.pad(2, or(e.DstPod, e.Dst), "")
	p.pad(3, pols, colour)
	p.w.WriteString(e.Reason)
	if e.CacheHit {
		p.w.WriteString(" (cached)")
	}
	if e.KernelDenyTTLms > 0 {
		p.w.WriteString(" (repeats dropped by the kernel for " + (time.Duration(e.KernelDenyTTLms) * time.Millisecond).String() + ")")
	}
	if e.KernelAllowTTLms > 0 {
		p.w.WriteString(" (new connections accepted by the kernel for " + (time.Duration(e.KernelAllowTTLms) * time.Millisecond).String() + ")")
	}
	if st := e.Staged; st != nil {
		marker := "  staged: " + strings.ToUpper(st.Verdict)
		if len(st.Policies) > 0 {
			marker += " by " + strings.Join(st.Policies, ",")
		}
		marker += " (" + st.Reason + ")"
		colour := ""
		if st.Verdict != e.Verdict {
			colour = bold + yellow
		}
		p.paint(colour, marker)
	}
	p.w.WriteByte('\n')
}

// pad writes s, in colour when set, padded to its column's width plus two spaces.
func (p *printer) pad(col int, s, colour string) {
	if n := len([]rune(s)); n > p.widths[col] && n <= maxWidth {
		p.widths[col] = n
	}
	p.paint(colour, s)
	p.w.WriteString(strings.Repeat(" ", max(p.widths[col]-len([]rune(s)), 0)+2))
}

func (p *printer) paint(colour, s string) {
	if p.color && colour != "" {
		p.w.WriteString(colour + s + reset)
		return
	}
	p.w.WriteString(s)
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
