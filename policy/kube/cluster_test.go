package kube

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	cnpclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"

	"github.com/podwall/podwall/e2e/cluster"
	"github.com/podwall/podwall/policy"
)

// These tests install and remove the ClusterNetworkPolicy CRD (from the module go.mod
// requires) in the shared API server: each makes the state it starts from.

// installCRD installs the ClusterNetworkPolicy CRD and returns a client of its objects.
func installCRD(t *testing.T, c *cluster.Cluster) cnpclient.Interface {
	t.Helper()
	ctx := context.Background()
	file, err := cluster.ClusterNetworkPolicyCRD(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.InstallCRD(ctx, file); err != nil {
		t.Fatal(err)
	}
	return cnpClient(t, c)
}

func cnpClient(t *testing.T, c *cluster.Cluster) cnpclient.Interface {
	t.Helper()
	cl, err := cnpclient.NewForConfig(c.Admin)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func removeCRD(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	if err := c.RemoveCRD(context.Background(), cluster.ClusterNetworkPolicyCRDName); err != nil {
		t.Fatal(err)
	}
}

// denyFrom is an Admin policy of priority prio that denies ingress to namespace ns from
// every namespace.
func denyFrom(name, ns string, prio int32) *cnpv1alpha2.ClusterNetworkPolicy {
	return &cnpv1alpha2.ClusterNetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: cnpv1alpha2.ClusterNetworkPolicySpec{
			Tier:     cnpv1alpha2.AdminTier,
			Priority: prio,
			Subject: cnpv1alpha2.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{
				MatchLabels: map[string]string{corev1.LabelMetadataName: ns}}},
			Ingress: []cnpv1alpha2.ClusterNetworkPolicyIngressRule{{
				Name:   "deny-all",
				Action: cnpv1alpha2.ClusterNetworkPolicyRuleActionDeny,
				From:   []cnpv1alpha2.ClusterNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{}}},
			}},
		},
	}
}

// clusterPolicy returns the policy named name in st, or nil.
func clusterPolicy(st policy.State, name string) *cnpv1alpha2.ClusterNetworkPolicy {
	i := slices.IndexFunc(st.ClusterPolicies, func(p *cnpv1alpha2.ClusterNetworkPolicy) bool { return p.Name == name })
	if i < 0 {
		return nil
	}
	return st.ClusterPolicies[i]
}

func runWith(t *testing.T, c *cluster.Cluster, o Options) (*Source, <-chan policy.State) {
	t.Helper()
	o.Log = slog.New(slog.NewTextHandler(testLog{t}, nil))
	s, err := New(c.Admin, o)
	if err != nil {
		t.Fatal(err)
	}
	return s, runSource(t, s)
}

