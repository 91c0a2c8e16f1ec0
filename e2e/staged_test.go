package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/decisions"
	"github.com/podwall/podwall/policy/flows"
	"github.com/podwall/podwall/policy/policytest"
)

// denyAllProd is a deny-all for namespace prod, staged when staged is set.
func denyAllProd(staged bool) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "deny-all"},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}},
	}
	if staged {
		np.Annotations = map[string]string{policy.StagedAnnotation: "true"}
	}
	return np
}

// TestStaged (SPEC §2c) on the seeds' 3-tier lab: a staged deny-all for prod leaves the
// traffic flowing; every probe's decision in the stream carries the staged verdict deny
// naming it (the pods it alone isolates are queued for that), `podwall tail --staged-diff`
// shows exactly the flows it would deny, podwall_policy_staged_verdicts_total agrees, and
// the flow history (/debug/flows) carries the staged deny on every probe's flow.
// Removing the annotation enforces it: the same probes are denied.
func TestStaged(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "prod/web", "prod/api", "prod/db")
	e.AddExternal("user", 0, "node-1")
	objs := []any{
		policytest.Namespace("prod", nil),
		e.podObject("prod/web", map[string]string{"role": "web"}),
		e.podObject("prod/api", map[string]string{"role": "api", "name": "api-pod"}),
		e.podObject("prod/db", map[string]string{"role": "db"}),
		lab.DBPolicy("prod"),
	}
	e.write(append(slices.Clone(objs), denyAllProd(true))...)
	e.Serve(80, 5000, 3306)
	e.start()

	all := e.stream("node-1", "")
	tp := e.tail("node-1", "--staged-diff") // stdout is a pipe: JSON
	e.waitFor(func() bool { return e.metric("node-1", "podwall_decisions_subscribers") == 2 },
		func() string { return "tail never subscribed: " + tp.stderr.String() })
	allowBefore, denyBefore := e.verdicts("node-1")
	queuedBefore := e.metric("node-1", "podwall_datapath_queue_queued_total")

	e.check(threeTierProbes...) // enforced as without the staged policy

	allow, deny := e.verdicts("node-1")
	allow, deny = allow-allowBefore, deny-denyBefore
	e.waitFor(func() bool {
		evs, _, _ := all.snapshot()
		return count(evs, "allow") >= int(allow) && count(evs, "deny") >= int(deny) &&
			strings.Count(tp.out.String(), "\n") >= int(allow)
	}, func() string {
		evs, dropped, err := all.snapshot()
		return fmt.Sprintf("stream has %d allow and %d deny decisions (%d dropped, err %v), metrics %v and %v; tail %d lines",
			count(evs, "allow"), count(evs, "deny"), dropped, err, allow, deny, strings.Count(tp.out.String(), "\n"))
	})
	evs, dropped, err := all.snapshot()
	if err != nil || dropped != 0 {
		t.Fatalf("stream: err %v, dropped %d", err, dropped)
	}
	// Every probe now reaches userspace (the staged policy isolates every prod pod), each
	// with the staged verdict deny naming prod/deny-all.
	want := map[queuedFlow]probe{}
	for _, fam := range []string{"IPv4", "IPv6"} {
		for _, pr := range threeTierProbes {
			want[e.flowOf(fam, pr)] = pr
		}
	}
	seen := map[queuedFlow]bool{}
	for i := range evs {
		ev := &evs[i]
		f := flowOfEvent(ev)
		pr, ok := want[f]
		if !ok {
			t.Errorf("decision on a flow no probe made: %+v", ev)
			continue
		}
		seen[f] = true
		verdict := map[bool]string{true: "allow", false: "deny"}[pr.allow]
		if ev.Verdict != verdict || ev.Staged == nil || ev.Staged.Verdict != "deny" ||
			!slices.Contains(ev.Staged.Policies, "prod/deny-all") || !strings.Contains(ev.Staged.Reason, "deny-all") {
			t.Errorf("%s %s -> %s %s/%d: verdict %s, staged %+v; want %s, staged deny by prod/deny-all",
				f.fam, pr.from, pr.to, proto(pr), pr.port, ev.Verdict, ev.Staged, verdict)
		}
	}
	for f, pr := range want {
		if !seen[f] {
			t.Errorf("%s %s -> %s %s/%d: no decision in the stream", f.fam, pr.from, pr.to, proto(pr), pr.port)
		}
	}
	// The flow history carries the same staged verdict on every probe's flow.
	var hist map[queuedFlow]flows.Line
	e.waitFor(func() bool {
		_, body, err := e.Agents["node-1"].Get(context.Background(), "/debug/flows")
		if err != nil {
			e.T.Fatal(err)
		}
		hist = flowLines(e.T, body)
		for f := range want {
			if _, ok := hist[f]; !ok {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("/debug/flows lacks probes: %v", hist) })
	for f, pr := range want {
		l := hist[f]
		verdict := map[bool]string{true: "allow", false: "deny"}[pr.allow]
		if l.Verdict != verdict || l.Staged == nil || l.Staged.Verdict != "deny" ||
			!slices.Contains(l.Staged.Policies, "prod/deny-all") || !strings.Contains(l.Staged.Reason, "deny-all") {
			t.Errorf("/debug/flows %s %s -> %s %s/%d: verdict %s, staged %+v; want %s, staged deny by prod/deny-all",
				f.fam, pr.from, pr.to, proto(pr), pr.port, l.Verdict, l.Staged, verdict)
		}
	}
	// The cost: every new connection of a pod only the staged policy isolates is queued (one
	// packet when allowed), where without it only those to db were (TestStream).
	t.Logf("queued packets for the %d probes: %v (%d allowed, %d denied decisions)", 2*len(threeTierProbes),
		e.metric("node-1", "podwall_datapath_queue_queued_total")-queuedBefore, count(evs, "allow"), count(evs, "deny"))
	if got := e.metric("node-1", "podwall_policy_staged_verdicts_total", "policy", "prod/deny-all", "verdict", "deny"); int(got) != len(evs) {
		t.Errorf("podwall_policy_staged_verdicts_total{prod/deny-all,deny} = %v, want %d (one per decision)", got, len(evs))
	}
	// tail --staged-diff: exactly the allowed decisions (the staged policy would deny them).
	if err := tp.interrupt(); err != nil {
		t.Errorf("tail after Ctrl-C: %v\n%s", err, tp.stderr.String())
	}
	var tailed int
	for _, l := range strings.Split(strings.TrimSpace(tp.out.String()), "\n") {
		var ev decisions.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("tail line %q: %v", l, err)
		}
		if ev.Verdict != "allow" || ev.Staged == nil || ev.Staged.Verdict != "deny" {
			t.Errorf("tail --staged-diff shows a flow whose verdict would not change: %s", l)
		}
		tailed++
	}
	if tailed != count(evs, "allow") {
		t.Errorf("tail --staged-diff showed %d decisions, want the %d allowed ones", tailed, count(evs, "allow"))
	}

	// Promote: the same probes are denied, and the decisions carry no staged verdict.
	e.rewrite(append(slices.Clone(objs), denyAllProd(false))...)
	var denied []probe
	for _, pr := range threeTierProbes {
		pr.allow = false
		denied = append(denied, pr)
	}
	n := len(evs)
	e.check(denied...)
	evs, _, _ = all.snapshot()
	for _, ev := range evs[n:] {
		if ev.Staged != nil || ev.Verdict != "deny" || !slices.Contains(ev.Policies, "prod/deny-all") {
			t.Errorf("after promoting: %s -> %s verdict %s policies %v staged %+v", ev.Src, ev.Dst, ev.Verdict, ev.Policies, ev.Staged)
		}
	}
	if len(evs) == n {
		t.Error("no decision after promoting")
	}
}
