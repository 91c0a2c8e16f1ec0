package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/decisions"
	"github.com/podwall/podwall/policy/explain"
	pt "github.com/podwall/podwall/policy/policytest"
)

// stagedDenyAll is a staged deny-all for namespace prod.
func stagedDenyAll() *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "deny-all", Annotations: map[string]string{policy.StagedAnnotation: "true"}},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}},
	}
}

// A staged deny-all in prod is not enforced: web still reaches api and api db. Each
// decision of the stream carries the staged verdict, deny naming prod/deny-all, the metric
// counts it once per packet, and promoting the policy (removing the annotation) enforces it
// and ends the staged verdicts.
func TestStagedDenyAll(t *testing.T) {
	a, s := testAgent(t)
	s.Policies = append(slices.Clone(s.Policies), stagedDenyAll())
	a.setState(t, s)
	sub, err := a.stream.Subscribe(decisions.Filter{}, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	for _, r := range []*datapath.Record[policy.Decision]{
		a.verdict(webIP, apiIP, 5000, false),
		a.verdict(apiIP, dbIP, 3306, false),
		a.verdict(webIP, dbIP, 3306, false), // denied by the enforced db-policy either way
	} {
		a.observe(r)
	}
	var got []string
	for range 3 {
		r := <-sub.C()
		e := r.Event()
		line := fmt.Sprintf("%s>%s %s", e.SrcPod, e.DstPod, e.Verdict)
		if e.Staged != nil {
			line += fmt.Sprintf(" staged %s %v", e.Staged.Verdict, e.Staged.Policies)
			if !strings.Contains(e.Staged.Reason, "deny-all") {
				t.Errorf("%s: staged reason %q does not name deny-all", line, e.Staged.Reason)
			}
		}
		got = append(got, line)
	}
	want := []string{
		"prod/web>prod/api allow staged deny [prod/deny-all]",
		"prod/api>prod/db allow staged deny [prod/deny-all]",
		"prod/web>prod/db deny staged deny [prod/deny-all prod/db-policy]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stream:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if v := a.metricValue(t, "podwall_policy_staged_verdicts_total", "policy=prod/deny-all,verdict=deny"); v != 3 {
		t.Errorf("staged deny count = %v, want 3 (one per packet)", v)
	}
	if v := a.metricValue(t, "podwall_policy_policies", ""); v != 1 {
		t.Errorf("podwall_policy_policies = %v, want 1: the staged policy is not in force", v)
	}

	// Promote: the same flows are now denied, and no staged verdict is left.
	promoted := stagedDenyAll()
	promoted.Annotations = nil
	s.Policies[len(s.Policies)-1] = promoted
	a.setState(t, s)
	r := a.verdict(webIP, apiIP, 5000, false)
	if r.Allow {
		t.Error("web -> api allowed after promoting the deny-all")
	}
	a.observe(r)
	rec := <-sub.C()
	if e := rec.Event(); e.Staged != nil || e.Verdict != "deny" {
		t.Errorf("after promoting: verdict %s, staged %+v", e.Verdict, e.Staged)
	}
	if v := a.metricValue(t, "podwall_policy_staged_verdicts_total", "policy=prod/deny-all,verdict=deny"); v != -1 {
		t.Errorf("staged series of a promoted policy still there: %v", v)
	}
}

// A flow the staged policies leave as it is, and in which none took part, has no staged
// verdict in the stream.
func TestStagedUnchangedFlowQuiet(t *testing.T) {
	a, s := testAgent(t)
	other := stagedDenyAll()
	other.Namespace = "dev"
	s.Policies = append(slices.Clone(s.Policies), other)
	a.setState(t, s)
	sub, _ := a.stream.Subscribe(decisions.Filter{}, 4)
	defer sub.Close()
	a.observe(a.verdict(webIP, apiIP, 5000, false))
	rec := <-sub.C()
	if e := rec.Event(); e.Staged != nil {
		t.Errorf("staged %+v on a flow no staged policy touches", e.Staged)
	}
}

// The pods only staged policies isolate are queued (so that staged evaluation sees them);
// without staged policies, only those the enforced ones isolate.
func TestStagedQueued(t *testing.T) {
	a, s := testAgent(t)
	in, eg := a.staged.queued(a.inForce.Load())
	if !slices.Contains(in, dbIP) || slices.Contains(in, webIP) || len(eg) != 0 {
		t.Fatalf("queued without staged policies: ingress %v egress %v", in, eg)
	}
	s.Policies = append(slices.Clone(s.Policies), stagedDenyAll())
	a.setState(t, s)
	in, eg = a.staged.queued(a.inForce.Load())
	if !slices.Contains(in, webIP) || !slices.Contains(in, apiIP) || !slices.Contains(in, dbIP) || !slices.Contains(eg, webIP) {
		t.Errorf("queued with a staged deny-all: ingress %v egress %v", in, eg)
	}
	// The enforced verdict on a pod only the staged policy isolates stays allow.
	if r := a.verdict(webIP, apiIP, 5000, false); !r.Allow {
		t.Error("web -> api denied by a staged policy")
	}
}

// Deciding the staged verdict allocates nothing, with or without a subscriber.
func TestStagedObserveAllocatesNothing(t *testing.T) {
	a, s := testAgent(t)
	s.Policies = append(slices.Clone(s.Policies), stagedDenyAll())
	a.setState(t, s)
	r := a.verdict(webIP, dbIP, 3306, false)
	if n := testing.AllocsPerRun(1000, func() { a.observe(r) }); n != 0 {
		t.Errorf("no subscriber: %v allocs per verdict", n)
	}
	sub, _ := a.stream.Subscribe(decisions.Filter{}, 4)
	defer sub.Close()
	if n := testing.AllocsPerRun(5000, func() { a.observe(r) }); n != 0 {
		t.Errorf("one subscriber: %v allocs per verdict", n)
	}
}

// stage marks np staged.
func stage(np *networkingv1.NetworkPolicy) *networkingv1.NetworkPolicy {
	np.Annotations = map[string]string{policy.StagedAnnotation: "true"}
	return np
}

// The staged verdict of a flow the proposal leaves alone is the verdict that was given,
// without a staged Decide (proposal.same): for every flow between the 3-tier pods and an
// outside address, in both families, on each port a policy names, observe's staged verdict
// is the proposal's own, and where it was not decided again no staged policy would have
// taken part (nothing to count). Each staged state leaves some flows alone, touches others.
func TestStagedSameAsDeciding(t *testing.T) {
	cnp := func(name string) *cnpv1alpha2.ClusterNetworkPolicy {
		var c cnpv1alpha2.ClusterNetworkPolicy
		if err := yaml.Unmarshal([]byte(`
metadata: {name: `+name+`, annotations: {podwall.io/staged: "true"}}
spec:
  tier: Admin
  priority: 1
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: db}}}}
  ingress:
  - {action: Deny, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: web}}}}]}
`), &c); err != nil {
			t.Fatal(err)
		}
		return &c
	}
	for _, c := range []struct {
		name    string
		staged  []*networkingv1.NetworkPolicy
		cnp     bool
		skipped bool // some flows of local pods are not decided again
	}{
		{"db ingress locked down", []*networkingv1.NetworkPolicy{stage(pt.NetworkPolicy("prod", "db-lockdown", pt.Selector("role", "db")))}, false, true},
		{"db-policy replaced by one admitting web", []*networkingv1.NetworkPolicy{stage(pt.NetworkPolicy("prod", "db-policy", pt.Selector("role", "db"),
			pt.Ingress(pt.From(pt.Pods(pt.Selector("role", "web"))))))}, false, true},
		{"db-policy replaced by one selecting api", []*networkingv1.NetworkPolicy{stage(pt.NetworkPolicy("prod", "db-policy", pt.Selector("role", "api"),
			pt.Ingress(pt.From(pt.Pods(pt.Selector("role", "web"))))))}, false, true},
		{"web egress to db only", []*networkingv1.NetworkPolicy{stage(pt.NetworkPolicy("prod", "web-out", pt.Selector("role", "web"),
			pt.Egress(pt.To(pt.Pods(pt.Selector("role", "db"))))))}, false, true},
		{"a policy selecting no pod", []*networkingv1.NetworkPolicy{stage(pt.NetworkPolicy("prod", "batch", pt.Selector("role", "batch"), pt.Egress()))}, false, true},
		{"deny-all", []*networkingv1.NetworkPolicy{stagedDenyAll()}, false, false},
		{"a ClusterNetworkPolicy", nil, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, s := testAgent(t)
			for _, np := range c.staged {
				s.Policies = append(slices.Clone(s.Policies), np)
			}
			if c.cnp {
				s.ClusterPolicies = append(slices.Clone(s.ClusterPolicies), cnp("no-web-to-db"))
			}
			a.setState(t, s)
			p := a.staged.cur.Load()
			skipped := 0
			outside := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}
			for _, family := range [][]netip.Addr{
				{webIP, apiIP, dbIP, outside[0]},
				{netip.MustParseAddr("fd00:10:244:1::10"), netip.MustParseAddr("fd00:10:244:1::11"), netip.MustParseAddr("fd00:10:244:1::12"), outside[1]},
			} {
				for _, src := range family {
					for _, dst := range family {
						for _, port := range []uint16{80, 3306, 5000, 8080} {
							r := a.verdict(src, dst, port, false)
							d := p.Snap.Decide(r.Flow)
							if p.same(r) {
								if r.Decision.Egress.Local || r.Decision.Ingress.Local {
									skipped++
								}
								for dir, js := range [2][2]*policy.Judgement{policy.Egress: {&r.Decision.Egress, &d.Egress}, policy.Ingress: {&r.Decision.Ingress, &d.Ingress}} {
									if !js[0].Local {
										continue
									}
									if got, want := judgementText(js[1]), judgementText(js[0]); got != want {
										t.Errorf("%v %v: not decided again, but the proposal judges %s, the snapshot in force %s", r.Flow, policy.Direction(dir), got, want)
									}
									if iso := p.isolating[js[1].Pod]; iso != nil && len(iso[dir]) > 0 {
										t.Errorf("%v %v: not decided again, but staged policies isolate its pod", r.Flow, policy.Direction(dir))
									}
								}
							}
							id, allow := a.staged.observe(r, nil)
							if id != p.id || allow != (d.LocalVerdict() == policy.Allow) {
								t.Errorf("%v: staged verdict allow=%v (proposal %d), the proposal decides %v", r.Flow, allow, id, d.LocalVerdict())
							}
						}
					}
				}
			}
			if (skipped > 0) != c.skipped {
				t.Errorf("%d flows of local pods not decided again, want some: %v", skipped, c.skipped)
			}
		})
	}
}

