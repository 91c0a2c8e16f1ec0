package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/e2e/agent"
	"github.com/podwall/podwall/e2e/lab"
)

// binary is the podwall binary under test, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipping: needs root (network namespaces, nftables)")
		os.Exit(0)
	}
	if removed, err := lab.Sweep(lab.DefaultPrefix, 0); err != nil {
		fmt.Println("e2e: sweep:", err)
	} else if len(removed) > 0 {
		fmt.Println("e2e: swept stale lab namespaces:", removed)
	}
	dir, err := os.MkdirTemp("", "podwall-e2e-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "podwall")
	build := exec.Command("go", "build", "-o", binary, "../cmd/podwall")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Println("e2e: building podwall:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one test's lab: nodes, pods, an agent per node, and the manifests they watch.
type env struct {
	t         *testing.T
	lab       *lab.Lab
	nodes     map[string]*lab.Node
	pods      map[string]*lab.Pod // "ns/name" or external name →
	manifests string              // the file the agents watch
	agents    map[string]*agent.Agent
}

func newEnv(t *testing.T) *env {
	t.Helper()
	l, err := lab.New(lab.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, lab: l, nodes: map[string]*lab.Node{}, pods: map[string]*lab.Pod{},
		agents: map[string]*agent.Agent{}}
	e.manifests = filepath.Join(t.TempDir(), "cluster.yaml")
	t.Cleanup(func() {
		for name, a := range e.agents {
			if err := a.Stop(syscall.SIGTERM, 5*time.Second); err != nil {
				t.Errorf("agent on %s: %v", name, err)
			}
			if t.Failed() {
				t.Logf("agent on %s logs:\n%s", name, a.Logs())
			}
		}
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	return e
}

func (e *env) node(name string, i int) *lab.Node {
	e.t.Helper()
	n, err := lab.Plan(i).AddNode(e.lab, name)
	if err != nil {
		e.t.Fatal(err)
	}
	e.nodes[name] = n
	return n
}

// pod adds a lab pod on node, index j in the node's address plan, known as ns/name.
func (e *env) pod(node, key string, j int) *lab.Pod {
	e.t.Helper()
	n := e.nodes[node]
	v4, v6 := lab.Plan(nodeIndex(n)).Pod(j)
	p, err := n.AddPod(strings.ReplaceAll(key, "/", "-"), v4, v6)
	if err != nil {
		e.t.Fatal(err)
	}
	e.pods[key] = p
	return p
}

func nodeIndex(n *lab.Node) int { return int(n.PodCIDRv4.Addr().As4()[2]) }

func (e *env) external(name string, j int, via string) *lab.Pod {
	e.t.Helper()
	v4, v6 := lab.External(j)
	p, err := e.lab.AddExternal(name, v4, v6, e.nodes[via])
	if err != nil {
		e.t.Fatal(err)
	}
	e.pods[name] = p
	return p
}

// podObject is the manifest of a lab pod.
func (e *env) podObject(key string, labels map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	p := e.pods[key]
	ns, name, _ := strings.Cut(key, "/")
	return agent.Pod(p, ns, name, p.Node.Name(), labels, ports...)
}

func (e *env) write(objs ...any) {
	e.t.Helper()
	if err := agent.Write(e.manifests, objs...); err != nil {
		e.t.Fatal(err)
	}
}

// start warms the lab up (see warm), runs an agent on every node and waits until all are
// ready.
func (e *env) start(args ...string) {
	e.t.Helper()
	e.warm()
	for name, n := range e.nodes {
		a, err := agent.Start(n, agent.Config{Binary: binary, Manifests: e.manifests, NodeName: n.Name(), Args: args})
		if err != nil {
			e.t.Fatal(err)
		}
		e.agents[name] = a
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, a := range e.agents {
		if err := a.WaitReady(ctx); err != nil {
			e.t.Fatal(err)
		}
	}
}

// rewrite writes new manifests and waits until every agent has applied a newer generation.
func (e *env) rewrite(objs ...any) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	before := map[string]uint64{}
	for name, a := range e.agents {
		g, err := a.Generation(ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		before[name] = g
	}
	e.write(objs...)
	for name, a := range e.agents {
		err := lab.Poll(ctx, 5*time.Millisecond, func() error {
			g, err := a.Generation(ctx)
			if err != nil {
				return err
			}
			if g <= before[name] {
				return fmt.Errorf("agent on %s still at generation %d", name, g)
			}
			return nil
		})
		if err != nil {
			e.t.Fatalf("%v\n%s", err, a.Logs())
		}
	}
}

// serve starts TCP and UDP echo servers on the given ports in every lab pod.
func (e *env) serve(ports ...uint16) {
	e.t.Helper()
	for _, p := range e.pods {
		for _, port := range ports {
			if _, err := p.ServeTCP(port); err != nil {
				e.t.Fatal(err)
			}
			if _, err := p.ServeUDP(port); err != nil {
				e.t.Fatal(err)
			}
		}
	}
}

// probe is one connection attempt and what the spec says about it.
type probe struct {
	from, to string
	port     uint16
	proto    string // TCP (default), UDP, SCTP
	allow    bool
}

const probeTimeout = 400 * time.Millisecond

// probeParallel bounds the probes check runs at once. Denied probes cost their whole timeout,
// so running them side by side is what keeps the suite fast.
const probeParallel = 48

// check runs probes over IPv4 and IPv6, concurrently, and reports every one whose outcome
// differs, in a fixed order (IPv4 first, then IPv6, each in the order given).
func (e *env) check(probes ...probe) {
	e.t.Helper()
	type job struct {
		fam string
		pr  probe
	}
	var jobs []job
	for _, fam := range []string{"IPv4", "IPv6"} {
		for _, pr := range probes {
			if e.pods[pr.from] == nil || e.pods[pr.to] == nil {
				e.t.Fatalf("probe %v: unknown endpoint", pr)
			}
			switch pr.proto {
			case "", "TCP", "UDP", "SCTP":
			default:
				e.t.Fatalf("probe %v: unknown protocol", pr)
			}
			jobs = append(jobs, job{fam, pr})
		}
	}
	msgs := make([]string, len(jobs))
	sem := make(chan struct{}, probeParallel)
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := e.probe(j.fam, j.pr, probeTimeout)
			if got := err == nil; got != j.pr.allow {
				msgs[i] = fmt.Sprintf("%s %s -> %s %s/%d: connected=%v, want %v (err: %v)",
					j.fam, j.pr.from, j.pr.to, proto(j.pr), j.pr.port, got, j.pr.allow, err)
			}
		}()
	}
	wg.Wait()
	for _, m := range msgs {
		if m != "" {
			e.t.Error(m)
		}
	}
}

// probe runs one connection attempt over family fam ("IPv4" or "IPv6") and returns nil
// when it connected (and echoed). It ignores pr.allow. Safe for concurrent use.
func (e *env) probe(fam string, pr probe, timeout time.Duration) error {
	from := e.pods[pr.from]
	ap := netip.AddrPortFrom(e.addr(pr.to, fam), pr.port)
	ctx := context.Background()
	switch pr.proto {
	case "", "TCP":
		return lab.ProbeTCP(ctx, from.NS, ap, timeout)
	case "UDP":
		return lab.ProbeUDP(ctx, from.NS, ap, timeout)
	case "SCTP":
		return lab.ProbeSCTP(ctx, from.NS, ap, timeout)
	}
	return fmt.Errorf("unknown protocol %q", pr.proto)
}

// addr returns the address of endpoint key in family fam ("IPv4" or "IPv6").
func (e *env) addr(key, fam string) netip.Addr {
	p := e.pods[key]
	if fam == "IPv6" {
		return p.IPv6
	}
	return p.IPv4
}

func proto(p probe) string {
	if p.proto == "" {
		return "TCP"
	}
	return p.proto
}

// metric returns the sum of a metric's samples (all label sets) from an agent's /metrics,
// filtered by a label substring such as `verdict="deny"`.
func (e *env) metric(node, name, labelHas string) float64 {
	e.t.Helper()
	code, body, err := e.agents[node].Get(context.Background(), "/metrics")
	if err != nil || code != 200 {
		e.t.Fatalf("metrics of %s: %d %v", node, code, err)
	}
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != ' ' && line[len(name)] != '{') {
			continue
		}
		if labelHas != "" && !strings.Contains(line, labelHas) {
			continue
		}
		var v float64
		fields := strings.Fields(line)
		fmt.Sscan(fields[len(fields)-1], &v)
		sum += v
	}
	return sum
}

// nodeEndpoint makes a node's own namespace usable as a probe endpoint, known as
// "node:<name>", with the node's underlay addresses. Call it after serve, or serve starts
// servers in the node too.
func (e *env) nodeEndpoint(name string) string {
	n := e.nodes[name]
	key := "node:" + name
	e.pods[key] = &lab.Pod{NS: n.NS, IPv4: n.UnderlayV4, IPv6: n.UnderlayV6, Node: n}
	return key
}

// nodeObject is the Node object of a lab node, its underlay addresses as InternalIPs.
func (e *env) nodeObject(name string) *corev1.Node {
	n := e.nodes[name]
	node := &corev1.Node{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, a := range []netip.Addr{n.UnderlayV4, n.UnderlayV6} {
		node.Status.Addresses = append(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a.String()})
	}
	return node
}

// readyz returns the status code and body of an agent's /readyz.
func (e *env) readyz(node string) (int, string) {
	e.t.Helper()
	code, body, err := e.agents[node].Get(context.Background(), "/readyz")
	if err != nil {
		e.t.Fatalf("readyz of %s: %v", node, err)
	}
	return code, strings.TrimSpace(body)
}

// queued is what one node says it sent to userspace, read from three independent places:
// the counters of the podwall table's queue rules, the kernel's queue instances, and the
// agent.
type queued struct {
	// Rules counts the packets of each queue rule, by the set it matches ("ingress4",
	// "ingress6", "egress4", "egress6"), from `nft -j list table inet podwall` (JSON shows
	// the counters even where the text form hides the xt NFQUEUE target).
	Rules map[string]uint64
	// Spoofed counts the packets the anti-spoofing (fib) rules dropped.
	Spoofed uint64
	// Kernel is the sum of id_sequence over the node's queue instances
	// (/proc/net/netfilter/nfnetlink_queue): packets the kernel queued.
	Kernel uint64
	// Agent is podwall_datapath_packets_total: packets the agent read.
	Agent uint64
}

// Queued returns the packets counted by all queue rules.
func (q queued) Queued() uint64 {
	var n uint64
	for _, v := range q.Rules {
		n += v
	}
	return n
}

// sub returns q - r, field by field.
func (q queued) sub(r queued) queued {
	d := queued{Rules: map[string]uint64{}, Spoofed: q.Spoofed - r.Spoofed, Kernel: q.Kernel - r.Kernel, Agent: q.Agent - r.Agent}
	for k, v := range q.Rules {
		d.Rules[k] = v - r.Rules[k]
	}
	return d
}

func (q queued) String() string {
	return fmt.Sprintf("rules %d (ingress4 %d ingress6 %d egress4 %d egress6 %d), kernel %d, agent %d, spoofed %d",
		q.Queued(), q.Rules["ingress4"], q.Rules["ingress6"], q.Rules["egress4"], q.Rules["egress6"], q.Kernel, q.Agent, q.Spoofed)
}

// queueCounts reads node's queued counters.
func (e *env) queueCounts(node string) queued {
	e.t.Helper()
	n := e.nodes[node]
	q := queued{Rules: map[string]uint64{}}
	out, err := n.Exec(context.Background(), "nft", "-j", "list", "table", "inet", "podwall").Output()
	if err != nil {
		e.t.Fatalf("nft -j list table in %s: %v", node, err)
	}
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Expr []map[string]json.RawMessage `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		e.t.Fatalf("nft -j list table in %s: %v", node, err)
	}
	for _, o := range doc.Nftables {
		if o.Rule == nil {
			continue
		}
		var set string
		var fib, queue bool
		var packets uint64
		for _, x := range o.Rule.Expr {
			if m, ok := x["match"]; ok {
				var match struct {
					Left  map[string]json.RawMessage `json:"left"`
					Right json.RawMessage            `json:"right"`
				}
				json.Unmarshal(m, &match)
				if _, ok := match.Left["fib"]; ok {
					fib = true
				}
				var r string
				if json.Unmarshal(match.Right, &r) == nil && strings.HasPrefix(r, "@") {
					set = r[1:]
				}
			}
			if c, ok := x["counter"]; ok {
				var counter struct{ Packets uint64 }
				json.Unmarshal(c, &counter)
				packets = counter.Packets
			}
			_, xt := x["xt"]
			_, native := x["queue"]
			queue = queue || xt || native
		}
		switch {
		case fib:
			q.Spoofed += packets
		case queue && set != "":
			q.Rules[set] += packets
		}
	}
	err = n.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/netfilter/nfnetlink_queue")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f := strings.Fields(line)
			if len(f) < 8 {
				return fmt.Errorf("nfnetlink_queue: short line %q", line)
			}
			var seq uint64
			if _, err := fmt.Sscan(f[7], &seq); err != nil {
				return fmt.Errorf("nfnetlink_queue: %q: %w", line, err)
			}
			q.Kernel += seq
		}
		return nil
	})
	if err != nil {
		e.t.Fatalf("queues of %s: %v", node, err)
	}
	q.Agent = uint64(e.metric(node, "podwall_datapath_packets_total", ""))
	return q
}

// verdicts returns an agent's allow and deny verdict counts.
func (e *env) verdicts(node string) (allow, deny float64) {
	e.t.Helper()
	return e.metric(node, "podwall_datapath_verdicts_total", `verdict="allow"`),
		e.metric(node, "podwall_datapath_verdicts_total", `verdict="deny"`)
}

// sub returns the env for a subtest: the same lab and agents, reporting to t.
func (e *env) sub(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

// warm pings every pod and external host from its node, and every node from every other
// node, in both families, until each answers. A lab fresh from AddPod does not always pass
// the first packets to a new pod: now and then (a few labs in ten when labs are created
// while the previous ones are being torn down) the node's first ARP request or IPv6
// neighbour solicitation for the pod goes unanswered — the node-side veth counts a TX drop
// — and the pod's first packets wait about a second for the retry, longer than a probe's
// timeout, so a probe that should pass fails. warm takes that second, when it comes, before
// any probe runs.
func (e *env) warm() {
	e.t.Helper()
	type ping struct {
		from *lab.NS
		to   netip.Addr
	}
	var pings []ping
	for _, p := range e.pods {
		if p.Node == nil {
			continue
		}
		for _, a := range []netip.Addr{p.IPv4, p.IPv6} {
			if a.IsValid() && p.NS != p.Node.NS {
				pings = append(pings, ping{p.Node.NS, a})
			}
		}
	}
	for _, n := range e.nodes {
		for _, m := range e.nodes {
			if n != m {
				for _, a := range []netip.Addr{m.UnderlayV4, m.UnderlayV6} {
					if a.IsValid() {
						pings = append(pings, ping{n.NS, a})
					}
				}
			}
		}
	}
	errs := make([]error, len(pings))
	var wg sync.WaitGroup
	for i, p := range pings {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			errs[i] = lab.Poll(ctx, 10*time.Millisecond, func() error {
				return lab.ProbeICMP(ctx, p.from, p.to, 1500*time.Millisecond)
			})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			e.t.Fatalf("warming the lab up: %v", err)
		}
	}
}
