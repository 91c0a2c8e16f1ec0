package kube

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/podwall/podwall/e2e/cluster"
)

// `podwall explain --kubeconfig` answers exactly as `--manifests` does for the same objects:
// the seeds' 3-tier example created through the API (pod addresses through the status
// subresource) in an API server of its own, so that nothing else is in it.
func TestExplainKubeconfigMatchesManifests(t *testing.T) {
	cluster.Shared(t) // builds the servers when missing, and skips with -short
	ctx := context.Background()
	c, err := cluster.Start(ctx, cluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()

	example := filepath.Join(repo, "deploy", "examples", "3tier")
	files, err := filepath.Glob(filepath.Join(example, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no example: %v", err)
	}
	for _, f := range files {
		createWithStatus(t, c, f)
	}

	pods := []string{"prod/web", "prod/api", "prod/db"}
	var queries strings.Builder
	for _, from := range pods {
		for _, to := range pods {
			for _, port := range []string{"80", "3306", "5000"} {
				json.NewEncoder(&queries).Encode(map[string]string{"from": from, "to": to, "port": port, "protocol": "TCP"})
			}
		}
	}
	for _, args := range [][]string{
		{"--from", "prod/web", "--to", "prod/db", "--port", "3306"},
		{"--from", "prod/api", "--to", "prod/db", "--port", "3306", "-o", "json"},
		{"--from", "fd00:10:244:1::11", "--to", "fd00:10:244:1::12", "--port", "3306"},
		{"--matrix", "--ports", "80/TCP,3306/TCP,5000/TCP,53/UDP"},
		{"--batch", "-o", "json"},
	} {
		stdin := ""
		if args[0] == "--batch" {
			stdin = queries.String()
		}
		want := podwall(t, stdin, append([]string{"explain", "--manifests", example}, args...)...)
		got := podwall(t, stdin, append([]string{"explain", "--kubeconfig", c.Kubeconfig}, args...)...)
		if got != want {
			t.Errorf("explain %s:\n--kubeconfig:\n%s\n--manifests:\n%s", strings.Join(args, " "), got, want)
		}
		if args[0] == "--matrix" {
			t.Logf("explain --kubeconfig %s:\n%s", strings.Join(args, " "), got)
		}
	}
}

// createWithStatus creates the objects of a manifest file as the admin, then writes each
// one's status through the status subresource, as a kubelet would for a pod.
func createWithStatus(t *testing.T, c *cluster.Cluster, path string) {
	t.Helper()
	ctx := context.Background()
	dyn := dynamic.NewForConfigOrDie(c.Admin)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cluster.Client(t, c.Admin).Discovery()))
	for _, u := range decodeObjects(t, path) {
		gvk := u.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatal(err)
		}
		var r dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == "namespace" {
			r = dyn.Resource(m.Resource).Namespace(u.GetNamespace())
		}
		created, err := r.Create(ctx, u, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("%s: create %s %s: %v", path, gvk.Kind, u.GetName(), err)
		}
		if status, ok := u.Object["status"]; ok && gvk.Kind != "Namespace" {
			created.Object["status"] = status
			if _, err := r.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
				t.Fatalf("%s: status of %s %s: %v", path, gvk.Kind, u.GetName(), err)
			}
		}
	}
}
