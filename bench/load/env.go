package load

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy/manifests"
	"github.com/podwall/podwall/policy/policytest"
)

// The lab's fixed shape. One node, node-a, routes between two pods on it: client
// (10.244.0.10) and server (10.244.0.11), each behind its own veth, so every packet between
// them crosses the node's forward hook, where podwall and the kernel-only baseline sit.
const (
	// NodeName is the node's name in the manifests (spec.nodeName of both pods).
	NodeName = "node-a"
	// ConnPort is the first port of the connect load; the server listens there and
	// redirects ConnPort+1 … ConnPort+ConnPorts-1 to it (nat prerouting in its own
	// namespace), so each connection of a load can have its own destination port — its own
	// flow-cache key — while one socket accepts them all.
	ConnPort  = 20000
	ConnPorts = 40000
	// StreamPort serves the bulk throughput test.
	StreamPort = 5001

	benchNamespace = "bench"
	// queueNum is podwall's first queue (the --queue-num default).
	queueNum = 100
)

// Env is the harness's lab: the node, the two pods, the servers in the server pod, the
// manifests an agent reads, and which filter is installed on the node.
type Env struct {
	Lab            *lab.Lab
	Node           *lab.Node
	Client, Server *lab.Pod
	// Threads is the number of load generator threads Measure uses (0: 1).
	Threads int
	// Alt is a second podwall binary, run as filter "podwall-alt" (Config.Alt).
	Alt string

	binary    string // podwall
	manifests string // the file agents watch
	dir       string
	round     int // bumped in the client pod's labels to force a new policy generation

	acceptor *Acceptor
	sink     *Sink
	agent    *lab.Agent // running podwall, if any
	raw      *RawQueue  // running raw reader, if any
	gonfq    *GoNFQueue
	filter   string
}

// NewEnv builds the lab and starts the servers. binary is the podwall binary. Close it.
func NewEnv(binary string, logf func(string, ...any)) (e *Env, err error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if _, err := os.Stat(binary); err != nil {
		return nil, fmt.Errorf("load: podwall binary: %w", err)
	}
	e = &Env{binary: binary, filter: "none"}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.Close())
		}
	}()
	if e.dir, err = os.MkdirTemp("", "podwall-bench-"); err != nil {
		return nil, err
	}
	e.manifests = filepath.Join(e.dir, "cluster.yaml")
	if e.Lab, err = lab.New(lab.Options{Logf: logf}); err != nil {
		return nil, err
	}
	plan := lab.Plan(0)
	if e.Node, err = plan.AddNode(e.Lab, NodeName); err != nil {
		return nil, err
	}
	c4, c6 := plan.Pod(0)
	if e.Client, err = e.Node.AddPod("client", c4, c6); err != nil {
		return nil, err
	}
	s4, s6 := plan.Pod(1)
	if e.Server, err = e.Node.AddPod("server", s4, s6); err != nil {
		return nil, err
	}
	redirect := fmt.Sprintf(`table ip pwbench_nat {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		tcp dport %d-%d redirect to :%d
	}
}
`, ConnPort+1, ConnPort+ConnPorts-1, ConnPort)
	if err = nft(e.Server.NS, redirect); err != nil {
		return nil, err
	}
	if e.acceptor, err = Accept(e.Server.NS, ConnPort); err != nil {
		return nil, err
	}
	if e.sink, err = Serve(e.Server.NS, StreamPort); err != nil {
		return nil, err
	}
	if err = e.writeManifests(); err != nil {
		return nil, err
	}
	return e, nil
}

// Close stops the agent and the servers and deletes the lab.
func (e *Env) Close() error {
	var errs []error
	if e.agent != nil {
		errs = append(errs, e.agent.Stop(syscall.SIGTERM, 5*time.Second))
	}
	if e.acceptor != nil {
		e.acceptor.Close()
	}
	if e.sink != nil {
		e.sink.Close()
	}
	if e.Lab != nil {
		errs = append(errs, e.Lab.Close())
	}
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
	return errors.Join(errs...)
}

// ServerAddr returns the server's IPv4 address and port.
func (e *Env) ServerAddr(port uint16) netip.AddrPort { return netip.AddrPortFrom(e.Server.IPv4, port) }

