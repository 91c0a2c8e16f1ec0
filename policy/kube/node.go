package kube

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/cache"
)

// Nodes, when Options.Node names the agent's node, are listed and watched too (trimmed to
// name, labels, addresses and pod ranges). The agent's own Node brings the node's pod
// ranges, spec.podCIDRs, into the State: the agent holds new connections of pods it does not
// know yet within them (datapath/doc.go, "The new-pod window"). Every Node brings its labels
// and addresses, which ClusterNetworkPolicy `nodes` peers select and match. The first state
// waits for the Nodes' initial list, as it waits for pods and policies: a state without them
// would let an Admin Deny towards `nodes` match no address. When the credentials may not read
// Nodes (403) the Source says so once and goes on without them — the agent then has only
// --pod-cidr, and `nodes` peers match no address.

// nodeWatch is the informer of the Nodes.
type nodeWatch struct {
	inf       cache.SharedIndexInformer
	name      string
	stop      context.CancelFunc
	forbidden atomic.Bool // the credentials may not read Nodes: the watch stopped
}

// watchNode starts watching Node name on ctx, calling mark on each change; nil when name
// is empty or the Source has no Node endpoint.
func (s *Source) watchNode(ctx context.Context, name string, mark func(), running *sync.WaitGroup) (*nodeWatch, error) {
	if name == "" || s.res.nodes == nil {
		return nil, nil
	}
	inf := cache.NewSharedIndexInformer(s.res.listerWatcher(s.res.nodes), &corev1.Node{}, 0, cache.Indexers{})
	if err := inf.SetTransform(trim); err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(ctx)
	w := &nodeWatch{inf: inf, name: name, stop: stop}
	var once sync.Once
	if err := inf.SetWatchErrorHandlerWithContext(func(hctx context.Context, _ *cache.Reflector, err error) {
		switch {
		case hctx.Err() != nil: // stopping
		case apierrors.IsForbidden(err):
			once.Do(func() {
				s.opts.Log.Warn("may not read this node's Node object: its pod ranges (spec.podCIDRs) are unknown; "+
					"new pods are held only within --pod-cidr (grant list and watch on nodes)", "node", name, "err", err)
				w.forbidden.Store(true)
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
	return w, nil
}

// decided reports whether a first state may be built: the Nodes' initial list arrived, or
// the credentials may not read Nodes (the Source goes on without them). True for a nil
// nodeWatch.
func (w *nodeWatch) decided() bool {
	return w == nil || w.forbidden.Load() || w.inf.HasSynced()
}

// nodes returns the watched Nodes known so far: none for a nil nodeWatch.
func (w *nodeWatch) nodes() []*corev1.Node {
	if w == nil {
		return nil
	}
	return items[*corev1.Node](w.inf)
}

// nodeChanged reports whether an update of a trimmed Node changes what policy reads.
func nodeChanged(a, b *corev1.Node) bool {
	return a.UID != b.UID || !maps.Equal(a.Labels, b.Labels) || a.Spec.PodCIDR != b.Spec.PodCIDR || !slices.Equal(a.Spec.PodCIDRs, b.Spec.PodCIDRs) ||
		!slices.Equal(a.Status.Addresses, b.Status.Addresses)
}
