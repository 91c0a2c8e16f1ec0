package kube

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/pager"

	"github.com/podwall/podwall/policy"
)

// stateOf builds a State from (trimmed) API objects, each kind sorted by namespace and name
// so equal caches give equal states. The objects are not modified and the State shares no
// memory with them except the NetworkPolicies, which neither side modifies. A pod
// policy.FromPod refuses is rejected alone (policy.PodOf: it holds no address) and named in
// State.Problems; the error is nil, kept for a problem with the state as a whole.
func stateOf(nss []*corev1.Namespace, pods []*corev1.Pod, nps []*networkingv1.NetworkPolicy, nodes []*corev1.Node) (policy.State, error) {
	byKey := func(a, b metav1.Object) int {
		return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
	}
	slices.SortFunc(nss, func(a, b *corev1.Namespace) int { return byKey(a, b) })
	slices.SortFunc(pods, func(a, b *corev1.Pod) int { return byKey(a, b) })
	slices.SortFunc(nps, func(a, b *networkingv1.NetworkPolicy) int { return byKey(a, b) })
	slices.SortFunc(nodes, func(a, b *corev1.Node) int { return byKey(a, b) })

	st := policy.State{
		Namespaces: make([]policy.Namespace, 0, len(nss)),
		Pods:       make([]policy.Pod, 0, len(pods)),
		Nodes:      make([]policy.Node, 0, len(nodes)),
		Policies:   nps,
	}
	for _, n := range nss {
		st.Namespaces = append(st.Namespaces, policy.FromNamespace(n))
	}
	for _, p := range pods {
		pod, problem := policy.PodOf(p)
		if problem != nil {
			st.Problems = append(st.Problems, *problem)
		}
		st.Pods = append(st.Pods, pod)
	}
	for _, n := range nodes {
		st.Nodes = append(st.Nodes, policy.FromNode(n))
	}
	return st, nil
}

// List reads the objects a Source watches once (ClusterNetworkPolicies when their CRD is
// installed), plus the Nodes when the credentials may
// list them (node addresses only name node traffic in explanations), and returns them as a
// State: what `podwall explain --kubeconfig` judges. Large collections are read in pages.
func List(ctx context.Context, cfg *rest.Config) (policy.State, error) {
	res, err := newResources(cfg)
	if err != nil {
		return policy.State{}, err
	}
	nss, err := listAll[*corev1.Namespace](ctx, "namespaces", res.namespaces.ListWithContext)
	if err != nil {
		return policy.State{}, err
	}
	pods, err := listAll[*corev1.Pod](ctx, "pods", res.pods.ListWithContext)
	if err != nil {
		return policy.State{}, err
	}
	nps, err := listAll[*networkingv1.NetworkPolicy](ctx, "networkpolicies", res.policies.ListWithContext)
	if err != nil {
		return policy.State{}, err
	}
	nodes, err := listAll[*corev1.Node](ctx, "nodes", res.nodes.ListWithContext)
	if apierrors.IsForbidden(err) {
		nodes, err = nil, nil
	}
	if err != nil {
		return policy.State{}, err
	}
	cnps, err := listClusterPolicies(ctx, res)
	if err != nil {
		return policy.State{}, err
	}
	st, err := stateOf(nss, pods, nps, nodes)
	if err == nil {
		st.ClusterPolicies = cnps
	}
	return st, err
}

// listAll lists every object of a resource, in pages, trimmed as the informers trim them.
func listAll[T runtime.Object](ctx context.Context, resource string, list pager.ListPageFunc) ([]T, error) {
	var out []T
	err := pager.New(list).EachListItem(ctx, metav1.ListOptions{}, func(obj runtime.Object) error {
		o, err := trim(obj)
		if err != nil {
			return err
		}
		out = append(out, o.(T))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", resource, err)
	}
	return out, nil
}
