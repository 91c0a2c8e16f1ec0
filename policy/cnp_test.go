package policy

// ClusterNetworkPolicy semantics: the tiers around NetworkPolicy, the API documentation's
// examples (the user stories of network-policy-api v0.3.0, site-src/user-stories.md), the
// fail-closed reading of unknown fields, ties, self and own-node traffic, and validation.

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/policytest"
)

// cnp parses a ClusterNetworkPolicy written in YAML (spec only is fine: metadata.name is
// the first argument).
func cnp(name, spec string) *cnpv1alpha2.ClusterNetworkPolicy {
	var c cnpv1alpha2.ClusterNetworkPolicy
	if err := yaml.UnmarshalStrict([]byte(spec), &c.Spec); err != nil {
		panic(name + ": " + err.Error())
	}
	c.Name = name
	return &c
}

// cnpCluster is the fixture of these tests: two nodes; namespaces prod (web, api, db),
// monitoring (prometheus), kube-system (kube-dns, and a host-network agent on node-1),
// bar-ns-1 (svc-pub with named port web-alt 8443), sensitive-ns (vault) and the tenants
// foo-1, foo-2 (tenant=foo) and bar (tenant=bar), one pod "app" each.
func cnpCluster(policies []*networkingv1.NetworkPolicy, cnps ...*cnpv1alpha2.ClusterNetworkPolicy) State {
	return State{
		Namespaces: []Namespace{
			ns("prod", nil), ns("monitoring", nil), ns("kube-system", nil), ns("bar-ns-1", nil), ns("sensitive-ns", nil),
			ns("foo-1", policytest.Labels("tenant", "foo")), ns("foo-2", policytest.Labels("tenant", "foo")),
			ns("bar", policytest.Labels("tenant", "bar")),
		},
		Nodes: []Node{
			{Name: "node-1", IPs: []netip.Addr{mustAddr("172.18.0.2")}, Labels: policytest.Labels("zone", "a")},
			{Name: "node-2", IPs: []netip.Addr{mustAddr("172.18.0.3")}, Labels: policytest.Labels("zone", "b")},
		},
		Pods: []Pod{
			tweak(pod("prod", "web", policytest.Labels("app", "web"), "10.244.1.2"), onNode("node-1")),
			tweak(pod("prod", "api", policytest.Labels("app", "api"), "10.244.1.3"), onNode("node-1")),
			tweak(pod("prod", "db", policytest.Labels("app", "db"), "10.244.2.4"), onNode("node-2"), withPorts(namedPort("mysql", flow.TCP, 3306))),
			tweak(pod("monitoring", "prometheus", policytest.Labels("app", "prometheus"), "10.244.2.5"), onNode("node-2")),
			tweak(pod("kube-system", "kube-dns", policytest.Labels("app", "kube-dns"), "10.244.2.6"), onNode("node-2"), withPorts(namedPort("dns", flow.UDP, 53))),
			tweak(pod("kube-system", "agent", policytest.Labels("app", "agent"), "172.18.0.2"), onNode("node-1"), inHostNetwork()),
			tweak(pod("bar-ns-1", "svc-pub", policytest.Labels("app", "svc-pub"), "10.244.2.7"), onNode("node-2"), withPorts(namedPort("web-alt", flow.TCP, 8443))),
			tweak(pod("sensitive-ns", "vault", policytest.Labels("app", "vault"), "10.244.2.8"), onNode("node-2")),
			tweak(pod("foo-1", "app", nil, "10.244.1.9"), onNode("node-1")),
			tweak(pod("foo-2", "app", nil, "10.244.1.10"), onNode("node-1")),
			tweak(pod("bar", "app", nil, "10.244.2.11"), onNode("node-2")),
		},
		Policies:        policies,
		ClusterPolicies: cnps,
	}
}

