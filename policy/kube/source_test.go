package kube

import (
	"context"
	"fmt"
	"log/slog"
	"os"
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

	"github.com/podwall/podwall/e2e/cluster"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/policytest"
)

// These tests run the Source against a real kube-apiserver (cluster.Shared: one per test
// binary); each test works in namespaces of its own.

func TestMain(m *testing.M) {
	code := m.Run()
	if err := cluster.StopShared(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the API server:", err)
	}
	os.Exit(code)
}

// run starts a Source with the admin's credentials and returns a channel of its states.
func run(t *testing.T, c *cluster.Cluster) (*Source, <-chan policy.State) {
	t.Helper()
	s, err := New(c.Admin, Options{Log: slog.New(slog.NewTextHandler(testLog{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s, runSource(t, s)
}

// runSource runs s until the test ends and returns a channel of its states.
func runSource(t *testing.T, s *Source) <-chan policy.State {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	states := make(chan policy.State, 1000)
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, func(st policy.State, err error) {
			if err != nil {
				t.Errorf("update error: %v", err)
				return
			}
			states <- st
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return states
}

type testLog struct{ t *testing.T }

func (w testLog) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// await returns the first state from states that satisfies ok, failing after 10 s.
func await(t *testing.T, states <-chan policy.State, what string, ok func(policy.State) bool) policy.State {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case st := <-states:
			if ok(st) {
				return st
			}
		case <-timeout:
			t.Fatalf("no state with %s within 10s", what)
		}
	}
}

func podOf(st policy.State, ns, name string) *policy.Pod {
	for i := range st.Pods {
		if st.Pods[i].Namespace == ns && st.Pods[i].Name == name {
			return &st.Pods[i]
		}
	}
	return nil
}

// fixture creates a namespace named after the test and returns it with an admin client.
func fixture(t *testing.T, c *cluster.Cluster, labels map[string]string) (string, kubernetes.Interface) {
	t.Helper()
	client := cluster.Client(t, c.Admin)
	ns := strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	_, err := client.CoreV1().Namespaces().Create(context.Background(), policytest.Namespace(ns, labels), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ns, client
}

func createPod(t *testing.T, client kubernetes.Interface, ns, name string, labels map[string]string, ip string) {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "main", Image: "lab",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}}}
	created, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ip != "" {
		setIP(t, client, created, ip)
	}
}

// setIP writes the pod's address through the status subresource, as a kubelet would.
func setIP(t *testing.T, client kubernetes.Interface, pod *corev1.Pod, ip string) {
	t.Helper()
	pod = pod.DeepCopy()
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if _, err := client.CoreV1().Pods(pod.Namespace).UpdateStatus(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// The first state holds what existed; changes follow; a pod without an address is tracked
// and gets it when its status does; trimming keeps the named ports.
func TestSourceFollowsTheAPI(t *testing.T) {
	c := cluster.Shared(t)
	ns, client := fixture(t, c, map[string]string{"team": "a"})
	ctx := context.Background()
	createPod(t, client, ns, "web", map[string]string{"app": "web"}, "10.244.0.2")
	createPod(t, client, ns, "db", map[string]string{"app": "db"}, "")
	np := policytest.NetworkPolicy(ns, "db", policytest.Selector("app", "db"))
	if _, err := client.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	s, states := run(t, c)
	st := <-states // the first state is complete
	if web := podOf(st, ns, "web"); web == nil || len(web.IPs) != 1 || web.IPs[0].String() != "10.244.0.2" ||
		!slices.Equal(web.Ports, []policy.NamedPort{{Name: "http", Proto: flow.TCP, Port: 8080}}) {
		t.Errorf("first state: web = %+v", web)
	}
	if db := podOf(st, ns, "db"); db == nil || len(db.IPs) != 0 {
		t.Errorf("first state: db = %+v, want it without addresses", db)
	}
	if !slices.ContainsFunc(st.Policies, func(p *networkingv1.NetworkPolicy) bool { return p.Namespace == ns }) {
		t.Error("first state lacks the policy")
	}
	if got := s.Status(); !got.Synced || !got.Connected {
		t.Errorf("status after the first state: %#v", got)
	}

	db, err := client.CoreV1().Pods(ns).Get(ctx, "db", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	setIP(t, client, db, "10.244.0.3")
	await(t, states, "db's address", func(st policy.State) bool {
		p := podOf(st, ns, "db")
		return p != nil && len(p.IPs) == 1 && p.IPs[0].String() == "10.244.0.3"
	})

	patch := []byte(`{"metadata":{"labels":{"app":"cache"}}}`)
	if _, err := client.CoreV1().Pods(ns).Patch(ctx, "web", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	await(t, states, "web relabelled", func(st policy.State) bool {
		p := podOf(st, ns, "web")
		return p != nil && p.Labels["app"] == "cache"
	})

	patch = []byte(`{"metadata":{"labels":{"team":"b"}}}`)
	if _, err := client.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	await(t, states, "namespace relabelled", func(st policy.State) bool {
		return slices.ContainsFunc(st.Namespaces, func(n policy.Namespace) bool { return n.Name == ns && n.Labels["team"] == "b" })
	})

	if err := client.NetworkingV1().NetworkPolicies(ns).Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	await(t, states, "the policy deleted", func(st policy.State) bool {
		return !slices.ContainsFunc(st.Policies, func(p *networkingv1.NetworkPolicy) bool { return p.Namespace == ns })
	})
	// No kubelet confirms a graceful deletion: delete at once.
	if err := client.CoreV1().Pods(ns).Delete(ctx, "db", *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}
	await(t, states, "db deleted", func(st policy.State) bool { return podOf(st, ns, "db") == nil })
}

// A burst of changes becomes a few states, the last one complete.
func TestSourceCoalesces(t *testing.T) {
	c := cluster.Shared(t)
	ns, client := fixture(t, c, nil)
	const n = 50
	for i := range n {
		createPod(t, client, ns, fmt.Sprintf("p%d", i), map[string]string{"v": "0"}, "")
	}
	s, states := run(t, c)
	<-states
	before := s.Status().Updates

	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			patch := []byte(`{"metadata":{"labels":{"v":"1"}}}`)
			if _, err := client.CoreV1().Pods(ns).Patch(context.Background(), fmt.Sprintf("p%d", i),
				types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	await(t, states, "every pod relabelled", func(st policy.State) bool {
		for i := range n {
			if p := podOf(st, ns, fmt.Sprintf("p%d", i)); p == nil || p.Labels["v"] != "1" {
				return false
			}
		}
		return true
	})
	updates := s.Status().Updates - before
	t.Logf("%d changes → %d states", n, updates)
	if updates >= n/2 {
		t.Errorf("%d changes made %d states; want them coalesced", n, updates)
	}
}

// A lost API server changes nothing delivered; the Source reports it, reconnects by itself
// when the server is back, and follows the changes made after.
func TestSourceSurvivesAPIServerRestart(t *testing.T) {
	c := cluster.Shared(t)
	ns, client := fixture(t, c, nil)
	ctx := context.Background()
	createPod(t, client, ns, "web", map[string]string{"app": "web"}, "10.244.0.9")
	s, states := run(t, c)
	<-states

	c.StopAPIServer()
	waitStatus(t, s, "disconnected", func(st Status) bool { return !st.Connected })
	t.Logf("while stopped: %s", s.Status())
	if st := s.Status(); st.Errors == 0 || st.LastError == "" {
		t.Errorf("status while stopped: %#v; want the broken watches counted and the last error", st)
	}
	if len(states) > 0 {
		t.Errorf("%d states delivered while the API server was down", len(states))
	}
	if err := c.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"metadata":{"labels":{"app":"api"}}}`)
	if _, err := client.CoreV1().Pods(ns).Patch(ctx, "web", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// The reflectors retry with backoff (up to 30 s between attempts); allow for one.
	timeout := time.After(45 * time.Second)
	for done := false; !done; {
		select {
		case st := <-states:
			p := podOf(st, ns, "web")
			done = p != nil && p.Labels["app"] == "api"
		case <-timeout:
			t.Fatalf("no state with the change after the restart; status %s", s.Status())
		}
	}
	// Every watch reconnects; one may still meet the restarting server's 503 (the CRD's
	// endpoint answers last) after the change arrived through another.
	waitStatus(t, s, "connected again", func(st Status) bool { return st.Connected })
	if st := s.Status(); st.Errors == 0 {
		t.Errorf("status after the restart: %#v; want the broken watches counted", st)
	}
}

func waitStatus(t *testing.T, s *Source, what string, ok func(Status) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok(s.Status()) {
		if time.Now().After(deadline) {
			t.Fatalf("source not %s within 20s: %#v", what, s.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// List reads what the Source delivers.
func TestListMatchesSource(t *testing.T) {
	c := cluster.Shared(t)
	ns, client := fixture(t, c, map[string]string{"team": "x"})
	createPod(t, client, ns, "web", map[string]string{"app": "web"}, "10.244.0.20")
	_, states := run(t, c)
	want := <-states
	got, err := List(context.Background(), c.Admin)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Pods) != len(want.Pods) || len(got.Namespaces) != len(want.Namespaces) || len(got.Policies) != len(want.Policies) {
		t.Fatalf("List: %d pods %d namespaces %d policies; Source: %d %d %d", len(got.Pods), len(got.Namespaces),
			len(got.Policies), len(want.Pods), len(want.Namespaces), len(want.Policies))
	}
	for i := range got.Pods {
		if fmt.Sprint(got.Pods[i]) != fmt.Sprint(want.Pods[i]) {
			t.Errorf("pod %d: List %+v, Source %+v", i, got.Pods[i], want.Pods[i])
		}
	}
}
