package policy

import (
	"errors"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pt "github.com/podwall/podwall/policy/policytest"
)

// One bad policy never freezes enforcement: it is enforced fail-closed for what it selects,
// in the directions it names, and everything else applies.

// badCIDR is what the API server accepts unless StrictIPCIDRValidation is on, and podwall
// refuses (Validate): an ambiguous leading zero.
const badCIDR = "010.0.0.0/8"

// invalidWorld: prod/web, prod/db, prod/api and other/x; prod/bad (invalid) selects db for
// ingress; prod/allow-web allows everything into web; other/deny isolates x both ways.
func invalidWorld(t *testing.T, extra ...*networkingv1.NetworkPolicy) *world {
	return compileWorld(t, State{
		Namespaces: []Namespace{ns("prod", nil), ns("other", nil)},
		Pods: []Pod{
			pod("prod", "web", pt.Labels("app", "web"), "10.244.1.1"),
			pod("prod", "db", pt.Labels("app", "db"), "10.244.1.2"),
			pod("prod", "api", pt.Labels("app", "api"), "10.244.1.3"),
			pod("other", "x", nil, "10.244.2.1"),
		},
		Policies: append([]*networkingv1.NetworkPolicy{
			pt.NetworkPolicy("prod", "bad", pt.Selector("app", "db"),
				pt.Ingress(pt.From(pt.CIDR(badCIDR), pt.Pods(pt.Selector())))),
			pt.NetworkPolicy("prod", "allow-web", pt.Selector("app", "web"), pt.Ingress(pt.From())),
			pt.NetworkPolicy("other", "deny", pt.Selector(), pt.Types(typeIngress, typeEgress)),
		}, extra...),
	})
}

func TestInvalidPolicyFailsClosedAlone(t *testing.T) {
	w := invalidWorld(t)
	w.check(t, []flowCase{
		// prod/bad isolates db for ingress (its effective policyTypes) and allows nothing,
		// not even what its rules meant to allow (every pod of prod).
		{"prod/api", "prod/db", "5432/TCP", Deny},
		{"prod/web", "prod/db", "ICMP", Deny},
		{"192.0.2.1", "prod/db", "5432/TCP", Deny},
		// It names no egress: db's egress is not isolated.
		{"prod/db", "prod/api", "80/TCP", Allow},
		// Pods it does not select are unaffected.
		{"prod/db", "prod/web", "80/TCP", Allow},
		{"prod/web", "prod/api", "80/TCP", Allow},
		// Other policies apply, in its namespace and elsewhere.
		{"prod/api", "other/x", "80/TCP", Deny},
		{"other/x", "prod/web", "80/TCP", Deny},
		// A pod may still talk to itself.
		{"prod/db", "prod/db", "5432/TCP", Allow},
	})

	// The reason names the invalid policy and the field, in Explain (explain, the stream).
	x := w.snap.Explain(w.flowOf("prod/api", "prod/db", "5432/TCP"))
	for _, want := range []string{
		"prod/db is isolated for ingress by bad",
		`policy prod/bad is invalid (spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "010.0.0.0/8"`,
		"): isolates, allows nothing",
	} {
		if !strings.Contains(x.Reason, want) {
			t.Errorf("reason %q does not contain %q", x.Reason, want)
		}
	}
	if len(x.Ingress.Isolating) != 1 || x.Ingress.Isolating[0] != (PolicyRef{Namespace: "prod", Name: "bad"}) {
		t.Errorf("isolating: %v, want prod/bad", x.Ingress.Isolating)
	}

	ps := w.snap.Problems()
	if len(ps) != 1 || ps[0].Object() != "NetworkPolicy prod/bad" || !strings.Contains(ps[0].Fields(), "spec.ingress[0].from[0].ipBlock.cidr") {
		t.Errorf("problems: %v, want prod/bad with its field", ps)
	}
}

