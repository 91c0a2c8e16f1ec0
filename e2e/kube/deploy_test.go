package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	cnpclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/e2e/cluster"
)

// The deploy/ manifests as `kubectl apply -k deploy/` sends them: the kustomization only
// lists resources (no transformers), so the files are exactly what is applied.
func deployObjects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	dir := filepath.Join(repo, "deploy")
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k map[string]any
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	for key := range k {
		if key != "apiVersion" && key != "kind" && key != "resources" {
			t.Fatalf("kustomization.yaml: %q: this test applies the resources as they are; teach it %s", key, key)
		}
	}
	var objs []*unstructured.Unstructured
	for _, r := range k["resources"].([]any) {
		objs = append(objs, decodeObjects(t, filepath.Join(dir, r.(string)))...)
	}
	return objs
}

// decodeObjects decodes the YAML or JSON documents of the file at path (empty documents
// left out), failing the test with the file named.
func decodeObjects(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			return objs
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, &u)
		}
	}
}

// apply server-side-applies objects as the admin (dryRun: nothing is stored).
func apply(t *testing.T, c *cluster.Cluster, dryRun bool, objs ...*unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	dyn := dynamic.NewForConfigOrDie(c.Admin)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cluster.Client(t, c.Admin).Discovery()))
	opts := metav1.PatchOptions{FieldManager: "podwall-e2e", Force: new(true)}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s %s: %v", gvk.Kind, o.GetName(), err)
		}
		data, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		var r dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == "namespace" {
			if o.GetNamespace() == "" {
				t.Fatalf("%s %s: no metadata.namespace: it would land in the namespace of the kubectl context", gvk.Kind, o.GetName())
			}
			r = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		if _, err := r.Patch(ctx, o.GetName(), types.ApplyPatchType, data, opts); err != nil {
			t.Errorf("apply %s %s/%s (dry run %v): %v", gvk.Kind, o.GetNamespace(), o.GetName(), dryRun, err)
		}
	}
}

func kindOf(kind string) func(*unstructured.Unstructured) bool {
	return func(u *unstructured.Unstructured) bool { return u.GetKind() == kind }
}

// Every object of deploy/ is accepted by the API server: schema, defaults and admission
// (the priority class exists, the Pod Security label is valid, the RBAC binding resolves).
func TestDeployServerSideDryRun(t *testing.T) {
	c := cluster.Shared(t)
	objs := deployObjects(t)
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.GetKind())
	}
	slices.Sort(kinds)
	if want := []string{"ClusterRole", "ClusterRoleBinding", "DaemonSet", "Namespace", "ServiceAccount"}; !slices.Equal(kinds, want) {
		t.Errorf("deploy/ objects: %v, want %v", kinds, want)
	}
	// A dry run creates nothing, and the namespaced objects need their namespace.
	ns := objs[slices.IndexFunc(objs, kindOf("Namespace"))]
	apply(t, c, false, ns)
	apply(t, c, true, objs...)
	admin := cluster.Client(t, c.Admin)
	_, err := admin.AppsV1().DaemonSets("podwall-system").Get(context.Background(), "podwall", metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("after a dry run, the DaemonSet: %v; want NotFound", err)
	}

	// No controller here makes the DaemonSet's pods: dry-run one as it would, so that pod
	// admission runs too (the priority class resolves, Pod Security admits hostNetwork and
	// NET_ADMIN in podwall-system).
	var ds appsv1.DaemonSet
	u := objs[slices.IndexFunc(objs, kindOf("DaemonSet"))]
	if err := runtimeDefault(u.Object, &ds); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: ds.Spec.Template.ObjectMeta, Spec: ds.Spec.Template.Spec}
	pod.Namespace, pod.Name, pod.Spec.NodeName = "podwall-system", "podwall-dry-run", "node-1"
	if _, err := admin.CoreV1().Pods("podwall-system").Create(context.Background(), pod,
		metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Errorf("the DaemonSet's pod: %v", err)
	}
}

// runtimeDefault converts an unstructured object to a typed one.
func runtimeDefault(obj map[string]any, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(obj, into, true)
}

