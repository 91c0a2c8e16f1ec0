package kube

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	cnpclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/e2e/cluster"
	"github.com/podwall/podwall/policy/kube"
)

// ClusterNetworkPolicy in cluster mode: the optional CRD component, the README's examples
// against the CRD's own validation, and an agent that starts before the CRD exists.

// crdFile is the CRD as it ships in the network-policy-api module go.mod requires.
func crdFile(t *testing.T) string {
	t.Helper()
	f, err := cluster.ClusterNetworkPolicyCRD(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func installCRD(t *testing.T, c *cluster.Cluster) cnpclient.Interface {
	t.Helper()
	if err := c.InstallCRD(context.Background(), crdFile(t)); err != nil {
		t.Fatal(err)
	}
	cl, err := cnpclient.NewForConfig(c.Admin)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// The optional component deploy/components/clusternetworkpolicy is a kustomize Component
// holding exactly the upstream CRD of the module podwall is built with: bumping the module
// without the component (or the other way round) fails here.
func TestClusterNetworkPolicyComponent(t *testing.T) {
	dir := filepath.Join(repo, "deploy", "components", "clusternetworkpolicy")
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	const file = "policy.networking.k8s.io_clusternetworkpolicies.yaml"
	if k.APIVersion != "kustomize.config.k8s.io/v1alpha1" || k.Kind != "Component" || !slices.Equal(k.Resources, []string{file}) {
		t.Errorf("kustomization.yaml: %+v, want a Component with the one resource %s", k, file)
	}
	got, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(crdFile(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s: copy it again", filepath.Join(dir, file), crdFile(t))
	}
	// The version the README and the component's comment tell users to apply.
	readme, err := os.ReadFile(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimPrefix(filepath.Base(filepath.Dir(filepath.Dir(filepath.Dir(filepath.Dir(crdFile(t)))))), "network-policy-api@")
	url := "https://raw.githubusercontent.com/kubernetes-sigs/network-policy-api/" + version + "/config/crd/standard/" + file
	for name, text := range map[string][]byte{"README.md": readme, "the component's kustomization.yaml": b} {
		if !bytes.Contains(text, []byte(url)) {
			t.Errorf("%s does not name %s", name, url)
		}
	}
}

// exampleObjects reads deploy/examples/clusternetworkpolicy.
func exampleObjects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repo, "deploy", "examples", "clusternetworkpolicy", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	var objs []*unstructured.Unstructured
	for _, name := range files {
		objs = append(objs, decodeObjects(t, name)...)
	}
	return objs
}

// readmeObjects decodes the YAML blocks of the README's section that starts with heading.
func readmeObjects(t *testing.T, heading string) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no %q section", heading)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var objs []*unstructured.Unstructured
	for _, block := range strings.Split(section, "```yaml\n")[1:] {
		block, _, _ = strings.Cut(block, "```")
		for _, doc := range strings.Split(block, "\n---\n") {
			var u unstructured.Unstructured
			if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
				t.Fatalf("README.md %s: %v", heading, err)
			}
			objs = append(objs, &u)
		}
	}
	return objs
}

// The README's ClusterNetworkPolicy examples (deploy/examples/clusternetworkpolicy, shown as
// they are in the README) are valid
// for the CRD — its OpenAPI schema and CEL rules, which the API server runs — and read back
// by the Kubernetes source as written. Invalid variants are refused, so the validation did
// run.
func TestClusterNetworkPolicyExamples(t *testing.T) {
	c := cluster.Shared(t)
	ctx := context.Background()
	cnps := installCRD(t, c).PolicyV1alpha2().ClusterNetworkPolicies()
	admin := cluster.Client(t, c.Admin)

	objs := exampleObjects(t)
	want := map[string]cnpv1alpha2.ClusterNetworkPolicySpec{}
	var nps []*networkingv1.NetworkPolicy
	for _, o := range objs {
		switch o.GetKind() {
		case "ClusterNetworkPolicy":
			var p cnpv1alpha2.ClusterNetworkPolicy
			if err := runtimeDefault(o.Object, &p); err != nil {
				t.Fatalf("%s: %v", o.GetName(), err)
			}
			want[p.Name] = p.Spec
			t.Cleanup(func() {
				if err := cnps.Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
					t.Error(err)
				}
			})
		case "NetworkPolicy":
			var np networkingv1.NetworkPolicy
			if err := runtimeDefault(o.Object, &np); err != nil {
				t.Fatalf("%s: %v", o.GetName(), err)
			}
			nps = append(nps, &np)
			// Namespaces never finish deleting here (no controller manager): reuse.
			_, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: np.Namespace}}, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := admin.NetworkingV1().NetworkPolicies(np.Namespace).Delete(ctx, np.Name, metav1.DeleteOptions{}); err != nil {
					t.Error(err)
				}
			})
		default:
			t.Errorf("example %s %s: want ClusterNetworkPolicies and NetworkPolicies only", o.GetKind(), o.GetName())
		}
	}
	if len(want) < 2 || len(nps) < 1 {
		t.Fatalf("examples: %d ClusterNetworkPolicies and %d NetworkPolicies; the README shows two and one", len(want), len(nps))
	}
	// The README shows the same objects.
	shown := readmeObjects(t, "## ClusterNetworkPolicy")
	if len(shown) != len(objs) {
		t.Errorf("the README's ClusterNetworkPolicy section shows %d objects, deploy/examples/clusternetworkpolicy has %d", len(shown), len(objs))
	}
	for _, o := range objs {
		if !slices.ContainsFunc(shown, func(r *unstructured.Unstructured) bool { return apiequality.Semantic.DeepEqual(r.Object, o.Object) }) {
			t.Errorf("the README does not show %s %s as deploy/examples/clusternetworkpolicy has it", o.GetKind(), o.GetName())
		}
	}
	apply(t, c, false, objs...)
	if t.Failed() {
		t.FailNow()
	}

	st, err := kube.List(ctx, c.Admin)
	if err != nil {
		t.Fatal(err)
	}
	for name, spec := range want {
		i := slices.IndexFunc(st.ClusterPolicies, func(p *cnpv1alpha2.ClusterNetworkPolicy) bool { return p.Name == name })
		if i < 0 {
			t.Errorf("kube.List lacks ClusterNetworkPolicy %s", name)
			continue
		}
		if !apiequality.Semantic.DeepEqual(st.ClusterPolicies[i].Spec, spec) {
			t.Errorf("ClusterNetworkPolicy %s as read back:\n%+v\nas written:\n%+v", name, st.ClusterPolicies[i].Spec, spec)
		}
	}
	for _, np := range nps {
		if !slices.ContainsFunc(st.Policies, func(p *networkingv1.NetworkPolicy) bool {
			return p.Namespace == np.Namespace && p.Name == np.Name
		}) {
			t.Errorf("kube.List lacks NetworkPolicy %s/%s", np.Namespace, np.Name)
		}
	}

	// Each breaks one rule of the CRD: schema bounds, CEL, and one-field-per-peer.
	base := objs[slices.IndexFunc(objs, func(o *unstructured.Unstructured) bool {
		return o.GetKind() == "ClusterNetworkPolicy" && o.GetName() == "protect-payments"
	})]
	for _, tc := range []struct {
		name   string
		mutate func(p *cnpv1alpha2.ClusterNetworkPolicy)
		want   string
	}{
		{"priority above 1000", func(p *cnpv1alpha2.ClusterNetworkPolicy) { p.Spec.Priority = 1001 }, "spec.priority"},
		{"a network with host bits (CEL)", func(p *cnpv1alpha2.ClusterNetworkPolicy) {
			p.Spec.Egress[2].To[1].Networks = []cnpv1alpha2.CIDR{"10.0.0.1/8"}
		}, "Invalid CIDR format provided"},
		{"a peer with two fields", func(p *cnpv1alpha2.ClusterNetworkPolicy) {
			p.Spec.Ingress[1].From[0].Pods = &cnpv1alpha2.NamespacedPod{}
		}, "spec.ingress[1].from[0]"},
	} {
		var p cnpv1alpha2.ClusterNetworkPolicy
		if err := runtimeDefault(base.Object, &p); err != nil {
			t.Fatal(err)
		}
		p.Name = "invalid"
		tc.mutate(&p)
		_, err := cnps.Create(ctx, &p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want Invalid naming %q", tc.name, err, tc.want)
		}
	}
}

