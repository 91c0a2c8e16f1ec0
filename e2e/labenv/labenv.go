package labenv

import (
	"context"
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

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/cmd/podwall/scrape"
)

// Main is the TestMain of a suite that runs the podwall binary, named suite in what it
// prints: as root, it removes the lab namespaces that earlier, killed runs left behind; it
// builds podwall into a temporary directory and sets *binary to its path, runs the tests,
// calls after (when not nil), removes the binary and returns m.Run's exit code.
func Main(m *testing.M, suite string, binary *string, after func()) int {
	if os.Geteuid() == 0 {
		if removed, err := lab.Sweep(lab.DefaultPrefix, 0); err != nil {
			fmt.Printf("%s: sweep: %v\n", suite, err)
		} else if len(removed) > 0 {
			fmt.Printf("%s: swept stale lab namespaces: %v\n", suite, removed)
		}
	}
	dir, err := os.MkdirTemp("", "podwall-"+strings.ReplaceAll(suite, "/", "-")+"-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	*binary = filepath.Join(dir, "podwall")
	build := exec.Command("go", "build", "-o", *binary, "github.com/podwall/podwall/cmd/podwall")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Printf("%s: building podwall: %v\n", suite, err)
		return 1
	}
	code := m.Run()
	if after != nil {
		after()
	}
	return code
}

// Env is one test's lab.
type Env struct {
	// T is the test that failing calls fail; Sub makes an Env for a subtest.
	T      *testing.T
	Lab    *lab.Lab
	Nodes  map[string]*lab.Node
	Pods   map[string]*lab.Pod // "ns/name" or an external host's name →
	Agents map[string]*lab.Agent

	atClose *[]func()
}