// The examples of the API documentation (site-src/user-stories.md and user-story-examples/
// of network-policy-api v0.3.0), each with the traffic its story describes.
func TestClusterNetworkPolicyUserStories(t *testing.T) {
	const (
		allow = Allow
		deny  = Deny
	)
	cases := []struct {
		name  string
		cnp   *cnpv1alpha2.ClusterNetworkPolicy
		flows []flowCase
	}{
		{
			// Story 1: deny traffic at a cluster level — sensitive-ns is isolated from every
			// other namespace, on every port and protocol.
			name: "user-story-1", cnp: cnp("cluster-wide-deny-example", `
tier: Admin
priority: 10
subject:
  namespaces:
    matchLabels:
      kubernetes.io/metadata.name: sensitive-ns
ingress:
  - action: Deny
    from:
    - namespaces:
        matchLabels: {} # Match all namespaces.
    name: select-all-deny-all
`),
			flows: []flowCase{
				{"prod/web", "sensitive-ns/vault", "8200/TCP", deny},
				{"monitoring/prometheus", "sensitive-ns/vault", "9100/TCP", deny},
				{"prod/web", "sensitive-ns/vault", "ICMP", deny},
				{"sensitive-ns/vault", "foo-1/app", "80/TCP", allow},   // egress is not touched
				{"192.0.2.1", "sensitive-ns/vault", "8200/TCP", allow}, // namespaces peers are pods only
				{"prod/api", "prod/db", "3306/TCP", allow},
			},
		},
		{
			// Story 2: allow traffic at a cluster level — every pod accepts monitoring and
			// reaches kube-dns, whatever NetworkPolicies say (see the NetworkPolicy below).
			name: "user-story-2", cnp: cnp("cluster-wide-allow-example", `
tier: Admin
priority: 30
subject:
  namespaces: {}
ingress:
  - action: Accept
    name: allow-monitoring-ns-ingress
    from:
    - namespaces:
        matchLabels:
          kubernetes.io/metadata.name: monitoring-ns
egress:
- action: Accept
  name: allow-kube-dns-egress
  to:
  - pods:
      namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
      podSelector:
        matchLabels:
          app: kube-dns
`),
			flows: []flowCase{
				{"prod/web", "kube-system/kube-dns", "53/UDP", allow}, // over prod's default deny egress
				{"prod/web", "prod/db", "3306/TCP", deny},             // prod's default deny egress
				// The story's namespace is monitoring-ns; ours is monitoring: not accepted,
				// so prod's deny-all ingress denies it.
				{"monitoring/prometheus", "prod/api", "9100/TCP", deny},
			},
		},
		{
			// Story 3: delegate to NetworkPolicy — egress to svc-pub on 8080/TCP, the named
			// port web-alt and 53/UDP is passed to NetworkPolicy; with none isolating, allowed.
			name: "user-story-3", cnp: cnp("pub-svc-delegate-example", `
tier: Admin
priority: 20
subject:
  namespaces: {}
egress:
- action: Pass # to be handled by NetworkPolicy.
  to:
  - pods:
      namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: bar-ns-1
      podSelector:
        matchLabels:
          app: svc-pub
  protocols:
  - tcp:
      destinationPort:
        number: 8080
  - destinationNamedPort: "web-alt"
  - udp:
      destinationPort:
        number: 53
`),
			flows: []flowCase{
				{"foo-1/app", "bar-ns-1/svc-pub", "8080/TCP", allow},
				{"foo-1/app", "bar-ns-1/svc-pub", "8443/TCP", allow},
				{"prod/web", "bar-ns-1/svc-pub", "8443/TCP", deny}, // passed on: prod's NetworkPolicy denies
				{"prod/web", "bar-ns-1/svc-pub", "53/UDP", deny},
			},
		},
		{
			// Story 4 (v1): "currently not implementable" — the peer is an empty namespaces
			// field, which decodes to no peer at all: a Deny rule that names nothing podwall
			// knows fails closed as "Deny all" (the API's fail-closed rule).
			name: "user-story-4-v1", cnp: cnp("tenant-creation-example", `
tier: Admin
priority: 50
subject:
  namespaces:
    matchExpressions: [{key: "tenant", operator: Exists}]
ingress:
  - action: Deny
    from:
    - namespaces:
`),
			flows: []flowCase{
				{"foo-2/app", "foo-1/app", "80/TCP", deny},
				{"bar/app", "foo-1/app", "80/TCP", deny},
				{"192.0.2.1", "foo-1/app", "80/TCP", deny}, // Deny all: every source
				{"foo-1/app", "bar-ns-1/svc-pub", "80/TCP", allow},
				{"foo-1/app", "foo-1/app", "80/TCP", allow}, // a pod to itself
			},
		},
		{
			// Story 4 (v2): a Pass rule with the same unreadable peer fails closed too (Deny all).
			name: "user-story-4-v2", cnp: cnp("tenant-creation-example", `
tier: Admin
priority: 50
subject:
  namespaces:
    matchExpressions: [{key: "tenant", operator: Exists}]
ingress:
  - action: Pass # Pass inter-tenant traffic to any defined NetworkPolicies
    from:
    - namespaces:
  - action: Deny   # Deny everything else other than same tenant traffic
    from:
    - namespaces: {}
`),
			flows: []flowCase{
				{"foo-2/app", "foo-1/app", "80/TCP", deny},
				{"prod/web", "bar/app", "80/TCP", deny},
				{"bar/app", "prod/web", "80/TCP", deny}, // prod's NetworkPolicies deny it
			},
		},
		{
			// Story 5: cluster-wide default guardrails — a Baseline deny of all ingress;
			// namespace owners open what they need with NetworkPolicy (prod does: db accepts
			// api on 3306).
			name: "user-story-5", cnp: cnp("default", `
tier: Baseline
priority: 10
subject:
  namespaces: {}
ingress:
  - action: Deny   # zero-trust cluster default security posture
    from:
    - namespaces: {}
`),
			flows: []flowCase{
				{"foo-1/app", "foo-2/app", "80/TCP", deny},
				{"foo-1/app", "bar-ns-1/svc-pub", "8443/TCP", deny},
				{"prod/api", "prod/db", "3306/TCP", allow},  // NetworkPolicy decides for db: allowed
				{"prod/web", "prod/db", "3306/TCP", deny},   // … and denied
				{"192.0.2.1", "foo-1/app", "80/TCP", allow}, // the peer is pods: outside is not denied
			},
		},
	}
	// prod: db accepts api on 3306; web and api may only egress to db (default deny egress
	// otherwise); ingress to web and api denied.
	prodPolicies := []*networkingv1.NetworkPolicy{
		policytest.NetworkPolicy("prod", "db-policy", policytest.Selector("app", "db"),
			policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("app", "api")), policytest.Port("3306")))),
		policytest.NetworkPolicy("prod", "front", policytest.Selector("app", "web"),
			policytest.Types(typeIngress, typeEgress)),
		policytest.NetworkPolicy("prod", "api", policytest.Selector("app", "api"),
			policytest.Types(typeIngress, typeEgress), policytest.Egress(policytest.To(policytest.Pods(policytest.Selector("app", "db"))))),
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := ValidateClusterPolicy(tc.cnp); err != nil {
				t.Fatalf("the documented example is invalid: %v", err)
			}
			w := compileWorld(t, cnpCluster(prodPolicies, tc.cnp))
			w.check(t, tc.flows)
		})
	}
}

