package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/e2e/cluster"
	"github.com/podwall/podwall/e2e/labenv"
	"github.com/podwall/podwall/policy/policytest"
)

// env is one cluster-mode lab (labenv.Env: lab nodes, pods and external hosts, an agent per
// node) and their objects in the API server; the agents read the API through a relay with
// the agent ServiceAccount's token.
type env struct {
	*labenv.Env
	c     *cluster.Cluster
	admin kubernetes.Interface
	inAPI map[string]bool // pods created in the API server
}

// The API server is shared by the package's tests and its namespaces never finish deleting
// (no controller manager): the pods a test created are deleted at its end, so that no later
// test sees them claim its lab addresses (an address two pods claim is judged with both).
func newEnv(t *testing.T, c *cluster.Cluster) *env {
	t.Helper()
	e := &env{Env: labenv.New(t), c: c, admin: cluster.Client(t, c.Admin), inAPI: map[string]bool{}}
	t.Cleanup(func() {
		for key := range e.inAPI {
			ns, name, _ := strings.Cut(key, "/")
			if err := e.admin.CoreV1().Pods(e.ns(ns)).Delete(context.Background(), name,
				metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil {
				t.Errorf("deleting pod %s: %v", key, err)
			}
		}
	})
	return e
}

// ns is the API namespace of a test namespace: suffixed with the lab's run id, because the
// API server is shared and namespaces never finish deleting without a controller manager.
func (e *env) ns(name string) string { return name + "-" + e.Lab.RunID() }

func (e *env) createNamespace(name string, labels map[string]string) {
	e.T.Helper()
	ns := policytest.Namespace(e.ns(name), labels)
	if _, err := e.admin.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		e.T.Fatal(err)
	}
}

// createPod creates the API object of lab pod key, scheduled on its lab node; withIP also
// writes its addresses (IPv4 primary) and phase Running through the status subresource.
func (e *env) createPod(key string, labels map[string]string, withIP bool) {
	e.T.Helper()
	p := e.Pods[key]
	ns, name, _ := strings.Cut(key, "/")
	pod := p.Object(e.ns(ns), name, p.Node.Name(), labels)
	pod.Status = corev1.PodStatus{}
	if _, err := e.admin.CoreV1().Pods(e.ns(ns)).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		e.T.Fatal(err)
	}
	e.inAPI[key] = true
	if withIP {
		e.setPodIP(key)
	}
}

func (e *env) setPodIP(key string) {
	e.T.Helper()
	ctx := context.Background()
	p := e.Pods[key]
	ns, name, _ := strings.Cut(key, "/")
	pod, err := e.admin.CoreV1().Pods(e.ns(ns)).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		e.T.Fatal(err)
	}
	pod.Status = p.Object("", "", "", nil).Status
	if _, err := e.admin.CoreV1().Pods(e.ns(ns)).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		e.T.Fatal(err)
	}
}

// labelPod merges labels into a pod's; a nil value removes the label.
func (e *env) labelPod(key string, labels map[string]any) {
	e.T.Helper()
	ns, name, _ := strings.Cut(key, "/")
	if _, err := e.admin.CoreV1().Pods(e.ns(ns)).Patch(context.Background(), name, types.MergePatchType,
		labelPatch(labels), metav1.PatchOptions{}); err != nil {
		e.T.Fatal(err)
	}
}

func (e *env) labelNamespace(name string, labels map[string]any) {
	e.T.Helper()
	if _, err := e.admin.CoreV1().Namespaces().Patch(context.Background(), e.ns(name), types.MergePatchType,
		labelPatch(labels), metav1.PatchOptions{}); err != nil {
		e.T.Fatal(err)
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
	e.T.Helper()
	np = np.DeepCopy()
	np.Namespace = e.ns(np.Namespace)
	np.TypeMeta = metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"}
	b, err := json.Marshal(np)
	if err != nil {
		e.T.Fatal(err)
	}
	if _, err := e.admin.NetworkingV1().NetworkPolicies(np.Namespace).Patch(context.Background(), np.Name,
		types.ApplyPatchType, b, metav1.PatchOptions{FieldManager: "podwall-e2e", Force: new(true)}); err != nil {
		e.T.Fatal(err)
	}
}

func (e *env) deletePolicy(ns, name string) {
	e.T.Helper()
	if err := e.admin.NetworkingV1().NetworkPolicies(e.ns(ns)).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		e.T.Fatal(err)
	}
}