// judgementText is what a judgement says, with names for pointers.
func judgementText(j *policy.Judgement) string {
	s := fmt.Sprintf("%v %v local=%v rule=%d", j.Verdict, j.Code, j.Local, j.Rule)
	if j.Pod != nil {
		s += " pod=" + j.Pod.Namespace + "/" + j.Pod.Name
	}
	if j.Policy != nil {
		s += " policy=" + j.Policy.String()
	}
	return s
}

// BenchmarkDecideStaged is what the datapath and observe decide per queued packet with
// staged policies present: the enforced Decide plus the staged one and its metrics, over
// the flows of BenchmarkDecide (compare with it: at most 2×).
func BenchmarkDecideStaged(b *testing.B) {
	a, s := testAgent(b)
	s.Policies = append(slices.Clone(s.Policies), stagedDenyAll())
	a.setState(b, s)
	rec := &datapath.Record[policy.Decision]{SrcPort: 40000, Queue: 100, Latency: time.Microsecond}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		a.decideInto(rec, benchFlows[i%len(benchFlows)])
		a.staged.observe(rec, nil)
	}
}

// BenchmarkDecideStagedElsewhere is BenchmarkDecideStaged with a staged policy selecting
// other pods than those of the flows: the staged verdict is the one given, not decided
// again (proposal.same).
func BenchmarkDecideStagedElsewhere(b *testing.B) {
	a, s := testAgent(b)
	s.Policies = append(slices.Clone(s.Policies), stage(pt.NetworkPolicy("prod", "batch", pt.Selector("role", "batch"), pt.Egress())))
	a.setState(b, s)
	rec := &datapath.Record[policy.Decision]{SrcPort: 40000, Queue: 100, Latency: time.Microsecond}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		a.decideInto(rec, benchFlows[i%len(benchFlows)])
		a.staged.observe(rec, nil)
	}
}