// The order of the tiers, per direction.
func TestClusterNetworkPolicyTiers(t *testing.T) {
	dbOnlyFromAPI := policytest.NetworkPolicy("prod", "db-policy", policytest.Selector("app", "db"),
		policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("app", "api")))))
	adminDenyWebToDB := cnp("deny-web-db", `
tier: Admin
priority: 5
subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}
ingress:
- {action: Deny, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}]}
`)
	adminAcceptWebToDB := cnp("accept-web-db", `
tier: Admin
priority: 5
subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}
ingress:
- {action: Accept, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}]}
`)
	adminPassAll := cnp("pass-all", `
tier: Admin
priority: 1
subject: {namespaces: {}}
ingress:
- {action: Pass, from: [{namespaces: {}}]}
egress:
- {action: Pass, to: [{networks: ["0.0.0.0/0"]}]}
`)
	baselineDenyAll := cnp("default-deny", `
tier: Baseline
priority: 100
subject: {namespaces: {}}
ingress:
- {action: Deny, from: [{namespaces: {}}]}
egress:
- {action: Deny, to: [{networks: ["0.0.0.0/0"]}]}
`)
	baselinePassDB := cnp("pass-db", `
tier: Baseline
priority: 1
subject: {namespaces: {}}
egress:
- {action: Pass, to: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}]}
`)
	adminAcceptEgressToDB := cnp("web-out", `
tier: Admin
priority: 3
subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}
egress:
- {action: Accept, to: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}]}
`)
	cases := []struct {
		name     string
		policies []*networkingv1.NetworkPolicy
		cnps     []*cnpv1alpha2.ClusterNetworkPolicy
		flows    []flowCase
	}{
		{"admin Deny overrides a NetworkPolicy allow", []*networkingv1.NetworkPolicy{policytest.NetworkPolicy("prod", "db-all", policytest.Selector("app", "db"),
			policytest.Ingress(policytest.From(policytest.Namespaces(policytest.Selector()))))}, []*cnpv1alpha2.ClusterNetworkPolicy{adminDenyWebToDB},
			[]flowCase{{"prod/web", "prod/db", "3306/TCP", Deny}, {"prod/api", "prod/db", "3306/TCP", Allow}}},
		{"admin Accept overrides NetworkPolicy isolation", []*networkingv1.NetworkPolicy{dbOnlyFromAPI}, []*cnpv1alpha2.ClusterNetworkPolicy{adminAcceptWebToDB},
			[]flowCase{{"prod/web", "prod/db", "3306/TCP", Allow}, {"foo-1/app", "prod/db", "3306/TCP", Deny}}},
		{"admin Pass hands over to NetworkPolicy", []*networkingv1.NetworkPolicy{dbOnlyFromAPI}, []*cnpv1alpha2.ClusterNetworkPolicy{adminPassAll, baselineDenyAll},
			[]flowCase{
				{"prod/api", "prod/db", "3306/TCP", Deny}, // ingress allowed by NetworkPolicy; egress of api: Pass → Baseline Deny
				{"prod/web", "prod/db", "3306/TCP", Deny},
			}},
		{"NetworkPolicy isolation decides before the Baseline tier", []*networkingv1.NetworkPolicy{dbOnlyFromAPI,
			policytest.NetworkPolicy("prod", "api-out", policytest.Selector("app", "api"), policytest.Types(typeEgress),
				policytest.Egress(policytest.To(policytest.Pods(policytest.Selector("app", "db")))))},
			[]*cnpv1alpha2.ClusterNetworkPolicy{baselineDenyAll},
			[]flowCase{{"prod/api", "prod/db", "3306/TCP", Allow}, {"prod/web", "prod/db", "3306/TCP", Deny}, {"prod/web", "foo-1/app", "80/TCP", Deny}}},
		{"Baseline Pass goes on to the default, allow", nil, []*cnpv1alpha2.ClusterNetworkPolicy{baselinePassDB, baselineDenyAll},
			[]flowCase{{"prod/web", "prod/db", "3306/TCP", Deny}, {"prod/web", "foo-1/app", "80/TCP", Deny}}},
		{"an egress Accept does not bypass the destination's ingress", []*networkingv1.NetworkPolicy{dbOnlyFromAPI}, []*cnpv1alpha2.ClusterNetworkPolicy{adminAcceptEgressToDB},
			[]flowCase{{"prod/web", "prod/db", "3306/TCP", Deny}}},
		{"a pod to itself is allowed even by Deny all", nil, []*cnpv1alpha2.ClusterNetworkPolicy{baselineDenyAll, cnp("deny-everything", `
tier: Admin
priority: 0
subject: {namespaces: {}}
ingress: [{action: Deny, from: [{namespaces: {}}]}]
egress: [{action: Deny, to: [{networks: ["0.0.0.0/0"]}]}]
`)}, []flowCase{{"prod/web", "prod/web", "80/TCP", Allow}, {"prod/web", "prod/api", "80/TCP", Deny}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := compileWorld(t, cnpCluster(tc.policies, tc.cnps...))
			w.check(t, tc.flows)
		})
	}
}

