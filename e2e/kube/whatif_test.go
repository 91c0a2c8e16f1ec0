package kube

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/e2e/cluster"
	"github.com/podwall/podwall/e2e/labenv"
	"github.com/podwall/podwall/policy/flows"
	"github.com/podwall/podwall/policy/manifests"
	"github.com/podwall/podwall/policy/policytest"
	"github.com/podwall/podwall/policy/whatif"
)

// The RBAC that deploy/examples/whatif documents for `podwall what-if --kubeconfig` lets its
// subject read the agents' flows through the pod proxy in podwall-system and the objects
// policy depends on — and nothing else: no pod proxy elsewhere, no exec, no secrets, no
// writes.
func TestWhatifRBAC(t *testing.T) {
	c := cluster.Shared(t)
	installRBAC(t, c) // the podwall-system namespace
	sa := cluster.Client(t, c.TokenConfig(whatifToken(t, c)))
	ctx := context.Background()
	for _, tc := range []struct {
		verb, resource, sub, ns string
		want                    bool
	}{
		{"list", "pods", "", "podwall-system", true},
		{"get", "pods", "proxy", "podwall-system", true},
		{"list", "pods", "", "", true},
		{"list", "namespaces", "", "", true},
		{"list", "nodes", "", "", true},
		{"list", "networkpolicies", "", "", true},
		{"list", "clusternetworkpolicies", "", "", true},
		{"get", "pods", "proxy", "default", false},
		{"create", "pods", "proxy", "podwall-system", false},
		{"create", "pods", "exec", "podwall-system", false},
		{"get", "secrets", "", "podwall-system", false},
		{"delete", "pods", "", "podwall-system", false},
		{"create", "networkpolicies", "", "default", false},
	} {
		if got := may(t, ctx, sa, tc.verb, tc.resource, tc.sub, tc.ns); got != tc.want {
			t.Errorf("%s %s/%s in %q: allowed=%v, want %v", tc.verb, tc.resource, tc.sub, tc.ns, got, tc.want)
		}
	}
}

// whatifToken applies deploy/examples/whatif/rbac.yaml (podwall-system must exist) and
// returns a token of its ServiceAccount, valid for an hour, once the RBAC lets it use the
// pod proxy.
func whatifToken(t *testing.T, c *cluster.Cluster) string {
	t.Helper()
	apply(t, c, false, decodeObjects(t, filepath.Join(repo, "deploy/examples/whatif/rbac.yaml"))...)
	ctx := context.Background()
	tr, err := cluster.Client(t, c.Admin).CoreV1().ServiceAccounts("podwall-system").CreateToken(ctx, "podwall-whatif",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(3600))}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sa := cluster.Client(t, c.TokenConfig(tr.Status.Token))
	// RBAC takes a moment to apply.
	for deadline := time.Now().Add(10 * time.Second); !may(t, ctx, sa, "get", "pods", "proxy", "podwall-system"); {
		if time.Now().After(deadline) {
			t.Fatal("the what-if subject may not get pods/proxy in podwall-system")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return tr.Status.Token
}

// may asks the API server whether the caller may verb resource/sub in ns.
func may(t *testing.T, ctx context.Context, cs kubernetes.Interface, verb, resource, sub, ns string) bool {
	t.Helper()
	group := map[string]string{"networkpolicies": "networking.k8s.io", "clusternetworkpolicies": "policy.networking.k8s.io"}[resource]
	r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: verb, Group: group, Resource: resource, Subresource: sub, Namespace: ns}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r.Status.Allowed
}