// BenchmarkStagedDecideOnly is the staged Decide alone (the proposal isolates more than the
// enforced snapshot: web's egress too), the rest of BenchmarkDecideStaged being metrics.
func BenchmarkStagedDecideOnly(b *testing.B) {
	a, s := testAgent(b)
	s.Policies = append(slices.Clone(s.Policies), stagedDenyAll())
	a.setState(b, s)
	p := a.staged.cur.Load()
	for i := 0; b.Loop(); i++ {
		p.Snap.Decide(benchFlows[i%len(benchFlows)])
	}
}

// /debug/explain answers with the staged verdict beside the enforced one, as `podwall
// explain -o json` does.
func TestStagedDebugExplain(t *testing.T) {
	a, s := testAgent(t)
	s.Policies = append(slices.Clone(s.Policies), stagedDenyAll())
	a.setState(t, s)
	srv := httptest.NewServer(a.DebugHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/debug/explain?from=prod/web&to=prod/api&port=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans explain.Answer
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
		t.Fatal(err)
	}
	if ans.Verdict != "allow" || ans.Staged == nil || ans.Staged.Verdict != "deny" || !slices.Contains(ans.Staged.Policies, "prod/deny-all") {
		t.Errorf("verdict %q, staged %+v", ans.Verdict, ans.Staged)
	}
}
