package policy

import (
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/policytest"
)

// A peer a NetworkPolicy names that a ClusterNetworkPolicy comes to name gets a cluster peer
// bit, which its pods must hold; when no ClusterNetworkPolicy names it any more, it gives the
// bit back, and the next peer they name may get the same bit: the pods of the first (the
// NetworkPolicy still names it, so that it lives on) must not belong to the second.
func TestClusterPeerBitReused(t *testing.T) {
	np := policytest.NetworkPolicy("prod", "from-web", policytest.Selector("app", "db"),
		policytest.Ingress(policytest.From(policytest.PodsIn(policytest.Selector(), policytest.Selector("app", "web")))))
	webOnly := cnp("web-only", `{tier: Admin, priority: 1, subject: {namespaces: {matchLabels: {tenant: foo}}}, egress: [{action: Deny, to: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}]}]}`)
	apiOnly := cnp("api-only", `{tier: Admin, priority: 1, subject: {namespaces: {matchLabels: {tenant: foo}}}, egress: [{action: Deny, to: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: api}}}}]}]}`)
	s := cnpCluster([]*networkingv1.NetworkPolicy{np})
	c := NewCompiler("node-1")
	if err := c.Replace(s); err != nil {
		t.Fatal(err)
	}
	c.Snapshot()
	if err := c.SetClusterPolicy(webOnly); err != nil { // a bit for a peer that was there
		t.Fatal(err)
	}
	s.ClusterPolicies = []*cnpv1alpha2.ClusterNetworkPolicy{webOnly}
	w := &world{State: s, snap: c.Snapshot()}
	if d := w.decide("foo-1/app", "prod/web", "80/TCP"); d.Egress.Code != ClusterDenied {
		t.Fatalf("foo-1/app → prod/web: %v, want cnp/web-only's Deny", d.Egress.Code)
	}
	c.DeleteClusterPolicy("web-only")
	c.Snapshot()
	if err := c.SetClusterPolicy(apiOnly); err != nil {
		t.Fatal(err)
	}
	s.ClusterPolicies = []*cnpv1alpha2.ClusterNetworkPolicy{apiOnly}
	w.snap = c.Snapshot()
	if d := w.decide("foo-1/app", "prod/web", "80/TCP"); d.Egress.Code != NotIsolated {
		t.Errorf("foo-1/app → prod/web after web-only gave way to api-only: %v, want not isolated", d.Egress.Code)
	}
	if d := w.decide("foo-1/app", "prod/api", "80/TCP"); d.Egress.Code != ClusterDenied {
		t.Errorf("foo-1/app → prod/api: %v, want cnp/api-only's Deny", d.Egress.Code)
	}
}

// A group whose last policy goes gives back its id, and a group made in the same step may
// take it: the pods of the first must not be judged by the second.
func TestClusterGroupIDReused(t *testing.T) {
	web := cnp("web", `{tier: Admin, priority: 1, subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}, egress: [{action: Deny, to: [{namespaces: {}}]}]}`)
	db := cnp("db", `{tier: Admin, priority: 1, subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}, egress: [{action: Deny, to: [{namespaces: {}}]}]}`)
	s := cnpCluster(nil, web)
	c := NewCompiler("node-1")
	if err := c.Replace(s); err != nil {
		t.Fatal(err)
	}
	w := &world{State: s, snap: c.Snapshot()}
	if d := w.decide("prod/web", "prod/api", "80/TCP"); d.Egress.Code != ClusterDenied {
		t.Fatalf("prod/web → prod/api: %v, want cnp/web's Deny", d.Egress.Code)
	}
	c.DeleteClusterPolicy("web")
	if err := c.SetClusterPolicy(db); err != nil {
		t.Fatal(err)
	}
	if c.cnps.byID[0] == nil || c.cnps.byID[0].key != c.cnps.byName["db"].group.key {
		t.Fatal("the group of db did not take the id of web's: the test tests nothing")
	}
	s.ClusterPolicies = []*cnpv1alpha2.ClusterNetworkPolicy{db}
	w.snap = c.Snapshot()
	if d := w.decide("prod/web", "prod/api", "80/TCP"); d.Egress.Code != NotIsolated {
		t.Errorf("prod/web → prod/api after web gave way to db: %v, want not isolated", d.Egress.Code)
	}
	if d := w.decide("prod/db", "prod/api", "80/TCP"); d.Egress.Code != ClusterDenied {
		t.Errorf("prod/db → prod/api: %v, want cnp/db's Deny", d.Egress.Code)
	}
	if err := c.CheckCombos(); err != nil {
		t.Error(err)
	}
}

// An address two live pods claim is judged with each (conflict.go); the datapath must queue
// it when a ClusterNetworkPolicy selects either claimant, not only when one is isolated by a
// NetworkPolicy.
func TestClusterPolicyJudgesClaimedAddress(t *testing.T) {
	s := cnpCluster(nil, cnp("twin-in", `
tier: Admin
priority: 1
subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: twin}}}}
ingress: [{action: Deny, from: [{namespaces: {matchLabels: {tenant: bar}}}]}]
egress: [{action: Deny, to: [{nodes: {}}]}]
`))
	s.Pods = append(s.Pods, tweak(pod("prod", "web-twin", policytest.Labels("app", "twin"), "10.244.1.2"), onNode("node-1")))
	c := NewCompiler("node-1")
	if err := c.Replace(s); err != nil {
		t.Fatal(err)
	}
	snap := c.Snapshot()
	if d := snap.Decide(flow.Flow{Src: mustAddr("10.244.2.11"), Dst: mustAddr("10.244.1.2"), Proto: flow.TCP, Port: 80}); d.Ingress.Code != ClusterDenied {
		t.Fatalf("bar/app → the claimed 10.244.1.2: %v, want cnp/twin-in's Deny", d.Ingress.Code)
	}
	in, eg := snap.LocalIsolated()
	if got, want := addrs(in)+addrs(eg), "[10.244.1.2][10.244.1.2]"; got != want {
		t.Errorf("judged (ingress, egress): %s, want %s: the claimed address", got, want)
	}
	in, eg = snap.LocalNodeJudged()
	if got, want := addrs(in)+addrs(eg), "[][10.244.1.2]"; got != want {
		t.Errorf("own-node judged: %s, want %s (web-twin's egress to nodes)", got, want)
	}
}
