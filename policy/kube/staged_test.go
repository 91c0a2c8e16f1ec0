package kube

import (
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/podwall/podwall/policy"
)

// Of a policy's annotations, the transform keeps podwall.io/staged (SPEC §2c) and drops the
// rest; adding or removing it is a change policy reads (promoting a staged policy).
func TestTrimKeepsStaged(t *testing.T) {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "deny-all", UID: "u1",
		Annotations: map[string]string{policy.StagedAnnotation: "true", "kubectl.kubernetes.io/last-applied-configuration": "{...}"}}}
	trim(np)
	if len(np.Annotations) != 1 || !policy.IsStaged(&np.ObjectMeta) {
		t.Errorf("NetworkPolicy annotations after trim: %v", np.Annotations)
	}
	cnp := &cnpv1alpha2.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "admin", UID: "u2",
		Annotations: map[string]string{policy.StagedAnnotation: "true", "note": "x"}}}
	trim(cnp)
	if len(cnp.Annotations) != 1 || !policy.IsStaged(&cnp.ObjectMeta) {
		t.Errorf("ClusterNetworkPolicy annotations after trim: %v", cnp.Annotations)
	}

	promoted := np.DeepCopy()
	promoted.Annotations = nil
	if !policyChanged(np, promoted) {
		t.Error("removing the staged annotation is not a NetworkPolicy change")
	}
	if policyChanged(np, np.DeepCopy()) {
		t.Error("an identical NetworkPolicy is a change")
	}
	promotedCNP := cnp.DeepCopy()
	promotedCNP.Annotations = map[string]string{policy.StagedAnnotation: "false"}
	if !clusterPolicyChanged(cnp, promotedCNP) {
		t.Error("unstaging is not a ClusterNetworkPolicy change")
	}
}
