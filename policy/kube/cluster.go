package kube

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/podwall/podwall/policy"
)

// ClusterNetworkPolicies are a CustomResourceDefinition (sigs.k8s.io/network-policy-api),
// installed or not, and installable or removable while the agent runs. The Source asks the
// API server's discovery whether the resource is served: one small GET of
// /apis/policy.networking.k8s.io/v1alpha2, answered from the server's memory (no etcd read),
// which every authenticated client may make (system:discovery), so it needs no RBAC. While
// the resource is absent it asks again every DefaultClusterPolicyRecheck; once served it runs
// an informer and stops asking until that informer's list fails with NotFound (the CRD was
// deleted). Watching the CRD objects instead would need RBAC on customresourcedefinitions
// and still a discovery check before the resource is served.

// DefaultClusterPolicyRecheck is how often a Source asks whether the ClusterNetworkPolicy
// CRD has been installed while it is not: a policy created with the CRD is enforced at most
// this long (plus up to 20 % jitter) after. A cluster of 5 000 nodes then makes ≈ 330
// such requests a second, cheaper than the kubelets' lease renewals (5 000 nodes every 10 s,
// each an etcd write); none once the CRD is installed.
const DefaultClusterPolicyRecheck = 15 * time.Second

// clusterPolicyResource is the plural of ClusterNetworkPolicy, which RBAC names.
const clusterPolicyResource = "clusternetworkpolicies"

// The states of the ClusterNetworkPolicy API, as Status.ClusterPolicyAPI reports them.
const (
	// CRDUnknown: no answer from discovery yet.
	CRDUnknown = ""
	// CRDAbsent: the CRD is not installed; the states hold no ClusterNetworkPolicies.
	CRDAbsent = "absent"
	// CRDSyncing: the CRD is installed and the informer has not listed it yet (a 403
	// keeps it here: the agent's role lacks list/watch on clusternetworkpolicies).
	CRDSyncing = "syncing"
	// CRDWatched: the states hold every ClusterNetworkPolicy.
	CRDWatched = "watched"
)

// servedFunc reports whether the API server serves ClusterNetworkPolicies; an error means
// it gave no usable answer.
type servedFunc func(context.Context) (bool, error)

// clusterPolicyServed asks discovery, through c, whether clusternetworkpolicies are served.
func clusterPolicyServed(c rest.Interface) servedFunc {
	return func(ctx context.Context) (bool, error) {
		gv := cnpv1alpha2.SchemeGroupVersion
		b, err := c.Get().AbsPath("/apis", gv.Group, gv.Version).DoRaw(ctx)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("discovery of %s: %w", gv, err)
		}
		var l metav1.APIResourceList
		if err := json.Unmarshal(b, &l); err != nil {
			return false, fmt.Errorf("discovery of %s: %w", gv, err)
		}
		return slices.ContainsFunc(l.APIResources, func(r metav1.APIResource) bool { return r.Name == clusterPolicyResource }), nil
	}
}

// clusterPolicies follows the ClusterNetworkPolicies while their CRD is installed: the part
// of a Source's Run that may start, stop and start again.
type clusterPolicies struct {
	s      *Source
	lw     *cache.ListWatch
	served servedFunc
	every  time.Duration
	mark   func() // a state is due
	log    *slog.Logger

	recheck chan struct{} // the informer's list found no resource: ask discovery now

	mu     sync.Mutex
	api    string                    // CRDUnknown, CRDAbsent, CRDSyncing or CRDWatched
	inf    cache.SharedIndexInformer // while the CRD is served
	stop   context.CancelFunc        // stops inf
	synced bool                      // inf has listed: its cache is the truth

	running sync.WaitGroup // the informers' goroutines
}

func newClusterPolicies(s *Source, mark func()) *clusterPolicies {
	return &clusterPolicies{s: s, lw: s.res.clusterPolicies, served: s.res.clusterPolicyServed,
		every: s.opts.ClusterPolicyRecheck, mark: mark, log: s.opts.Log, recheck: make(chan struct{}, 1)}
}

// decided reports whether a first state may be built: discovery said the CRD is absent, or
// its informer has synced. An installed CRD is never skipped: its Deny rules must be in the
// first state the agent enforces.
func (c *clusterPolicies) decided() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.api == CRDAbsent || c.api == CRDWatched
}

// items returns the ClusterNetworkPolicies of a synced informer, sorted by name; none while
// the CRD is absent or not listed yet. They are the cache's own objects, which neither the
// cache nor policy modifies (as with NetworkPolicies).
func (c *clusterPolicies) items() []*cnpv1alpha2.ClusterNetworkPolicy {
	c.mu.Lock()
	inf, synced := c.inf, c.synced
	c.mu.Unlock()
	if inf == nil || !synced {
		return nil
	}
	return sortClusterPolicies(items[*cnpv1alpha2.ClusterNetworkPolicy](inf))
}

// status returns the API's state and how many ClusterNetworkPolicies the cache holds.
func (c *clusterPolicies) status() (string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inf == nil || !c.synced {
		return c.api, 0
	}
	return c.api, len(c.inf.GetStore().ListKeys())
}