// start runs an agent in every node with only the token for credentials, reaching the API
// server through a relay on 127.0.0.1:6443 inside the node (see the package comment), and
// waits until all are ready. The agents of the nodes named in inCluster run as the
// DaemonSet does, with no flag naming the source (inClusterAgent); the others get a
// kubeconfig.
func (e *env) start(token string, inCluster ...string) {
	e.T.Helper()
	e.StartAgents(30*time.Second, func(name string, n *lab.Node) lab.AgentConfig {
		var ln net.Listener
		if err := n.Do(func() (err error) {
			ln, err = net.Listen("tcp", "127.0.0.1:6443")
			return err
		}); err != nil {
			e.T.Fatal(err)
		}
		relay := e.c.Relay(ln)
		e.AtClose(func() { relay.Close() }) // after the agents: they should not see the API go
		cfg := lab.AgentConfig{Binary: binary, NodeName: n.Name()}
		if slices.Contains(inCluster, name) {
			cfg.Binary = e.inClusterAgent(name, token)
		} else {
			kubeconfig := filepath.Join(e.T.TempDir(), name+".kubeconfig")
			if err := e.c.WriteTokenKubeconfig(kubeconfig, "https://127.0.0.1:6443", token); err != nil {
				e.T.Fatal(err)
			}
			cfg.Args = []string{"--kubeconfig", kubeconfig}
		}
		return cfg
	})
}

// inClusterAgent writes a wrapper that runs podwall the way a pod does: in a private mount
// namespace whose /run (= /var/run) holds the ServiceAccount's token and CA where
// client-go's in-cluster configuration reads them, with KUBERNETES_SERVICE_HOST and _PORT
// naming the API server (the node's relay). Nothing is written outside the test's
// directory.
func (e *env) inClusterAgent(node, token string) string {
	e.T.Helper()
	dir := filepath.Join(e.T.TempDir(), node+"-serviceaccount")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		e.T.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token), 0o600); err != nil {
		e.T.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), e.c.CA, 0o600); err != nil {
		e.T.Fatal(err)
	}
	script := fmt.Sprintf(`#!/bin/sh
export KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT=6443
exec unshare --mount --propagation private sh -ec '
mount -t tmpfs podwall-sa /run
mkdir -p /run/secrets/kubernetes.io/serviceaccount
cp %[1]q/token %[1]q/ca.crt /run/secrets/kubernetes.io/serviceaccount/
exec %[2]q "$@"' podwall "$@"
`, dir, binary)
	path := filepath.Join(e.T.TempDir(), node+"-podwall")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		e.T.Fatal(err)
	}
	return path
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

// connects reports whether a TCP connection with an echo succeeds within timeout.
func (e *env) connects(fam string, p probe, timeout time.Duration) bool {
	return e.Probe(fam, "TCP", p.from, p.to, p.port, timeout) == nil
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
	e.T.Helper()
	for _, m := range e.mismatches(probeTimeout, probes...) {
		e.T.Error(m)
	}
}

