package whatif

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/podwall/podwall/policy"
)

// Ref names an object to delete: KIND/NAMESPACE/NAME (NetworkPolicy, Pod) or KIND/NAME
// (Namespace, Node).
type Ref struct {
	Kind, Namespace, Name string
}

func (r Ref) String() string {
	if r.Namespace == "" {
		return r.Kind + "/" + r.Name
	}
	return r.Kind + "/" + r.Namespace + "/" + r.Name
}

// kinds maps the spellings --delete accepts to a kind and whether it is namespaced.
var kinds = map[string]struct {
	kind       string
	namespaced bool
}{
	"networkpolicy": {"NetworkPolicy", true}, "networkpolicies": {"NetworkPolicy", true}, "netpol": {"NetworkPolicy", true},
	"pod": {"Pod", true}, "pods": {"Pod", true},
	"namespace": {"Namespace", false}, "namespaces": {"Namespace", false}, "ns": {"Namespace", false},
	"node": {"Node", false}, "nodes": {"Node", false},
	"clusternetworkpolicy": {"ClusterNetworkPolicy", false}, "clusternetworkpolicies": {"ClusterNetworkPolicy", false},
	"cnp": {"ClusterNetworkPolicy", false},
}

// ParseRef parses KIND/NS/NAME or, for Namespaces, Nodes and ClusterNetworkPolicies,
// KIND/NAME. Kinds are
// case-insensitive and may be plural or kubectl's short names (netpol, ns, cnp).
func ParseRef(s string) (Ref, error) {
	parts := strings.Split(s, "/")
	k, ok := kinds[strings.ToLower(parts[0])]
	if !ok {
		return Ref{}, fmt.Errorf("%q: unknown kind %q (want NetworkPolicy, Pod, Namespace or Node)", s, parts[0])
	}
	switch {
	case k.namespaced && len(parts) == 3 && parts[1] != "" && parts[2] != "":
		return Ref{k.kind, parts[1], parts[2]}, nil
	case !k.namespaced && len(parts) == 2 && parts[1] != "":
		return Ref{k.kind, "", parts[1]}, nil
	case k.namespaced:
		return Ref{}, fmt.Errorf("%q: want %s/NAMESPACE/NAME", s, k.kind)
	}
	return Ref{}, fmt.Errorf("%q: want %s/NAME", s, k.kind)
}

// Apply returns the state in force with the proposed objects applied — an object of the same
// kind and name as one in force replaces it, any other is added — and then the deletions.
// Deleting an object that neither state has is an error: a misspelt name would otherwise
// leave the change looking harmless. cur is not modified.
func Apply(cur, proposed policy.State, deletes []Ref) (policy.State, error) {
	s := policy.State{
		Namespaces:      slices.Clone(cur.Namespaces),
		Nodes:           slices.Clone(cur.Nodes),
		Pods:            slices.Clone(cur.Pods),
		Policies:        slices.Clone(cur.Policies),
		ClusterPolicies: slices.Clone(cur.ClusterPolicies),
		Problems:        slices.Clone(cur.Problems),
	}
	for _, n := range proposed.Namespaces {
		s.Namespaces = upsert(s.Namespaces, n, func(o policy.Namespace) bool { return o.Name == n.Name })
	}
	for _, n := range proposed.Nodes {
		s.Nodes = upsert(s.Nodes, n, func(o policy.Node) bool { return o.Name == n.Name })
	}
	for _, p := range proposed.Pods {
		s.Pods = upsert(s.Pods, p, func(o policy.Pod) bool { return o.Namespace == p.Namespace && o.Name == p.Name })
	}
	for _, np := range proposed.Policies {
		s.Policies = upsert(s.Policies, np, func(o *networkingv1.NetworkPolicy) bool {
			return o.Namespace == np.Namespace && o.Name == np.Name
		})
	}
	for _, cnp := range proposed.ClusterPolicies {
		s.ClusterPolicies = upsert(s.ClusterPolicies, cnp, func(o *cnpv1alpha2.ClusterNetworkPolicy) bool { return o.Name == cnp.Name })
	}
	var errs []error
	for _, r := range deletes {
		n := 0
		switch r.Kind {
		case "NetworkPolicy":
			s.Policies, n = remove(s.Policies, func(o *networkingv1.NetworkPolicy) bool { return o.Namespace == r.Namespace && o.Name == r.Name })
		case "Pod":
			s.Pods, n = remove(s.Pods, func(o policy.Pod) bool { return o.Namespace == r.Namespace && o.Name == r.Name })
		case "Namespace":
			s.Namespaces, n = remove(s.Namespaces, func(o policy.Namespace) bool { return o.Name == r.Name })
		case "Node":
			s.Nodes, n = remove(s.Nodes, func(o policy.Node) bool { return o.Name == r.Name })
		case "ClusterNetworkPolicy":
			s.ClusterPolicies, n = remove(s.ClusterPolicies, func(o *cnpv1alpha2.ClusterNetworkPolicy) bool { return o.Name == r.Name })
		}
		if n == 0 {
			errs = append(errs, fmt.Errorf("--delete %s: no such object in the policy in force or the proposal", r))
		}
	}
	return s, errors.Join(errs...)
}

func upsert[T any](list []T, v T, same func(T) bool) []T {
	if i := slices.IndexFunc(list, same); i >= 0 {
		list[i] = v
		return list
	}
	return append(list, v)
}

func remove[T any](list []T, match func(T) bool) ([]T, int) {
	n := len(list)
	list = slices.DeleteFunc(list, match)
	return list, n - len(list)
}

// Union returns the objects of several states (of several agents): an object of the same
// kind and name in more than one is taken from the first.
func Union(states ...policy.State) policy.State {
	var u policy.State
	seen := map[string]bool{}
	first := func(key string) bool {
		if seen[key] {
			return false
		}
		seen[key] = true
		return true
	}
	for _, s := range states {
		for _, n := range s.Namespaces {
			if first("Namespace/" + n.Name) {
				u.Namespaces = append(u.Namespaces, n)
			}
		}
		for _, n := range s.Nodes {
			if first("Node/" + n.Name) {
				u.Nodes = append(u.Nodes, n)
			}
		}
		for _, p := range s.Pods {
			if first("Pod/" + p.Key()) {
				u.Pods = append(u.Pods, p)
			}
		}
		for _, np := range s.Policies {
			if first("NetworkPolicy/" + np.Namespace + "/" + np.Name) {
				u.Policies = append(u.Policies, np)
			}
		}
		for _, cnp := range s.ClusterPolicies {
			if first("ClusterNetworkPolicy/" + cnp.Name) {
				u.ClusterPolicies = append(u.ClusterPolicies, cnp)
			}
		}
	}
	return u
}