// TestWhatIfThroughPodProxy runs `podwall what-if --kubeconfig` as a CI job would, with the
// token of deploy/examples/whatif's ServiceAccount, against a real API server that reaches
// the agents: kube-apiserver and etcd run inside the lab, in a namespace of their own on the
// underlay (control-plane, 172.18.0.4), and the two agents run as the DaemonSet's
// hostNetwork pods do — their Pod objects in podwall-system with the DaemonSet's labels and
// their node's address, their debug listener on it as deploy/components/whatif sets it. what-if, in the test's own namespace
// (no route to the lab), reaches the API server through a relay and every agent's
// /debug/flows only through the API server's pod proxy.
//
//	node-1: prod/web, prod/api; external host "user"   (records user → web, db → web)
//	node-2: prod/db                                     (records api → db, web → db, …)
//
// A proposal that closes api → db (api may only resolve names) lists exactly that flow, once
// per family, with its 3 connections, from node-2, and exits 3; a proposal that changes no
// verdict exits 0 having re-judged the flows of both agents; a wrong agent port fails, naming
// the pod proxy.
func TestWhatIfThroughPodProxy(t *testing.T) {
	needRoot(t)
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd in the lab")
	}
	e := &env{Env: labenv.New(t), inAPI: map[string]bool{}}
	n1, n2 := e.AddNode("node-1", 1), e.AddNode("node-2", 2)
	cp, err := lab.Plan(3).AddNode(e.Lab, "control-plane") // no agent: not in e.Nodes
	if err != nil {
		t.Fatal(err)
	}
	e.AddPods("node-1", "prod/web", "prod/api")
	e.AddPods("node-2", "prod/db")
	e.AddExternal("user", 0, "node-1")
	e.Serve(80, 3306, 5000)

	ctx, cancel := cluster.TestContext(t.Deadline())
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{Netns: cp.Name(), BindAddress: cp.UnderlayV4, Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	e.AtClose(func() { // after the agents, before the lab goes
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	e.c, e.admin = c, cluster.Client(t, c.Admin)
	agentToken := installRBAC(t, c)
	whatifKubeconfig := filepath.Join(t.TempDir(), "whatif.kubeconfig")
	if err := c.WriteTokenKubeconfig(whatifKubeconfig, c.Host, whatifToken(t, c)); err != nil {
		t.Fatal(err)
	}

	for _, n := range []*lab.Node{n1, n2} {
		if _, err := e.admin.CoreV1().Nodes().Create(context.Background(), n.Object(n.Name()), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.createAgentPod(n)
	}
	e.createNamespace("prod", nil)
	e.createPod("prod/web", map[string]string{"role": "web"}, true)
	e.createPod("prod/api", map[string]string{"role": "api", "name": "api-pod"}, true)
	e.createPod("prod/db", map[string]string{"role": "db"}, true)
	e.applyPolicy(dbPolicy(3306))
	// web open to all on port 80: isolated, so node-1's agent records flows too.
	e.applyPolicy(ingressPolicy("prod", "web-policy", policytest.Selector("role", "web"), 80))

	e.StartAgents(30*time.Second, func(name string, n *lab.Node) lab.AgentConfig {
		kubeconfig := filepath.Join(t.TempDir(), name+".kubeconfig")
		if err := c.WriteTokenKubeconfig(kubeconfig, "https://"+c.Listen, agentToken); err != nil {
			t.Fatal(err)
		}
		return lab.AgentConfig{Binary: binary, NodeName: n.Name(), Args: []string{"--kubeconfig", kubeconfig},
			DebugAddr: agentDebugAddr(t, n)}
	})
	e.Warm()

	apiToDB := probe{"prod/api", "prod/db", 3306, true}
	e.check(
		probe{"user", "prod/web", 80, true},
		probe{"prod/web", "prod/api", 5000, true},
		apiToDB,
		probe{"prod/web", "prod/db", 3306, false},
		probe{"user", "prod/db", 3306, false},
		probe{"prod/api", "prod/db", 80, false},
		probe{"prod/db", "prod/web", 80, true},
	)
	e.check(apiToDB, apiToDB) // three connections per family in all

	// What the agents recorded, read from inside their nodes: api → db on node-2 with its 3
	// connections per family, and flows on node-1 too.
	type key struct {
		family, src, dst, proto string
		port                    uint16
	}
	keyOf := func(fam string, p probe) key {
		return key{fam, e.Addr(p.from, fam).String(), e.Addr(p.to, fam).String(), "TCP", p.port}
	}
	recorded := map[string]map[key]flows.Line{}
	deadline := time.Now().Add(10 * time.Second)
	for {
		for name, a := range e.Agents {
			recorded[name] = map[key]flows.Line{}
			code, body, err := a.Get(context.Background(), "/debug/flows")
			if err != nil || code != 200 {
				t.Fatalf("agent on %s: /debug/flows: %d %v", name, code, err)
			}
			for line := range strings.Lines(body) {
				var l flows.Line
				if err := json.Unmarshal([]byte(line), &l); err != nil {
					t.Fatalf("agent on %s: /debug/flows line %q: %v", name, line, err)
				}
				recorded[name][key{l.Family, l.Src, l.Dst, l.Protocol, l.DstPort}] = l
			}
		}
		if recorded["node-2"][keyOf("IPv4", apiToDB)].Connections == 3 && recorded["node-2"][keyOf("IPv6", apiToDB)].Connections == 3 &&
			len(recorded["node-1"]) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agents' flows after 10s: %v", recorded)
		}
		time.Sleep(20 * time.Millisecond)
	}
	distinct := map[key]bool{}
	for _, fs := range recorded {
		for k := range fs {
			distinct[k] = true
		}
	}

	closing := policytest.NetworkPolicy(e.ns("prod"), "api-egress", policytest.Selector("role", "api"),
		policytest.Egress(policytest.To(policytest.Port("53/UDP"))))
	harmless := policytest.NetworkPolicy(e.ns("prod"), "web-open", policytest.Selector("role", "web"),
		policytest.Ingress(policytest.From()))
	proposal, noop := filepath.Join(t.TempDir(), "api-egress.yaml"), filepath.Join(t.TempDir(), "web-open.yaml")
	if err := manifests.Write(proposal, closing); err != nil {
		t.Fatal(err)
	}
	if err := manifests.Write(noop, harmless); err != nil {
		t.Fatal(err)
	}

	t.Run("closing api to db", func(t *testing.T) {
		out, stderr, code := whatifRun(t, "--kubeconfig", whatifKubeconfig, "--proposed", proposal, "-o", "json")
		if code != 3 {
			t.Fatalf("exit %d, want 3\n%s%s", code, out, stderr)
		}
		got := map[key]uint64{}
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			var l whatif.Line
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("%q: %v", sc.Text(), err)
			}
			if l.Change != whatif.NewlyDenied || !slices.Equal(l.Policies, []string{e.ns("prod") + "/api-egress"}) ||
				l.SrcPod != e.ns("prod")+"/api" || l.DstPod != e.ns("prod")+"/db" ||
				!slices.Equal(l.Nodes, []string{n2.Name()}) || l.Was.Verdict != "allow" {
				t.Errorf("change %s", sc.Text())
			}
			got[key{l.Family, l.Src, l.Dst, l.Protocol, l.DstPort}] = l.Connections
		}
		want := map[key]uint64{keyOf("IPv4", apiToDB): 3, keyOf("IPv6", apiToDB): 3}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("changes %v, want %v\n%s", got, want, out)
		}
	})

	t.Run("no-op", func(t *testing.T) {
		out, stderr, code := whatifRun(t, "--kubeconfig", whatifKubeconfig, "--proposed", noop)
		// Both agents' flows, read through the pod proxy, were re-judged.
		if want := fmt.Sprintf("No verdict would change: %d recorded flows re-judged", len(distinct)); code != 0 || !strings.Contains(out, want) {
			t.Errorf("exit %d, want 0 and %q\n%s%s", code, want, out, stderr)
		}
	})

	t.Run("wrong agent port", func(t *testing.T) {
		out, stderr, code := whatifRun(t, "--kubeconfig", whatifKubeconfig, "--proposed", proposal, "--agent-port", "9099")
		if code != 1 || !strings.Contains(stderr, "through the API server") {
			t.Errorf("exit %d, want 1 and an error naming the pod proxy\n%s%s", code, out, stderr)
		}
	})
}