// A pod's own node: NetworkPolicy allows it for the pods it isolates, but the Admin tier
// judges before, and the Baseline tier judges it for pods NetworkPolicy does not isolate.
// A host-network pod is its node's address: a nodes peer, never a subject or a pod peer.
func TestClusterNetworkPolicyOwnNode(t *testing.T) {
	denyNodes := cnp("deny-nodes", `
tier: Admin
priority: 10
subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}
egress: [{action: Deny, to: [{nodes: {}}]}]
`)
	denyNodeCIDR := cnp("deny-node-cidr", `
tier: Admin
priority: 10
subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}
egress: [{action: Deny, to: [{networks: ["172.18.0.0/30"]}]}]
`)
	baselineDenyNodes := cnp("baseline-deny-nodes", `
tier: Baseline
priority: 10
subject: {namespaces: {}}
egress: [{action: Deny, to: [{nodes: {matchLabels: {zone: a}}}]}]
`)
	webIsolated := policytest.NetworkPolicy("prod", "web", policytest.Selector("app", "web"), policytest.Types(typeIngress, typeEgress))
	cases := []struct {
		name     string
		policies []*networkingv1.NetworkPolicy
		cnps     []*cnpv1alpha2.ClusterNetworkPolicy
		flows    []flowCase
	}{
		{"NetworkPolicy alone allows the own node", []*networkingv1.NetworkPolicy{webIsolated}, nil,
			[]flowCase{{"prod/web", "172.18.0.2", "10250/TCP", Allow}, {"prod/web", "172.18.0.3", "10250/TCP", Deny}}},
		{"Admin Deny to nodes cuts the own node", []*networkingv1.NetworkPolicy{webIsolated}, []*cnpv1alpha2.ClusterNetworkPolicy{denyNodes},
			[]flowCase{
				{"prod/web", "172.18.0.2", "10250/TCP", Deny},
				{"prod/web", "kube-system/agent", "9090/TCP", Deny}, // the host-network pod is the node
				{"prod/api", "172.18.0.2", "10250/TCP", Allow},
				{"172.18.0.2", "prod/web", "8080/TCP", Allow}, // ingress from the node: egress rules only
			}},
		{"Admin Deny to a CIDR holding the node address cuts it", nil, []*cnpv1alpha2.ClusterNetworkPolicy{denyNodeCIDR},
			[]flowCase{{"prod/web", "172.18.0.2", "10250/TCP", Deny}, {"prod/web", "172.18.0.8", "10250/TCP", Allow}}},
		{"Baseline judges the own node of pods NetworkPolicy does not isolate", []*networkingv1.NetworkPolicy{webIsolated}, []*cnpv1alpha2.ClusterNetworkPolicy{baselineDenyNodes},
			[]flowCase{
				{"prod/api", "172.18.0.2", "10250/TCP", Deny},
				{"prod/api", "kube-system/agent", "10250/TCP", Deny},
				{"prod/web", "172.18.0.2", "10250/TCP", Allow}, // isolated by NetworkPolicy: own node allowed there
				{"prod/db", "172.18.0.3", "10250/TCP", Allow},  // zone b
			}},
		{"host-network pods are never subjects", nil, []*cnpv1alpha2.ClusterNetworkPolicy{cnp("deny-kube-system", `
tier: Admin
priority: 1
subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}
egress: [{action: Deny, to: [{networks: ["0.0.0.0/0"]}]}]
ingress: [{action: Deny, from: [{namespaces: {}}]}]
`)}, []flowCase{
			{"kube-system/agent", "prod/web", "80/TCP", Allow},
			{"kube-system/kube-dns", "prod/web", "80/TCP", Deny},
			{"prod/web", "kube-system/agent", "80/TCP", Allow},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := compileWorld(t, cnpCluster(tc.policies, tc.cnps...))
			w.check(t, tc.flows)
		})
	}
}