// writeManifests writes the lab's cluster: namespace bench; pods client (app=client) and
// server (app=server) on node-a; one policy isolating the server for ingress and allowing
// the client on ConnPort-(ConnPort+ConnPorts-1) (one endPort range) and StreamPort. The
// client pod carries a bench-round label that bumpGeneration changes.
func (e *Env) writeManifests() error {
	np := policytest.NetworkPolicy(benchNamespace, "server-ingress", policytest.Selector("app", "server"),
		policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("app", "client")),
			policytest.Port(fmt.Sprintf("%d-%d/TCP", ConnPort, ConnPort+ConnPorts-1)),
			policytest.Port(fmt.Sprintf("%d/TCP", StreamPort)))))
	return manifests.Write(e.manifests, policytest.Namespace(benchNamespace, nil),
		e.Client.Object(benchNamespace, e.Client.Role(), NodeName, map[string]string{"app": "client", "bench-round": strconv.Itoa(e.round)}),
		e.Server.Object(benchNamespace, e.Server.Role(), NodeName, map[string]string{"app": "server"}),
		np)
}

// kernelRuleset is the kernel-only baseline: podwall's table shape (a forward base chain at
// the same priority, established/related first, the same anti-spoofing rule) with the
// verdict taken in the kernel from sets instead of in userspace: the server's address is
// in @isolated4 and (server . client . port range) in @allowed4.
func (e *Env) kernelRuleset() string {
	return fmt.Sprintf(`table inet pwbench {
	set isolated4 {
		type ipv4_addr
		elements = { %[1]s }
	}
	set allowed4 {
		type ipv4_addr . ipv4_addr . inet_service
		flags interval
		elements = { %[1]s . %[2]s . %[3]d-%[4]d, %[1]s . %[2]s . %[5]d }
	}
	chain forward {
		type filter hook forward priority filter + 10; policy accept;
		ct state established,related accept
		iifname "%[6]s*" fib saddr . iif oif missing counter drop
		ip daddr @isolated4 ip daddr . ip saddr . tcp dport @allowed4 counter accept
		ip daddr @isolated4 counter drop
	}
}
`, e.Server.IPv4, e.Client.IPv4, ConnPort, ConnPort+ConnPorts-1, StreamPort, lab.DefaultVethPrefix)
}