// An invalid policy whose podSelector cannot be used isolates every pod of its namespace: in
// the directions its policyTypes name when they are readable, else in both.
func TestInvalidPolicyWithUnusableSelector(t *testing.T) {
	badSel := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Bogus"}}}
	for _, tc := range []struct {
		name                 string
		types                []networkingv1.PolicyType
		wantEgress, wantIngr Verdict
	}{
		{"policyTypes Egress", []networkingv1.PolicyType{typeEgress}, Deny, Allow},
		{"policyTypes unreadable", []networkingv1.PolicyType{"Sideways"}, Deny, Deny},
		{"policyTypes omitted", nil, Allow, Deny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			np := pt.NetworkPolicy("prod", "bad", badSel)
			np.Spec.PolicyTypes = tc.types
			w := invalidWorld(t, np)
			// prod/api is selected by no valid policy: the invalid one takes the namespace.
			d := w.decide("prod/api", "other/x", "80/TCP")
			if d.Egress.Verdict != tc.wantEgress {
				t.Errorf("egress of prod/api: %v, want %v (%s)", d.Egress.Verdict, tc.wantEgress, w.snap.Explain(w.flowOf("prod/api", "other/x", "80/TCP")).Reason)
			}
			d = w.decide("192.0.2.1", "prod/api", "80/TCP")
			if d.Ingress.Verdict != tc.wantIngr {
				t.Errorf("ingress of prod/api: %v, want %v", d.Ingress.Verdict, tc.wantIngr)
			}
			if got := w.decide("other/x", "other/x", "80/TCP").Verdict; got != Allow {
				t.Errorf("other namespace's pod to itself: %v", got)
			}
			if tc.wantIngr == Deny {
				r := w.snap.Explain(w.flowOf("192.0.2.1", "prod/api", "80/TCP")).Reason
				if !strings.Contains(r, "policy prod/bad is invalid (spec.podSelector") || !strings.Contains(r, "isolates every pod of its namespace, allows nothing") {
					t.Errorf("reason %q does not name the selector and the namespace", r)
				}
			}
		})
	}
}

// Fixing an invalid policy applies it; breaking a valid one fail-closes it; both are
// reported by SetPolicy (naming the policy on each line) and Snapshot.Problems.
func TestInvalidPolicyLifecycle(t *testing.T) {
	w := invalidWorld(t)
	c := NewCompiler("")
	if err := c.Replace(w.State); err != nil {
		t.Fatal(err)
	}
	f := w.flowOf("prod/api", "prod/db", "5432/TCP")
	if c.Snapshot().Decide(f).Verdict != Deny {
		t.Fatal("invalid policy does not isolate")
	}
	fixed := pt.NetworkPolicy("prod", "bad", pt.Selector("app", "db"), pt.Ingress(pt.From(pt.CIDR("10.0.0.0/8"), pt.Pods(pt.Selector()))))
	if err := c.SetPolicy(fixed); err != nil {
		t.Fatal(err)
	}
	s := c.Snapshot()
	if s.Decide(f).Verdict != Allow || len(s.Problems()) != 0 {
		t.Errorf("fixed policy: %v, problems %v; want allow and none", s.Explain(f).Reason, s.Problems())
	}
	broken := fixed.DeepCopy()
	broken.Spec.Ingress[0].From = append(broken.Spec.Ingress[0].From, networkingv1.NetworkPolicyPeer{})
	broken.Spec.Ingress[0].Ports = []networkingv1.NetworkPolicyPort{{Port: nil, EndPort: new(int32(9))}}
	err := c.SetPolicy(broken)
	if err == nil {
		t.Fatal("SetPolicy of an invalid policy: no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 {
		t.Errorf("want one line per problem, got %q", err)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "NetworkPolicy prod/bad: spec.ingress[0].") {
			t.Errorf("line %q does not name the policy and field", l)
		}
	}
	s = c.Snapshot()
	if s.Decide(f).Verdict != Deny || len(s.Problems()) != 1 {
		t.Errorf("broken policy: %v, problems %v; want deny and one", s.Explain(f).Reason, s.Problems())
	}
	// The same invalid object again changes nothing and is not validated anew.
	if err := c.SetPolicy(broken.DeepCopy()); err == nil || c.Snapshot() != s {
		t.Errorf("the same invalid policy again: err %v, new snapshot %v", err, c.Snapshot() != s)
	}
	c.DeletePolicy("prod", "bad")
	if s := c.Snapshot(); s.Decide(f).Verdict != Allow || len(s.Problems()) != 0 {
		t.Errorf("deleted: %v, problems %v", s.Decide(f).Verdict, s.Problems())
	}
}