// What podwall cannot read it enforces fail-closed, as the API documents: an Accept rule
// matches nothing of it, a Deny or Pass rule denies all; each is reported.
func TestClusterNetworkPolicyFailClosed(t *testing.T) {
	cases := []struct {
		name    string
		cnp     *cnpv1alpha2.ClusterNetworkPolicy
		flows   []flowCase
		problem string
	}{
		{"Accept with an empty peer matches nothing of it", cnp("accept-empty", `
tier: Admin
priority: 1
subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: prod}}}
egress:
- {action: Accept, to: [{}, {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: kube-dns}}}}]}
- {action: Deny, to: [{networks: ["0.0.0.0/0"]}]}
`), []flowCase{{"prod/web", "kube-system/kube-dns", "53/UDP", Allow}, {"prod/web", "foo-1/app", "80/TCP", Deny}},
			"spec.egress[0].to[0]: no peer podwall knows"},
		{"Deny with an empty peer denies all", cnp("deny-empty", `
tier: Admin
priority: 1
subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: prod}}}
egress: [{action: Deny, to: [{}], protocols: [{tcp: {destinationPort: {number: 1}}}]}]
`), []flowCase{{"prod/web", "foo-1/app", "80/UDP", Deny}, {"prod/web", "192.0.2.1", "ICMP", Deny}, {"foo-1/app", "prod/web", "80/TCP", Allow}},
			"enforced as Deny all"},
		{"Accept to domainNames matches nothing", cnp("accept-domains", `
tier: Admin
priority: 1
subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: prod}}}
egress:
- {action: Accept, to: [{domainNames: ["*.example.com"]}]}
- {action: Deny, to: [{networks: ["0.0.0.0/0"]}]}
`), []flowCase{{"prod/web", "192.0.2.1", "443/TCP", Deny}},
			"spec.egress[0].to[0].domainNames: not supported"},
		{"an unknown action denies all", cnp("allow-action", `
tier: Admin
priority: 1
subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: prod}}}
ingress: [{action: Allow, from: [{namespaces: {}}]}]
`), []flowCase{{"foo-1/app", "prod/web", "80/TCP", Deny}, {"192.0.2.1", "prod/web", "80/TCP", Deny}},
			`unknown action "Allow"`},
		{"a Pass with an unreadable protocol denies all", cnp("pass-proto", `
tier: Admin
priority: 1
subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: prod}}}
ingress: [{action: Pass, from: [{namespaces: {}}], protocols: [{}]}]
`), []flowCase{{"foo-1/app", "prod/web", "80/TCP", Deny}},
			"spec.ingress[0].protocols[0]: no protocol or port podwall knows"},
		{"an Accept whose only protocol is unreadable matches nothing", cnp("accept-proto", `
tier: Admin
priority: 1
subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: prod}}}
ingress:
- {action: Accept, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {}}}]}
- {action: Deny, from: [{namespaces: {}}]}
`), []flowCase{{"foo-1/app", "prod/web", "80/TCP", Deny}},
			"the Accept rule matches nothing of it"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := compileWorld(t, cnpCluster(nil, tc.cnp))
			w.check(t, tc.flows)
			probs := w.snap.ClusterProblems()
			if !slices.ContainsFunc(probs, func(p string) bool {
				return strings.Contains(p, tc.problem) && strings.HasPrefix(p, "cnp/"+tc.cnp.Name)
			}) {
				t.Errorf("ClusterProblems = %q, want one of cnp/%s saying %q", probs, tc.cnp.Name, tc.problem)
			}
		})
	}
}

// Two policies of one tier and priority: judged by name, reported, and the tie shown.
func TestClusterNetworkPolicySamePriority(t *testing.T) {
	b := cnp("b-deny", `
tier: Admin
priority: 7
subject: {namespaces: {}}
ingress: [{action: Deny, from: [{namespaces: {}}]}]
`)
	a := cnp("a-accept", `
tier: Admin
priority: 7
subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: prod}}}
ingress: [{action: Accept, from: [{namespaces: {}}]}]
`)
	for _, order := range [][]*cnpv1alpha2.ClusterNetworkPolicy{{a, b}, {b, a}} {
		w := compileWorld(t, cnpCluster(nil, order...))
		w.check(t, []flowCase{{"foo-1/app", "prod/web", "80/TCP", Allow}, {"prod/web", "foo-1/app", "80/TCP", Deny}})
		want := "cnp/a-accept and cnp/b-deny: same Admin priority 7, both select pods for ingress: cnp/a-accept is judged first (by name)"
		if probs := w.snap.ClusterProblems(); !slices.Contains(probs, want) {
			t.Errorf("ClusterProblems = %q, want %q", probs, want)
		}
		x := w.snap.Explain(w.flowOf("foo-1/app", "prod/web", "80/TCP"))
		if !strings.Contains(x.Reason, "same priority as cnp/b-deny: judged by name") {
			t.Errorf("reason %q does not show the tie", x.Reason)
		}
	}
}

