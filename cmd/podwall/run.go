package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/podwall/podwall/cmd/podwall/agent"
	"github.com/podwall/podwall/conntrack"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/policy/flows"
)

type runOpts struct {
	manifests     string
	kubeconfig    string
	nodeName      string
	queues        int
	queueNum      int
	failOpen      bool
	cacheSize     int
	metricsAddr   string
	debugAddr     string
	podInterfaces string
	logFormat     string

	keepEstablished bool
	revokeMark      string
	denyCacheTTL    time.Duration
	allowCacheTTL   time.Duration
	memoryLimit     string
	podCIDRs        []string
	holdTimeout     time.Duration
	flowHistory     int
	flowLog         string
	flowLogInterval time.Duration
	flowLogMaxSize  string
	flowLogMaxFiles int
}

// defaultPodInterfaces are the name prefixes of the pod interfaces of the common CNI
// plugins: veth (bridge, ptp, Docker), cali (Calico), lxc (Cilium), eni (AWS VPC CNI), azv
// (Azure CNI), gke (GKE), and the bridges cni (cni0: flannel, the bridge plugin) and cbr
// (cbr0: kubenet), on which a routed packet arrives from the bridge rather than the pod's
// veth.
const defaultPodInterfaces = "veth,cali,lxc,eni,azv,gke,cni,cbr"