// A Source started before the CRD exists is ready without it (its first state comes at
// once, and says so), picks the CRD up once it is installed, follows its objects — created,
// patched, deleted —, drops them all when the CRD is removed and picks it up again.
func TestSourceFollowsTheClusterNetworkPolicyCRD(t *testing.T) {
	c := cluster.Shared(t)
	ctx := context.Background()
	removeCRD(t, c)
	ns, _ := fixture(t, c, nil)

	const recheck = 200 * time.Millisecond // the default is 15 s
	s, states := runWith(t, c, Options{ClusterPolicyRecheck: recheck})
	st := await(t, states, "the first state", func(policy.State) bool { return true })
	if len(st.ClusterPolicies) != 0 {
		t.Errorf("first state without the CRD holds %d cluster policies", len(st.ClusterPolicies))
	}
	status := s.Status()
	if status.ClusterPolicyAPI != CRDAbsent || !status.Synced ||
		!strings.Contains(status.String(), "ClusterNetworkPolicy CRD not installed") {
		t.Errorf("status without the CRD: %#v (%s)", status, status)
	}
	if got := gauge(t, s, "podwall_source_cluster_policy_crd"); got != 0 {
		t.Errorf("podwall_source_cluster_policy_crd = %v without the CRD, want 0", got)
	}
	if l, err := List(ctx, c.Admin); err != nil || len(l.ClusterPolicies) != 0 {
		t.Errorf("List without the CRD: %d cluster policies, err %v; want none and no error", len(l.ClusterPolicies), err)
	}

	cnps := installCRD(t, c).PolicyV1alpha2().ClusterNetworkPolicies()
	name := ns + "-deny"
	if _, err := cnps.Create(ctx, denyFrom(name, ns, 10), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	st = await(t, states, "the cluster policy", func(st policy.State) bool { return clusterPolicy(st, name) != nil })
	if p := clusterPolicy(st, name); p.Spec.Priority != 10 || len(p.Spec.Ingress) != 1 || p.Spec.Ingress[0].Name != "deny-all" {
		t.Errorf("cluster policy in the state: %+v", p.Spec)
	}
	if st := s.Status(); st.ClusterPolicyAPI != CRDWatched || st.ClusterPolicies < 1 || strings.Contains(st.String(), "ClusterNetworkPolicy") {
		t.Errorf("status with the CRD: %#v (%s)", st, st)
	}
	if got := gauge(t, s, "podwall_source_cluster_policy_crd"); got != 1 {
		t.Errorf("podwall_source_cluster_policy_crd = %v with the CRD, want 1", got)
	}
	if got := gauge(t, s, "podwall_source_cluster_policies"); got < 1 {
		t.Errorf("podwall_source_cluster_policies = %v, want the policy counted", got)
	}

	patch := []byte(`{"spec":{"priority":20}}`)
	if _, err := cnps.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	await(t, states, "the priority patched", func(st policy.State) bool {
		p := clusterPolicy(st, name)
		return p != nil && p.Spec.Priority == 20
	})

	// The states list cluster policies by name, whatever the order of creation.
	first := ns + "-a"
	if _, err := cnps.Create(ctx, denyFrom(first, ns, 5), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	st = await(t, states, "the second policy", func(st policy.State) bool { return clusterPolicy(st, first) != nil })
	if !slices.IsSortedFunc(st.ClusterPolicies, func(a, b *cnpv1alpha2.ClusterNetworkPolicy) int { return strings.Compare(a.Name, b.Name) }) {
		t.Errorf("cluster policies not sorted by name: %v", names(st.ClusterPolicies))
	}
	l, err := List(ctx, c.Admin)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(l.ClusterPolicies), names(st.ClusterPolicies); !slices.Equal(got, want) {
		t.Errorf("List: cluster policies %v, Source %v", got, want)
	}

	if err := cnps.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	await(t, states, "the policy deleted", func(st policy.State) bool {
		return clusterPolicy(st, name) == nil && clusterPolicy(st, first) != nil
	})

	// Removing the CRD deletes its objects; the Source goes back to asking.
	removeCRD(t, c)
	await(t, states, "no cluster policies", func(st policy.State) bool { return len(st.ClusterPolicies) == 0 })
	waitStatus(t, s, "back to CRD absent", func(st Status) bool { return st.ClusterPolicyAPI == CRDAbsent })

	cnps = installCRD(t, c).PolicyV1alpha2().ClusterNetworkPolicies()
	if _, err := cnps.Create(ctx, denyFrom(name, ns, 30), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	await(t, states, "the policy after the CRD came back", func(st policy.State) bool {
		p := clusterPolicy(st, name)
		return p != nil && p.Spec.Priority == 30
	})
	if err := cnps.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Error(err)
	}
}

// With the CRD installed, the first state already holds every ClusterNetworkPolicy: an
// agent never enforces a state that lacks an admin's Deny.
func TestFirstStateHoldsClusterNetworkPolicies(t *testing.T) {
	c := cluster.Shared(t)
	ctx := context.Background()
	ns, _ := fixture(t, c, nil)
	cnps := installCRD(t, c).PolicyV1alpha2().ClusterNetworkPolicies()
	name := ns + "-deny"
	if _, err := cnps.Create(ctx, denyFrom(name, ns, 10), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cnps.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Error(err)
		}
	})
	s, states := runWith(t, c, Options{})
	st := await(t, states, "the first state", func(policy.State) bool { return true })
	if clusterPolicy(st, name) == nil {
		t.Errorf("the first state lacks the cluster policy: %v", names(st.ClusterPolicies))
	}
	if got := s.Status(); got.ClusterPolicyAPI != CRDWatched {
		t.Errorf("status: %#v", got)
	}
}

