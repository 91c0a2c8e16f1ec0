package policy

import (
	"net/netip"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/policy/flow"
	pt "github.com/podwall/podwall/policy/policytest"
)

// Duplicate addresses resolve restrictively: an address two live pods claim is judged with
// every claimant, deny unless all allow.

const shared = "10.244.1.5"

// claimWorld: prod/a-open (unselected, sorts first) and prod/b-locked (deny-all both ways)
// claim one address; prod/server allows TCP 80 from role=client and its "http" port; prod/
// client may only send to the "http" port of pods labelled app=server.
func claimWorld(t *testing.T, open, locked Pod) *world {
	return compileWorld(t, State{
		Pods: []Pod{
			open, locked,
			tweak(pod("prod", "server", pt.Labels("app", "server"), "10.244.1.10"), withPorts(namedPort("http", flow.TCP, 80))),
			pod("prod", "client", pt.Labels("role", "client"), "10.244.1.11"),
		},
		Policies: []*networkingv1.NetworkPolicy{
			pt.NetworkPolicy("prod", "lock", pt.Selector("lock", "yes"), pt.Types(typeIngress, typeEgress)),
			pt.NetworkPolicy("prod", "server", pt.Selector("app", "server"),
				pt.Ingress(pt.From(pt.Pods(pt.Selector("role", "client")), pt.Port("80/TCP")))),
			pt.NetworkPolicy("prod", "client", pt.Selector("role", "client"),
				pt.Egress(pt.To(pt.Pods(pt.Selector("app", "server")), pt.Port("http")))),
		},
	})
}

func TestDuplicateAddressResolvesRestrictively(t *testing.T) {
	open := pod("prod", "a-open", nil, shared)
	locked := pod("prod", "b-locked", pt.Labels("lock", "yes"), shared)
	w := claimWorld(t, open, locked)
	w.check(t, []flowCase{
		// Ingress to the address: b-locked's deny-all applies though a-open sorts first.
		{"10.244.1.99", shared, "80/TCP", Deny},
		// Egress from it: b-locked's egress isolation applies.
		{shared, "192.0.2.1", "443/TCP", Deny},
		{shared, "prod/server", "80/TCP", Deny},
		// The client may send to app=server pods only: neither claimant is one.
		{"prod/client", shared, "80/TCP", Deny},
		// The address to itself is a pod to itself.
		{shared, shared, "80/TCP", Allow},
	})
	if got := w.snap.Conflicts(); len(got) != 1 || got[0].Addr != netip.MustParseAddr(shared) ||
		strings.Join(got[0].Pods, ",") != "prod/a-open,prod/b-locked" {
		t.Errorf("conflicts: %v", got)
	}
	// The reasons name both pods.
	x := w.snap.Explain(w.flowOf("10.244.1.99", shared, "80/TCP"))
	for _, want := range []string{"prod/b-locked is isolated for ingress by lock",
		"address " + shared + " is claimed by prod/a-open, prod/b-locked: every claimant's ingress must allow"} {
		if !strings.Contains(x.Reason, want) {
			t.Errorf("reason %q does not contain %q", x.Reason, want)
		}
	}
	x = w.snap.Explain(w.flowOf("prod/client", shared, "80/TCP"))
	if want := "remote address " + shared + " is claimed by prod/a-open, prod/b-locked: it matches a pod peer only when every claimant does"; !strings.Contains(x.Reason, want) {
		t.Errorf("reason %q does not contain %q", x.Reason, want)
	}
}

// With no deny among the claimants, the address passes where every claimant would: peers
// every claimant belongs to match, named ports every claimant declares alike resolve.
func TestDuplicateAddressAllowsWhatAllAllow(t *testing.T) {
	a := tweak(pod("prod", "a", pt.Labels("app", "server"), shared), withPorts(namedPort("http", flow.TCP, 80)))
	b := tweak(pod("prod", "b", pt.Labels("app", "server"), shared), withPorts(namedPort("http", flow.TCP, 80)))
	w := claimWorld(t, a, b)
	w.check(t, []flowCase{
		{"prod/client", shared, "80/TCP", Allow}, // both are app=server with http=80
		{shared, "prod/server", "80/TCP", Deny},  // neither is role=client
	})
	// One of them declares http elsewhere: the named port no longer resolves on the address.
	b = tweak(pod("prod", "b", pt.Labels("app", "server"), shared), withPorts(namedPort("http", flow.TCP, 8080)))
	w = claimWorld(t, a, b)
	w.check(t, []flowCase{
		{"prod/client", shared, "80/TCP", Deny},
		{"prod/client", shared, "8080/TCP", Deny},
	})
	// Once one claimant is gone, the other holds the address alone.
	st := w.State
	st.Pods = append([]Pod{}, st.Pods[0])
	st.Pods = append(st.Pods, w.State.Pods[2:]...)
	w = compileWorld(t, st)
	w.check(t, []flowCase{{"prod/client", shared, "80/TCP", Allow}})
	if len(w.snap.Conflicts()) != 0 {
		t.Errorf("conflicts after the claim ended: %v", w.snap.Conflicts())
	}
}

// A node that holds one claimant sends the address to the engine when any claimant is
// isolated, and enforces the others' isolation as its own.
func TestDuplicateAddressJudgedLocally(t *testing.T) {
	open := tweak(pod("prod", "a-open", nil, shared), onNode("n1"))
	locked := tweak(pod("prod", "b-locked", pt.Labels("lock", "yes"), shared), onNode("n2"))
	c := NewCompiler("n1")
	if err := c.Replace(State{Pods: []Pod{open, locked}, Policies: []*networkingv1.NetworkPolicy{
		pt.NetworkPolicy("prod", "lock", pt.Selector("lock", "yes"), pt.Types(typeIngress)),
	}}); err != nil {
		t.Fatal(err)
	}
	s := c.Snapshot()
	in, eg := s.LocalIsolated()
	if len(in) != 1 || in[0] != netip.MustParseAddr(shared) || len(eg) != 0 {
		t.Errorf("local isolated: ingress %v, egress %v; want the shared address for ingress", in, eg)
	}
	d := s.Decide(flow.Flow{Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr(shared), Proto: flow.TCP, Port: 80})
	if d.LocalVerdict() != Deny || d.Ingress.Pod.Name != "b-locked" {
		t.Errorf("local verdict %v by %v, want deny by b-locked", d.LocalVerdict(), d.Ingress.Pod)
	}
}

// Deciding a flow to or from a claimed address allocates nothing either.
func TestDuplicateAddressDecideDoesNotAllocate(t *testing.T) {
	w := claimWorld(t, pod("prod", "a-open", nil, shared), pod("prod", "b-locked", pt.Labels("lock", "yes"), shared))
	for _, f := range []flow.Flow{w.flowOf("prod/client", shared, "80/TCP"), w.flowOf(shared, "prod/server", "80/TCP")} {
		if n := testing.AllocsPerRun(100, func() { w.snap.Decide(f) }); n != 0 {
			t.Errorf("Decide(%v) allocates %v times", f, n)
		}
	}
}