// agentDebugAddr is where a hostNetwork agent serves /debug/ for the pod proxy: the
// --debug-addr of the DaemonSet with deploy/components/whatif, $(POD_IP) being the node's
// address.
func agentDebugAddr(t *testing.T, n *lab.Node) string {
	t.Helper()
	addr := flagValue(daemonSetWith(t, "whatif").Spec.Template.Spec.Containers[0].Args, "--debug-addr")
	if !strings.Contains(addr, "$(POD_IP)") {
		t.Fatalf("deploy/components/whatif: --debug-addr=%q does not name the pod's address", addr)
	}
	return strings.ReplaceAll(addr, "$(POD_IP)", n.UnderlayV4.String())
}

// createAgentPod creates the Pod the DaemonSet of deploy/ with deploy/components/whatif
// would run on lab node n — its template's labels and spec, hostNetwork — Running with the
// node's addresses.
func (e *env) createAgentPod(n *lab.Node) {
	e.T.Helper()
	ds := daemonSetWith(e.T, "whatif")
	pod := &corev1.Pod{ObjectMeta: ds.Spec.Template.ObjectMeta, Spec: ds.Spec.Template.Spec}
	pod.Namespace, pod.Name, pod.Spec.NodeName = ds.Namespace, ds.Name+"-"+n.Role(), n.Name()
	ctx := context.Background()
	created, err := e.admin.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		e.T.Fatal(err)
	}
	created.Status = corev1.PodStatus{Phase: corev1.PodRunning, HostIP: n.UnderlayV4.String(), PodIP: n.UnderlayV4.String(),
		PodIPs: []corev1.PodIP{{IP: n.UnderlayV4.String()}, {IP: n.UnderlayV6.String()}}}
	if _, err := e.admin.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		e.T.Fatal(err)
	}
}

// whatifRun runs `podwall what-if` in the test's namespace and returns its stdout, stderr and
// exit status.
func whatifRun(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"what-if"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return string(out), stderr.String(), exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return string(out), stderr.String(), 0
}

type testLog struct{ t *testing.T }

func (w testLog) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