// New builds an empty lab for t. When t ends, the agents get SIGTERM (their logs are
// printed when t failed or $PODWALL_E2E_AGENT_LOGS is set), then what AtClose registered
// runs, then the lab is removed.
func New(t *testing.T) *Env {
	t.Helper()
	l, err := lab.New(lab.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{T: t, Lab: l, Nodes: map[string]*lab.Node{}, Pods: map[string]*lab.Pod{},
		Agents: map[string]*lab.Agent{}, atClose: new([]func())}
	t.Cleanup(func() {
		for name, a := range e.Agents {
			if err := a.Stop(syscall.SIGTERM, 5*time.Second); err != nil {
				t.Errorf("agent on %s: %v", name, err)
			}
			if t.Failed() || os.Getenv("PODWALL_E2E_AGENT_LOGS") != "" {
				t.Logf("agent on %s logs:\n%s", name, a.Logs())
			}
		}
		for _, f := range *e.atClose {
			f()
		}
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	return e
}

// AtClose registers f to run when the test ends, after the agents have stopped and before
// the lab is removed.
func (e *Env) AtClose(f func()) { *e.atClose = append(*e.atClose, f) }

// Sub returns the Env for a subtest: the same lab and agents, failing t.
func (e *Env) Sub(t *testing.T) *Env {
	c := *e
	c.T = t
	return &c
}

// AddNode adds node i of the addressing plan (lab.Plan), known as name.
func (e *Env) AddNode(name string, i int) *lab.Node {
	e.T.Helper()
	n, err := lab.Plan(i).AddNode(e.Lab, name)
	if err != nil {
		e.T.Fatal(err)
	}
	e.Nodes[name] = n
	return n
}

// AddPods adds pods on node, known as keys ("ns/name"), at the node's next addresses in
// the plan: the first pod of a node gets address 0 (lab.Plan(i).Pod(0)), the next 1.
func (e *Env) AddPods(node string, keys ...string) {
	e.T.Helper()
	n := e.Nodes[node]
	plan := lab.Plan(int(n.PodCIDRv4.Addr().As4()[2]))
	for _, key := range keys {
		v4, v6 := plan.Pod(len(n.Pods()))
		p, err := n.AddPod(strings.ReplaceAll(key, "/", "-"), v4, v6)
		if err != nil {
			e.T.Fatal(err)
		}
		e.Pods[key] = p
	}
}

// AddExternal adds external host j (lab.External) behind node via, known as name.
func (e *Env) AddExternal(name string, j int, via string) *lab.Pod {
	e.T.Helper()
	v4, v6 := lab.External(j)
	p, err := e.Lab.AddExternal(name, v4, v6, e.Nodes[via])
	if err != nil {
		e.T.Fatal(err)
	}
	e.Pods[name] = p
	return p
}

// Serve starts TCP and UDP echo servers on the given ports in every pod and external host.
func (e *Env) Serve(ports ...uint16) {
	e.T.Helper()
	for _, p := range e.Pods {
		for _, port := range ports {
			if _, err := p.ServeTCP(port); err != nil {
				e.T.Fatal(err)
			}
			if _, err := p.ServeUDP(port); err != nil {
				e.T.Fatal(err)
			}
		}
	}
}

// StartAgents starts an agent on every node, configured by config, and waits until all
// are ready, for at most timeout.
func (e *Env) StartAgents(timeout time.Duration, config func(name string, n *lab.Node) lab.AgentConfig) {
	e.T.Helper()
	for name, n := range e.Nodes {
		e.startAgent(name, config(name, n))
	}
	e.waitReady(timeout, e.Agents)
}

// StartAgent starts the agent of one node, in place of the one the Env knew, and waits
// until it is ready, for at most timeout.
func (e *Env) StartAgent(node string, c lab.AgentConfig, timeout time.Duration) *lab.Agent {
	e.T.Helper()
	a := e.startAgent(node, c)
	e.waitReady(timeout, map[string]*lab.Agent{node: a})
	return a
}

func (e *Env) startAgent(node string, c lab.AgentConfig) *lab.Agent {
	e.T.Helper()
	a, err := e.Nodes[node].StartAgent(c)
	if err != nil {
		e.T.Fatal(err)
	}
	e.Agents[node] = a
	return a
}

func (e *Env) waitReady(timeout time.Duration, agents map[string]*lab.Agent) {
	e.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, a := range agents {
		if err := a.WaitReady(ctx); err != nil {
			e.T.Fatal(err)
		}
	}
}

// Addr returns the address of endpoint key in family fam ("IPv4" or "IPv6").
func (e *Env) Addr(key, fam string) netip.Addr {
	if fam == "IPv6" {
		return e.Pods[key].IPv6
	}
	return e.Pods[key].IPv4
}

// Probe makes one connection attempt of protocol proto (lab.Probe) from endpoint from to
// endpoint to on port, over family fam, and returns nil when it connected and echoed.
// Safe for concurrent use.
func (e *Env) Probe(fam, proto, from, to string, port uint16, timeout time.Duration) error {
	ap := netip.AddrPortFrom(e.Addr(to, fam), port)
	return lab.Probe(context.Background(), proto, e.Pods[from].NS, ap, timeout)
}

// Metrics scrapes the /metrics of node's agent.
func (e *Env) Metrics(node string) (scrape.Samples, error) {
	return e.Agents[node].Metrics(context.Background())
}

// Generation returns the policy generation node's agent reports.
func (e *Env) Generation(node string) uint64 {
	e.T.Helper()
	g, err := e.Agents[node].Generation(context.Background())
	if err != nil {
		e.T.Fatalf("agent on %s: %v", node, err)
	}
	return g
}

// Warm pings every pod and external host from its node, and every node from every other
// node, in both families, until each answers. A lab fresh from AddPod does not always pass
// the first packets to a new pod: now and then (a few labs in ten when labs are created
// while the previous ones are being torn down) the node's first ARP request or IPv6
// neighbour solicitation for the pod goes unanswered — the node-side veth counts a TX drop
// — and the pod's first packets wait about a second for the retry, longer than a probe's
// timeout, so a probe that should pass fails. Warm takes that second, when it comes, before
// any probe runs.
func (e *Env) Warm() {
	e.T.Helper()
	type ping struct {
		from *lab.NS
		to   netip.Addr
	}
	var pings []ping
	for _, p := range e.Pods {
		if p.Node == nil {
			continue
		}
		for _, a := range []netip.Addr{p.IPv4, p.IPv6} {
			if a.IsValid() && p.NS != p.Node.NS {
				pings = append(pings, ping{p.Node.NS, a})
			}
		}
	}
	for _, n := range e.Nodes {
		for _, m := range e.Nodes {
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
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			errs[i] = lab.Poll(ctx, 10*time.Millisecond, func() error {
				return lab.ProbeICMP(ctx, p.from, p.to, 1500*time.Millisecond)
			})
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			e.T.Fatalf("warming the lab up: %v", err)
		}
	}
}
