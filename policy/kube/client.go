package kube

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
)

// The agent talks to the API through plain REST clients over a scheme of its own that holds
// only core/v1, networking.k8s.io/v1 and policy.networking.k8s.io/v1alpha2 (the
// ClusterNetworkPolicy CRD, served as JSON only). client-go's typed clientset and informer factory
// would register every API group at start: they made the binary 4× larger and its resident
// pages a large share of the agent's memory.
var (
	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme)
)

func init() {
	utilruntime.Must(corev1.AddToScheme(scheme))
	utilruntime.Must(networkingv1.AddToScheme(scheme))
	utilruntime.Must(cnpv1alpha2.Install(scheme))
}

// resources are the list/watch endpoints the Source and List read.
type resources struct {
	pods, namespaces, policies, nodes *cache.ListWatch
	// clusterPolicies lists and watches ClusterNetworkPolicies while clusterPolicyServed
	// says their CRD is installed.
	clusterPolicies     *cache.ListWatch
	clusterPolicyServed servedFunc
	// noWatchList reports that the watch functions cannot stream the initial list (client-go's
	// fake clientset): the informers then list, then watch.
	noWatchList bool
}

// listerWatcher is what an informer of r reads lw through.
func (r resources) listerWatcher(lw *cache.ListWatch) cache.ListerWatcher {
	if r.noWatchList {
		return cache.ToListWatcherWithWatchListSemantics(lw, unsupportedWatchList{})
	}
	return lw
}

// unsupportedWatchList tells the reflector that a client cannot stream watch lists.
type unsupportedWatchList struct{}

func (unsupportedWatchList) IsWatchListSemanticsUnSupported() bool { return true }

// newResources makes REST clients for cfg (protobuf preferred for the built-in kinds) and
// the resources over them.
func newResources(cfg *rest.Config) (resources, error) {
	core, err := restClient(cfg, "/api", corev1.SchemeGroupVersion, true)
	if err != nil {
		return resources{}, err
	}
	networking, err := restClient(cfg, "/apis", networkingv1.SchemeGroupVersion, true)
	if err != nil {
		return resources{}, err
	}
	cnp, err := restClient(cfg, "/apis", cnpv1alpha2.SchemeGroupVersion, false)
	if err != nil {
		return resources{}, err
	}
	lw := func(c rest.Interface, resource string) *cache.ListWatch {
		return cache.NewFilteredListWatchFromClient(c, resource, metav1.NamespaceAll, func(*metav1.ListOptions) {})
	}
	return resources{
		pods:       lw(core, "pods"),
		namespaces: lw(core, "namespaces"),
		policies:   lw(networking, "networkpolicies"),
		nodes:      lw(core, "nodes"),

		clusterPolicies:     lw(cnp, clusterPolicyResource),
		clusterPolicyServed: clusterPolicyServed(cnp),
	}, nil
}

// restClient makes a client of one group version; protobuf asks for protobuf, which custom
// resources do not speak.
func restClient(cfg *rest.Config, apiPath string, gv schema.GroupVersion, protobuf bool) (*rest.RESTClient, error) {
	c := rest.CopyConfig(cfg)
	c.APIPath = apiPath
	c.GroupVersion = &gv
	c.ContentType, c.AcceptContentTypes = runtime.ContentTypeJSON, runtime.ContentTypeJSON
	if protobuf {
		c.ContentType = runtime.ContentTypeProtobuf
		c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	}
	c.NegotiatedSerializer = codecs.WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", gv, err)
	}
	return rc, nil
}

// listWatch adapts a pair of list and watch functions (a typed client's, in tests).
func listWatch(list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) *cache.ListWatch {
	return &cache.ListWatch{ListWithContextFunc: list, WatchFuncWithContext: watchFn}
}
