package policy

import (
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
)

// StagedAnnotation marks a NetworkPolicy or ClusterNetworkPolicy as staged (SPEC §2c) when
// its value is "true": the policy is compiled and evaluated, never enforced. Removing the
// annotation (or setting it to anything else) enforces it.
const StagedAnnotation = "podwall.io/staged"

// IsStaged reports whether an object's metadata marks it staged.
func IsStaged(m *metav1.ObjectMeta) bool {
	return m.Annotations[StagedAnnotation] == "true"
}

// Staged splits s into the state podwall enforces — s without its staged policies — and the
// proposed state — the enforced policies plus the staged ones, a staged object replacing
// the enforced object of the same kind, namespace and name. has reports whether s holds a
// staged policy at all; when it does not, proposed is enforced.
//
// A problem a source reported about a NetworkPolicy that is staged goes with the proposed
// state only (the source names the object, not which of two objects of one name it read).
func Staged(s State) (enforced, proposed State, has bool) {
	stagedNP := map[string]bool{}
	for _, np := range s.Policies {
		if IsStaged(&np.ObjectMeta) {
			stagedNP[np.Namespace+"/"+np.Name] = true
		}
	}
	stagedCNP := map[string]bool{}
	for _, p := range s.ClusterPolicies {
		if IsStaged(&p.ObjectMeta) {
			stagedCNP[p.Name] = true
		}
	}
	if len(stagedNP) == 0 && len(stagedCNP) == 0 {
		return s, s, false
	}
	enforced, proposed = s, s
	enforced.Policies, proposed.Policies = nil, nil
	for _, np := range s.Policies {
		switch key := np.Namespace + "/" + np.Name; {
		case IsStaged(&np.ObjectMeta):
			proposed.Policies = append(proposed.Policies, np)
		default:
			enforced.Policies = append(enforced.Policies, np)
			if !stagedNP[key] {
				proposed.Policies = append(proposed.Policies, np)
			}
		}
	}
	enforced.ClusterPolicies, proposed.ClusterPolicies = nil, nil
	for _, p := range s.ClusterPolicies {
		switch {
		case IsStaged(&p.ObjectMeta):
			proposed.ClusterPolicies = append(proposed.ClusterPolicies, p)
		default:
			enforced.ClusterPolicies = append(enforced.ClusterPolicies, p)
			if !stagedCNP[p.Name] {
				proposed.ClusterPolicies = append(proposed.ClusterPolicies, p)
			}
		}
	}
	enforced.Problems = nil
	for _, p := range s.Problems {
		if p.Kind == KindNetworkPolicy && stagedNP[p.Namespace+"/"+p.Name] {
			continue
		}
		enforced.Problems = append(enforced.Problems, p)
	}
	return enforced, proposed, true
}

// StagedRefs returns the policies of s that are staged, as PolicyRef.String names them
// (namespace/name, cnp/NAME).
func StagedRefs(s State) map[string]bool {
	out := map[string]bool{}
	for _, np := range s.Policies {
		if IsStaged(&np.ObjectMeta) {
			out[npRef(np)] = true
		}
	}
	for _, p := range s.ClusterPolicies {
		if IsStaged(&p.ObjectMeta) {
			out[cnpRef(p)] = true
		}
	}
	return out
}

func npRef(np *networkingv1.NetworkPolicy) string { return np.Namespace + "/" + np.Name }

func cnpRef(p *cnpv1alpha2.ClusterNetworkPolicy) string { return "cnp/" + p.Name }