// The reason names tier, policy, rule and action, and the Pass steps on the way.
func TestClusterNetworkPolicyReason(t *testing.T) {
	pass := cnp("allow-monitoring", `
tier: Admin
priority: 5
subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: prod}}}
ingress:
- {name: from-prometheus, action: Accept, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]}
- {action: Deny, from: [{namespaces: {matchLabels: {tenant: bar}}}]}
- {name: rest, action: Pass, from: [{namespaces: {}}]}
`)
	db := policytest.NetworkPolicy("prod", "db-policy", policytest.Selector("app", "db"),
		policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("app", "api")))))
	w := compileWorld(t, cnpCluster([]*networkingv1.NetworkPolicy{db}, pass))
	for _, tc := range []struct{ from, to, want string }{
		{"prod/api", "prod/db", `cnp/allow-monitoring rule 2 ("rest", Admin priority 5) Pass → ingress of prod/db allowed by prod/db-policy rule 0`},
		{"prod/web", "prod/db", `cnp/allow-monitoring rule 2 ("rest", Admin priority 5) Pass → prod/db is isolated for ingress by db-policy; no rule allows TCP/3306 from prod/web`},
		{"monitoring/prometheus", "prod/db", `ingress of prod/db TCP/3306 from monitoring/prometheus accepted by cnp/allow-monitoring rule 0 ("from-prometheus", Admin priority 5)`},
		{"bar/app", "prod/db", `ingress of prod/db TCP/3306 from bar/app denied by cnp/allow-monitoring rule 1 (Admin priority 5)`},
	} {
		x := w.snap.Explain(w.flowOf(tc.from, tc.to, "3306/TCP"))
		if x.Ingress.Reason != tc.want {
			t.Errorf("%s → %s: reason\n  %s\nwant\n  %s", tc.from, tc.to, x.Ingress.Reason, tc.want)
		}
	}
	d := w.decide("bar/app", "prod/db", "3306/TCP")
	if d.Ingress.Code != ClusterDenied || d.Ingress.Policy.String() != "cnp/allow-monitoring" || d.Ingress.Rule != 1 || d.Ingress.Policy.Tier != AdminTier {
		t.Errorf("judgement %+v, want cluster-denied by cnp/allow-monitoring rule 1 (Admin)", d.Ingress)
	}
	d = w.decide("prod/api", "prod/db", "3306/TCP")
	if d.Ingress.Code != Allowed || d.Ingress.AdminPass == nil || d.Ingress.AdminPass.String() != "cnp/allow-monitoring rule 2" {
		t.Errorf("judgement %+v, want allowed after the Admin Pass of cnp/allow-monitoring rule 2", d.Ingress)
	}
}

// The datapath queues the pods a ClusterNetworkPolicy judges, in the directions it has
// rules for, and only those; the node hooks get those whose own-node traffic can be denied.
func TestClusterNetworkPolicyLocalPods(t *testing.T) {
	s := cnpCluster(nil, cnp("web-in", `
tier: Admin
priority: 1
subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}
ingress: [{action: Deny, from: [{namespaces: {matchLabels: {tenant: bar}}}]}]
`), cnp("foo-out", `
tier: Baseline
priority: 1
subject: {namespaces: {matchLabels: {tenant: foo}}}
egress: [{action: Deny, to: [{nodes: {}}]}]
`), cnp("api-out", `
tier: Admin
priority: 1
subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: api}}}}
egress: [{action: Accept, to: [{pods: {namespaceSelector: {}, podSelector: {}}}]}]
`))
	c := NewCompiler("node-1")
	if err := c.Replace(s); err != nil {
		t.Fatal(err)
	}
	snap := c.Snapshot()
	in, eg := snap.LocalIsolated()
	if got, want := addrs(in), "[10.244.1.2]"; got != want {
		t.Errorf("ingress judged: %s, want %s (web)", got, want)
	}
	if got, want := addrs(eg), "[10.244.1.3 10.244.1.9 10.244.1.10]"; got != want {
		t.Errorf("egress judged: %s, want %s (api, foo-1/app, foo-2/app)", got, want)
	}
	in, eg = snap.LocalNodeJudged()
	if got, want := addrs(in)+addrs(eg), "[][10.244.1.9 10.244.1.10]"; got != want {
		t.Errorf("own-node judged: %s, want %s (foo pods' egress to nodes)", got, want)
	}
}

func addrs[T interface{ String() string }](as []T) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return "[" + strings.Join(s, " ") + "]"
}

