package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/podwall/podwall/policy"
)

// Coalescing defaults. Quiet is short because the project's budget from an API change to
// enforcement is tens of milliseconds; MaxDelay bounds the wait during a long burst (a
// rollout), so a busy cluster gets at most about ten states a second.
const (
	DefaultQuiet    = 10 * time.Millisecond
	DefaultMaxDelay = 100 * time.Millisecond
)

// Options configures a Source. The zero value is valid.
type Options struct {
	// Quiet is how long events must pause before a state is built; default DefaultQuiet.
	Quiet time.Duration
	// MaxDelay bounds how long a stream of events postpones a state; default
	// DefaultMaxDelay.
	MaxDelay time.Duration
	// Log receives list/watch errors and connectivity changes; default slog.Default().
	Log *slog.Logger
	// ClusterPolicyRecheck is how often to ask whether the ClusterNetworkPolicy CRD has
	// been installed while it is not; default DefaultClusterPolicyRecheck.
	ClusterPolicyRecheck time.Duration
	// Node, when set, is the agent's node: the Nodes are watched too, for its pod ranges
	// and for `nodes` peers (node.go). The first state waits for their initial list.
	Node string
}

// Source is a policy.Source over the Kubernetes API (see the package comment). Create it with
// New; Run it once.
type Source struct {
	res  resources
	opts Options
	cnp  *clusterPolicies // while Run runs

	mu sync.Mutex
	st Status

	errors  atomic.Uint64
	updates atomic.Uint64
}

// Status is what a Source reports about its connection to the API server.
type Status struct {
	// Synced reports whether every informer cache has synced and the first state was
	// delivered.
	Synced bool
	// Connected reports whether the last request to the API server got an answer (an HTTP
	// status below 500; a 403 is an answer, and an error below). False until the first
	// answer.
	Connected bool
	// Since is when Connected last changed, or when the Source was created.
	Since time.Time
	// LastError is the last failed request or list/watch error, empty when there was none.
	LastError string
	// Errors counts failed requests: no answer, a watch stream that broke, or an answer
	// of 401, 403 or 5xx. client-go retries each, with backoff.
	Errors uint64
	// Updates counts the states delivered.
	Updates uint64
	// ClusterPolicyAPI is whether ClusterNetworkPolicies are followed: CRDUnknown (before
	// Run asked), CRDAbsent, CRDSyncing or CRDWatched.
	ClusterPolicyAPI string
	// ClusterPolicies counts the ClusterNetworkPolicies in the cache while CRDWatched.
	ClusterPolicies int
}

// String describes the status in one line, for /readyz.
func (s Status) String() string {
	return s.connection() + s.clusterPolicies()
}

// clusterPolicies says why the states hold no ClusterNetworkPolicies, when they cannot.
func (s Status) clusterPolicies() string {
	switch s.ClusterPolicyAPI {
	case CRDAbsent:
		return "; ClusterNetworkPolicy CRD not installed"
	case CRDSyncing:
		return "; ClusterNetworkPolicy CRD installed, not listed yet"
	}
	return ""
}

func (s Status) connection() string {
	switch {
	case s.Connected && s.Synced:
		return "kubernetes API: connected, synced"
	case !s.Connected && s.LastError == "":
		return "kubernetes API: connecting"
	case s.Connected:
		msg := "kubernetes API: connected, caches not synced yet"
		if s.LastError != "" {
			msg += " (last error: " + s.LastError + ")"
		}
		return msg
	}
	msg := fmt.Sprintf("kubernetes API: unreachable for %s", time.Since(s.Since).Round(time.Second))
	if s.LastError != "" {
		msg += " (last error: " + s.LastError + ")"
	}
	if s.Synced {
		msg += "; enforcing the last state, retrying"
	}
	return msg
}

// New returns a Source reading from the API server cfg names. cfg is copied: New asks for
// protobuf and wraps the transport to observe whether requests get answers.
func New(cfg *rest.Config, o Options) (*Source, error) {
	s := newSource(resources{}, o)
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &observer{rt: rt, s: s} })
	res, err := newResources(cfg)
	if err != nil {
		return nil, err
	}
	s.res = res
	return s, nil
}

