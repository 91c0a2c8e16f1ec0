package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

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

// start runs an agent on every node and waits until all are ready.
func (e *env) start(args ...string) {
	e.t.Helper()
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

// check runs probes over IPv4 and IPv6 and reports every one whose outcome differs.
func (e *env) check(probes ...probe) {
	e.t.Helper()
	for _, fam := range []string{"IPv4", "IPv6"} {
		for _, pr := range probes {
			from, to := e.pods[pr.from], e.pods[pr.to]
			if from == nil || to == nil {
				e.t.Fatalf("probe %v: unknown endpoint", pr)
			}
			dst := to.IPv4
			if fam == "IPv6" {
				dst = to.IPv6
			}
			ap := netip.AddrPortFrom(dst, pr.port)
			ctx := context.Background()
			var err error
			switch pr.proto {
			case "", "TCP":
				err = lab.ProbeTCP(ctx, from.NS, ap, probeTimeout)
			case "UDP":
				err = lab.ProbeUDP(ctx, from.NS, ap, probeTimeout)
			case "SCTP":
				err = lab.ProbeSCTP(ctx, from.NS, ap, probeTimeout)
			default:
				e.t.Fatalf("probe %v: unknown protocol", pr)
			}
			if got := err == nil; got != pr.allow {
				e.t.Errorf("%s %s -> %s %s/%d: connected=%v, want %v (err: %v)", fam, pr.from, pr.to, proto(pr), pr.port, got, pr.allow, err)
			}
		}
	}
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