// An invalid ClusterNetworkPolicy: each problem named by its field; the policy is rejected
// alone and enforced fail-closed — it denies all traffic of its subject (every pod when the
// subject cannot be read) in the directions it has rules for — and reported.
func TestClusterNetworkPolicyInvalid(t *testing.T) {
	cases := []struct {
		name, spec string
		want       []string
		denies     string // the direction it denies all of for prod/web: "", "egress", "ingress"
	}{
		{"bad-tier", `{tier: Platform, priority: 1, subject: {namespaces: {}}, ingress: [{action: Accept, from: [{namespaces: {}}]}]}`,
			[]string{`spec.tier: Unsupported value: "Platform"`}, "ingress"},
		{"bad-priority", `{tier: Admin, priority: 1001, subject: {namespaces: {}}}`, []string{"spec.priority: Invalid value: 1001"}, ""},
		{"no-subject", `{tier: Admin, priority: 1, subject: {}, egress: [{action: Accept, to: [{namespaces: {}}]}]}`,
			[]string{"spec.subject: Required value"}, "egress"},
		{"two-subjects", `{tier: Admin, priority: 1, subject: {namespaces: {}, pods: {podSelector: {}}}}`, []string{"spec.subject: Invalid value"}, ""},
		{"bad-selector", `{tier: Admin, priority: 1, subject: {namespaces: {matchLabels: {"a b": c}}}, ingress: [{action: Pass, from: [{namespaces: {}}]}]}`,
			[]string{"spec.subject.namespaces.matchLabels"}, "ingress"},
		{"no-peers", `{tier: Admin, priority: 1, subject: {namespaces: {}}, ingress: [{action: Deny, from: []}]}`, []string{"spec.ingress[0].from: Required value"}, "ingress"},
		{"bad-cidr", `{tier: Admin, priority: 1, subject: {namespaces: {}}, egress: [{action: Deny, to: [{networks: ["10.0.0.1/8", "10.0.0.0/33"]}]}]}`,
			[]string{"spec.egress[0].to[0].networks[0]: Invalid value: \"10.0.0.1/8\"", "spec.egress[0].to[0].networks[1]"}, "egress"},
		{"bad-range", `{tier: Admin, priority: 1, subject: {namespaces: {}}, egress: [{action: Deny, to: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {range: {start: 90, end: 80}}}}]}]}`,
			[]string{"spec.egress[0].protocols[0].tcp.destinationPort.range"}, "egress"},
		{"bad-port", `{tier: Admin, priority: 1, subject: {namespaces: {}}, egress: [{action: Deny, to: [{namespaces: {}}], protocols: [{udp: {destinationPort: {number: 70000}}}]}]}`,
			[]string{"spec.egress[0].protocols[0].udp.destinationPort.number"}, "egress"},
		{"named-port-to-networks", `{tier: Admin, priority: 1, subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: prod}}}, egress: [{action: Accept, to: [{networks: ["10.0.0.0/8"]}], protocols: [{destinationNamedPort: web}]}]}`,
			[]string{"spec.egress[0].protocols[0].destinationNamedPort"}, "egress"},
		{"two-peer-types", `{tier: Baseline, priority: 1, subject: {namespaces: {}}, egress: [{action: Deny, to: [{namespaces: {}, networks: ["10.0.0.0/8"]}]}]}`,
			[]string{"spec.egress[0].to[0]: Invalid value"}, "egress"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := cnp(tc.name, tc.spec)
			err := ValidateClusterPolicy(bad)
			if err == nil {
				t.Fatal("valid, want errors")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			// Rejected alone: the other policies apply, it is enforced fail-closed.
			other := cnp("accept-web", `{tier: Admin, priority: 500, subject: {namespaces: {}}, ingress: [{action: Accept, from: [{namespaces: {}}]}]}`)
			c := NewCompiler("")
			if err := c.Replace(cnpCluster(nil, other)); err != nil {
				t.Fatal(err)
			}
			s := cnpCluster(nil, other, bad)
			if err := c.Replace(s); err != nil {
				t.Fatalf("Replace: %v, want the invalid policy rejected alone", err)
			}
			if err := c.SetClusterPolicy(bad); err == nil || !strings.Contains(err.Error(), "ClusterNetworkPolicy "+tc.name+": ") {
				t.Errorf("SetClusterPolicy: %v, want the policy named", err)
			}
			w := &world{State: s, snap: c.Snapshot()}
			egress, ingress := Allow, Allow
			switch tc.denies {
			case "egress":
				egress = Deny
			case "ingress":
				ingress = Deny
			}
			w.check(t, []flowCase{
				{"prod/web", "192.0.2.1", "80/TCP", egress},
				{"192.0.2.1", "prod/web", "80/TCP", ingress},
			})
			probs := w.snap.ClusterProblems()
			if tc.denies != "" && !slices.ContainsFunc(probs, func(p string) bool {
				return strings.HasPrefix(p, "cnp/"+tc.name+": invalid (") && strings.Contains(p, tc.want[0])
			}) {
				t.Errorf("ClusterProblems %q: want cnp/%s reported invalid", probs, tc.name)
			}
			if whole := compileWorld(t, s); whole.snap.Decide(w.flowOf("prod/web", "192.0.2.1", "80/TCP")).Verdict != egress {
				t.Error("a compile from nothing decides otherwise")
			}
			// Listed among the objects rejected alone (podwall_policy_invalid), until it goes.
			if ps := w.snap.Problems(); len(ps) != 1 || ps[0].Kind != KindClusterNetworkPolicy || ps[0].Name != tc.name ||
				ps[0].Where != "" || !strings.Contains(ps[0].Err.Error(), tc.want[0]) {
				t.Errorf("Problems %+v, want ClusterNetworkPolicy %s alone, saying %q", ps, tc.name, tc.want[0])
			}
			c.DeleteClusterPolicy(tc.name)
			if ps := c.Snapshot().Problems(); len(ps) != 0 {
				t.Errorf("Problems after the policy went: %+v", ps)
			}
		})
	}
}

