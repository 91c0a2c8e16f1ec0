package kube

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podwall/podwall/policy"
)

// These tests use client-go's fake clientset for what a real API server refuses to hold;
// source_test.go runs the Source against a real kube-apiserver.

// firstUpdate runs a Source over objs and returns its first update.
func firstUpdate(t *testing.T, objs ...runtime.Object) (policy.State, error) {
	t.Helper()
	s := newSource(fakeResources(fake.NewClientset(objs...)), Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type result struct {
		st  policy.State
		err error
	}
	got := make(chan result, 1)
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, func(st policy.State, err error) {
			select {
			case got <- result{st, err}:
			default:
			}
			cancel()
		})
	}()
	var r result
	select {
	case r = <-got:
	case <-ctx.Done():
		t.Fatal("no first update")
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := s.Status(); !st.Synced || st.Updates != 1 {
		t.Errorf("status after the first update: %+v", st)
	}
	return r.st, r.err
}

// The first update is the complete, synced state, sorted.
func TestFirstUpdateIsComplete(t *testing.T) {
	st, err := firstUpdate(t,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod", Labels: map[string]string{"env": "prod"}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "web"},
			Status: corev1.PodStatus{PodIP: "10.244.0.2", PodIPs: []corev1.PodIP{{IP: "10.244.0.2"}}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "db", Labels: map[string]string{"app": "db"}}},
		&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "db"}},
	)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Namespaces) != 1 || st.Namespaces[0].Labels["env"] != "prod" ||
		st.Namespaces[0].Labels[corev1.LabelMetadataName] != "prod" {
		t.Errorf("namespaces: %+v", st.Namespaces)
	}
	// A pod without an address is part of the state.
	if len(st.Pods) != 2 || st.Pods[0].Name != "db" || len(st.Pods[0].IPs) != 0 || st.Pods[1].IPs[0].String() != "10.244.0.2" {
		t.Errorf("pods: %+v", st.Pods)
	}
	if len(st.Policies) != 1 || st.Policies[0].Name != "db" {
		t.Errorf("policies: %+v", st.Policies)
	}
}

// A pod policy cannot hold is rejected alone: it holds no address, it is named in the
// state's problems with its field, and the rest of the state is delivered.
func TestBadPodRejectedAlone(t *testing.T) {
	st, err := firstUpdate(t,
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "web"},
			Status: corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "10.244.0.300"}}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "db"},
			Status: corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "10.244.0.3"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pods) != 2 || st.Pods[1].Name != "web" || len(st.Pods[1].IPs) != 0 || len(st.Pods[0].IPs) != 1 {
		t.Errorf("pods: %+v, want db with its address and web with none", st.Pods)
	}
	if len(st.Problems) != 1 || !strings.Contains(st.Problems[0].String(), "Pod prod/web: status.podIPs[0]") {
		t.Errorf("problems: %v, want one naming the pod and field", st.Problems)
	}
}

// fakeResources serves a Source from a fake clientset's typed clients.
func fakeResources(c kubernetes.Interface) resources {
	return resources{
		pods: listWatch(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return c.CoreV1().Pods("").List(ctx, o)
		},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return c.CoreV1().Pods("").Watch(ctx, o)
			}),
		namespaces: listWatch(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return c.CoreV1().Namespaces().List(ctx, o)
		},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return c.CoreV1().Namespaces().Watch(ctx, o)
			}),
		policies: listWatch(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return c.NetworkingV1().NetworkPolicies("").List(ctx, o)
		}, func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return c.NetworkingV1().NetworkPolicies("").Watch(ctx, o)
		}),
		nodes: listWatch(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return c.CoreV1().Nodes().List(ctx, o)
		},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return c.CoreV1().Nodes().Watch(ctx, o)
			}),
		// The ClusterNetworkPolicy CRD is not installed.
		clusterPolicyServed: func(context.Context) (bool, error) { return false, nil },
		noWatchList:         true,
	}
}
