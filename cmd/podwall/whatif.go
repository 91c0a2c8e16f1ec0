package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/kube"
	"github.com/podwall/podwall/policy/manifests"
	"github.com/podwall/podwall/policy/whatif"
)

// exitNewlyDenied is what-if's exit status when the change would deny a recorded flow.
const exitNewlyDenied = 3

type whatifOpts struct {
	proposed   string
	deletes    []string
	addrs      []string
	kubeconfig string
	flows      []string
	manifests  string
	output     string

	agentNamespace, agentSelector string
	agentPort                     int
}

func newWhatifCmd() *cobra.Command {
	var o whatifOpts
	cmd := &cobra.Command{
		Use:   "what-if --proposed PATH [--delete KIND/NS/NAME ...] (--addr HOST:PORT ... | --kubeconfig FILE | --flows FILE) [--manifests PATH] [-o json]",
		Short: "Show which recorded flows a policy change would deny or allow",
		Long: `what-if applies a proposed change on top of the policy in force and re-judges the flows the
agents have recorded: it lists every flow whose verdict would change, newly denied first,
grouped by the policies responsible, with connection counts and the new reason.

The change: --proposed PATH (a file or directory of Kubernetes YAML/JSON, as --manifests: an
object of the same kind and name as one in force replaces it, others are added) and
--delete KIND/NS/NAME (NetworkPolicy, Pod) or KIND/NAME (Namespace, Node), repeatable.

The flows, from exactly one of: --addr HOST:PORT (an agent's debug listener, its
/debug/flows; repeat for several agents), --kubeconfig FILE (every agent pod of the
DaemonSet, through the API server's pod proxy: needs "list" on pods and "get" on
pods/proxy in --agent-namespace, and the agents' debug listener on their pod address; for
the policy in force "list" on pods, namespaces, nodes, networkpolicies and
clusternetworkpolicies; see deploy/examples/whatif), or --flows FILE (a flow log, /debug/flows output or podwall tail -o
json output; - for stdin; repeat for the rotated files of a flow log).

The policy in force: --manifests PATH; else the agents' /debug/state (--addr), or the
cluster's objects (--kubeconfig). --flows needs --manifests.

The agents judge, and so record, only the connections of isolated pods (NetworkPolicy does
not apply to the others). A change that isolates a pod nothing isolated before may deny
connections of it that no agent recorded: what-if names such pods after the changes.

Exit status: 0 when no recorded flow would be newly denied, 3 when some would (a pipeline can
gate a change on it), 1 for bad input or an unreachable source.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.proposed, "proposed", "", "file or directory of proposed objects (NetworkPolicies, ClusterNetworkPolicies, Pods, Namespaces, Nodes)")
	f.StringArrayVar(&o.deletes, "delete", nil, "an object the change deletes: KIND/NS/NAME or KIND/NAME (repeatable)")
	f.StringArrayVar(&o.addrs, "addr", nil, "an agent's debug listener, HOST:PORT or URL (repeatable)")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file: flows of every agent pod through the API server, and the cluster's objects")
	f.StringArrayVar(&o.flows, "flows", nil, "flow log, /debug/flows or podwall tail -o json output (- for stdin; repeatable)")
	f.StringVar(&o.manifests, "manifests", "", "the policy in force from files instead of the agents or the cluster")
	f.StringVarP(&o.output, "output", "o", "text", "text or json (one line per changed flow)")
	f.StringVar(&o.agentNamespace, "agent-namespace", "podwall-system", "with --kubeconfig: the agents' namespace")
	f.StringVar(&o.agentSelector, "agent-selector", "app.kubernetes.io/name=podwall", "with --kubeconfig: the agent pods' label selector")
	f.IntVar(&o.agentPort, "agent-port", 9091, "with --kubeconfig: the agents' debug listener port")
	return cmd
}

func (o *whatifOpts) validate() ([]whatif.Ref, error) {
	var errs []error
	if o.output != "text" && o.output != "json" {
		errs = append(errs, fmt.Errorf("--output: want text or json, got %q", o.output))
	}
	if o.proposed == "" && len(o.deletes) == 0 {
		errs = append(errs, errors.New("no change: give --proposed PATH and/or --delete KIND/NS/NAME"))
	}
	sources := 0
	for _, set := range []bool{len(o.addrs) > 0, o.kubeconfig != "", len(o.flows) > 0} {
		if set {
			sources++
		}
	}
	switch {
	case sources != 1:
		errs = append(errs, errors.New("give exactly one flow source: --addr, --kubeconfig or --flows"))
	case len(o.flows) > 0 && o.manifests == "":
		errs = append(errs, errors.New("--flows needs --manifests: the policy in force"))
	}
	var refs []whatif.Ref
	for _, d := range o.deletes {
		r, err := whatif.ParseRef(d)
		if err != nil {
			errs = append(errs, fmt.Errorf("--delete %w", err))
		}
		refs = append(refs, r)
	}
	return refs, errors.Join(errs...)
}

func (o *whatifOpts) run(ctx context.Context, stdin io.Reader, out, errOut io.Writer) error {
	deletes, err := o.validate()
	if err != nil {
		return err
	}
	var proposed policy.State
	if o.proposed != "" {
		if proposed, err = manifests.Load(o.proposed); err != nil {
			return fmt.Errorf("--proposed: %w", err)
		}
		// An object the agent would reject alone is refused here: the answer would describe
		// a change nobody can apply as written.
		var errs []error
		for _, p := range proposed.Problems {
			errs = append(errs, errors.New(p.String()))
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("--proposed: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var fs whatif.Flows
	var cur policy.State
	if o.manifests != "" {
		if cur, err = manifests.Load(o.manifests); err != nil {
			return fmt.Errorf("--manifests: %w", err)
		}
	}
	switch {
	case len(o.flows) > 0:
		err = o.readFlowsFiles(stdin, &fs)
	case len(o.addrs) > 0:
		err = o.fromAgents(ctx, &fs, &cur)
	default:
		err = o.fromCluster(ctx, &fs, &cur)
	}
	if err != nil {
		return err
	}
	next, err := whatif.Apply(cur, proposed, deletes)
	if err != nil {
		return err
	}
	// Staged policies (podwall.io/staged) are not in force, before or after the change: a
	// proposal that removes the annotation promotes one, and is judged as enforcing it.
	curEnforced, _, _ := policy.Staged(cur)
	nextEnforced, _, _ := policy.Staged(next)
	before, err := policy.Compile(curEnforced)
	if err != nil {
		return fmt.Errorf("the policy in force: %w", err)
	}
	after, err := policy.Compile(nextEnforced)
	if err != nil {
		return fmt.Errorf("the policy with the change: %w", err)
	}
	recorded := fs.List()
	changes := whatif.Judge(before, after, recorded)
	isolated := whatif.NewlyIsolated(before, after)
	if o.output == "json" {
		err = whatif.WriteJSON(out, changes)
		for _, iso := range isolated {
			fmt.Fprintf(errOut, "podwall what-if: %s becomes isolated for %s (by %s): its connections were recorded only where the other end was isolated; the change may deny others\n",
				iso.Pod, iso.Direction, strings.Join(iso.Policies, ", "))
		}
	} else {
		err = whatif.WriteText(out, changes, len(recorded), isolated)
	}
	if err != nil {
		return err
	}
	for _, c := range changes {
		if c.Kind == whatif.NewlyDenied {
			return exitStatus(exitNewlyDenied)
		}
	}
	return nil
}

func (o *whatifOpts) readFlowsFiles(stdin io.Reader, fs *whatif.Flows) error {
	for _, name := range o.flows {
		if name == "-" {
			if err := fs.Read(stdin, "stdin"); err != nil {
				return err
			}
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("--flows: %w", err)
		}
		err = fs.Read(f, name)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// fromAgents reads each agent's /debug/flows and, without --manifests, its /debug/state: the
// objects of all agents, an object named by several taken once.
func (o *whatifOpts) fromAgents(ctx context.Context, fs *whatif.Flows, cur *policy.State) error {
	var states []policy.State
	for _, addr := range o.addrs {
		base, err := agentURL(addr)
		if err != nil {
			return err
		}
		body, err := get(ctx, base+"/debug/flows")
		if err != nil {
			return err
		}
		if err := fs.Read(bytes.NewReader(body), base+"/debug/flows"); err != nil {
			return err
		}
		if o.manifests != "" {
			continue
		}
		body, err = get(ctx, base+"/debug/state")
		if err != nil {
			return err
		}
		s, err := manifests.Parse(base+"/debug/state", body)
		if err != nil {
			return err
		}
		states = append(states, s)
	}
	if o.manifests == "" {
		*cur = whatif.Union(states...)
	}
	return nil
}

func agentURL(addr string) (string, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("--addr %q: want HOST:PORT or an http(s) URL", addr)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

func get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// fromCluster reads the /debug/flows of every agent pod through the API server's pod proxy
// and, without --manifests, the cluster's objects (as podwall explain --kubeconfig).
func (o *whatifOpts) fromCluster(ctx context.Context, fs *whatif.Flows, cur *policy.State) error {
	cfg, err := kube.Config(o.kubeconfig, "podwall/"+version)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	pods, err := cs.CoreV1().Pods(o.agentNamespace).List(ctx, metav1.ListOptions{LabelSelector: o.agentSelector})
	if err != nil {
		return fmt.Errorf("listing the agent pods (%s in %s): %w", o.agentSelector, o.agentNamespace, err)
	}
	n := 0
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase != corev1.PodRunning {
			continue
		}
		name := fmt.Sprintf("pod %s/%s (node %s) /debug/flows", p.Namespace, p.Name, p.Spec.NodeName)
		body, err := cs.CoreV1().Pods(p.Namespace).ProxyGet("http", p.Name, strconv.Itoa(o.agentPort), "/debug/flows", nil).DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("%s through the API server: %w", name, err)
		}
		if err := fs.Read(bytes.NewReader(body), name); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("no running agent pod (%s in namespace %s)", o.agentSelector, o.agentNamespace)
	}
	if o.manifests == "" {
		if *cur, err = kube.List(ctx, cfg); err != nil {
			return fmt.Errorf("cluster of %s: %w", o.kubeconfig, err)
		}
	}
	return nil
}