// Changing, adding and removing ClusterNetworkPolicies one at a time gives the decisions of
// a compiler that sees the result whole, and keeps the table cache exact.
func TestClusterNetworkPolicyIncremental(t *testing.T) {
	steps := []*cnpv1alpha2.ClusterNetworkPolicy{
		cnp("x", `{tier: Admin, priority: 3, subject: {namespaces: {}}, ingress: [{action: Deny, from: [{namespaces: {matchLabels: {tenant: foo}}}]}]}`),
		cnp("y", `{tier: Baseline, priority: 3, subject: {namespaces: {}}, egress: [{action: Deny, to: [{nodes: {matchLabels: {zone: b}}}, {networks: ["192.0.2.0/24"]}]}]}`),
		cnp("x", `{tier: Admin, priority: 3, subject: {namespaces: {}}, ingress: [{action: Pass, from: [{namespaces: {matchLabels: {tenant: foo}}}]}]}`),
		cnp("z", `{tier: Admin, priority: 2, subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}, ingress: [{action: Accept, from: [{pods: {namespaceSelector: {}, podSelector: {}}}], protocols: [{destinationNamedPort: mysql}]}]}`),
	}
	c := NewCompiler("node-1")
	s := cnpCluster(nil)
	if err := c.Replace(s); err != nil {
		t.Fatal(err)
	}
	var flows []flowCase
	for _, from := range []string{"prod/web", "foo-1/app", "prod/db", "172.18.0.3", "192.0.2.9"} {
		for _, to := range []string{"prod/db", "foo-1/app", "172.18.0.3", "192.0.2.9", "kube-system/agent", "172.18.0.50"} {
			flows = append(flows, flowCase{from: from, to: to, port: "3306/TCP"})
		}
	}
	key := func(d Decision) string {
		j := func(j Judgement) string {
			out := j.Verdict.String() + " " + j.Code.String()
			if j.Policy != nil {
				out += fmt.Sprintf(" %s rule %d", j.Policy, j.Rule)
			}
			for _, p := range []*RuleRef{j.AdminPass, j.BaselinePass} {
				if p != nil {
					out += " pass " + p.String()
				}
			}
			return out
		}
		return j(d.Egress) + "; " + j(d.Ingress)
	}
	check := func(label string) {
		t.Helper()
		want := compileWorld(t, s)
		got := &world{State: s, snap: c.Snapshot()}
		for _, f := range flows {
			if g, w := key(got.decide(f.from, f.to, f.port)), key(want.decide(f.from, f.to, f.port)); g != w {
				t.Errorf("%s: %s → %s: incremental %s, whole %s", label, f.from, f.to, g, w)
			}
		}
		if err := c.CheckTables(); err != nil {
			t.Errorf("%s: %v", label, err)
		}
	}
	for _, p := range steps {
		if err := c.SetClusterPolicy(p); err != nil {
			t.Fatal(err)
		}
		s.ClusterPolicies = slices.DeleteFunc(s.ClusterPolicies, func(q *cnpv1alpha2.ClusterNetworkPolicy) bool { return q.Name == p.Name })
		s.ClusterPolicies = append(s.ClusterPolicies, p)
		check("set " + p.Name)
	}
	// A node's labels change, a host-network pod comes: nodes peers follow.
	s.Nodes[0].Labels = map[string]string{"zone": "b"}
	c.SetNode(s.Nodes[0])
	check("relabel node-1")
	hostPod := tweak(pod("kube-system", "agent-2", nil, "172.18.0.50"), onNode("node-2"), inHostNetwork())
	s.Pods = append(s.Pods, hostPod)
	c.SetPod(hostPod)
	check("host-network pod on node-2")
	if d := c.Snapshot().Decide(flow.Flow{Src: mustAddr("10.244.1.2"), Dst: mustAddr("172.18.0.50"), Proto: flow.TCP, Port: 3306}); d.Egress.Code != ClusterDenied {
		t.Errorf("prod/web to a host-network pod of node-2 (zone b): %v, want cnp/y's Deny", d.Egress.Code)
	}
	c.DeleteClusterPolicy("x")
	s.ClusterPolicies = slices.DeleteFunc(s.ClusterPolicies, func(q *cnpv1alpha2.ClusterNetworkPolicy) bool { return q.Name == "x" })
	check("delete x")
}