// await polls the probes until all have their outcome, failing after timeout: for changes
// made through the API, whose enforcement is asynchronous. A last check with the full probe
// timeout confirms.
func (e *env) await(what string, timeout time.Duration, probes ...probe) {
	e.T.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := e.mismatches(100*time.Millisecond, probes...)
		if len(m) == 0 {
			break
		}
		if time.Now().After(deadline) {
			e.T.Fatalf("%s: not enforced within %v: %s", what, timeout, strings.Join(m, "; "))
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.check(probes...)
}

// metric returns the value of an unlabelled series of an agent's /metrics.
func (e *env) metric(node, name string) (float64, error) {
	m, err := e.Metrics(node)
	if err != nil {
		return 0, err
	}
	if v, ok := m.Value(name); ok {
		return v, nil
	}
	return 0, fmt.Errorf("%s: no %s", node, name)
}

// awaitMetric polls every agent's metric until it equals want.
func (e *env) awaitMetric(name string, want float64, timeout time.Duration) {
	e.T.Helper()
	deadline := time.Now().Add(timeout)
	for node := range e.Agents {
		for {
			v, err := e.metric(node, name)
			if err == nil && v == want {
				break
			}
			if time.Now().After(deadline) {
				e.T.Fatalf("agent on %s: %s = %v (%v), want %v", node, name, v, err, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// ingressPolicy isolates the pods podSel selects for ingress and allows from peers on TCP
// port.
func ingressPolicy(ns, name string, podSel *metav1.LabelSelector, port int32, from ...policytest.Elem) *networkingv1.NetworkPolicy {
	elems := append([]policytest.Elem{policytest.Port(fmt.Sprintf("%d/TCP", port))}, from...)
	return policytest.NetworkPolicy(ns, name, podSel, policytest.Ingress(policytest.From(elems...)))
}

// dbPolicy is the seeds' db-policy (only name=api-pod reaches role=db, on TCP port).
func dbPolicy(port int32) *networkingv1.NetworkPolicy {
	return ingressPolicy("prod", "db-policy", policytest.Selector("role", "db"), port,
		policytest.Pods(policytest.Selector("name", "api-pod")))
}

// The agent in cluster mode, end to end: objects created through a real API server, an
// agent per lab node with the shipped RBAC's token only, real packets.
//
//	node-1: prod/web, prod/api, prod/db; external host "user"    (agent: --kubeconfig)
//	node-2: other/client, prod/db2 (its API object comes late)  (agent: in-cluster config)
func TestClusterEnforcement(t *testing.T) {
	needRoot(t)
	c := cluster.Shared(t)
	token := installRBAC(t, c)
	e := newEnv(t, c)
	e.AddNode("node-1", 1)
	e.AddNode("node-2", 2)
	e.AddPods("node-1", "prod/web", "prod/api", "prod/db")
	e.AddPods("node-2", "other/client", "prod/db2")
	e.AddExternal("user", 0, "node-1")
	e.Serve(80, 3306, 5000)

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
	t.Run("3-tier", func(t *testing.T) { e.T = t; e.check(threeTier...) })

	t.Run("policy create, update, delete", func(t *testing.T) {
		e.T = t
		ext4, ext6 := netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")
		webFromOutside := func(port int32) *networkingv1.NetworkPolicy {
			return ingressPolicy("prod", "web-from-outside", policytest.Selector("role", "web"), port,
				policytest.CIDR(ext4.String()), policytest.CIDR(ext6.String()))
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
		e.T = t
		e.labelPod("prod/api", map[string]any{"name": nil})
		e.await("api without name=api-pod", enforce, probe{"prod/api", "prod/db", 3306, false})
		e.labelPod("prod/api", map[string]any{"name": "api-pod"})
		e.await("api with name=api-pod again", enforce, probe{"prod/api", "prod/db", 3306, true})
	})

	dbFromTrusted := ingressPolicy("prod", "db-from-trusted", policytest.Selector("role", "db"), 3306,
		policytest.Namespaces(policytest.Selector("team", "trusted")))
	t.Run("namespace label change", func(t *testing.T) {
		e.T = t
		e.applyPolicy(dbFromTrusted)
		e.labelNamespace("other", map[string]any{"team": "trusted"})
		e.await("namespace other trusted", enforce, probe{"other/client", "prod/db", 3306, true})
		e.labelNamespace("other", map[string]any{"team": "untrusted"})
		e.await("namespace other untrusted", enforce, probe{"other/client", "prod/db", 3306, false})
	})

	t.Run("new pod", func(t *testing.T) {
		e.T = t
		// Not in the API yet: not isolated.
		e.check(probe{"prod/web", "prod/db2", 3306, true})
		// In the API without an address: tracked, isolating nothing yet.
		before := e.Generation("node-2")
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
		e.T = t
		// The starting point, also when this phase runs alone (-run .../latency).
		e.applyPolicy(dbPolicy(3306))
		e.applyPolicy(dbFromTrusted)
		e.labelPod("prod/api", map[string]any{"name": "api-pod"})
		e.labelNamespace("other", map[string]any{"team": "untrusted"})
		e.await("latency start", enforce, probe{"prod/api", "prod/db", 3306, true}, probe{"other/client", "prod/db", 3306, false})
		measureLatency(t, e)
	})

	t.Run("API server restart", func(t *testing.T) {
		e.T = t
		c.StopAPIServer()
		e.awaitMetric("podwall_source_connected", 0, 15*time.Second)
		for node, a := range e.Agents {
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
		e.applyPolicy(ingressPolicy("prod", "db-policy", policytest.Selector("role", "db"), 3306,
			policytest.Pods(policytest.Selector("name", "api-pod")),
			policytest.Pods(policytest.Selector("role", "web"))))
		e.await("db-policy after the restart", 60*time.Second,
			probe{"prod/web", "prod/db", 3306, true},
			probe{"user", "prod/db", 3306, false})
		t.Logf("change after the restart enforced %v after the API server was ready", time.Since(up).Round(time.Millisecond))
		e.awaitMetric("podwall_source_connected", 1, 30*time.Second)
		for node := range e.Agents {
			if v, err := e.metric(node, "podwall_source_api_errors_total"); err != nil || v == 0 {
				t.Errorf("agent on %s: podwall_source_api_errors_total = %v (%v), want the outage counted", node, v, err)
			}
		}
	})
}

func waitGeneration(t *testing.T, e *env, node string, after uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.Generation(node) <= after {
		if time.Now().After(deadline) {
			t.Fatalf("agent on %s: generation still %d after 10s", node, after)
		}
		time.Sleep(time.Millisecond)
	}
}