// installRBAC applies deploy/'s namespace, ServiceAccount and RBAC for real and returns a
// token of the agent's ServiceAccount (TokenRequest), valid for an hour.
func installRBAC(t *testing.T, c *cluster.Cluster) string {
	t.Helper()
	var objs []*unstructured.Unstructured
	for _, o := range deployObjects(t) {
		if o.GetKind() != "DaemonSet" {
			objs = append(objs, o)
		}
	}
	apply(t, c, false, objs...)
	if t.Failed() {
		t.FailNow()
	}
	tr, err := cluster.Client(t, c.Admin).CoreV1().ServiceAccounts("podwall-system").CreateToken(context.Background(), "podwall",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(3600))}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// RBAC takes a moment to apply: wait until the token may do what the agent does.
	sa := cluster.Client(t, c.TokenConfig(tr.Status.Token))
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := sa.NetworkingV1().NetworkPolicies("").List(context.Background(), metav1.ListOptions{Limit: 1})
		if err == nil {
			break
		}
		if !apierrors.IsForbidden(err) || time.Now().After(deadline) {
			t.Fatalf("the agent's token cannot list network policies: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return tr.Status.Token
}

// The shipped RBAC lets the agent read what it watches and nothing else: every write, and
// every read outside pods, namespaces, network policies and cluster network policies (list
// and watch only), is Forbidden for its token.
// The lab test runs the agents with this same token.
func TestLeastPrivilege(t *testing.T) {
	c := cluster.Shared(t)
	token := installRBAC(t, c)
	ctx := context.Background()
	admin := cluster.Client(t, c.Admin)
	ns := "rbac-" + strings.ToLower(randomID())
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "victim"},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c", Image: "lab"}}}}
	if _, err := admin.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "s"}, StringData: map[string]string{"k": "v"}}
	if _, err := admin.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	sa := cluster.Client(t, c.TokenConfig(token))
	// ClusterNetworkPolicies: the CRD installed, so that a missing rule shows as Forbidden
	// (without it every request would be NotFound).
	installCRD(t, c)
	saCNP, err := cnpclient.NewForConfig(c.TokenConfig(token))
	if err != nil {
		t.Fatal(err)
	}
	cnps := saCNP.PolicyV1alpha2().ClusterNetworkPolicies()
	allowed := []struct {
		what string
		do   func() error
	}{
		{"list pods (all namespaces)", func() error { _, err := sa.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); return err }},
		{"watch pods", watchOnce(func() (interface{ Stop() }, error) { return sa.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{}) })},
		{"list nodes (the agent watches its own Node for spec.podCIDRs)", func() error {
			_, err := sa.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			return err
		}},
		{"watch nodes", watchOnce(func() (interface{ Stop() }, error) { return sa.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{}) })},
		{"list namespaces", func() error { _, err := sa.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); return err }},
		{"watch namespaces", watchOnce(func() (interface{ Stop() }, error) { return sa.CoreV1().Namespaces().Watch(ctx, metav1.ListOptions{}) })},
		{"list network policies", func() error {
			_, err := sa.NetworkingV1().NetworkPolicies("").List(ctx, metav1.ListOptions{})
			return err
		}},
		{"watch network policies", watchOnce(func() (interface{ Stop() }, error) {
			return sa.NetworkingV1().NetworkPolicies("").Watch(ctx, metav1.ListOptions{})
		})},
		{"list cluster network policies", func() error { _, err := cnps.List(ctx, metav1.ListOptions{}); return err }},
		{"watch cluster network policies", watchOnce(func() (interface{ Stop() }, error) {
			return cnps.Watch(ctx, metav1.ListOptions{})
		})},
	}
	for _, a := range allowed {
		if err := a.do(); err != nil {
			t.Errorf("the agent's token may not %s: %v", a.what, err)
		}
	}
	forbidden := []struct {
		what string
		do   func() error
	}{
		{"get a pod (the informers only list and watch)", func() error {
			_, err := sa.CoreV1().Pods(ns).Get(ctx, "victim", metav1.GetOptions{})
			return err
		}},
		{"get a network policy", func() error {
			_, err := sa.NetworkingV1().NetworkPolicies(ns).Get(ctx, "any", metav1.GetOptions{})
			return err
		}},
		{"delete a pod", func() error { return sa.CoreV1().Pods(ns).Delete(ctx, "victim", metav1.DeleteOptions{}) }},
		{"update pod status", func() error {
			p := pod.DeepCopy()
			p.Status.PodIP = "10.244.9.9"
			_, err := sa.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
			return err
		}},
		{"label a pod", func() error {
			_, err := sa.CoreV1().Pods(ns).Patch(ctx, "victim", types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`), metav1.PatchOptions{})
			return err
		}},
		{"create a pod", func() error {
			p := pod.DeepCopy()
			p.Name, p.ResourceVersion = "evil", ""
			_, err := sa.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
			return err
		}},
		{"get a secret", func() error { _, err := sa.CoreV1().Secrets(ns).Get(ctx, "s", metav1.GetOptions{}); return err }},
		{"list secrets", func() error { _, err := sa.CoreV1().Secrets("").List(ctx, metav1.ListOptions{}); return err }},
		{"create a network policy", func() error {
			np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "allow-all"}}
			_, err := sa.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{})
			return err
		}},
		{"get a cluster network policy", func() error { _, err := cnps.Get(ctx, "any", metav1.GetOptions{}); return err }},
		{"create a cluster network policy", func() error {
			p := &cnpv1alpha2.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "allow-all"},
				Spec: cnpv1alpha2.ClusterNetworkPolicySpec{Tier: cnpv1alpha2.AdminTier, Priority: 0,
					Subject: cnpv1alpha2.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{}}}}
			_, err := cnps.Create(ctx, p, metav1.CreateOptions{})
			return err
		}},
		{"label a namespace", func() error {
			_, err := sa.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`), metav1.PatchOptions{})
			return err
		}},
		{"get a node", func() error { _, err := sa.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{}); return err }},
		{"list configmaps", func() error { _, err := sa.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{}); return err }},
		{"mint a token", func() error {
			_, err := sa.CoreV1().ServiceAccounts("podwall-system").CreateToken(ctx, "podwall", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
			return err
		}},
	}
	for _, f := range forbidden {
		if err := f.do(); !apierrors.IsForbidden(err) {
			t.Errorf("the agent's token may %s: err = %v, want Forbidden", f.what, err)
		}
	}
	if _, err := admin.CoreV1().Pods(ns).Get(ctx, "victim", metav1.GetOptions{}); err != nil {
		t.Errorf("the pod is gone: %v", err)
	}

	// What the API server says the token may do anywhere, for the record.
	rr, err := sa.AuthorizationV1().SelfSubjectRulesReviews().Create(ctx,
		&authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rr.Status.ResourceRules {
		t.Logf("may %v %v in groups %q", r.Verbs, r.Resources, r.APIGroups)
	}
}