func newRunCmd() *cobra.Command {
	var o runOpts
	cmd := &cobra.Command{
		Use:   "run [--kubeconfig FILE | --manifests PATH] [--node-name NODE]",
		Short: "Enforce NetworkPolicy for the pods of this node (the agent)",
		Long: `run enforces NetworkPolicy in the network namespace it runs in, for the pods whose
spec.nodeName is --node-name. Sources: the Kubernetes API (--kubeconfig, or in a pod the
in-cluster config), or --manifests (a file or directory, reloaded on change).

Failure policy (--fail-open, default false = fail closed): when podwall cannot judge a packet
of an isolated pod — a full queue, the agent stopped — the packet is dropped; with
--fail-open it is accepted (a full queue then lets the excess through unjudged). A packet
whose ports cannot be read is dropped either way: the failure policy is about the agent's
availability, not something a packet's bytes can choose. On exit the kernel table stays in place when failing
closed (isolated pods stay protected while the agent restarts) and is removed when failing open.

Established connections that a policy change denies are revoked: their conntrack entries get
the --revoke-mark bit of the connection mark, and the kernel drops every packet of a marked
connection, whichever side sends it (--keep-established keeps them).

A flow just denied (source, destination, protocol, destination port) is dropped by the kernel
for --deny-cache-ttl without asking the agent again, so retried SYNs and repeated datagrams
cost no round trip to userspace; every policy change empties that cache first.

--allow-cache-ttl (off by default) does the same for allowed flows: once the agent has allowed
a flow (source, destination, protocol, destination port) a second time, the kernel accepts its
new connections for that long without asking the agent; every policy change empties it first. New connections then cost the kernel alone, but
those it accepts are not in the decision stream, the verdict metrics or the flow history
(podwall_datapath_allow_cache_hits_total counts their packets; the decision that filled the
cache says so).

A pod is judged from its first packet: a new connection from or to an address of this node's
pod ranges (the Node's spec.podCIDRs, plus --pod-cidr) that no local pod known to the agent
has — a pod whose address the agent has not learnt yet, or an address no pod was given — is
held until the agent knows the pod, then judged; after --hold-timeout the failure policy
decides. Anti-spoofing covers the interfaces named by --pod-interfaces; the agent warns
(podwall_datapath_pod_interfaces_uncovered) about any interface a local pod routes through
that it does not cover.

The agent keeps the --flow-history most recently judged distinct flows (source, destination,
protocol, destination port) at /debug/flows, the input of podwall what-if. --flow-log PATH
writes them as NDJSON, one line per flow per --flow-log-interval, for log shippers, rotated
past --flow-log-max-size keeping --flow-log-max-files files (PATH.1 is the newest); a slow
disk loses lines (podwall_flows_log_lost_total), never slows the datapath.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd.Context()) },
	}
	f := cmd.Flags()
	o.addSourceFlags(f)
	f.StringVar(&o.nodeName, "node-name", "", "this node's name (default $NODE_NAME, then the hostname)")
	f.IntVar(&o.queues, "queues", min(runtime.NumCPU(), maxQueues),
		fmt.Sprintf("number of NFQUEUE queues, 1-%d (one reader each, fanout by CPU; default one per CPU)", maxQueues))
	f.IntVar(&o.queueNum, "queue-num", 100, "first NFQUEUE number")
	f.BoolVar(&o.failOpen, "fail-open", false, "accept instead of drop what cannot be judged (see above)")
	f.IntVar(&o.cacheSize, "cache-size", 65536, "flows in the verdict cache")
	f.StringVar(&o.metricsAddr, "metrics-addr", ":9090", "listen address for /metrics, /healthz, /readyz")
	f.StringVar(&o.debugAddr, "debug-addr", "127.0.0.1:9091", "listen address for /debug/ (empty: off)")
	f.StringVar(&o.podInterfaces, "pod-interfaces", defaultPodInterfaces, "comma-separated name prefixes of pod interfaces, for anti-spoofing")
	f.StringVar(&o.logFormat, "log-format", "text", "text or json")
	f.BoolVar(&o.keepEstablished, "keep-established", false,
		"keep established connections that a policy change denies (default: revoke them by marking their conntrack entries)")
	f.StringVar(&o.revokeMark, "revoke-mark", fmt.Sprintf("%#x", conntrack.DefaultMark),
		"bit of the conntrack connection mark that flags a revoked connection (pick another if the CNI uses it)")
	f.DurationVar(&o.denyCacheTTL, "deny-cache-ttl", 2*time.Second,
		"how long the kernel drops new packets of a flow just denied, without queueing them (0: off; at most 1m)")
	f.DurationVar(&o.allowCacheTTL, "allow-cache-ttl", 0,
		"how long the kernel accepts new connections of a flow just allowed, without queueing them (0: off, the default; at most 1m; see above)")
	f.StringVar(&o.memoryLimit, "memory-limit", os.Getenv(memoryLimitEnv),
		"the container's memory limit (bytes or a quantity such as 512Mi; default $"+memoryLimitEnv+"): Go's soft memory limit becomes 90 % of it, unless GOMEMLIMIT is set")
	f.StringSliceVar(&o.podCIDRs, "pod-cidr", nil,
		"this node's pod range (repeatable, or comma-separated), added to its Node's spec.podCIDRs; needed in --manifests mode without a Node object")
	f.DurationVar(&o.holdTimeout, "hold-timeout", datapath.DefaultHoldTimeout,
		"how long a new connection of a pod the agent does not know yet waits for it before the failure policy decides (at most 1m)")
	f.IntVar(&o.flowHistory, "flow-history", flows.DefaultSize, "distinct flows /debug/flows keeps (least recently seen evicted)")
	f.StringVar(&o.flowLog, "flow-log", "", "write the flow log (NDJSON) to this file (empty: off)")
	f.DurationVar(&o.flowLogInterval, "flow-log-interval", flows.DefaultInterval, "flow log interval: one line per flow judged in it")
	f.StringVar(&o.flowLogMaxSize, "flow-log-max-size", "100Mi", "rotate the flow log past this size (a quantity: 100Mi, 1G)")
	f.IntVar(&o.flowLogMaxFiles, "flow-log-max-files", 5, "rotated flow log files kept")
	return cmd
}

// maxQueues bounds --queues: one reader per CPU is the most that helps (SPEC §3), and a node
// with more CPUs than this still starts with the default.
const maxQueues = 64

func (o *runOpts) validate() error {
	var errs []error
	errs = append(errs, o.validateSource())
	if o.queues < 1 || o.queues > maxQueues {
		errs = append(errs, fmt.Errorf("--queues: want 1-%d, got %d", maxQueues, o.queues))
	}
	if o.queueNum < 0 || o.queueNum+o.queues > 65535 {
		errs = append(errs, fmt.Errorf("--queue-num: %d+%d queues exceed 65535", o.queueNum, o.queues))
	}
	if o.cacheSize < 1 {
		errs = append(errs, fmt.Errorf("--cache-size: want at least 1, got %d", o.cacheSize))
	}
	if _, err := o.parsePodCIDRs(); err != nil {
		errs = append(errs, err)
	}
	if o.holdTimeout < 0 || o.holdTimeout > agent.MaxHoldTimeout {
		errs = append(errs, fmt.Errorf("--hold-timeout: want at most %v (0: the default), got %v", agent.MaxHoldTimeout, o.holdTimeout))
	}
	if o.flowHistory < 1 {
		errs = append(errs, fmt.Errorf("--flow-history: want at least 1, got %d", o.flowHistory))
	}
	if _, err := o.maxFlowLogSize(); err != nil {
		errs = append(errs, err)
	}
	if o.flowLogInterval <= 0 {
		errs = append(errs, fmt.Errorf("--flow-log-interval: want > 0, got %v", o.flowLogInterval))
	}
	if o.flowLogMaxFiles < 0 {
		errs = append(errs, fmt.Errorf("--flow-log-max-files: want ≥ 0, got %d", o.flowLogMaxFiles))
	}
	if _, err := o.mark(); err != nil {
		errs = append(errs, err)
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format: want text or json, got %q", o.logFormat))
	}
	return errors.Join(errs...)
}

// parsePodCIDRs parses --pod-cidr.
func (o *runOpts) parsePodCIDRs() ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, c := range o.podCIDRs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil || p.Addr().Is4In6() {
			errs = append(errs, fmt.Errorf("--pod-cidr %q: want a CIDR such as 10.244.1.0/24 or fd00:10:244:1::/64", c))
			continue
		}
		out = append(out, p.Masked())
	}
	return out, errors.Join(errs...)
}

func (o *runOpts) maxFlowLogSize() (int64, error) {
	q, err := resource.ParseQuantity(o.flowLogMaxSize)
	if err != nil || q.Value() < 4096 {
		return 0, fmt.Errorf("--flow-log-max-size: want a size of at least 4Ki (100Mi, 1G), got %q", o.flowLogMaxSize)
	}
	return q.Value(), nil
}

// mark returns --revoke-mark: one bit, in any base strconv reads (0x10000000); empty is
// conntrack.DefaultMark.
func (o *runOpts) mark() (uint32, error) {
	if o.revokeMark == "" {
		return conntrack.DefaultMark, nil
	}
	m, err := strconv.ParseUint(o.revokeMark, 0, 32)
	if err != nil || bits.OnesCount64(m) != 1 {
		return 0, fmt.Errorf("--revoke-mark: want one bit of the 32-bit connection mark (e.g. 0x10000000), got %q", o.revokeMark)
	}
	return uint32(m), nil
}

func nodeName(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if n := os.Getenv("NODE_NAME"); n != "" {
		return n, nil
	}
	return os.Hostname()
}

func (o *runOpts) run(ctx context.Context) error {
	if err := o.validate(); err != nil {
		return err
	}
	node, err := nodeName(o.nodeName)
	if err != nil {
		return fmt.Errorf("--node-name: %w", err)
	}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, nil)
	if o.logFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, nil)
	}
	log := slog.New(h)
	if soft, err := setMemoryLimit(o.memoryLimit); err != nil {
		return err
	} else if soft > 0 {
		log.Info("Go soft memory limit set", "bytes", soft, "of", o.memoryLimit)
	}
	mark, _ := o.mark() // validated
	source, err := o.newSource(node, log)
	if err != nil {
		return err
	}
	podCIDRs, _ := o.parsePodCIDRs() // validated
	maxSize, _ := o.maxFlowLogSize() // validated
	a, err := agent.New(agent.Config{
		Node: node, Source: source, QueueNum: uint16(o.queueNum), Queues: uint16(o.queues),
		FailOpen: o.failOpen, CacheSize: o.cacheSize, MetricsAddr: o.metricsAddr, DebugAddr: o.debugAddr,
		PodInterfaces: splitList(o.podInterfaces), KeepEstablished: o.keepEstablished,
		DenyCacheTTL: o.denyCacheTTL, AllowCacheTTL: o.allowCacheTTL, PodCIDRs: podCIDRs, HoldTimeout: o.holdTimeout,
		RevokeMark: mark, Log: log,
		FlowHistory: o.flowHistory, FlowLog: o.flowLog, FlowLogInterval: o.flowLogInterval,
		FlowLogMaxSize: maxSize, FlowLogMaxFiles: o.flowLogMaxFiles,
	})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}
