package policy

import (
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// One bad object never freezes enforcement: the compiler takes every state, and an object it
// cannot use is rejected alone (Problem). An invalid NetworkPolicy — one that fails Validate,
// or that its source reported (a manifest with an unknown field, say) — is compiled
// fail-closed: it isolates the pods it selects in the directions it names and allows
// nothing, so no pod it was meant to protect is exposed while the rest of the cluster's
// policy applies. The parts read are the ones that decide isolation:
//   - podSelector, when it is a valid selector; otherwise every pod of the namespace;
//   - policyTypes (effective: omitted means Ingress, plus Egress with an egress section),
//     when every entry is Ingress or Egress and there are at most two; otherwise both.

// compileInvalid compiles a policy that is invalid for the reason err: isolation only.
func (c *Compiler) compileInvalid(np *networkingv1.NetworkPolicy, err error) *compiledPolicy {
	c.nextSerial++
	cp := &compiledPolicy{
		ref:     PolicyRef{Namespace: np.Namespace, Name: np.Name},
		serial:  c.nextSerial,
		podSel:  labels.Everything(),
		ingress: true,
		egress:  true,
		invalid: err,
	}
	sel := &np.Spec.PodSelector
	if len(metav1validation.ValidateLabelSelector(sel, metav1validation.LabelSelectorValidationOptions{}, field.NewPath("spec"))) == 0 {
		if s, err := metav1.LabelSelectorAsSelector(sel); err == nil {
			cp.podSel = s
		}
	}
	if typesReadable(np.Spec.PolicyTypes) {
		cp.ingress, cp.egress = policyTypes(&np.Spec)
	}
	return cp
}

// typesReadable reports whether policyTypes says exactly which directions it names.
func typesReadable(types []networkingv1.PolicyType) bool {
	return len(types) <= 2 && !slices.ContainsFunc(types, func(t networkingv1.PolicyType) bool {
		return t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress
	})
}

// policyProblem returns why np is invalid: the problem its source reported, else Validate's;
// nil when it is valid.
func (c *Compiler) policyProblem(np *networkingv1.NetworkPolicy) error {
	if err := c.sourcePolicies[np.Namespace+"/"+np.Name]; err != nil {
		return err
	}
	return Validate(np)
}

// setProblems records the problems of a state's source: its invalid policies and rejected
// namespaces (whose pods then match no namespaceSelector).
func (c *Compiler) setProblems(ps []Problem) {
	if slices.EqualFunc(ps, c.sourceProblems, sameProblem) {
		return
	}
	c.sourceProblems = slices.Clone(ps)
	c.problemsDirty = true
	clear(c.sourcePolicies)
	rejected := map[string]bool{}
	for _, p := range ps {
		switch p.Kind {
		case KindNetworkPolicy:
			c.sourcePolicies[p.Namespace+"/"+p.Name] = p.Err
		case KindNamespace:
			rejected[p.Name] = true
		}
	}
	old := c.rejectedNS
	c.rejectedNS = rejected
	for ns := range old {
		if !rejected[ns] {
			c.reselectNamespace(ns)
		}
	}
	for ns := range rejected {
		if !old[ns] {
			c.reselectNamespace(ns)
		}
	}
}

func sameProblem(a, b Problem) bool {
	return a.Kind == b.Kind && a.Namespace == b.Namespace && a.Name == b.Name && a.Where == b.Where &&
		(a.Err == nil) == (b.Err == nil) && (a.Err == nil || a.Err.Error() == b.Err.Error())
}

// problems returns the source's problems and the invalid policies (NetworkPolicies and
// ClusterNetworkPolicies) the source did not report, sorted.
func (c *Compiler) problems() []Problem {
	out := slices.Clone(c.sourceProblems)
	for _, ps := range c.policies {
		if cp := ps.cp; cp.invalid != nil && c.sourcePolicies[cp.ref.String()] == nil {
			out = append(out, Problem{Kind: KindNetworkPolicy, Namespace: cp.ref.Namespace, Name: cp.ref.Name, Err: cp.invalid})
		}
	}
	for name, cs := range c.cnps.byName { // invalid ClusterNetworkPolicies from the API
		if err := cs.cp.cluster.invalid; err != nil && !slices.ContainsFunc(c.sourceProblems, func(p Problem) bool {
			return p.Kind == KindClusterNetworkPolicy && p.Name == name
		}) {
			out = append(out, Problem{Kind: KindClusterNetworkPolicy, Name: name, Err: err})
		}
	}
	slices.SortFunc(out, compareProblems)
	return out
}

// Problems returns the objects rejected alone in this snapshot (see Problem), sorted by
// kind, namespace and name. Shared: do not modify.
func (s *Snapshot) Problems() []Problem { return s.problems }

// invalidNote says which of the policies isolating a pod are invalid, for a reason: "; policy
// ns/name is invalid (field: problem): isolates, allows nothing" for each; "" when none is.
func invalidNote(pols []*compiledPolicy) string {
	var b strings.Builder
	for _, cp := range pols {
		if cp.invalid == nil {
			continue
		}
		b.WriteString("; policy " + cp.ref.String() + " is invalid (" + strings.ReplaceAll(cp.invalid.Error(), "\n", "; ") + "): isolates")
		if cp.podSel.Empty() {
			b.WriteString(" every pod of its namespace")
		}
		b.WriteString(", allows nothing")
	}
	return b.String()
}
