package kube

import (
	"context"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// The agent's own Node (Options.Node) brings the node's pod ranges, spec.podCIDRs, into
// the State: the agent holds new connections of pods it does not know yet within them
// (datapath/doc.go, "The new-pod window"). Only that Node is listed and watched (a field
// selector on its name). It is optional: the first state does not wait for it, and when
// the credentials may not read Nodes (403) the Source says so once and goes on without it
// — the agent then has only --pod-cidr.

// nodeWatch is the informer of the agent's own Node.
type nodeWatch struct {
	inf  cache.SharedIndexInformer
	name string
	stop context.CancelFunc
}

// watchNode starts watching Node name on ctx, calling mark on each change; nil when name
// is empty or the Source has no Node endpoint.
func (s *Source) watchNode(ctx context.Context, name string, mark func(), running *sync.WaitGroup) (*nodeWatch, error) {
	if name == "" || s.res.nodes == nil {
		return nil, nil
	}
	inf := cache.NewSharedIndexInformer(s.res.listerWatcher(oneNode(s.res.nodes, name)), &corev1.Node{}, 0, cache.Indexers{})
	if err := inf.SetTransform(trim); err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(ctx)
	var once sync.Once
	if err := inf.SetWatchErrorHandlerWithContext(func(hctx context.Context, _ *cache.Reflector, err error) {
		switch {
		case hctx.Err() != nil: // stopping
		case apierrors.IsForbidden(err):
			once.Do(func() {
				s.opts.Log.Warn("may not read this node's Node object: its pod ranges (spec.podCIDRs) are unknown; "+
					"new pods are held only within --pod-cidr (grant list and watch on nodes)", "node", name, "err", err)
				stop()
			})
		default:
			s.watchError("nodes", err)
		}
	}); err != nil {
		stop()
		return nil, err
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { mark() },
		UpdateFunc: func(a, b any) {
			if nodeChanged(a.(*corev1.Node), b.(*corev1.Node)) {
				mark()
			}
		},
		DeleteFunc: func(any) { mark() },
	}); err != nil {
		stop()
		return nil, err
	}
	running.Go(func() { inf.RunWithContext(ctx) })
	return &nodeWatch{inf: inf, name: name, stop: stop}, nil
}

// nodes returns the watched Node, if known: none for a nil nodeWatch.
func (w *nodeWatch) nodes() []*corev1.Node {
	if w == nil {
		return nil
	}
	ns := items[*corev1.Node](w.inf)
	return slices.DeleteFunc(ns, func(n *corev1.Node) bool { return n.Name != w.name })
}

// oneNode narrows the Node list/watch lw to the Node called name.
func oneNode(lw *cache.ListWatch, name string) *cache.ListWatch {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return lw.ListWithContext(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return lw.WatchWithContext(ctx, o)
		},
	}
}

// nodeChanged reports whether an update of a trimmed Node changes what policy reads.
func nodeChanged(a, b *corev1.Node) bool {
	return a.UID != b.UID || a.Spec.PodCIDR != b.Spec.PodCIDR || !slices.Equal(a.Spec.PodCIDRs, b.Spec.PodCIDRs) ||
		!slices.Equal(a.Status.Addresses, b.Status.Addresses)
}
