package manifests

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	"sigs.k8s.io/yaml"
)

// Write writes objects — *corev1.Namespace, *corev1.Pod, *corev1.Node,
// *networkingv1.NetworkPolicy and *cnpv1alpha2.ClusterNetworkPolicy — to path as one YAML document each, atomically (a temporary
// file beside path renamed over it) so that a watching agent never reads half a file. An
// object without apiVersion and kind gets those of its type; the objects are not changed.
// `podwall demo`, the e2e tests and the bench harness write what the agent reads with it.
func Write(path string, objs ...any) error {
	var out bytes.Buffer
	for _, o := range objs {
		b, err := marshal(o)
		if err != nil {
			return err
		}
		out.WriteString("---\n")
		out.Write(b)
	}
	return writeFile(path, out.Bytes())
}

// WriteList writes objects (as Write) to path as one v1 List, atomically. A large cluster
// loads faster this way than as one document per object.
func WriteList(path string, objs ...any) error {
	b, err := list(objs)
	if err != nil {
		return err
	}
	return writeFile(path, b)
}

// list marshals objects as one v1 List.
func list(objs []any) ([]byte, error) {
	items := make([]any, len(objs))
	for i, o := range objs {
		var err error
		if items[i], err = typed(o); err != nil {
			return nil, err
		}
	}
	b, err := yaml.Marshal(struct {
		metav1.TypeMeta `json:",inline"`
		Items           []any `json:"items"`
	}{metav1.TypeMeta{APIVersion: "v1", Kind: "List"}, items})
	if err != nil {
		return nil, err
	}
	return dropNullCreationTimestamps(b), nil
}

func marshal(o any) ([]byte, error) {
	t, err := typed(o)
	if err != nil {
		return nil, err
	}
	b, err := yaml.Marshal(t)
	if err != nil {
		return nil, err
	}
	return dropNullCreationTimestamps(b), nil
}

// typed returns a copy of o with the apiVersion and kind of its type, unless it has them.
func typed(o any) (any, error) {
	var obj any
	var tm *metav1.TypeMeta
	apiVersion, kind := "v1", ""
	switch o := o.(type) {
	case *corev1.Namespace:
		c := *o
		obj, tm, kind = &c, &c.TypeMeta, "Namespace"
	case *corev1.Pod:
		c := *o
		obj, tm, kind = &c, &c.TypeMeta, "Pod"
	case *corev1.Node:
		c := *o
		obj, tm, kind = &c, &c.TypeMeta, "Node"
	case *networkingv1.NetworkPolicy:
		c := *o
		obj, tm, apiVersion, kind = &c, &c.TypeMeta, "networking.k8s.io/v1", "NetworkPolicy"
	case *cnpv1alpha2.ClusterNetworkPolicy:
		c := *o
		obj, tm, apiVersion, kind = &c, &c.TypeMeta, cnpv1alpha2.GroupVersion.String(), "ClusterNetworkPolicy"
	default:
		return nil, fmt.Errorf("manifests: cannot write %T: want a *Namespace, *Pod or *Node of core/v1, a *NetworkPolicy of networking/v1 or a *ClusterNetworkPolicy of policy.networking.k8s.io/v1alpha2", o)
	}
	if tm.APIVersion == "" && tm.Kind == "" {
		*tm = metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
	}
	return obj, nil
}

// dropNullCreationTimestamps removes the "creationTimestamp: null" lines that marshalling
// a zero ObjectMeta writes; they are noise in generated manifests.
func dropNullCreationTimestamps(b []byte) []byte {
	var out []byte
	for line := range strings.Lines(string(b)) {
		if strings.TrimSpace(line) == "creationTimestamp: null" {
			continue
		}
		out = append(out, line...)
	}
	return out
}

// writeFile writes data to path through a temporary file beside it, renamed over path.
func writeFile(path string, data []byte) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