func names(ps []*cnpv1alpha2.ClusterNetworkPolicy) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

// gauge returns the value of the Source's series name.
func gauge(t *testing.T, s *Source, name string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s", name)
	return 0
}

// /readyz says why the states hold no ClusterNetworkPolicies, and nothing when they hold
// them all.
func TestStatusNamesTheClusterPolicyCRD(t *testing.T) {
	ok := Status{Connected: true, Synced: true}
	for _, tc := range []struct {
		api  string
		want string
	}{
		{CRDUnknown, "kubernetes API: connected, synced"},
		{CRDAbsent, "kubernetes API: connected, synced; ClusterNetworkPolicy CRD not installed"},
		{CRDSyncing, "kubernetes API: connected, synced; ClusterNetworkPolicy CRD installed, not listed yet"},
		{CRDWatched, "kubernetes API: connected, synced"},
	} {
		st := ok
		st.ClusterPolicyAPI = tc.api
		if got := st.String(); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.api, got, tc.want)
		}
	}
}

// With the CRD installed and a role that may not list ClusterNetworkPolicies, the Source
// delivers no state at all — never one without the admin's policies — and its status says
// why; once the role may, the first state comes, with them.
func TestForbiddenClusterPoliciesHoldTheFirstState(t *testing.T) {
	c := cluster.Shared(t)
	ctx := context.Background()
	ns, admin := fixture(t, c, nil)
	cnps := installCRD(t, c).PolicyV1alpha2().ClusterNetworkPolicies()
	name := ns + "-deny"
	if _, err := cnps.Create(ctx, denyFrom(name, ns, 10), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cnps.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Error(err)
		}
	})

	// A role with every rule the agent needs but the ClusterNetworkPolicy one.
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: ns}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"get", "list", "watch"}},
	}}
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "agent"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: ns},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "agent", Namespace: ns}}}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin.RbacV1().ClusterRoleBindings().Delete(ctx, ns, metav1.DeleteOptions{})
		admin.RbacV1().ClusterRoles().Delete(ctx, ns, metav1.DeleteOptions{})
	})
	tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "agent", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(c.TokenConfig(tr.Status.Token), Options{Log: slog.New(slog.NewTextHandler(testLog{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	states := runSource(t, s)
	waitStatus(t, s, "stuck on the forbidden list", func(st Status) bool {
		return st.ClusterPolicyAPI == CRDSyncing && strings.Contains(st.LastError, "clusternetworkpolicies") &&
			strings.Contains(st.LastError, "forbidden")
	})
	st := s.Status()
	if st.Synced || st.Updates != 0 || len(states) != 0 {
		t.Fatalf("a state without the forbidden ClusterNetworkPolicies: %#v", st)
	}
	if msg := st.String(); !strings.Contains(msg, "caches not synced yet (last error: clusternetworkpolicies") ||
		!strings.Contains(msg, "ClusterNetworkPolicy CRD installed, not listed yet") {
		t.Errorf("status line: %q", msg)
	}

	role.Rules = append(role.Rules, rbacv1.PolicyRule{APIGroups: []string{"policy.networking.k8s.io"},
		Resources: []string{"clusternetworkpolicies"}, Verbs: []string{"list", "watch"}})
	if _, err := admin.RbacV1().ClusterRoles().Update(ctx, role, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The reflector retries with backoff (up to 30 s between attempts); allow for one.
	timeout := time.After(45 * time.Second)
	select {
	case first := <-states:
		if clusterPolicy(first, name) == nil {
			t.Errorf("the first state lacks the cluster policy: %v", names(first.ClusterPolicies))
		}
	case <-timeout:
		t.Fatalf("no state once the role may list ClusterNetworkPolicies; status %s", s.Status())
	}
}