func newSource(res resources, o Options) *Source {
	if o.Quiet <= 0 {
		o.Quiet = DefaultQuiet
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = DefaultMaxDelay
	}
	if o.MaxDelay < o.Quiet {
		o.MaxDelay = o.Quiet
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.ClusterPolicyRecheck <= 0 {
		o.ClusterPolicyRecheck = DefaultClusterPolicyRecheck
	}
	return &Source{res: res, opts: o, st: Status{Since: time.Now()}}
}

// Status returns the current status. Safe for concurrent use.
func (s *Source) Status() Status {
	s.mu.Lock()
	st, cnp := s.st, s.cnp
	s.mu.Unlock()
	st.Errors, st.Updates = s.errors.Load(), s.updates.Load()
	if cnp != nil {
		st.ClusterPolicyAPI, st.ClusterPolicies = cnp.status()
	}
	return st
}

// setConnected records the outcome of a request; err explains a lost connection.
func (s *Source) setConnected(ok bool, err error) {
	if err != nil {
		s.errors.Add(1)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.st.LastError = err.Error()
	}
	if s.st.Connected == ok {
		return
	}
	s.st.Connected, s.st.Since = ok, time.Now()
	switch {
	case ok:
		s.opts.Log.Info("kubernetes API reachable")
	case s.st.Synced:
		s.opts.Log.Warn("kubernetes API unreachable; enforcing the last state, retrying", "err", err)
	default:
		s.opts.Log.Warn("kubernetes API unreachable; retrying", "err", err)
	}
}

// Run implements policy.Source: it starts the informers, calls update with the first state
// once every cache has synced, then with a new state after each burst of changes, until ctx
// ends. It returns nil when ctx ends.
func (s *Source) Run(ctx context.Context, update func(policy.State, error)) error {
	informer := func(lw *cache.ListWatch, example runtime.Object) cache.SharedIndexInformer {
		inf := cache.NewSharedIndexInformer(s.res.listerWatcher(lw), example, 0, cache.Indexers{})
		utilruntime.Must(inf.SetTransform(trim)) // fails only once the informer runs
		return inf
	}
	pods := informer(s.res.pods, &corev1.Pod{})
	namespaces := informer(s.res.namespaces, &corev1.Namespace{})
	policies := informer(s.res.policies, &networkingv1.NetworkPolicy{})

	dirty := make(chan struct{}, 1)
	mark := func() {
		select {
		case dirty <- struct{}{}:
		default:
		}
	}
	var synced []cache.InformerSynced // the handlers have seen the initial lists
	watch := func(inf cache.SharedIndexInformer, resource string, changed func(a, b any) bool) error {
		if err := inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, _ *cache.Reflector, err error) {
			if ctx.Err() == nil { // not the informer stopping
				s.watchError(resource, err)
			}
		}); err != nil {
			return err
		}
		reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { mark() },
			UpdateFunc: func(a, b any) {
				if changed(a, b) {
					mark()
				}
			},
			DeleteFunc: func(any) { mark() },
		})
		if err == nil {
			synced = append(synced, reg.HasSynced)
		}
		return err
	}
	err := errors.Join(
		watch(pods, "pods", func(a, b any) bool { return podChanged(a.(*corev1.Pod), b.(*corev1.Pod)) }),
		watch(namespaces, "namespaces", func(a, b any) bool {
			return namespaceChanged(a.(*corev1.Namespace), b.(*corev1.Namespace))
		}),
		watch(policies, "networkpolicies", func(a, b any) bool {
			return policyChanged(a.(*networkingv1.NetworkPolicy), b.(*networkingv1.NetworkPolicy))
		}),
	)
	if err != nil {
		return fmt.Errorf("kubernetes informers: %w", err)
	}
	cnp := newClusterPolicies(s, mark)
	s.mu.Lock()
	s.cnp = cnp
	s.mu.Unlock()
	synced = append(synced, cnp.decided)

	ctx, cancel := context.WithCancel(ctx)
	var running sync.WaitGroup
	defer func() {
		cancel()
		running.Wait() // the informers' goroutines
	}()
	for _, inf := range []cache.SharedIndexInformer{pods, namespaces, policies} {
		running.Go(func() { inf.RunWithContext(ctx) })
	}
	running.Go(func() { cnp.run(ctx) })
	node, err := s.watchNode(ctx, s.opts.Node, mark, &running)
	if err != nil {
		return fmt.Errorf("kubernetes informers: %w", err)
	}
	synced = append(synced, node.decided)
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil // only ctx ends the wait
	}

	deliver := func() {
		st, err := stateOf(items[*corev1.Namespace](namespaces), items[*corev1.Pod](pods),
			items[*networkingv1.NetworkPolicy](policies), node.nodes())
		if err == nil {
			st.ClusterPolicies = cnp.items()
		}
		s.mu.Lock()
		s.st.Synced = true
		s.mu.Unlock()
		s.updates.Add(1)
		update(st, err)
	}
	select { // the initial lists marked the state dirty: it is delivered now
	case <-dirty:
	default:
	}
	deliver()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-dirty:
		}
		if !s.coalesce(ctx, dirty) {
			return nil
		}
		deliver()
	}
}