// run asks discovery until ctx ends: at once, then every c.every while the CRD is absent
// (sooner after an error, with backoff), and when the informer reports the resource gone.
func (c *clusterPolicies) run(ctx context.Context) {
	defer func() {
		c.stopInformer()
		c.running.Wait()
	}()
	const firstRetry = 500 * time.Millisecond
	retry := firstRetry // after an error; doubles up to c.every
	for {
		served, err := c.served(ctx)
		var next time.Duration
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			c.s.setLastError(err)
			if retry == firstRetry { // once per run of failures
				c.log.Warn("cannot tell whether ClusterNetworkPolicies are served; asking again", "err", err)
			}
			next, retry = retry, min(2*retry, c.every)
		case served:
			retry = firstRetry
			c.start(ctx)
			next = -1 // until the informer finds the resource gone
		default:
			retry = firstRetry
			c.absent()
			next = wait.Jitter(c.every, 0.2)
		}
		if !c.wait(ctx, next) {
			return
		}
	}
}

// wait waits d (forever when negative) or until a recheck is asked for; it reports false
// when ctx ended first.
func (c *clusterPolicies) wait(ctx context.Context, d time.Duration) bool {
	var tick <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		tick = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-tick:
	case <-c.recheck:
	}
	return true
}

// absent records that the CRD is not installed: the informer, if any, stops and the next
// state holds no ClusterNetworkPolicies.
func (c *clusterPolicies) absent() {
	c.mu.Lock()
	was := c.api
	c.api = CRDAbsent
	c.mu.Unlock()
	switch was {
	case CRDAbsent:
		return
	case CRDUnknown:
		c.log.Info("ClusterNetworkPolicy CRD not installed; the states hold none, asking again periodically",
			"every", c.every, "crd", "clusternetworkpolicies.policy.networking.k8s.io")
	default:
		c.log.Warn("ClusterNetworkPolicy CRD removed; the states hold no ClusterNetworkPolicies, asking again periodically",
			"every", c.every)
		c.stopInformer()
	}
	c.mark()
}

// start runs the informer, unless it runs. Its first list makes a state.
func (c *clusterPolicies) start(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inf != nil {
		return
	}
	inf := cache.NewSharedIndexInformer(c.s.res.listerWatcher(c.lw), &cnpv1alpha2.ClusterNetworkPolicy{}, 0, cache.Indexers{})
	utilruntime.Must(inf.SetTransform(trim)) // each fails only once the informer runs
	utilruntime.Must(inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, _ *cache.Reflector, err error) {
		if ctx.Err() != nil {
			return // the informer stopping
		}
		if apierrors.IsNotFound(err) {
			select { // the CRD is gone, or not served yet: discovery decides
			case c.recheck <- struct{}{}:
			default:
			}
			return
		}
		c.s.watchError(clusterPolicyResource, err)
	}))
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { c.mark() },
		UpdateFunc: func(a, b any) {
			if clusterPolicyChanged(a.(*cnpv1alpha2.ClusterNetworkPolicy), b.(*cnpv1alpha2.ClusterNetworkPolicy)) {
				c.mark()
			}
		},
		DeleteFunc: func(any) { c.mark() },
	})
	utilruntime.Must(err)
	ictx, stop := context.WithCancel(ctx)
	c.inf, c.stop, c.synced, c.api = inf, stop, false, CRDSyncing
	c.log.Info("ClusterNetworkPolicy CRD installed; watching clusternetworkpolicies")
	c.running.Go(func() { inf.RunWithContext(ictx) })
	c.running.Go(func() {
		if !cache.WaitForCacheSync(ictx.Done(), reg.HasSynced) {
			return // stopped first
		}
		c.mu.Lock()
		if c.inf == inf {
			c.synced, c.api = true, CRDWatched
		}
		c.mu.Unlock()
		c.mark()
	})
}

// stopInformer stops the informer, if one runs, and forgets its cache.
func (c *clusterPolicies) stopInformer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stop != nil {
		c.stop()
	}
	c.inf, c.stop, c.synced = nil, nil, false
}

// setLastError records a failed request the transport did not see fail (an answer that
// could not be used).
func (s *Source) setLastError(err error) {
	s.mu.Lock()
	s.st.LastError = err.Error()
	s.mu.Unlock()
}

// sortClusterPolicies sorts by name (cluster-scoped: names are unique), so equal caches give
// equal states.
func sortClusterPolicies(cnps []*cnpv1alpha2.ClusterNetworkPolicy) []*cnpv1alpha2.ClusterNetworkPolicy {
	slices.SortFunc(cnps, func(a, b *cnpv1alpha2.ClusterNetworkPolicy) int { return cmp.Compare(a.Name, b.Name) })
	return cnps
}

// trimClusterPolicy keeps the identity, labels and spec; the status is what implementations
// report (conditions), which policy does not read.
func trimClusterPolicy(p *cnpv1alpha2.ClusterNetworkPolicy) {
	trimPolicyMeta(&p.ObjectMeta)
	p.Status = cnpv1alpha2.ClusterNetworkPolicyStatus{}
}

func clusterPolicyChanged(a, b *cnpv1alpha2.ClusterNetworkPolicy) bool {
	return a.UID != b.UID || policy.IsStaged(&a.ObjectMeta) != policy.IsStaged(&b.ObjectMeta) ||
		!apiequality.Semantic.DeepEqual(a.Spec, b.Spec)
}

// listClusterPolicies lists every ClusterNetworkPolicy once, for List; none when the CRD is
// not installed. A 403 is an error: an answer that left out an admin's Deny would be wrong.
func listClusterPolicies(ctx context.Context, res resources) ([]*cnpv1alpha2.ClusterNetworkPolicy, error) {
	cnps, err := listAll[*cnpv1alpha2.ClusterNetworkPolicy](ctx, clusterPolicyResource, res.clusterPolicies.ListWithContext)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return sortClusterPolicies(cnps), err
}
