package policy_test

import (
	"slices"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/podwall/podwall/policy"
	pt "github.com/podwall/podwall/policy/policytest"
)

func staged(np *networkingv1.NetworkPolicy) *networkingv1.NetworkPolicy {
	np.Annotations = map[string]string{policy.StagedAnnotation: "true"}
	return np
}

func names(nps []*networkingv1.NetworkPolicy) []string {
	var out []string
	for _, np := range nps {
		s := np.Namespace + "/" + np.Name
		if policy.IsStaged(&np.ObjectMeta) {
			s += " (staged)"
		}
		out = append(out, s)
	}
	return out
}

// The enforced state leaves the staged policies out; the proposed one adds them, a staged
// object replacing the enforced object of its kind, namespace and name.
func TestStagedSplit(t *testing.T) {
	s := policy.State{
		Policies: []*networkingv1.NetworkPolicy{
			pt.NetworkPolicy("prod", "db", pt.Selector("role", "db")),
			staged(pt.NetworkPolicy("prod", "db", pt.Selector())),
			staged(pt.NetworkPolicy("prod", "deny-all", pt.Selector())),
			pt.NetworkPolicy("dev", "web", pt.Selector()),
		},
		ClusterPolicies: []*cnpv1alpha2.ClusterNetworkPolicy{
			{ObjectMeta: metav1.ObjectMeta{Name: "admin", Annotations: map[string]string{policy.StagedAnnotation: "true"}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "base", Annotations: map[string]string{policy.StagedAnnotation: "false"}}},
		},
		Problems: []policy.Problem{{Kind: policy.KindNetworkPolicy, Namespace: "prod", Name: "deny-all"}, {Kind: policy.KindPod, Namespace: "prod", Name: "x"}},
	}
	enforced, proposed, has := policy.Staged(s)
	if !has {
		t.Fatal("has = false with staged policies")
	}
	if got, want := names(enforced.Policies), []string{"prod/db", "dev/web"}; !slices.Equal(got, want) {
		t.Errorf("enforced policies %v, want %v", got, want)
	}
	if got, want := names(proposed.Policies), []string{"prod/db (staged)", "prod/deny-all (staged)", "dev/web"}; !slices.Equal(got, want) {
		t.Errorf("proposed policies %v, want %v", got, want)
	}
	if len(enforced.ClusterPolicies) != 1 || enforced.ClusterPolicies[0].Name != "base" || len(proposed.ClusterPolicies) != 2 {
		t.Errorf("cluster policies: enforced %d, proposed %d", len(enforced.ClusterPolicies), len(proposed.ClusterPolicies))
	}
	if len(enforced.Problems) != 1 || enforced.Problems[0].Kind != policy.KindPod || len(proposed.Problems) != 2 {
		t.Errorf("problems: enforced %v, proposed %v", enforced.Problems, proposed.Problems)
	}
	refs := policy.StagedRefs(proposed)
	if len(refs) != 3 || !refs["prod/db"] || !refs["prod/deny-all"] || !refs["cnp/admin"] {
		t.Errorf("staged refs %v", refs)
	}

	_, _, has = policy.Staged(policy.State{Policies: enforced.Policies})
	if has {
		t.Error("has = true without staged policies")
	}
}
