package policy

import (
	"cmp"
	"errors"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Problem is one object podwall rejected alone (fail one object, not the world): the rest
// of the state applies. What the rejection means depends on the kind:
//   - NetworkPolicy: enforced fail-closed (compileInvalid): it isolates the pods it selects
//     in the directions it names and allows nothing; with an unusable podSelector it
//     isolates its whole namespace (in both directions unless its policyTypes are readable);
//   - Pod: it holds no address (an address podwall cannot read may be any, and a pod missing
//     one of its addresses would escape its isolation at that one): it is never a peer and
//     is not judged by address;
//   - Namespace: its pods match no namespaceSelector (labels podwall cannot read could make
//     a NotIn or DoesNotExist selector match);
//   - Node: it keeps the addresses that parse (a node address only widens what a pod may do);
//   - ClusterNetworkPolicy (one that fails ValidateClusterPolicy, reported by a file source):
//     enforced fail-closed (compileInvalidCluster): it denies all of its subject's traffic in
//     the directions it has rules for.
//
// A Source puts the problems it found in State.Problems; Snapshot.Problems adds the
// policies the compiler found invalid itself.
type Problem struct {
	Kind, Namespace, Name string
	// Where is the file and line the object was read from ("dir/db.yaml:12"); empty for
	// the API.
	Where string
	// Err names each field at fault, one per line (field.Error), without the object.
	Err error
}

// Kinds of objects with problems.
const (
	KindNetworkPolicy = "NetworkPolicy"
	KindPod           = "Pod"
	KindNamespace     = "Namespace"
	KindNode          = "Node"

	KindClusterNetworkPolicy = "ClusterNetworkPolicy"
)

// Object returns "Kind namespace/name", or "Kind name" for cluster-scoped objects.
func (p Problem) Object() string {
	if p.Namespace == "" {
		return p.Kind + " " + p.Name
	}
	return p.Kind + " " + p.Namespace + "/" + p.Name
}

// Fields returns the problems of Err on one line, "; " between them.
func (p Problem) Fields() string {
	if p.Err == nil {
		return ""
	}
	return strings.ReplaceAll(p.Err.Error(), "\n", "; ")
}

// Effect says what podwall does with the object instead, in a few words.
func (p Problem) Effect() string {
	switch p.Kind {
	case KindNetworkPolicy:
		return "enforced fail-closed: isolates what it selects, allows nothing"
	case KindPod:
		return "rejected: the pod holds no address"
	case KindNamespace:
		return "rejected: its pods match no namespaceSelector"
	case KindNode:
		return "only its valid addresses are used"
	case KindClusterNetworkPolicy:
		return "enforced fail-closed: denies all of its subject's traffic in the directions it has rules for"
	}
	return "rejected"
}

// String returns "[where: ]Kind ns/name: field: problem[; field: problem] (effect)".
func (p Problem) String() string {
	s := p.Object() + ": " + p.Fields() + " (" + p.Effect() + ")"
	if p.Where != "" {
		s = p.Where + ": " + s
	}
	return s
}

// compareProblems orders problems by kind, namespace, name and place.
func compareProblems(a, b Problem) int {
	return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace),
		cmp.Compare(a.Name, b.Name), cmp.Compare(a.Where, b.Where))
}

// PodOf converts a Kubernetes Pod with FromPod and rejects alone what FromPod refuses: a
// pod with an address problem holds no address; a named port that cannot be read is left
// out (a rule naming it then matches nothing). The Problem is nil when there is none.
func PodOf(p *corev1.Pod) (Pod, *Problem) {
	pod, err := FromPod(p)
	if err == nil {
		return pod, nil
	}
	if addressProblem(err) {
		pod.IPs = nil
	}
	return pod, &Problem{Kind: KindPod, Namespace: p.Namespace, Name: p.Name, Err: err}
}

// addressProblem reports whether one of the field errors err joins is about status (the
// pod's addresses).
func addressProblem(err error) bool {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	return slices.ContainsFunc(errs, func(e error) bool {
		var fe *field.Error
		return errors.As(e, &fe) && strings.HasPrefix(fe.Field, "status.")
	})
}
