package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"

	"github.com/podwall/podwall/conntrack"
	"github.com/podwall/podwall/datapath/nft"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
)

// The new-pod window (datapath/doc.go): the kernel queues a new connection from or to an
// address of this node's pod ranges that no local pod of the policy in force has, and the
// datapath holds it until a policy that knows the address is in force — in the forward hook
// always, at the node's input and output hooks (a pod and its own node) while a
// ClusterNetworkPolicy could deny that traffic. The agent supplies
// both halves: the window's sets (the local pods' addresses, the pod ranges) with every
// sync, and the Waiter the readers ask. It also checks that every local pod's interface is
// one the anti-spoofing rules cover (--pod-interfaces), and warns when one is not.

// Unknown implements datapath.Waiter: whether the policy of generation gen has no pod with
// an address of f that lies in this node's pod ranges. It allocates nothing.
func (p *inForce) Unknown(f flow.Flow, gen uint64) bool {
	rs := p.ranges.Load()
	if rs == nil || len(*rs) == 0 {
		return false
	}
	s := p.of(gen)
	return unknownIn(*rs, s, f.Src) || unknownIn(*rs, s, f.Dst)
}

func unknownIn(ranges []netip.Prefix, s *policy.Snapshot, a netip.Addr) bool {
	for _, r := range ranges {
		if r.Contains(a) {
			return s.PodByIP(a) == nil
		}
	}
	return false
}

// podRanges returns this node's pod ranges: the configured ones and those of the Node
// object named Config.Node in s, each once, sorted.
func (a *Agent) podRanges(s policy.State) []netip.Prefix {
	out := slices.Clone(a.cfg.PodCIDRs)
	for _, n := range s.Nodes {
		if n.Name == a.cfg.Node {
			out = append(out, n.PodCIDRs...)
		}
	}
	for i, p := range out {
		out[i] = p.Masked()
	}
	slices.SortFunc(out, func(x, y netip.Prefix) int {
		if c := x.Addr().Compare(y.Addr()); c != 0 {
			return c
		}
		return x.Bits() - y.Bits()
	})
	return slices.Compact(out)
}

// localAddrs returns the addresses of the live local pods of s: what the window's local
// sets hold. Sorted.
func localAddrs(s *policy.Snapshot) []netip.Addr {
	var out []netip.Addr
	for _, p := range s.Pods() {
		if p.Node != s.Node() || p.HostNetwork || p.Terminated() {
			continue
		}
		for _, ip := range p.IPs {
			if s.PodByIP(ip) == p {
				out = append(out, ip)
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// window returns what the window's sets hold for snapshot s with pod ranges ranges.
func window(s *policy.Snapshot, ranges []netip.Prefix) nft.Window {
	// The own-node sets go in the same transaction: the input and output hooks queue the
	// traffic between these pods and their own node (policy.Snapshot.LocalNodeJudged).
	in, eg := s.LocalNodeJudged()
	w := nft.Window{Local: localAddrs(s), PodRanges: ranges, NodeIngress: in, NodeEgress: eg}
	// And the new-pod window at those hooks, in the directions where a policy could deny
	// an unknown pod's traffic with its node (policy.Snapshot.NodeWindow): with none, a pod
	// and its node always talk freely, and a new pod's packets to its node (a DNS query to
	// a node-local cache) or the kubelet's probes of it are never held.
	hin, heg := s.NodeWindow()
	if hin {
		w.NodeIngressRanges = ranges
	}
	if heg {
		w.NodeEgressRanges = ranges
	}
	return w
}

// coverage checks that every local pod's interface is a pod interface of Config.PodInterfaces
// (the anti-spoofing rules cover only those): for each local pod address it asks the
// kernel which interface the address routes through (a route lookup in the agent's network
// namespace: the node's), and warns once about each interface whose name matches no prefix,
// naming it and its pods. It runs after each policy that changes the local pods and after
// each link change.
type coverage struct {
	prefixes []string
	log      *slog.Logger
	poke     chan struct{}
	local    atomic.Pointer[[]localPod]

	mu        sync.Mutex
	uncovered map[string][]string // interface → "namespace/name" of its pods, last check
	gauge     prometheus.Gauge
}

// localPod is a local pod address and whose it is.
type localPod struct {
	addr netip.Addr
	pod  string
}

func newCoverage(prefixes []string, log *slog.Logger) *coverage {
	return &coverage{prefixes: prefixes, log: log, poke: make(chan struct{}, 1),
		gauge: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "podwall", Subsystem: "datapath",
			Name: "pod_interfaces_uncovered",
			Help: "Interfaces a local pod's address routes through whose name matches no --pod-interfaces prefix (not checked for spoofing; each named in a warning)."})}
}

// update records the local pods of s and asks for a check when they changed.
func (c *coverage) update(s *policy.Snapshot) {
	var pods []localPod
	for _, p := range s.Pods() {
		if p.Node != s.Node() || p.HostNetwork || p.Terminated() {
			continue
		}
		for _, ip := range p.IPs {
			pods = append(pods, localPod{ip, p.Key()})
		}
	}
	if old := c.local.Load(); old != nil && slices.Equal(*old, pods) {
		return
	}
	c.local.Store(&pods)
	c.check()
}

// check asks run for a check, without waiting.
func (c *coverage) check() {
	select {
	case c.poke <- struct{}{}:
	default:
	}
}

// run checks when asked and on every link change until ctx ends.
func (c *coverage) run(ctx context.Context) {
	links := make(chan netlink.LinkUpdate, 64)
	if err := netlink.LinkSubscribeWithOptions(links, ctx.Done(), netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) { c.log.Debug("link updates", "err", err) },
	}); err != nil {
		c.log.Warn("no link updates: pod interfaces are checked on policy changes only", "err", err)
		links = nil
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.poke:
		case _, ok := <-links:
			if !ok {
				links = nil
				continue
			}
			// A new pod's veth comes with a burst of updates: check once it settled.
			settle := time.NewTimer(50 * time.Millisecond)
		drain:
			for {
				select {
				case <-links:
				case <-settle.C:
					break drain
				case <-ctx.Done():
					settle.Stop()
					return
				}
			}
		}
		c.run1()
	}
}

// run1 is one check.
func (c *coverage) run1() {
	local := c.local.Load()
	if local == nil {
		return
	}
	now := map[string][]string{}
	for _, lp := range *local {
		routes, err := netlink.RouteGet(lp.addr.AsSlice())
		if err != nil || len(routes) == 0 {
			continue
		}
		link, err := netlink.LinkByIndex(routes[0].LinkIndex)
		if err != nil {
			continue
		}
		name := link.Attrs().Name
		if name == "lo" || slices.ContainsFunc(c.prefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		if !slices.Contains(now[name], lp.pod) {
			now[name] = append(now[name], lp.pod)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, pods := range now {
		if _, seen := c.uncovered[name]; !seen {
			c.log.Warn("pod interface not covered by --pod-interfaces: its pods are not checked for spoofing",
				"interface", name, "pods", pods, "pod_interfaces", c.prefixes)
		}
	}
	c.uncovered = now
	c.gauge.Set(float64(len(now)))
}

// Describe implements prometheus.Collector.
func (c *coverage) Describe(ch chan<- *prometheus.Desc) { c.gauge.Describe(ch) }

// Collect implements prometheus.Collector.
func (c *coverage) Collect(ch chan<- prometheus.Metric) { c.gauge.Collect(ch) }

// The revoker sweeps the connections between pods and their own node that a policy can cut
// (the same pods as the own-node sets).
var _ conntrack.NodePolicy = snapPolicy{}