// coalesce waits until no event has come for Quiet, or MaxDelay has passed. It reports
// false when ctx ended first.
func (s *Source) coalesce(ctx context.Context, dirty <-chan struct{}) bool {
	quiet := time.NewTimer(s.opts.Quiet)
	defer quiet.Stop()
	deadline := time.NewTimer(s.opts.MaxDelay - s.opts.Quiet)
	defer deadline.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-dirty:
			quiet.Reset(s.opts.Quiet)
		case <-quiet.C:
			return true
		case <-deadline.C:
			return true
		}
	}
}

// watchError records why a list or watch failed (the transport has counted it). A watch
// that ends normally (EOF) or whose resource version expired is routine: the reflector
// lists again.
func (s *Source) watchError(resource string, err error) {
	if errors.Is(err, io.EOF) || apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
		return
	}
	s.mu.Lock()
	s.st.LastError = resource + ": " + err.Error()
	s.mu.Unlock()
	s.opts.Log.Warn("kubernetes list/watch failed; retrying", "resource", resource, "err", err)
}

// items returns the objects an informer's cache holds.
func items[T any](inf cache.SharedIndexInformer) []T {
	objs := inf.GetStore().List()
	out := make([]T, len(objs))
	for i, o := range objs {
		out[i] = o.(T)
	}
	return out
}

// observer is the client's transport wrapper: every answer marks the API reachable, every
// failed round trip — and every watch stream that breaks — unreachable.
type observer struct {
	rt http.RoundTripper
	s  *Source
}

func (o *observer) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := o.rt.RoundTrip(r)
	switch {
	case err != nil:
		if r.Context().Err() == nil { // not our own cancellation (shutdown)
			o.s.setConnected(false, err)
		}
	case resp.StatusCode >= 500:
		o.s.setConnected(false, fmt.Errorf("%s %s: %s", r.Method, r.URL.Path, resp.Status))
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		o.s.errors.Add(1) // an answer, but the reflector gets nothing: its handler says why
		o.s.setConnected(true, nil)
	default:
		o.s.setConnected(true, nil)
		if r.URL.Query().Get("watch") == "true" {
			resp.Body = &watchBody{ReadCloser: resp.Body, s: o.s, ctx: r.Context()}
		}
	}
	return resp, err
}

// watchBody marks the API unreachable when a watch stream breaks (the server died, the
// connection was cut), without waiting for the reflector's next list to fail.
type watchBody struct {
	io.ReadCloser
	s      *Source
	ctx    context.Context
	closed atomic.Bool
}

func (b *watchBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && !b.closed.Load() && b.ctx.Err() == nil {
		b.s.setConnected(false, fmt.Errorf("watch stream: %w", err))
	}
	return n, err
}

func (b *watchBody) Close() error {
	b.closed.Store(true)
	return b.ReadCloser.Close()
}
