package kube

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/podwall/podwall/e2e/cluster"
)

// The RBAC that deploy/examples/whatif documents for `podwall what-if --kubeconfig` lets its
// subject read the agents' flows through the pod proxy in podwall-system and the objects
// policy depends on — and nothing else: no pod proxy elsewhere, no exec, no secrets, no
// writes.
func TestWhatifRBAC(t *testing.T) {
	c := cluster.Shared(t)
	installRBAC(t, c) // the podwall-system namespace
	f, err := os.Open(filepath.Join(repo, "deploy/examples/whatif/rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, &u)
	}
	apply(t, c, false, objs...)
	ctx := context.Background()
	tr, err := cluster.Client(t, c.Admin).CoreV1().ServiceAccounts("podwall-system").CreateToken(ctx, "podwall-whatif",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(3600))}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sa := cluster.Client(t, c.TokenConfig(tr.Status.Token))
	may := func(verb, resource, sub, ns string) bool {
		t.Helper()
		group := ""
		if resource == "networkpolicies" {
			group = "networking.k8s.io"
		}
		r, err := sa.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: verb, Group: group, Resource: resource, Subresource: sub, Namespace: ns}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return r.Status.Allowed
	}
	// RBAC takes a moment to apply.
	for deadline := time.Now().Add(10 * time.Second); !may("get", "pods", "proxy", "podwall-system"); {
		if time.Now().After(deadline) {
			t.Fatal("the what-if subject may not get pods/proxy in podwall-system")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, tc := range []struct {
		verb, resource, sub, ns string
		want                    bool
	}{
		{"list", "pods", "", "podwall-system", true},
		{"get", "pods", "proxy", "podwall-system", true},
		{"list", "pods", "", "", true},
		{"list", "namespaces", "", "", true},
		{"list", "nodes", "", "", true},
		{"list", "networkpolicies", "", "", true},
		{"get", "pods", "proxy", "default", false},
		{"create", "pods", "proxy", "podwall-system", false},
		{"create", "pods", "exec", "podwall-system", false},
		{"get", "secrets", "", "podwall-system", false},
		{"delete", "pods", "", "podwall-system", false},
		{"create", "networkpolicies", "", "default", false},
	} {
		if got := may(tc.verb, tc.resource, tc.sub, tc.ns); got != tc.want {
			t.Errorf("%s %s/%s in %q: allowed=%v, want %v", tc.verb, tc.resource, tc.sub, tc.ns, got, tc.want)
		}
	}
}
