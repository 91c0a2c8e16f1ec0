package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/e2e/labenv"
	"github.com/podwall/podwall/policy/manifests"
)

// binary is the podwall binary under test, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipping: needs root (network namespaces, nftables)")
		os.Exit(0)
	}
	os.Exit(labenv.Main(m, "e2e", &binary, nil))
}

// env is one test's lab (labenv.Env: nodes, pods, an agent per node) and the manifests the
// agents watch.
type env struct {
	*labenv.Env
	manifests string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return &env{Env: labenv.New(t), manifests: filepath.Join(t.TempDir(), "cluster.yaml")}
}

// podObject is the manifest of a lab pod.
func (e *env) podObject(key string, labels map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	p := e.Pods[key]
	ns, name, _ := strings.Cut(key, "/")
	return p.Object(ns, name, p.Node.Name(), labels, ports...)
}

func (e *env) write(objs ...any) {
	e.T.Helper()
	if err := manifests.Write(e.manifests, objs...); err != nil {
		e.T.Fatal(err)
	}
}

// config is how the agents of this env run: on the manifests, with args.
func (e *env) config(n *lab.Node, args ...string) lab.AgentConfig {
	return lab.AgentConfig{Binary: binary, Manifests: e.manifests, NodeName: n.Name(), Args: args}
}

// start warms the lab up (labenv.Env.Warm), runs an agent on every node and waits until all
// are ready.
func (e *env) start(args ...string) {
	e.T.Helper()
	e.Warm()
	e.StartAgents(20*time.Second, func(_ string, n *lab.Node) lab.AgentConfig { return e.config(n, args...) })
}

// rewrite writes new manifests and waits until every agent has applied a newer generation.
func (e *env) rewrite(objs ...any) {
	e.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	before := map[string]uint64{}
	for name, a := range e.Agents {
		g, err := a.Generation(ctx)
		if err != nil {
			e.T.Fatal(err)
		}
		before[name] = g
	}
	e.write(objs...)
	for name, a := range e.Agents {
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
			e.T.Fatalf("%v\n%s", err, a.Logs())
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
	e.T.Helper()
	type job struct {
		fam string
		pr  probe
	}
	var jobs []job
	for _, fam := range []string{"IPv4", "IPv6"} {
		for _, pr := range probes {
			if e.Pods[pr.from] == nil || e.Pods[pr.to] == nil {
				e.T.Fatalf("probe %v: unknown endpoint", pr)
			}
			switch pr.proto {
			case "", "TCP", "UDP", "SCTP":
			default:
				e.T.Fatalf("probe %v: unknown protocol", pr)
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
			e.T.Error(m)
		}
	}
}

// probe runs one connection attempt over family fam ("IPv4" or "IPv6") and returns nil
// when it connected (and echoed). It ignores pr.allow. Safe for concurrent use.
func (e *env) probe(fam string, pr probe, timeout time.Duration) error {
	return e.Probe(fam, pr.proto, pr.from, pr.to, pr.port, timeout)
}

func proto(p probe) string {
	if p.proto == "" {
		return "TCP"
	}
	return p.proto
}

// metric returns the sum of a metric's samples from an agent's /metrics, over the series
// with the given labels (key, value pairs; scrape.Samples.Sum).
func (e *env) metric(node, name string, labels ...string) float64 {
	e.T.Helper()
	m, err := e.Metrics(node)
	if err != nil {
		e.T.Fatalf("metrics of %s: %v", node, err)
	}
	return m.Sum(name, labels...)
}

// nodeEndpoint makes a node's own namespace usable as a probe endpoint, known as
// "node:<name>", with the node's underlay addresses. Call it after serve, or serve starts
// servers in the node too.
func (e *env) nodeEndpoint(name string) string {
	n := e.Nodes[name]
	key := "node:" + name
	e.Pods[key] = &lab.Pod{NS: n.NS, IPv4: n.UnderlayV4, IPv6: n.UnderlayV6, Node: n}
	return key
}

// readyz returns the status code and body of an agent's /readyz.
func (e *env) readyz(node string) (int, string) {
	e.T.Helper()
	code, body, err := e.Agents[node].Get(context.Background(), "/readyz")
	if err != nil {
		e.T.Fatalf("readyz of %s: %v", node, err)
	}
	return code, strings.TrimSpace(body)
}

// queued is what one node says it sent to userspace, read from three independent places:
// the counters of the podwall table's queue rules, the kernel's queue instances, and the
// agent.
type queued struct {
	// Rules counts the packets of each queue rule, by the set it matches ("ingress4",
	// "ingress6", "egress4", "egress6", and the own-node chains' "nodeingress4" …), from `nft -j list table inet podwall` (JSON shows
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
	s := fmt.Sprintf("rules %d (ingress4 %d ingress6 %d egress4 %d egress6 %d", q.Queued(),
		q.Rules["ingress4"], q.Rules["ingress6"], q.Rules["egress4"], q.Rules["egress6"])
	for _, set := range []string{"nodeingress4", "nodeingress6", "nodeegress4", "nodeegress6"} {
		if n := q.Rules[set]; n > 0 { // the own-node chains', shown when they queued
			s += fmt.Sprintf(" %s %d", set, n)
		}
	}
	return s + fmt.Sprintf("), kernel %d, agent %d, spoofed %d", q.Kernel, q.Agent, q.Spoofed)
}

// queueCounts reads node's queued counters.
func (e *env) queueCounts(node string) queued {
	e.T.Helper()
	n := e.Nodes[node]
	q := queued{Rules: map[string]uint64{}}
	out, err := n.Exec(context.Background(), "nft", "-j", "list", "table", "inet", "podwall").Output()
	if err != nil {
		e.T.Fatalf("nft -j list table in %s: %v", node, err)
	}
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Expr []map[string]json.RawMessage `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		e.T.Fatalf("nft -j list table in %s: %v", node, err)
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
	for _, qs := range e.queueStats(node) {
		q.Kernel += uint64(qs.IDSequence)
	}
	q.Agent = uint64(e.metric(node, "podwall_datapath_packets_total"))
	return q
}

// verdicts returns an agent's allow and deny verdict counts.
func (e *env) verdicts(node string) (allow, deny float64) {
	e.T.Helper()
	return e.metric(node, "podwall_datapath_verdicts_total", "verdict", "allow"),
		e.metric(node, "podwall_datapath_verdicts_total", "verdict", "deny")
}

// sub returns the env for a subtest: the same lab and agents, reporting to t.
func (e *env) sub(t *testing.T) *env {
	c := *e
	c.Env = e.Env.Sub(t)
	return &c
}
