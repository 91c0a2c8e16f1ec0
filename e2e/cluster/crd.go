package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

// ClusterNetworkPolicyCRDName is the name of the ClusterNetworkPolicy CRD.
const ClusterNetworkPolicyCRDName = "clusternetworkpolicies.policy.networking.k8s.io"

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// ClusterNetworkPolicyCRD returns the path of the ClusterNetworkPolicy CRD (standard
// channel) that ships in the sigs.k8s.io/network-policy-api module go.mod requires, in the
// module cache (`go mod download` puts it there): the CRD of the types podwall compiles.
func ClusterNetworkPolicyCRD(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/network-policy-api").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("cluster: locating sigs.k8s.io/network-policy-api (go mod download?): %w", err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", errors.New("cluster: sigs.k8s.io/network-policy-api is not in the module cache: run go mod download")
	}
	return filepath.Join(dir, "config", "crd", "standard", "policy.networking.k8s.io_clusternetworkpolicies.yaml"), nil
}

// InstallCRD applies the CustomResourceDefinition in file (server-side, so again is a no-op)
// and waits until the API server serves its resources: the CRD is Established and discovery
// lists them.
func (c *Cluster) InstallCRD(ctx context.Context, file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	var crd unstructured.Unstructured
	if err := yaml.Unmarshal(b, &crd.Object); err != nil {
		return fmt.Errorf("cluster: %s: %w", file, err)
	}
	if crd.GetKind() != "CustomResourceDefinition" {
		return fmt.Errorf("cluster: %s holds a %s, not a CustomResourceDefinition", file, crd.GetKind())
	}
	data, err := json.Marshal(crd.Object)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(c.Admin)
	if err != nil {
		return err
	}
	force := true
	if _, err := dyn.Resource(crdResource).Patch(ctx, crd.GetName(), types.ApplyPatchType, data,
		metav1.PatchOptions{FieldManager: "podwall-tests", Force: &force}); err != nil {
		return fmt.Errorf("cluster: applying CRD %s: %w", crd.GetName(), err)
	}
	group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
	plural, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	disc, err := discovery.NewDiscoveryClientForConfig(c.Admin)
	if err != nil {
		return err
	}
	return waitFor(ctx, 30*time.Second, "CRD "+crd.GetName()+" served", func() (bool, error) {
		got, err := dyn.Resource(crdResource).Get(ctx, crd.GetName(), metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		if !slices.ContainsFunc(conds, func(c any) bool {
			m, _ := c.(map[string]any)
			return m["type"] == "Established" && m["status"] == "True"
		}) {
			return false, nil
		}
		for _, v := range versions {
			name, _ := v.(map[string]any)["name"].(string)
			l, err := disc.ServerResourcesForGroupVersion(group + "/" + name)
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			if !slices.ContainsFunc(l.APIResources, func(r metav1.APIResource) bool { return r.Name == plural }) {
				return false, nil
			}
		}
		return true, nil
	})
}

// RemoveCRD deletes the CustomResourceDefinition name, with every object of it, and waits
// until it is gone. A CRD that is not there is fine.
func (c *Cluster) RemoveCRD(ctx context.Context, name string) error {
	dyn, err := dynamic.NewForConfig(c.Admin)
	if err != nil {
		return err
	}
	err = dyn.Resource(crdResource).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("cluster: deleting CRD %s: %w", name, err)
	}
	// The API server's own finalizer deletes the objects, then the CRD.
	return waitFor(ctx, 60*time.Second, "CRD "+name+" deleted", func() (bool, error) {
		_, err := dyn.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}

// waitFor calls done every 50 ms until it reports true or an error, timeout passes or ctx
// ends.
func waitFor(ctx context.Context, timeout time.Duration, what string, done func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := done()
		if err != nil {
			return fmt.Errorf("cluster: waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: %s: not within %v", what, timeout)
		case <-tick.C:
		}
	}
}