// A policy its source reports a problem with (a manifest's unknown field) is enforced
// fail-closed though Validate passes it; when the problem goes, the same object applies.
func TestSourceReportedPolicyProblem(t *testing.T) {
	w := invalidWorld(t)
	st := w.State
	st.Policies = st.Policies[1:] // without prod/bad
	allowDB := pt.NetworkPolicy("prod", "db", pt.Selector("app", "db"), pt.Ingress(pt.From()))
	st.Policies = append(st.Policies, allowDB)
	st.Problems = []Problem{{Kind: KindNetworkPolicy, Namespace: "prod", Name: "db", Where: "db.yaml:1",
		Err: errors.New(`unknown field "spec.ingress[0].fromm"`)}}
	c := NewCompiler("")
	if err := c.Replace(st); err != nil {
		t.Fatal(err)
	}
	f := w.flowOf("prod/api", "prod/db", "5432/TCP")
	s := c.Snapshot()
	if s.Decide(f).Verdict != Deny {
		t.Errorf("reported policy: %v, want deny", s.Explain(f).Reason)
	}
	if r := s.Explain(f).Reason; !strings.Contains(r, `policy prod/db is invalid (unknown field "spec.ingress[0].fromm")`) {
		t.Errorf("reason %q does not name the source's problem", r)
	}
	if ps := s.Problems(); len(ps) != 1 || ps[0].Where != "db.yaml:1" {
		t.Errorf("problems %v: want the source's one, once", ps)
	}
	st.Problems = nil
	if err := c.Replace(st); err != nil {
		t.Fatal(err)
	}
	if s := c.Snapshot(); s.Decide(f).Verdict != Allow || len(s.Problems()) != 0 {
		t.Errorf("problem gone: %v, problems %v; want allow, none", s.Explain(f).Reason, s.Problems())
	}
}

// A namespace its source rejected has labels podwall cannot trust: its pods match no
// namespaceSelector, even one (NotIn) that an unlabelled namespace would match.
func TestRejectedNamespaceMatchesNoNamespaceSelector(t *testing.T) {
	st := State{
		Namespaces: []Namespace{ns("prod", pt.Labels("env", "prod"))},
		Pods: []Pod{
			pod("prod", "db", pt.Labels("app", "db"), "10.244.1.2"),
			pod("sandbox", "x", nil, "10.244.2.1"),
		},
		Policies: []*networkingv1.NetworkPolicy{
			pt.NetworkPolicy("prod", "db", pt.Selector("app", "db"),
				pt.Ingress(pt.From(pt.Namespaces(pt.Exprs(pt.NotIn("env", "quarantine")))))),
		},
	}
	w := compileWorld(t, st)
	w.check(t, []flowCase{{"sandbox/x", "prod/db", "5432/TCP", Allow}})
	st.Problems = []Problem{{Kind: KindNamespace, Name: "sandbox", Err: errors.New("metadata.labels: Invalid value")}}
	w = compileWorld(t, st)
	w.check(t, []flowCase{
		{"sandbox/x", "prod/db", "5432/TCP", Deny},
		{"prod/db", "prod/db", "5432/TCP", Allow},
	})
}