func watchOnce(start func() (interface{ Stop() }, error)) func() error {
	return func() error {
		w, err := start()
		if err != nil {
			return err
		}
		w.Stop()
		return nil
	}
}

// The DaemonSet runs the binary as it is: no command (the image's entrypoint is `podwall
// run`), only flags `podwall run` has, the metrics port where --metrics-addr listens, probes
// on the paths the agent serves, NODE_NAME from the downward API, and the shipped
// security settings.
func TestDaemonSetMatchesBinary(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repo, "deploy", "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(b, &ds); err != nil {
		t.Fatalf("daemonset.yaml: %v", err)
	}
	help := podwall(t, "", "run", "--help")
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`).FindAllStringSubmatch(help, -1) {
		flags[m[1]] = true
	}
	if !flags["metrics-addr"] || !flags["node-name"] {
		t.Fatalf("cannot read the flags of `podwall run --help`:\n%s", help)
	}

	spec := ds.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	ctr := spec.Containers[0]
	if !strings.HasPrefix(ctr.Image, "ghcr.io/podwall/podwall:") {
		t.Errorf("image %q, want ghcr.io/podwall/podwall:<tag> (the Dockerfile's image)", ctr.Image)
	}
	// Pinned to the release the Makefile names (make release-tag), never a moving tag.
	mk, err := os.ReadFile(filepath.Join(repo, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	release := regexp.MustCompile(`(?m)^RELEASE \?= (v[0-9]+\.[0-9]+\.[0-9]+)$`).FindSubmatch(mk)
	if release == nil || ctr.Image != "ghcr.io/podwall/podwall:"+string(release[1]) {
		t.Errorf("image %q, want the Makefile's RELEASE (%q)", ctr.Image, release)
	}
	// Go's soft memory limit: 90 % of the container's limit, from the limit in bytes.
	if i := slices.IndexFunc(ctr.Env, func(e corev1.EnvVar) bool { return e.Name == "PODWALL_MEMORY_LIMIT" }); i < 0 ||
		ctr.Env[i].ValueFrom == nil || ctr.Env[i].ValueFrom.ResourceFieldRef == nil ||
		ctr.Env[i].ValueFrom.ResourceFieldRef.Resource != "limits.memory" || ctr.Env[i].ValueFrom.ResourceFieldRef.Divisor.String() != "1" {
		t.Error("PODWALL_MEMORY_LIMIT does not come from limits.memory in bytes")
	}
	if slices.ContainsFunc(ctr.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMEMLIMIT" }) {
		t.Error("GOMEMLIMIT is set: it would override the agent's 90 % of the limit")
	}
	if !strings.Contains(help, "--memory-limit") || !strings.Contains(help, "$PODWALL_MEMORY_LIMIT") {
		t.Error("`podwall run --help` has no --memory-limit defaulting to $PODWALL_MEMORY_LIMIT")
	}
	if len(ctr.Command) > 0 {
		t.Errorf("command %q overrides the image's entrypoint (podwall run)", ctr.Command)
	}
	args := map[string]string{}
	for _, a := range ctr.Args {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok {
			t.Errorf("arg %q: want --flag=value", a)
			continue
		}
		if !flags[name] {
			t.Errorf("arg %q: `podwall run` has no flag --%s", a, name)
		}
		args[name] = value
	}
	if _, ok := args["manifests"]; ok {
		t.Error("the DaemonSet reads manifests; want the in-cluster config")
	}
	if _, ok := args["kubeconfig"]; ok {
		t.Error("the DaemonSet names a kubeconfig; want the in-cluster config")
	}
	_, port, err := net.SplitHostPort(args["metrics-addr"])
	if err != nil {
		t.Fatalf("--metrics-addr=%q: %v", args["metrics-addr"], err)
	}
	var metricsPort int32 = -1
	for _, p := range ctr.Ports {
		if p.Name == "metrics" {
			metricsPort = p.ContainerPort
		}
	}
	if want := mustAtoi(t, port); metricsPort != int32(want) {
		t.Errorf("port named metrics is %d, --metrics-addr listens on %d", metricsPort, want)
	}
	for name, pr := range map[string]*corev1.Probe{"/healthz": ctr.LivenessProbe, "/readyz": ctr.ReadinessProbe} {
		if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != name || pr.HTTPGet.Port.String() != "metrics" {
			t.Errorf("probe for %s: %+v, want GET %s on port metrics", name, pr, name)
		}
		if !strings.Contains(help, name) {
			t.Errorf("`podwall run --help` does not mention %s", name)
		}
	}
	if i := slices.IndexFunc(ctr.Env, func(e corev1.EnvVar) bool { return e.Name == "NODE_NAME" }); i < 0 ||
		ctr.Env[i].ValueFrom == nil || ctr.Env[i].ValueFrom.FieldRef == nil || ctr.Env[i].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Error("NODE_NAME does not come from spec.nodeName")
	}
	if !strings.Contains(help, "$NODE_NAME") {
		t.Error("`podwall run --help` does not say it reads $NODE_NAME")
	}

	sc := ctr.SecurityContext
	switch {
	case !spec.HostNetwork:
		t.Error("not hostNetwork: the agent must program the node's network namespace")
	case sc == nil || sc.Privileged == nil || *sc.Privileged:
		t.Error("privileged, or not explicitly unprivileged")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("root filesystem writable")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("privilege escalation allowed")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN"}) ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}):
		t.Errorf("capabilities %+v, want drop ALL, add NET_ADMIN only", sc.Capabilities)
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	if len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists || spec.Tolerations[0].Key != "" {
		t.Errorf("tolerations %+v, want one that tolerates every taint", spec.Tolerations)
	}
	if ru := ds.Spec.UpdateStrategy.RollingUpdate; ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType ||
		ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.String() != "1" {
		t.Errorf("update strategy %+v, want RollingUpdate with maxUnavailable 1", ds.Spec.UpdateStrategy)
	}
	if ctr.Resources.Requests.Cpu().IsZero() || ctr.Resources.Requests.Memory().IsZero() || ctr.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v, want cpu and memory requests and a memory limit", ctr.Resources)
	}
	if spec.ServiceAccountName != "podwall" || ds.Namespace != "podwall-system" {
		t.Errorf("service account %s/%s, want podwall-system/podwall (deploy/rbac.yaml)", ds.Namespace, spec.ServiceAccountName)
	}
}

// The Dockerfile builds ./cmd/podwall static and reproducible and starts `podwall run`. No
// container engine here to build it; this is what can be checked without one.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repo, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string // instructions, continuation lines joined
	for _, l := range strings.Split(strings.ReplaceAll(string(b), "\\\n", " "), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	var froms, builds []string
	var entrypoint string
	labels := map[string]bool{}
	for _, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			froms = append(froms, rest)
		case "RUN":
			if strings.Contains(rest, "go build") {
				builds = append(builds, rest)
			}
		case "ENTRYPOINT":
			entrypoint = strings.TrimSpace(rest)
		case "LABEL":
			for _, m := range regexp.MustCompile(`(org\.opencontainers\.image\.[a-z]+)=`).FindAllStringSubmatch(rest, -1) {
				labels[m[1]] = true
			}
		}
	}
	if len(froms) != 2 || !strings.HasSuffix(froms[0], " AS build") || !strings.HasPrefix(froms[1], "gcr.io/distroless/static") {
		t.Errorf("stages %q, want a build stage and distroless static", froms)
	}
	pinned := regexp.MustCompile(`^[a-z0-9./-]+:[a-z0-9.-]+@sha256:[0-9a-f]{64}( AS build)?$`)
	for _, f := range froms {
		if !pinned.MatchString(f) {
			t.Errorf("FROM %s: want the image pinned by digest (name:tag@sha256:…; make pin-images)", f)
		}
	}
	gomod, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if gov := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod); gov == nil || !strings.HasPrefix(froms[0], "golang:"+string(gov[1])+"-") {
		t.Errorf("build stage %q, want golang:<go.mod's go version>-…", froms[0])
	}
	if len(builds) != 1 {
		t.Fatalf("go build steps %q, want one", builds)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/podwall", "-X main.version="} {
		if !strings.Contains(builds[0], want) {
			t.Errorf("go build step lacks %s: %s", want, builds[0])
		}
	}
	var ep []string
	if err := json.Unmarshal([]byte(entrypoint), &ep); err != nil || !slices.Equal(ep, []string{"/podwall", "run"}) {
		t.Errorf("ENTRYPOINT %s, want [\"/podwall\", \"run\"] (exec form)", entrypoint)
	}
	if !bytes.Contains(b, []byte("COPY --from=build /out/podwall /podwall")) {
		t.Error("the binary is not copied to /podwall from the build stage")
	}
	for _, l := range []string{"title", "source", "version", "description"} {
		if !labels["org.opencontainers.image."+l] {
			t.Errorf("no OCI label org.opencontainers.image.%s", l)
		}
	}
}

// daemonSetWith returns deploy/'s DaemonSet with the strategic merge patches of the
// kustomize Component deploy/components/NAME applied, as an overlay using that component
// would send it.
func daemonSetWith(t *testing.T, component string) *appsv1.DaemonSet {
	t.Helper()
	dir := filepath.Join(repo, "deploy/components", component)
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Patches    []struct {
			Path string `json:"path"`
		} `json:"patches"`
	}
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v (this test applies path-only patches; teach it more)", component, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1alpha1" || k.Kind != "Component" || len(k.Patches) == 0 {
		t.Fatalf("%s/kustomization.yaml: %+v, want a Component with patches", component, k)
	}
	objs := deployObjects(t)
	ds := objs[slices.IndexFunc(objs, kindOf("DaemonSet"))]
	doc, err := ds.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range k.Patches {
		b, err := os.ReadFile(filepath.Join(dir, p.Path))
		if err != nil {
			t.Fatal(err)
		}
		var target unstructured.Unstructured
		if err := yaml.Unmarshal(b, &target.Object); err != nil {
			t.Fatalf("%s/%s: %v", component, p.Path, err)
		}
		if target.GetKind() != "DaemonSet" || target.GetName() != ds.GetName() || target.GetNamespace() != ds.GetNamespace() {
			t.Fatalf("%s/%s patches %s %s/%s, not deploy/'s DaemonSet %s/%s", component, p.Path,
				target.GetKind(), target.GetNamespace(), target.GetName(), ds.GetNamespace(), ds.GetName())
		}
		patch, err := yaml.YAMLToJSON(b)
		if err != nil {
			t.Fatal(err)
		}
		if doc, err = strategicpatch.StrategicMergePatch(doc, patch, appsv1.DaemonSet{}); err != nil {
			t.Fatalf("%s/%s: %v", component, p.Path, err)
		}
	}
	var out appsv1.DaemonSet
	if err := json.Unmarshal(doc, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

// The optional component deploy/components/whatif changes exactly one thing of the
// DaemonSet: the agent's debug listener moves from 127.0.0.1 to its pod address
// ($(POD_IP), from status.podIP), so that `podwall what-if --kubeconfig` reaches it through
// the pod proxy. Its patch repeats the container's args: when deploy/ changes a flag, this
// test says the component must follow.
func TestWhatifComponent(t *testing.T) {
	objs := deployObjects(t)
	var plain appsv1.DaemonSet
	if err := runtimeDefault(objs[slices.IndexFunc(objs, kindOf("DaemonSet"))].Object, &plain); err != nil {
		t.Fatal(err)
	}
	patched := daemonSetWith(t, "whatif")
	got := patched.Spec.Template.Spec.Containers[0]
	if addr := flagValue(got.Args, "--debug-addr"); addr != "$(POD_IP):9091" {
		t.Errorf("--debug-addr=%q, want $(POD_IP):9091", addr)
	}
	i := slices.IndexFunc(got.Env, func(e corev1.EnvVar) bool { return e.Name == "POD_IP" })
	if i < 0 || got.Env[i].ValueFrom == nil || got.Env[i].ValueFrom.FieldRef == nil ||
		got.Env[i].ValueFrom.FieldRef.FieldPath != "status.podIP" {
		t.Fatalf("env %+v, want POD_IP from status.podIP", got.Env)
	}
	// Undo the two changes: what is left must be deploy/'s DaemonSet as it is.
	got.Env = slices.Delete(got.Env, i, i+1)
	for j, a := range got.Args {
		if strings.HasPrefix(a, "--debug-addr=") {
			got.Args[j] = "--debug-addr=" + flagValue(plain.Spec.Template.Spec.Containers[0].Args, "--debug-addr")
		}
	}
	patched.Spec.Template.Spec.Containers[0] = got
	if !equality.Semantic.DeepEqual(patched, &plain) {
		a, _ := yaml.Marshal(patched)
		b, _ := yaml.Marshal(&plain)
		t.Errorf("the component changes more than --debug-addr and POD_IP (or deploy/ changed a flag it repeats):\npatched, both changes undone:\n%s\ndeploy/:\n%s", a, b)
	}
}

// flagValue is the value of the first --name=value argument of args ("" when none).
func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}