// An agent started before the CRD exists becomes ready without it and says so in /readyz;
// once the CRD is installed it watches ClusterNetworkPolicies (within its recheck period,
// 15 s) with only the shipped RBAC, counts them and enforces them on real packets as they are
// created, patched and deleted through the API.
func TestAgentPicksUpClusterNetworkPolicyCRD(t *testing.T) {
	needRoot(t)
	c := cluster.Shared(t)
	ctx := context.Background()
	if err := c.RemoveCRD(ctx, cluster.ClusterNetworkPolicyCRDName); err != nil {
		t.Fatal(err)
	}
	token := installRBAC(t, c)
	e := newEnv(t, c)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "prod/web", "other/client")
	e.Serve(80)
	e.createNamespace("prod", nil)
	e.createNamespace("other", nil)
	e.createPod("prod/web", map[string]string{"app": "web"}, true)
	e.createPod("other/client", map[string]string{"app": "client"}, true)
	e.start(token)
	clientToWeb := func(allow bool) probe { return probe{"other/client", "prod/web", 80, allow} }
	e.check(clientToWeb(true))

	_, body, err := e.Agents["node-1"].Get(ctx, "/readyz")
	if err != nil || !strings.Contains(body, "ClusterNetworkPolicy CRD not installed") {
		t.Errorf("/readyz without the CRD: %q, %v", body, err)
	}
	if v, err := e.metric("node-1", "podwall_source_cluster_policy_crd"); err != nil || v != 0 {
		t.Errorf("podwall_source_cluster_policy_crd = %v (%v) without the CRD, want 0", v, err)
	}

	cnps := installCRD(t, c).PolicyV1alpha2().ClusterNetworkPolicies()
	name := e.ns("protect")
	p := &cnpv1alpha2.ClusterNetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: cnpv1alpha2.ClusterNetworkPolicySpec{
			Tier: cnpv1alpha2.AdminTier, Priority: 10,
			Subject: cnpv1alpha2.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{
				MatchLabels: map[string]string{corev1.LabelMetadataName: e.ns("prod")}}},
			Ingress: []cnpv1alpha2.ClusterNetworkPolicyIngressRule{{
				Action: cnpv1alpha2.ClusterNetworkPolicyRuleActionDeny,
				From:   []cnpv1alpha2.ClusterNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{}}},
			}},
		},
	}
	if _, err := cnps.Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cnps.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
	})
	timeout := kube.DefaultClusterPolicyRecheck*6/5 + 10*time.Second // the recheck's jitter, then a list
	e.awaitMetric("podwall_source_cluster_policy_crd", 1, timeout)
	if v, err := e.metric("node-1", "podwall_source_cluster_policies"); err != nil || v < 1 {
		t.Errorf("podwall_source_cluster_policies = %v (%v), want the policy counted", v, err)
	}
	if _, body, err := e.Agents["node-1"].Get(ctx, "/readyz"); err != nil || strings.Contains(body, "ClusterNetworkPolicy") {
		t.Errorf("/readyz with the CRD: %q, %v", body, err)
	}

	// Enforced as written, and as it changes through the API: the Admin Deny cuts every
	// other namespace off prod; patched to Pass, the namespace's policies decide (none
	// isolates web: allowed); back to Deny, denied; deleted, allowed.
	const enforce = 10 * time.Second
	e.await("Admin Deny created", enforce, clientToWeb(false))
	action := func(a cnpv1alpha2.ClusterNetworkPolicyRuleAction) {
		patch := fmt.Appendf(nil, `[{"op":"replace","path":"/spec/ingress/0/action","value":%q}]`, a)
		if _, err := cnps.Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	action(cnpv1alpha2.ClusterNetworkPolicyRuleActionPass)
	e.await("Deny patched to Pass", enforce, clientToWeb(true))
	action(cnpv1alpha2.ClusterNetworkPolicyRuleActionDeny)
	e.await("Pass patched back to Deny", enforce, clientToWeb(false))
	if err := cnps.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.await("ClusterNetworkPolicy deleted", enforce, clientToWeb(true))
}
