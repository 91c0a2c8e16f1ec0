package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/podwall/podwall/e2e/agent"
	"github.com/podwall/podwall/e2e/cluster"
	"github.com/podwall/podwall/e2e/lab"
)

// env is one cluster-mode lab: lab nodes, pods and external hosts; their objects in the API
// server; an agent per node reading the API through a relay with the agent
// ServiceAccount's token.
type env struct {
	t      *testing.T
	c      *cluster.Cluster
	admin  kubernetes.Interface
	lab    *lab.Lab
	nodes  map[string]*lab.Node
	pods   map[string]*lab.Pod // "ns/name" (ns unsuffixed) or an external host's name
	agents map[string]*agent.Agent
	relays []io.Closer
	inAPI  map[string]bool // pods created in the API server
}

func newEnv(t *testing.T, c *cluster.Cluster) *env {
	t.Helper()
	l, err := lab.New(lab.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, c: c, admin: clientFor(t, c.Admin), lab: l, nodes: map[string]*lab.Node{},
		pods: map[string]*lab.Pod{}, agents: map[string]*agent.Agent{}, inAPI: map[string]bool{}}
	t.Cleanup(func() {
		for name, a := range e.agents {
			if err := a.Stop(syscall.SIGTERM, 5*time.Second); err != nil {
				t.Errorf("agent on %s: %v", name, err)
			}
			if t.Failed() || os.Getenv("PODWALL_E2E_AGENT_LOGS") != "" {
				t.Logf("agent on %s logs:\n%s", name, a.Logs())
			}
		}
		for _, r := range e.relays { // after the agents: they should not see the API go
			r.Close()
		}
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	return e
}

// ns is the API namespace of a test namespace: suffixed with the lab's run id, because the
// API server is shared and namespaces never finish deleting without a controller manager.
func (e *env) ns(name string) string { return name + "-" + e.lab.RunID() }

func (e *env) node(name string, i int) {
	e.t.Helper()
	n, err := lab.Plan(i).AddNode(e.lab, name)
	if err != nil {
		e.t.Fatal(err)
	}
	e.nodes[name] = n
}

// labPod adds the lab side of pod key ("ns/name"), index j of the node's plan.
func (e *env) labPod(node, key string, j int) {
	e.t.Helper()
	n := e.nodes[node]
	v4, v6 := lab.Plan(int(n.PodCIDRv4.Addr().As4()[2])).Pod(j)
	p, err := n.AddPod(strings.ReplaceAll(key, "/", "-"), v4, v6)
	if err != nil {
		e.t.Fatal(err)
	}
	e.pods[key] = p
}

func (e *env) external(name string, j int, via string) {
	e.t.Helper()
	v4, v6 := lab.External(j)
	p, err := e.lab.AddExternal(name, v4, v6, e.nodes[via])
	if err != nil {
		e.t.Fatal(err)
	}
	e.pods[name] = p
}

func (e *env) createNamespace(name string, labels map[string]string) {
	e.t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns(name), Labels: labels}}
	if _, err := e.admin.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// createPod creates the API object of lab pod key, scheduled on its lab node; withIP also
// writes its addresses (IPv4 primary) and phase Running through the status subresource.
func (e *env) createPod(key string, labels map[string]string, withIP bool) {
	e.t.Helper()
	p := e.pods[key]
	ns, name, _ := strings.Cut(key, "/")
	pod := agent.Pod(p, e.ns(ns), name, p.Node.Name(), labels)
	pod.TypeMeta, pod.Status = metav1.TypeMeta{}, corev1.PodStatus{}
	if _, err := e.admin.CoreV1().Pods(e.ns(ns)).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.inAPI[key] = true
	if withIP {
		e.setPodIP(key)
	}
}

func (e *env) setPodIP(key string) {
	e.t.Helper()
	ctx := context.Background()
	p := e.pods[key]
	ns, name, _ := strings.Cut(key, "/")
	pod, err := e.admin.CoreV1().Pods(e.ns(ns)).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	pod.Status = agent.Pod(p, "", "", "", nil).Status
	if _, err := e.admin.CoreV1().Pods(e.ns(ns)).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// labelPod merges labels into a pod's; a nil value removes the label.
func (e *env) labelPod(key string, labels map[string]any) {
	e.t.Helper()
	ns, name, _ := strings.Cut(key, "/")
	if _, err := e.admin.CoreV1().Pods(e.ns(ns)).Patch(context.Background(), name, types.MergePatchType,
		labelPatch(labels), metav1.PatchOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) labelNamespace(name string, labels map[string]any) {
	e.t.Helper()
	if _, err := e.admin.CoreV1().Namespaces().Patch(context.Background(), e.ns(name), types.MergePatchType,
		labelPatch(labels), metav1.PatchOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func labelPatch(labels map[string]any) []byte {
	b, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	if err != nil {
		panic(err)
	}
	return b
}

// applyPolicy creates or replaces a policy (server-side apply); its namespace is a test
// namespace, suffixed here.
func (e *env) applyPolicy(np *networkingv1.NetworkPolicy) {
	e.t.Helper()
	np = np.DeepCopy()
	np.Namespace = e.ns(np.Namespace)
	np.TypeMeta = metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"}
	b, err := json.Marshal(np)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.admin.NetworkingV1().NetworkPolicies(np.Namespace).Patch(context.Background(), np.Name,
		types.ApplyPatchType, b, metav1.PatchOptions{FieldManager: "podwall-e2e", Force: new(true)}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) deletePolicy(ns, name string) {
	e.t.Helper()
	if err := e.admin.NetworkingV1().NetworkPolicies(e.ns(ns)).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// start runs an agent in every node with only the token for credentials, reaching the API
// server through a relay on 127.0.0.1:6443 inside the node (see the package comment), and
// waits until all are ready. The agents of the nodes named in inCluster run as the
// DaemonSet does, with no flag naming the source (inClusterAgent); the others get a
// kubeconfig.
func (e *env) start(token string, inCluster ...string) {
	e.t.Helper()
	for name, n := range e.nodes {
		var ln net.Listener
		if err := n.Do(func() (err error) {
			ln, err = net.Listen("tcp", "127.0.0.1:6443")
			return err
		}); err != nil {
			e.t.Fatal(err)
		}
		e.relays = append(e.relays, e.c.Relay(ln))
		cfg := agent.Config{Binary: binary, NodeName: n.Name()}
		if slices.Contains(inCluster, name) {
			cfg.Binary = e.inClusterAgent(name, token)
		} else {
			kubeconfig := filepath.Join(e.t.TempDir(), name+".kubeconfig")
			if err := e.c.WriteTokenKubeconfig(kubeconfig, "https://127.0.0.1:6443", token); err != nil {
				e.t.Fatal(err)
			}
			cfg.Args = []string{"--kubeconfig", kubeconfig}
		}
		a, err := agent.Start(n, cfg)
		if err != nil {
			e.t.Fatal(err)
		}
		e.agents[name] = a
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, a := range e.agents {
		if err := a.WaitReady(ctx); err != nil {
			e.t.Fatal(err)
		}
	}
}

// inClusterAgent writes a wrapper that runs podwall the way a pod does: in a private mount
// namespace whose /run (= /var/run) holds the ServiceAccount's token and CA where
// client-go's in-cluster configuration reads them, with KUBERNETES_SERVICE_HOST and _PORT
// naming the API server (the node's relay). Nothing is written outside the test's
// directory.
func (e *env) inClusterAgent(node, token string) string {
	e.t.Helper()
	dir := filepath.Join(e.t.TempDir(), node+"-serviceaccount")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), e.c.CA, 0o600); err != nil {
		e.t.Fatal(err)
	}
	script := fmt.Sprintf(`#!/bin/sh
export KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT=6443
exec unshare --mount --propagation private sh -ec '
mount -t tmpfs podwall-sa /run
mkdir -p /run/secrets/kubernetes.io/serviceaccount
cp %[1]q/token %[1]q/ca.crt /run/secrets/kubernetes.io/serviceaccount/
exec %[2]q "$@"' podwall "$@"
`, dir, binary)
	path := filepath.Join(e.t.TempDir(), node+"-podwall")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		e.t.Fatal(err)
	}
	return path
}

func (e *env) serve(ports ...uint16) {
	e.t.Helper()
	for _, p := range e.pods {
		for _, port := range ports {
			if _, err := p.ServeTCP(port); err != nil {
				e.t.Fatal(err)
			}
		}
	}
}

// probe is one TCP connection attempt and whether the policies allow it.
type probe struct {
	from, to string
	port     uint16
	allow    bool
}

func (p probe) String() string {
	verdict := "deny"
	if p.allow {
		verdict = "allow"
	}
	return fmt.Sprintf("%s -> %s:%d %s", p.from, p.to, p.port, verdict)
}

var families = []string{"IPv4", "IPv6"}

func (e *env) addr(key, fam string) netip.Addr {
	if fam == "IPv6" {
		return e.pods[key].IPv6
	}
	return e.pods[key].IPv4
}

// connects reports whether a TCP connection with an echo succeeds within timeout.
func (e *env) connects(fam string, p probe, timeout time.Duration) bool {
	ap := netip.AddrPortFrom(e.addr(p.to, fam), p.port)
	return lab.ProbeTCP(context.Background(), e.pods[p.from].NS, ap, timeout) == nil
}

// mismatches runs the probes over both families at once and describes each whose outcome
// differs from its allow.
func (e *env) mismatches(timeout time.Duration, probes ...probe) []string {
	msgs := make([]string, len(probes)*len(families))
	var wg sync.WaitGroup
	for i, p := range probes {
		for j, fam := range families {
			wg.Go(func() {
				if got := e.connects(fam, p, timeout); got != p.allow {
					msgs[i*len(families)+j] = fmt.Sprintf("%s %s: connected=%v", fam, p, got)
				}
			})
		}
	}
	wg.Wait()
	return slices.DeleteFunc(msgs, func(m string) bool { return m == "" })
}

const probeTimeout = 400 * time.Millisecond

// check runs the probes once and reports every outcome that differs.
func (e *env) check(probes ...probe) {
	e.t.Helper()
	for _, m := range e.mismatches(probeTimeout, probes...) {
		e.t.Error(m)
	}
}

// await polls the probes until all have their outcome, failing after timeout: for changes
// made through the API, whose enforcement is asynchronous. A last check with the full probe
// timeout confirms.
func (e *env) await(what string, timeout time.Duration, probes ...probe) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := e.mismatches(100*time.Millisecond, probes...)
		if len(m) == 0 {
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not enforced within %v: %s", what, timeout, strings.Join(m, "; "))
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.check(probes...)
}

func (e *env) generation(node string) uint64 {
	e.t.Helper()
	g, err := e.agents[node].Generation(context.Background())
	if err != nil {
		e.t.Fatalf("agent on %s: %v", node, err)
	}
	return g
}

// metric returns the value of an unlabelled series of an agent's /metrics.
func (e *env) metric(node, name string) (float64, error) {
	code, body, err := e.agents[node].Get(context.Background(), "/metrics")
	if err != nil || code != 200 {
		return 0, fmt.Errorf("metrics of %s: %d %v", node, code, err)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			_, err := fmt.Sscan(v, &f)
			return f, err
		}
	}
	return 0, fmt.Errorf("%s: no %s", node, name)
}

// awaitMetric polls every agent's metric until it equals want.
func (e *env) awaitMetric(name string, want float64, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for node := range e.agents {
		for {
			v, err := e.metric(node, name)
			if err == nil && v == want {
				break
			}
			if time.Now().After(deadline) {
				e.t.Fatalf("agent on %s: %s = %v (%v), want %v", node, name, v, err, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func sel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

// ingressPolicy isolates the pods podSel selects for ingress and allows from peers on TCP
// port.
func ingressPolicy(ns, name string, podSel *metav1.LabelSelector, port int32, from ...networkingv1.NetworkPolicyPeer) *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	p := intstr.FromInt32(port)
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: *podSel,
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  from,
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p}},
			}},
		},
	}
}

// dbPolicy is the seeds' db-policy (only name=api-pod reaches role=db, on TCP port).
func dbPolicy(port int32) *networkingv1.NetworkPolicy {
	return ingressPolicy("prod", "db-policy", sel("role", "db"), port, networkingv1.NetworkPolicyPeer{PodSelector: sel("name", "api-pod")})
}

// The agent in cluster mode, end to end: objects created through a real API server, an
// agent per lab node with the shipped RBAC's token only, real packets.
//
//	node-1: prod/web, prod/api, prod/db; external host "user"    (agent: --kubeconfig)
//	node-2: other/client, prod/db2 (its API object comes late)  (agent: in-cluster config)
func TestClusterEnforcement(t *testing.T) {
	needRoot(t)
	c := apiServer(t)
	token := installRBAC(t, c)
	e := newEnv(t, c)
	e.node("node-1", 1)
	e.node("node-2", 2)
	e.labPod("node-1", "prod/web", 0)
	e.labPod("node-1", "prod/api", 1)
	e.labPod("node-1", "prod/db", 2)
	e.labPod("node-2", "other/client", 0)
	e.labPod("node-2", "prod/db2", 1)
	e.external("user", 0, "node-1")
	e.serve(80, 3306, 5000)

	e.createNamespace("prod", nil)
	e.createNamespace("other", map[string]string{"team": "untrusted"})
	e.createPod("prod/web", map[string]string{"role": "web"}, true)
	e.createPod("prod/api", map[string]string{"role": "api", "name": "api-pod"}, true)
	e.createPod("prod/db", map[string]string{"role": "db"}, true)
	e.createPod("other/client", map[string]string{"app": "client"}, true)
	e.applyPolicy(dbPolicy(3306))
	e.start(token, "node-2") // node-2 as the DaemonSet runs it: in-cluster config

	const enforce = 10 * time.Second // budget for each change through the API
	// The seeds' 3-tier application.
	threeTier := []probe{
		{"user", "prod/web", 80, true},
		{"prod/web", "prod/api", 5000, true},
		{"prod/api", "prod/db", 3306, true},
		{"prod/web", "prod/db", 3306, false},
		{"user", "prod/db", 3306, false},
		{"prod/api", "prod/db", 80, false},
		{"other/client", "prod/db", 3306, false},
		{"prod/db", "prod/web", 80, true}, // db is not egress-isolated
	}
	t.Run("3-tier", func(t *testing.T) { e.t = t; e.check(threeTier...) })

	t.Run("policy create, update, delete", func(t *testing.T) {
		e.t = t
		ext4, ext6 := netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")
		webFromOutside := func(port int32) *networkingv1.NetworkPolicy {
			return ingressPolicy("prod", "web-from-outside", sel("role", "web"), port,
				networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: ext4.String()}},
				networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: ext6.String()}})
		}
		e.applyPolicy(webFromOutside(80))
		e.await("create web-from-outside", enforce,
			probe{"user", "prod/web", 80, true},
			probe{"other/client", "prod/web", 80, false},
			probe{"prod/api", "prod/web", 80, false})
		e.applyPolicy(webFromOutside(8080))
		e.await("update web-from-outside to port 8080", enforce, probe{"user", "prod/web", 80, false})
		e.deletePolicy("prod", "web-from-outside")
		e.await("delete web-from-outside", enforce,
			probe{"user", "prod/web", 80, true},
			probe{"other/client", "prod/web", 80, true})
	})

	t.Run("pod label change", func(t *testing.T) {
		e.t = t
		e.labelPod("prod/api", map[string]any{"name": nil})
		e.await("api without name=api-pod", enforce, probe{"prod/api", "prod/db", 3306, false})
		e.labelPod("prod/api", map[string]any{"name": "api-pod"})
		e.await("api with name=api-pod again", enforce, probe{"prod/api", "prod/db", 3306, true})
	})

	dbFromTrusted := ingressPolicy("prod", "db-from-trusted", sel("role", "db"), 3306,
		networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("team", "trusted")})
	t.Run("namespace label change", func(t *testing.T) {
		e.t = t
		e.applyPolicy(dbFromTrusted)
		e.labelNamespace("other", map[string]any{"team": "trusted"})
		e.await("namespace other trusted", enforce, probe{"other/client", "prod/db", 3306, true})
		e.labelNamespace("other", map[string]any{"team": "untrusted"})
		e.await("namespace other untrusted", enforce, probe{"other/client", "prod/db", 3306, false})
	})

	t.Run("new pod", func(t *testing.T) {
		e.t = t
		// Not in the API yet: not isolated.
		e.check(probe{"prod/web", "prod/db2", 3306, true})
		// In the API without an address: tracked, isolating nothing yet.
		before := e.generation("node-2")
		e.createPod("prod/db2", map[string]string{"role": "db"}, false)
		waitGeneration(t, e, "node-2", before)
		e.check(probe{"prod/web", "prod/db2", 3306, true})
		// Its address appears: enforced, across nodes (api on node-1, db2 on node-2).
		e.setPodIP("prod/db2")
		e.await("db2 enforced", enforce,
			probe{"prod/web", "prod/db2", 3306, false},
			probe{"prod/api", "prod/db2", 3306, true},
			probe{"other/client", "prod/db2", 3306, false})
	})

	t.Run("latency", func(t *testing.T) {
		e.t = t
		// The starting point, also when this phase runs alone (-run .../latency).
		e.applyPolicy(dbPolicy(3306))
		e.applyPolicy(dbFromTrusted)
		e.labelPod("prod/api", map[string]any{"name": "api-pod"})
		e.labelNamespace("other", map[string]any{"team": "untrusted"})
		e.await("latency start", enforce, probe{"prod/api", "prod/db", 3306, true}, probe{"other/client", "prod/db", 3306, false})
		measureLatency(t, e)
	})

	t.Run("API server restart", func(t *testing.T) {
		e.t = t
		c.StopAPIServer()
		e.awaitMetric("podwall_source_connected", 0, 15*time.Second)
		for node, a := range e.agents {
			code, body, err := a.Get(context.Background(), "/readyz")
			if err != nil || code != 200 || !strings.Contains(body, "unreachable") {
				t.Errorf("agent on %s while the API server is down: /readyz %d %q %v; want 200 saying unreachable", node, code, body, err)
			}
			t.Logf("agent on %s while the API server is down: /readyz: %s", node, strings.ReplaceAll(strings.TrimSpace(body), "\n", " | "))
		}
		// Enforcement goes on with the last state.
		e.check(threeTier...)
		if e.inAPI["prod/db2"] {
			e.check(probe{"prod/web", "prod/db2", 3306, false}, probe{"prod/api", "prod/db2", 3306, true})
		}

		if err := c.StartAPIServer(context.Background()); err != nil {
			t.Fatal(err)
		}
		up := time.Now()
		// A change made once the API server is back converges: the reflectors reconnect
		// by themselves (with backoff) and list again.
		e.applyPolicy(ingressPolicy("prod", "db-policy", sel("role", "db"), 3306,
			networkingv1.NetworkPolicyPeer{PodSelector: sel("name", "api-pod")},
			networkingv1.NetworkPolicyPeer{PodSelector: sel("role", "web")}))
		e.await("db-policy after the restart", 60*time.Second,
			probe{"prod/web", "prod/db", 3306, true},
			probe{"user", "prod/db", 3306, false})
		t.Logf("change after the restart enforced %v after the API server was ready", time.Since(up).Round(time.Millisecond))
		e.awaitMetric("podwall_source_connected", 1, 30*time.Second)
		for node := range e.agents {
			if v, err := e.metric(node, "podwall_source_api_errors_total"); err != nil || v == 0 {
				t.Errorf("agent on %s: podwall_source_api_errors_total = %v (%v), want the outage counted", node, v, err)
			}
		}
	})
}

func waitGeneration(t *testing.T, e *env, node string, after uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.generation(node) <= after {
		if time.Now().After(deadline) {
			t.Fatalf("agent on %s: generation still %d after 10s", node, after)
		}
		time.Sleep(time.Millisecond)
	}
}
