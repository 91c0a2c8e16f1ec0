package lab

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ThreeTier is the seeds' 3-tier example built in a lab: node-1 routing for the pods web, api
// and db of namespace prod, an outside user behind it, and the Kubernetes objects that
// describe them, db-policy included (only name=api-pod reaches role=db on TCP 3306).
type ThreeTier struct {
	Node *Node
	// Pods are web, api and db, and the external host user, by those names.
	Pods map[string]*Pod
	// Objects are the Namespace, the three Pods and db-policy, for manifests.Write.
	Objects []any
}

// AddThreeTier builds the 3-tier example in l.
func (l *Lab) AddThreeTier() (*ThreeTier, error) {
	plan := Plan(1)
	node, err := plan.AddNode(l, "node-1")
	if err != nil {
		return nil, err
	}
	t := &ThreeTier{Node: node, Pods: map[string]*Pod{}}
	for j, name := range []string{"web", "api", "db"} {
		v4, v6 := plan.Pod(j)
		if t.Pods[name], err = node.AddPod(name, v4, v6); err != nil {
			return nil, err
		}
	}
	uv4, uv6 := External(0)
	if t.Pods["user"], err = l.AddExternal("user", uv4, uv6, node); err != nil {
		return nil, err
	}
	t.Objects = []any{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod"}},
		t.Pods["web"].Object("prod", "web", "node-1", map[string]string{"role": "web"}),
		t.Pods["api"].Object("prod", "api", "node-1", map[string]string{"role": "api", "name": "api-pod"}),
		t.Pods["db"].Object("prod", "db", "node-1", map[string]string{"role": "db"}),
		DBPolicy("prod"),
	}
	return t, nil
}
