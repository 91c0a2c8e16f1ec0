package kube

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/podwall/podwall/policy"
)

// runUntil runs a Source over c until a state satisfies done (or 10 s pass) and returns
// the states it delivered.
func runUntil(t *testing.T, c *fake.Clientset, o Options, done func(policy.State) bool) []policy.State {
	t.Helper()
	s := newSource(fakeResources(c), o)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var mu sync.Mutex
	var states []policy.State
	if err := s.Run(ctx, func(st policy.State, err error) {
		if err != nil {
			t.Errorf("state error: %v", err)
			return
		}
		mu.Lock()
		states = append(states, st)
		mu.Unlock()
		if done(st) {
			cancel()
		}
	}); err != nil {
		t.Fatalf("Run: %v", err)
	}
	return states
}

func node(name string, cidrs ...string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDRs: cidrs}}
}

// With Options.Node the Source's states carry every Node, with labels and pod ranges, from
// the first state on (a first state without them would let an Admin Deny towards `nodes`
// match nothing); a change of a Node makes a new state.
func TestSourceWatchesItsNode(t *testing.T) {
	other := node("node-2", "10.244.2.0/24")
	other.Labels = map[string]string{"zone": "b"}
	c := fake.NewClientset(node("node-1", "10.244.1.0/24", "fd00:10:244:1::/64"), other)
	// The first list of Nodes fails (the reflector retries after its backoff): the first
	// state must still carry them.
	var failed atomic.Bool
	c.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failed.CompareAndSwap(false, true) {
			return true, nil, apierrors.NewInternalError(errors.New("etcd is slow today"))
		}
		return false, nil, nil
	})
	var once sync.Once
	states := runUntil(t, c, Options{Node: "node-1"}, func(st policy.State) bool {
		if len(st.Nodes) < 2 {
			return false
		}
		once.Do(func() {
			if len(st.Nodes) != 2 || st.Nodes[0].Name != "node-1" ||
				!equalPrefixes(st.Nodes[0].PodCIDRs, "10.244.1.0/24", "fd00:10:244:1::/64") ||
				st.Nodes[1].Name != "node-2" || st.Nodes[1].Labels["zone"] != "b" {
				t.Errorf("nodes %+v, want node-1 with its pod ranges and node-2 with its labels", st.Nodes)
			}
			n := node("node-1", "10.244.1.0/24", "fd00:10:244:1::/64")
			n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "172.18.0.2"}}
			go c.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{})
		})
		return len(st.Nodes) == 2 && len(st.Nodes[0].IPs) == 1
	})
	if len(states[0].Nodes) != 2 {
		t.Errorf("first state: nodes %+v, want both", states[0].Nodes)
	}
	if last := states[len(states)-1]; len(last.Nodes) != 2 || len(last.Nodes[0].IPs) != 1 {
		t.Errorf("after the Node's update: nodes %+v", last.Nodes)
	}

	// Without Options.Node no Node is read.
	c = fake.NewClientset(node("node-1", "10.244.1.0/24"))
	states = runUntil(t, c, Options{}, func(policy.State) bool { return true })
	if len(states[0].Nodes) != 0 {
		t.Errorf("without Options.Node: nodes %+v", states[0].Nodes)
	}
}

// Credentials that may not read Nodes cost the pod ranges, not the Source: it delivers
// states without the Node and says why, once.
func TestSourceWithoutNodeAccess(t *testing.T) {
	c := fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod"}}, node("node-1", "10.244.1.0/24"))
	forbidden := func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "", nil)
	}
	c.PrependReactor("list", "nodes", forbidden)
	c.PrependWatchReactor("nodes", func(k8stesting.Action) (bool, watch.Interface, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "", nil)
	})
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	states := runUntil(t, c, Options{Node: "node-1", Log: log}, func(policy.State) bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(logs.String(), "may not read this node's Node object")
	})
	if len(states) == 0 || len(states[0].Namespaces) != 1 || len(states[0].Nodes) != 0 {
		t.Fatalf("states %+v", states)
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "may not read this node's Node object"); n != 1 {
		t.Errorf("warned %d times, want once:\n%s", n, logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func equalPrefixes(got []netip.Prefix, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	for i, w := range want {
		if got[i] != netip.MustParsePrefix(w) {
			return false
		}
	}
	return true
}