// SetFilter installs one of "none", "kernel" or "podwall" on the node, removing the
// others. podwall starts an agent with --queues queues and waits until it is ready;
// "podwall-alt" likewise with the binary Alt; "podwall-ac" is podwall with its kernel allow
// cache on (--allow-cache-ttl AllowCacheTTL).
// "rawq", "rawq-single" and "rawq-poll" are the RawQueue experiment: podwall programs its
// ruleset and is killed, and a RawQueue (RawBatch, RawSingle, RawPoll) serves its queues;
// "gonfq" likewise with a GoNFQueue, "gonfq-nodl" with one without write timeout.
func (e *Env) SetFilter(ctx context.Context, filter string, queues int) error {
	if e.raw != nil {
		e.raw.Close()
		e.raw = nil
	}
	if e.gonfq != nil {
		e.gonfq.Close()
		e.gonfq = nil
	}
	if e.agent != nil {
		err := e.agent.Stop(syscall.SIGTERM, 10*time.Second)
		e.agent = nil
		if err != nil {
			return err
		}
	}
	// A fail-closed agent leaves its table behind on exit, by design.
	// (nft 1.0.6 has no "destroy": add, then delete, in one transaction.)
	if err := nft(e.Node.NS, "add table inet podwall\ndelete table inet podwall\nadd table inet pwbench\ndelete table inet pwbench\n"); err != nil {
		return err
	}
	e.filter = "none"
	switch filter {
	case "none":
		return nil
	case "kernel":
		if err := nft(e.Node.NS, e.kernelRuleset()); err != nil {
			return err
		}
	case "podwall", "podwall-alt", "podwall-ac", "rawq", "rawq-single", "rawq-poll", "gonfq", "gonfq-nodl":
		binary := e.binary
		if filter == "podwall-alt" {
			if e.Alt == "" {
				return errors.New("load: filter podwall-alt without a second binary (Config.Alt)")
			}
			binary = e.Alt
		}
		args := []string{"--queues", strconv.Itoa(queues)}
		if filter == "podwall-ac" {
			args = append(args, "--allow-cache-ttl", AllowCacheTTL.String())
		}
		a, err := e.Node.StartAgent(lab.AgentConfig{Binary: binary, Manifests: e.manifests, NodeName: NodeName, Args: args})
		if err != nil {
			return err
		}
		e.agent = a
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if _, err := a.WaitGeneration(ctx, 0); err != nil {
			return err
		}
		if !isPodwall(filter) {
			a.Kill()
			e.agent = nil
			if strings.HasPrefix(filter, "gonfq") {
				timeout := 100 * time.Millisecond
				if filter == "gonfq-nodl" {
					timeout = 0
				}
				if e.gonfq, err = StartGoNFQueue(e.Node.NS, queueNum, queues, timeout); err != nil {
					return err
				}
				break
			}
			mode := map[string]RawMode{"rawq": RawBatch, "rawq-single": RawSingle, "rawq-poll": RawPoll}[filter]
			if e.raw, err = StartRawQueue(e.Node.NS, queueNum, queues, mode); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("load: unknown filter %q", filter)
	}
	e.filter = filter
	return nil
}

// AllowCacheTTL is the allow cache's TTL of filter "podwall-ac": longer than a run, so that
// a flow stays cached through it (a new policy generation empties the cache).
const AllowCacheTTL = 30 * time.Second

// isPodwall reports whether filter runs the podwall agent through the measurement.
func isPodwall(filter string) bool {
	return filter == "podwall" || filter == "podwall-alt" || filter == "podwall-ac"
}

// Agent returns the running podwall, or nil.
func (e *Env) Agent() *lab.Agent { return e.agent }

// BumpGeneration changes a label of the client pod and waits until the agent runs the
// new policy generation: every flow-cache entry is then stale, so the next connections
// all miss. It also waits for the conntrack sweep the change starts (revocation), so the
// sweep does not run during a measurement.
func (e *Env) BumpGeneration(ctx context.Context) error {
	if e.agent == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	g, err := e.agent.Generation(ctx)
	if err != nil {
		return err
	}
	m0, err := e.agent.Metrics(ctx)
	if err != nil {
		return err
	}
	e.round++
	if err := e.writeManifests(); err != nil {
		return err
	}
	if _, err = e.agent.WaitGeneration(ctx, g); err != nil {
		return err
	}
	const sweeps = "podwall_conntrack_sweeps_total"
	if _, ok := m0.Value(sweeps); !ok {
		return nil // an agent without revocation
	}
	return lab.Poll(ctx, 5*time.Millisecond, func() error {
		m, err := e.agent.Metrics(ctx)
		if err != nil {
			return err
		}
		if m.Sum(sweeps) <= m0.Sum(sweeps) {
			return errors.New("conntrack sweep after the policy change not done")
		}
		return nil
	})
}

var counterRe = regexp.MustCompile(`counter packets (\d+)`)

// KernelAccepts returns the packets the baseline's accept rule has judged: the new
// connections that reached the set lookup.
func (e *Env) KernelAccepts() (uint64, error) {
	var out bytes.Buffer
	cmd := e.Node.Exec(context.Background(), "nft", "list", "chain", "inet", "pwbench", "forward")
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("load: nft list: %w", err)
	}
	for line := range strings.Lines(out.String()) {
		if strings.Contains(line, "@allowed4") {
			if m := counterRe.FindStringSubmatch(line); m != nil {
				return strconv.ParseUint(m[1], 10, 64)
			}
		}
	}
	return 0, errors.New("load: baseline accept counter not found")
}

// nft runs `nft -f -` with script inside namespace ns.
func nft(ns *lab.NS, script string) error {
	cmd := ns.Exec(context.Background(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("load: nft in %s: %w: %s", ns.Name(), err, bytes.TrimSpace(out))
	}
	return nil
}

// ConntrackCount returns the number of conntrack entries in namespace ns.
func ConntrackCount(ns *lab.NS) (int, error) {
	var b []byte
	err := ns.Do(func() (err error) {
		b, err = os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count")
		return err
	})
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
