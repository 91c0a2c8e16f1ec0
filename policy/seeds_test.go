package policy

// The examples of the seed documents (shared/seeds/000–004) as verdict tables, followed by
// the edges of SPEC §2 that neither the seeds nor the upstream e2e suite pin down.
//
// Every expectation comes from SPEC §2 (upstream NetworkPolicy semantics), never from the
// engine's output. Where a seed's prose contradicts upstream semantics, the case says so and
// follows upstream.
//
// Addresses: pods in 10.244.0.0/16 and fd00:10:244::/56, nodes in 172.18.0.0/16 and
// fd00:172:18::/64, outside hosts in 192.0.2.0/24 and 2001:db8::/32; the seeds' own backup
// host 192.168.99.10 is kept as written.

import (
	"fmt"
	"slices"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/policytest"
)

// dual returns a pod's IPv4 and IPv6 address: dual(1, 10) is 10.244.1.10 and
// fd00:10:244:1::10.
func dual(subnet, host int) []string {
	return []string{fmt.Sprintf("10.244.%d.%d", subnet, host), fmt.Sprintf("fd00:10:244:%d::%d", subnet, host)}
}

const (
	user    = "192.0.2.10"   // an outside client
	user6   = "2001:db8::10" // the same, over IPv6
	outside = "192.0.2.80"   // an outside server
)

// judged is what a test expects of one direction of a Decision.
type judged struct {
	code   Code
	pod    string // the judged pod, "ns/name"; "" when Code is NoPod
	policy string // the allowing policy, "ns/name"; only when Code is Allowed
	rule   int    // its rule index; only when Code is Allowed
}

// judgementCase is one flow and what each direction's Judgement must say.
type judgementCase struct {
	from, to, port  string
	egress, ingress judged
}

func (w *world) checkJudgements(t *testing.T, cases []judgementCase) {
	t.Helper()
	for _, c := range cases {
		d := w.decide(c.from, c.to, c.port)
		name := c.from + " -> " + c.to + " " + c.port
		checkJudgement(t, name+" egress", d.Egress, c.egress)
		checkJudgement(t, name+" ingress", d.Ingress, c.ingress)
		want := Allow
		if d.Egress.Verdict == Deny || d.Ingress.Verdict == Deny {
			want = Deny
		}
		if d.Verdict != want {
			t.Errorf("%s: Decision.Verdict %v, but egress %v and ingress %v", name, d.Verdict, d.Egress.Verdict, d.Ingress.Verdict)
		}
	}
}

func checkJudgement(t *testing.T, name string, got Judgement, want judged) {
	t.Helper()
	wantVerdict := Allow
	if want.code == NoRuleAllows {
		wantVerdict = Deny
	}
	if got.Code != want.code || got.Verdict != wantVerdict {
		t.Errorf("%s: got %v (%v), want %v (%v)", name, got.Code, got.Verdict, want.code, wantVerdict)
	}
	gotPod := ""
	if got.Pod != nil {
		gotPod = got.Pod.Key()
	}
	if gotPod != want.pod {
		t.Errorf("%s: judged pod %q, want %q", name, gotPod, want.pod)
	}
	if want.code != Allowed {
		return
	}
	gotPolicy := ""
	if got.Policy != nil {
		gotPolicy = got.Policy.String()
	}
	if gotPolicy != want.policy || got.Rule != want.rule {
		t.Errorf("%s: allowed by %q rule %d, want %q rule %d", name, gotPolicy, got.Rule, want.policy, want.rule)
	}
}

// ---------------------------------------------------------------------------------------
// Seeds 000, 001, 002: the 3-tier web → api → db application.

// threeTier is the application of seeds 000–002: a user reaches web on 80, web calls api on
// 5000, api calls db on 3306. The labels cover both seeds' spellings of the db policy.
func threeTier(policies ...*networkingv1.NetworkPolicy) State {
	return State{
		Namespaces: []Namespace{ns("shop", nil)},
		Pods: []Pod{
			tweak(pod("shop", "web", policytest.Labels("name", "web-pod", "role", "web", "server", "web"), dual(1, 10)...),
				withPorts(namedPort("http", flow.TCP, 80))),
			tweak(pod("shop", "api", policytest.Labels("name", "api-pod", "server", "api"), dual(1, 20)...),
				withPorts(namedPort("api", flow.TCP, 5000))),
			tweak(pod("shop", "db", policytest.Labels("role", "db", "server", "db"), dual(1, 30)...),
				withPorts(namedPort("mysql", flow.TCP, 3306))),
		},
		Policies: policies,
	}
}

// TestSeedThreeTierDBPolicy: "only the API server should be able to talk to the DB on port
// 3306", with the db-policy of seed 001 (server: db / server: api) and of seeds 000 and 002
// (role: db / name: api-pod). Both say the same thing.
func TestSeedThreeTierDBPolicy(t *testing.T) {
	variants := []struct {
		name   string
		policy *networkingv1.NetworkPolicy
	}{
		{"seed 001: server=db from server=api", policytest.NetworkPolicy("shop", "db-policy", policytest.Selector("server", "db"),
			policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("server", "api")), policytest.Port("3306/TCP"))))},
		{"seeds 000 and 002: role=db from name=api-pod", policytest.NetworkPolicy("shop", "db-policy", policytest.Selector("role", "db"),
			policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("name", "api-pod")), policytest.Port("3306/TCP"))))},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			w := compileWorld(t, threeTier(v.policy))
			w.check(t, []flowCase{
				// The policy's point: api reaches db, web does not.
				{"shop/api", "shop/db", "3306/TCP", Allow},
				{"shop/web", "shop/db", "3306/TCP", Deny},
				{user, "shop/db", "3306/TCP", Deny},
				{"shop/api@v6", "shop/db@v6", "3306/TCP", Allow},
				{"shop/web@v6", "shop/db@v6", "3306/TCP", Deny},
				// Only TCP 3306.
				{"shop/api", "shop/db", "22/TCP", Deny},
				{"shop/api", "shop/db", "3306/UDP", Deny},
				{"shop/api", "shop/db", "ICMP", Deny},
				// Pods no policy selects keep the default allow-all.
				{user, "shop/web", "80/TCP", Allow},
				{"shop/web", "shop/api", "5000/TCP", Allow},
				// policyTypes [Ingress]: db's egress stays open.
				{"shop/db", "shop/api", "5000/TCP", Allow},
				{"shop/db", outside, "443/TCP", Allow},
			})
			w.checkJudgements(t, []judgementCase{
				{"shop/api", "shop/db", "3306/TCP",
					judged{code: NotIsolated, pod: "shop/api"},
					judged{code: Allowed, pod: "shop/db", policy: "shop/db-policy", rule: 0}},
				{"shop/web", "shop/db", "3306/TCP",
					judged{code: NotIsolated, pod: "shop/web"},
					judged{code: NoRuleAllows, pod: "shop/db"}},
				{user, "shop/web", "80/TCP",
					judged{code: NoPod},
					judged{code: NotIsolated, pod: "shop/web"}},
			})
		})
	}
}

// TestSeedThreeTierAllRules: the six rules seed 000 lists, one policy per tier: web takes
// 80 from anyone and calls api on 5000; api takes 5000 from web and calls db on 3306; db
// takes 3306 from api.
func TestSeedThreeTierAllRules(t *testing.T) {
	w := compileWorld(t, threeTier(
		policytest.NetworkPolicy("shop", "web-policy", policytest.Selector("role", "web"),
			policytest.Ingress(policytest.From(policytest.Port("80/TCP"))),
			policytest.Egress(policytest.To(policytest.Pods(policytest.Selector("server", "api")), policytest.Port("5000/TCP")))),
		policytest.NetworkPolicy("shop", "api-policy", policytest.Selector("server", "api"),
			policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("role", "web")), policytest.Port("5000/TCP"))),
			policytest.Egress(policytest.To(policytest.Pods(policytest.Selector("role", "db")), policytest.Port("3306/TCP")))),
		policytest.NetworkPolicy("shop", "db-policy", policytest.Selector("role", "db"),
			policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("name", "api-pod")), policytest.Port("3306/TCP")))),
	))
	w.check(t, []flowCase{
		// The request path.
		{user, "shop/web", "80/TCP", Allow},
		{user6, "shop/web@v6", "80/TCP", Allow},
		{"shop/web", "shop/api", "5000/TCP", Allow},
		{"shop/api", "shop/db", "3306/TCP", Allow},
		{"shop/api@v6", "shop/db@v6", "3306/TCP", Allow},
		// Everything else.
		{"shop/web", "shop/db", "3306/TCP", Deny}, // web must not reach the database
		{user, "shop/api", "5000/TCP", Deny},
		{user, "shop/db", "3306/TCP", Deny},
		{user, "shop/web", "443/TCP", Deny},
		{"shop/web", "shop/api", "80/TCP", Deny},
		{"shop/api", "shop/web", "80/TCP", Deny}, // web would take it; api's egress does not
		{"shop/api", outside, "443/TCP", Deny},
		{"shop/web", "192.0.2.53", "53/UDP", Deny}, // no DNS rule
		{"shop/db", "shop/api", "5000/TCP", Deny},  // db's egress is open; api takes only web
	})
	w.checkJudgements(t, []judgementCase{
		{"shop/web", "shop/db", "3306/TCP",
			judged{code: NoRuleAllows, pod: "shop/web"},
			judged{code: NoRuleAllows, pod: "shop/db"}},
		{"shop/api", "shop/db", "3306/TCP",
			judged{code: Allowed, pod: "shop/api", policy: "shop/api-policy", rule: 0},
			judged{code: Allowed, pod: "shop/db", policy: "shop/db-policy", rule: 0}},
		{"shop/api", "shop/web", "80/TCP",
			judged{code: NoRuleAllows, pod: "shop/api"},
			judged{code: Allowed, pod: "shop/web", policy: "shop/web-policy", rule: 0}},
	})
}

// ---------------------------------------------------------------------------------------
// Seeds 001 and 003: namespaceSelector and podSelector, AND versus OR.

// TestSeedNamespaceSelectorAndVsOr: seed 001's "common mistake: dashes create new rules".
// Two peers are OR; one peer with both selectors is AND.
func TestSeedNamespaceSelectorAndVsOr(t *testing.T) {
	state := func(from ...policytest.Elem) State {
		return State{
			Namespaces: []Namespace{
				ns("prod", policytest.Labels("team", "team-b")),
				ns("team-a", policytest.Labels("team", "team-a")),
				ns("team-c", nil),
			},
			Pods: []Pod{
				pod("prod", "db", policytest.Labels("server", "db"), dual(2, 10)...),
				pod("prod", "api", policytest.Labels("server", "api"), dual(2, 11)...),
				pod("prod", "web", policytest.Labels("server", "web"), dual(2, 12)...),
				pod("team-a", "api", policytest.Labels("server", "api"), dual(3, 10)...),
				pod("team-a", "worker", policytest.Labels("server", "worker"), dual(3, 11)...),
				pod("team-c", "api", policytest.Labels("server", "api"), dual(4, 10)...),
			},
			Policies: pols(policytest.NetworkPolicy("prod", "db-policy", policytest.Selector("server", "db"),
				policytest.Ingress(policytest.From(from...)))),
		}
	}

	t.Run("two peers: OR", func(t *testing.T) {
		w := compileWorld(t, state(
			policytest.Pods(policytest.Selector("server", "api")),
			policytest.Namespaces(policytest.Selector("team", "team-a"))))
		w.check(t, []flowCase{
			{"prod/api", "prod/db", "3306/TCP", Allow},      // podSelector: the policy's namespace
			{"team-a/api", "prod/db", "3306/TCP", Allow},    // namespaceSelector
			{"team-a/worker", "prod/db", "3306/TCP", Allow}, // any pod of team-a
			// Seed 001 says a podSelector alone allows "any API pod with matching label in any
			// namespace". Upstream (and SPEC §2) says the policy's namespace only.
			{"team-c/api", "prod/db", "3306/TCP", Deny},
			{"prod/web", "prod/db", "3306/TCP", Deny},
			{"team-a/worker@v6", "prod/db@v6", "3306/TCP", Allow},
			{"team-c/api@v6", "prod/db@v6", "3306/TCP", Deny},
		})
	})
	t.Run("one peer with both selectors: AND", func(t *testing.T) {
		w := compileWorld(t, state(
			policytest.PodsIn(policytest.Selector("team", "team-a"), policytest.Selector("server", "api"))))
		w.check(t, []flowCase{
			{"team-a/api", "prod/db", "3306/TCP", Allow},
			{"prod/api", "prod/db", "3306/TCP", Deny},      // right pod, wrong namespace
			{"team-a/worker", "prod/db", "3306/TCP", Deny}, // right namespace, wrong pod
			{"team-c/api", "prod/db", "3306/TCP", Deny},
			{"prod/web", "prod/db", "3306/TCP", Deny},
			{"team-a/api@v6", "prod/db@v6", "3306/TCP", Allow},
			{"prod/api@v6", "prod/db@v6", "3306/TCP", Deny},
		})
	})
}

// seed003 is the cluster of seed 003: a db in namespace prod (labelled name=prod, which the
// seed selects on), api pods in prod and in staging.
func seed003(policies ...*networkingv1.NetworkPolicy) State {
	return State{
		Namespaces: []Namespace{ns("prod", policytest.Labels("name", "prod")), ns("staging", policytest.Labels("name", "staging"))},
		Pods: []Pod{
			tweak(pod("prod", "db", policytest.Labels("role", "db"), dual(5, 10)...), withPorts(namedPort("mongo", flow.TCP, 27017))),
			pod("prod", "api", policytest.Labels("name", "api-pod"), dual(5, 11)...),
			pod("prod", "frontend", policytest.Labels("name", "frontend"), dual(5, 12)...),
			pod("staging", "api", policytest.Labels("name", "api-pod"), dual(6, 11)...),
		},
		Policies: policies,
	}
}

// seed003APIPeer is seed 003's "matching pod label AND namespace label".
func seed003APIPeer() policytest.Elem {
	return policytest.PodsIn(policytest.Selector("name", "prod"), policytest.Selector("name", "api-pod"))
}

// TestSeedDBFromProdAPI: seed 003's db-network-policy: only api-pod of namespace prod, on
// 27017.
func TestSeedDBFromProdAPI(t *testing.T) {
	w := compileWorld(t, seed003(policytest.NetworkPolicy("prod", "db-network-policy", policytest.Selector("role", "db"),
		policytest.Ingress(policytest.From(seed003APIPeer(), policytest.Port("27017/TCP"))))))
	w.check(t, []flowCase{
		{"prod/api", "prod/db", "27017/TCP", Allow},
		{"prod/api@v6", "prod/db@v6", "27017/TCP", Allow},
		{"staging/api", "prod/db", "27017/TCP", Deny}, // same pod label, namespace name=staging
		{"prod/frontend", "prod/db", "27017/TCP", Deny},
		{"prod/api", "prod/db", "3306/TCP", Deny},
		{"prod/db", "staging/api", "80/TCP", Allow}, // ingress only
	})
}

// TestSeedExternalBackupHost: seed 003 lets the backup host 192.168.99.10 reach the db by
// ipBlock, in the same rule as the api peer; other outside hosts stay out.
func TestSeedExternalBackupHost(t *testing.T) {
	const backup = "192.168.99.10"
	w := compileWorld(t, seed003(policytest.NetworkPolicy("prod", "db-network-policy", policytest.Selector("role", "db"),
		policytest.Ingress(policytest.From(seed003APIPeer(), policytest.CIDR(backup+"/32"), policytest.Port("27017/TCP"))))))
	w.check(t, []flowCase{
		{backup, "prod/db", "27017/TCP", Allow},
		{"192.168.99.11", "prod/db", "27017/TCP", Deny},
		{"192.168.99.9", "prod/db", "27017/TCP", Deny},
		{user, "prod/db", "27017/TCP", Deny},
		{user6, "prod/db@v6", "27017/TCP", Deny},
		{backup, "prod/db", "22/TCP", Deny}, // the rule's ports apply to every peer of it
		{backup, "prod/db", "27017/UDP", Deny},
		{"prod/api", "prod/db", "27017/TCP", Allow},
		{"staging/api", "prod/db", "27017/TCP", Deny},
	})
	w.checkJudgements(t, []judgementCase{
		{backup, "prod/db", "27017/TCP",
			judged{code: NoPod},
			judged{code: Allowed, pod: "prod/db", policy: "prod/db-network-policy", rule: 0}},
		{"192.168.99.11", "prod/db", "27017/TCP",
			judged{code: NoPod},
			judged{code: NoRuleAllows, pod: "prod/db"}},
	})
}

// TestSeedDBEgressToBackupHost: seed 003's "trivial egress-only example": the db may only
// send to 192.168.99.10 on TCP 80; its ingress is not isolated.
func TestSeedDBEgressToBackupHost(t *testing.T) {
	w := compileWorld(t, seed003(policytest.NetworkPolicy("prod", "db-network-policy", policytest.Selector("role", "db"),
		policytest.Types(typeEgress),
		policytest.Egress(policytest.To(policytest.CIDR("192.168.99.10/32"), policytest.Port("80/TCP"))))))
	w.check(t, []flowCase{
		{"prod/db", "192.168.99.10", "80/TCP", Allow},
		{"prod/db", "192.168.99.10", "443/TCP", Deny},
		{"prod/db", "192.168.99.11", "80/TCP", Deny},
		{"prod/db@v6", "2001:db8::10", "80/TCP", Deny},
		{"prod/db", "prod/api", "80/TCP", Deny},
		{"prod/api", "prod/db", "27017/TCP", Allow},
		{"staging/api", "prod/db", "27017/TCP", Allow},
	})
	w.checkJudgements(t, []judgementCase{
		{"prod/db", "prod/api", "80/TCP",
			judged{code: NoRuleAllows, pod: "prod/db"},
			judged{code: NotIsolated, pod: "prod/api"}},
		{"prod/db", "192.168.99.10", "80/TCP",
			judged{code: Allowed, pod: "prod/db", policy: "prod/db-network-policy", rule: 0},
			judged{code: NoPod}},
	})
}

// kubeDNS is a cluster DNS pod in kube-system.
func kubeDNS(subnet int) (Namespace, Pod) {
	return ns("kube-system", nil), tweak(pod("kube-system", "coredns", policytest.Labels("k8s-app", "kube-dns"), dual(subnet, 53)...),
		withPorts(namedPort("dns", flow.UDP, 53), namedPort("dns-tcp", flow.TCP, 53)))
}

// TestSeedInternalPolicy: seed 003's exercise: internal may call payroll on 8080 and mysql
// on 3306, and nothing else, not even DNS.
func TestSeedInternalPolicy(t *testing.T) {
	dnsNs, dnsPod := kubeDNS(9)
	w := compileWorld(t, State{
		Namespaces: []Namespace{ns("default", nil), dnsNs},
		Pods: []Pod{
			pod("default", "internal", policytest.Labels("name", "internal"), dual(7, 10)...),
			pod("default", "payroll", policytest.Labels("name", "payroll"), dual(7, 11)...),
			pod("default", "mysql", policytest.Labels("name", "mysql"), dual(7, 12)...),
			pod("default", "other", policytest.Labels("name", "other"), dual(7, 13)...),
			dnsPod,
		},
		Policies: pols(policytest.NetworkPolicy("default", "internal-policy", policytest.Selector("name", "internal"),
			policytest.Types(typeEgress),
			policytest.Egress(
				policytest.To(policytest.Pods(policytest.Selector("name", "payroll")), policytest.Port("8080/TCP")),
				policytest.To(policytest.Pods(policytest.Selector("name", "mysql")), policytest.Port("3306/TCP"))))),
	})
	w.check(t, []flowCase{
		{"default/internal", "default/payroll", "8080/TCP", Allow},
		{"default/internal", "default/mysql", "3306/TCP", Allow},
		{"default/internal@v6", "default/mysql@v6", "3306/TCP", Allow},
		// Each port goes with its own peer.
		{"default/internal", "default/payroll", "3306/TCP", Deny},
		{"default/internal", "default/mysql", "8080/TCP", Deny},
		{"default/internal", "default/payroll", "8080/UDP", Deny},
		{"default/internal", "default/payroll", "ICMP", Deny},
		{"default/internal", "default/other", "8080/TCP", Deny},
		{"default/internal", "kube-system/coredns", "53/UDP", Deny},
		{"default/internal", "kube-system/coredns", "53/TCP", Deny},
		{"default/internal", outside, "443/TCP", Deny},
		// Ingress of internal is not isolated, and the others are not selected.
		{"default/payroll", "default/internal", "80/TCP", Allow},
		{"default/other", "default/mysql", "3306/TCP", Allow},
		{"default/other", outside, "443/TCP", Allow},
	})
	w.checkJudgements(t, []judgementCase{
		{"default/internal", "default/payroll", "8080/TCP",
			judged{code: Allowed, pod: "default/internal", policy: "default/internal-policy", rule: 0},
			judged{code: NotIsolated, pod: "default/payroll"}},
		{"default/internal", "default/mysql", "3306/TCP",
			judged{code: Allowed, pod: "default/internal", policy: "default/internal-policy", rule: 1},
			judged{code: NotIsolated, pod: "default/mysql"}},
		{"default/internal", "kube-system/coredns", "53/UDP",
			judged{code: NoRuleAllows, pod: "default/internal"},
			judged{code: NotIsolated, pod: "kube-system/coredns"}},
	})
}

// ---------------------------------------------------------------------------------------
// Seed 004: the kubernetes-network-policy-recipes examples.

// seed004 is the cluster of seed 004's recipes: frontend and backend in default, cassandra
// in its own namespace, cluster DNS in kube-system. Namespaces carry the ns=<name> label
// the recipes select on.
func seed004(policies ...*networkingv1.NetworkPolicy) State {
	dnsNs, dnsPod := kubeDNS(19)
	dnsNs.Labels["ns"] = "kube-system"
	return State{
		Namespaces: []Namespace{ns("default", policytest.Labels("ns", "default")),
			ns("cassandra", policytest.Labels("ns", "cassandra")), dnsNs},
		Pods: []Pod{
			pod("default", "frontend", policytest.Labels("run", "frontend"), dual(10, 10)...),
			pod("default", "backend", policytest.Labels("run", "backend"), dual(10, 11)...),
			pod("default", "other", policytest.Labels("run", "other"), dual(10, 12)...),
			pod("cassandra", "cassandra", policytest.Labels("run", "cassandra"), dual(11, 10)...),
			pod("cassandra", "helper", policytest.Labels("run", "helper"), dual(11, 11)...),
			dnsPod,
		},
		Policies: policies,
	}
}

// The seed 004 recipes.
func backendWithEgress() *networkingv1.NetworkPolicy {
	return policytest.NetworkPolicy("default", "backend", policytest.Selector("run", "backend"),
		policytest.Types(typeIngress, typeEgress),
		policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("run", "frontend")))),
		policytest.Egress(policytest.To(policytest.Namespaces(policytest.Selector("ns", "cassandra")))))
}

func backendIngressOnly() *networkingv1.NetworkPolicy {
	return policytest.NetworkPolicy("default", "backend", policytest.Selector("run", "backend"),
		policytest.Types(typeIngress),
		policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("run", "frontend")))))
}

func cassandraDeny() *networkingv1.NetworkPolicy {
	return policytest.NetworkPolicy("cassandra", "cassandra-deny", policytest.Selector(),
		policytest.Types(typeIngress, typeEgress))
}

func cassandraFromDefault() *networkingv1.NetworkPolicy {
	return policytest.NetworkPolicy("cassandra", "cassandra", policytest.Selector("run", "cassandra"),
		policytest.Types(typeIngress),
		policytest.Ingress(policytest.From(policytest.Namespaces(policytest.Selector("ns", "default")))))
}

// TestSeedCassandra: seed 004's backend and cassandra recipes, alone and combined.
func TestSeedCassandra(t *testing.T) {
	t.Run("backend: ingress from frontend, egress to the cassandra namespace", func(t *testing.T) {
		w := compileWorld(t, seed004(backendWithEgress()))
		w.check(t, []flowCase{
			{"default/frontend", "default/backend", "8080/TCP", Allow},
			{"default/frontend@v6", "default/backend@v6", "8080/TCP", Allow},
			{"default/other", "default/backend", "8080/TCP", Deny},
			{"cassandra/cassandra", "default/backend", "8080/TCP", Deny},
			{"default/backend", "cassandra/cassandra", "9042/TCP", Allow},
			{"default/backend", "cassandra/helper", "7000/TCP", Allow}, // every pod of the namespace
			{"default/backend", "default/frontend", "80/TCP", Deny},
			{"default/backend", "kube-system/coredns", "53/UDP", Deny},
			{"default/backend", outside, "443/TCP", Deny},
			{"default/frontend", "default/other", "80/TCP", Allow},
		})
	})
	t.Run("backend: ingress only", func(t *testing.T) {
		w := compileWorld(t, seed004(backendIngressOnly()))
		w.check(t, []flowCase{
			{"default/frontend", "default/backend", "8080/TCP", Allow},
			{"default/other", "default/backend", "8080/TCP", Deny},
			{"default/backend", "default/frontend", "80/TCP", Allow},
			{"default/backend", outside, "443/TCP", Allow},
		})
	})
	t.Run("cassandra-deny: nothing in or out of namespace cassandra", func(t *testing.T) {
		w := compileWorld(t, seed004(cassandraDeny()))
		w.check(t, []flowCase{
			{"default/backend", "cassandra/cassandra", "9042/TCP", Deny},
			{"cassandra/cassandra", "default/backend", "8080/TCP", Deny},
			{"cassandra/helper", "cassandra/cassandra", "9042/TCP", Deny},
			{"cassandra/cassandra", outside, "443/TCP", Deny},
			{"cassandra/cassandra@v6", "2001:db8::80", "443/TCP", Deny},
			{"cassandra/cassandra", "kube-system/coredns", "53/UDP", Deny},
			{"cassandra/cassandra", "cassandra/cassandra", "9042/TCP", Allow}, // a pod to itself
			{"default/frontend", "default/other", "80/TCP", Allow},
		})
	})
	t.Run("cassandra-deny, cassandra and backend together", func(t *testing.T) {
		w := compileWorld(t, seed004(cassandraDeny(), cassandraFromDefault(), backendWithEgress()))
		w.check(t, []flowCase{
			{"default/backend", "cassandra/cassandra", "9042/TCP", Allow},
			{"default/backend@v6", "cassandra/cassandra@v6", "9042/TCP", Allow},
			{"default/frontend", "cassandra/cassandra", "9042/TCP", Allow}, // frontend's egress is open
			{"default/backend", "cassandra/helper", "9042/TCP", Deny},      // only cassandra-deny selects helper
			{"cassandra/cassandra", "default/backend", "8080/TCP", Deny},
			{"cassandra/helper", "cassandra/cassandra", "9042/TCP", Deny},
			{"kube-system/coredns", "cassandra/cassandra", "9042/TCP", Deny}, // not namespace default
		})
		w.checkJudgements(t, []judgementCase{
			{"default/backend", "cassandra/cassandra", "9042/TCP",
				judged{code: Allowed, pod: "default/backend", policy: "default/backend", rule: 0},
				judged{code: Allowed, pod: "cassandra/cassandra", policy: "cassandra/cassandra", rule: 0}},
			{"default/backend", "cassandra/helper", "9042/TCP",
				judged{code: Allowed, pod: "default/backend", policy: "default/backend", rule: 0},
				judged{code: NoRuleAllows, pod: "cassandra/helper"}},
		})
	})
}

// TestSeedDenyAllButDNS: seed 004's "deny all incoming and outgoing traffic from all pods in
// namespace default but allow DNS traffic": egress to port 53 over TCP and UDP, to anywhere;
// no ingress.
func TestSeedDenyAllButDNS(t *testing.T) {
	w := compileWorld(t, seed004(policytest.NetworkPolicy("default", "deny", policytest.Selector(),
		policytest.Types(typeEgress, typeIngress),
		policytest.Egress(policytest.To(policytest.Port("53/TCP"), policytest.Port("53/UDP"))))))
	w.check(t, []flowCase{
		{"default/frontend", "kube-system/coredns", "53/UDP", Allow},
		{"default/frontend", "kube-system/coredns", "53/TCP", Allow},
		{"default/frontend@v6", "kube-system/coredns@v6", "53/UDP", Allow},
		{"default/frontend", "192.0.2.53", "53/UDP", Allow}, // anywhere
		{"default/frontend@v6", "2001:db8::53", "53/UDP", Allow},
		{"default/frontend", "kube-system/coredns", "53/SCTP", Deny},
		{"default/frontend", "kube-system/coredns", "5353/UDP", Deny},
		{"default/frontend", "kube-system/coredns", "ICMP", Deny},
		{"default/frontend", outside, "443/TCP", Deny},
		{"default/frontend", "default/backend", "80/TCP", Deny},
		{"default/frontend", "default/backend", "53/UDP", Deny}, // egress allows it, backend's ingress does not
		{"kube-system/coredns", "default/frontend", "80/TCP", Deny},
		{user, "default/frontend", "80/TCP", Deny},
		{"default/frontend", "default/frontend", "80/TCP", Allow}, // a pod to itself
		{"kube-system/coredns", outside, "443/TCP", Allow},        // kube-system is not isolated
	})
	w.checkJudgements(t, []judgementCase{
		{"default/frontend", "default/backend", "53/UDP",
			judged{code: Allowed, pod: "default/frontend", policy: "default/deny", rule: 0},
			judged{code: NoRuleAllows, pod: "default/backend"}},
		{"default/frontend", "kube-system/coredns", "53/UDP",
			judged{code: Allowed, pod: "default/frontend", policy: "default/deny", rule: 0},
			judged{code: NotIsolated, pod: "kube-system/coredns"}},
	})
}

// TestSeedDenyAll: seed 004's "deny all incoming and outgoing traffic from all pods in
// namespace default", DNS included.
func TestSeedDenyAll(t *testing.T) {
	w := compileWorld(t, seed004(policytest.NetworkPolicy("default", "deny", policytest.Selector(),
		policytest.Types(typeEgress, typeIngress))))
	w.check(t, []flowCase{
		{"default/frontend", "kube-system/coredns", "53/UDP", Deny},
		{"default/frontend", "default/backend", "80/TCP", Deny},
		{"default/backend", "default/frontend", "80/TCP", Deny},
		{"default/frontend@v6", "default/backend@v6", "80/TCP", Deny},
		{"cassandra/cassandra", "default/frontend", "80/TCP", Deny},
		{user, "default/frontend", "80/TCP", Deny},
		{"default/frontend", outside, "443/TCP", Deny},
		{"default/frontend", "default/frontend", "80/TCP", Allow},
		{"cassandra/cassandra", "cassandra/helper", "80/TCP", Allow},
	})
	w.checkJudgements(t, []judgementCase{
		{"default/frontend", "default/backend", "80/TCP",
			judged{code: NoRuleAllows, pod: "default/frontend"},
			judged{code: NoRuleAllows, pod: "default/backend"}},
		{"default/frontend", "default/frontend", "80/TCP",
			judged{code: Self, pod: "default/frontend"},
			judged{code: Self, pod: "default/frontend"}},
	})
}

// TestSeedFrontendToBackend: seed 004's "allows frontend pods to communicate with backend
// pods": an egress rule without ports allows every protocol and port to backend.
func TestSeedFrontendToBackend(t *testing.T) {
	w := compileWorld(t, seed004(policytest.NetworkPolicy("default", "frontend", policytest.Selector("run", "frontend"),
		policytest.Types(typeEgress),
		policytest.Egress(policytest.To(policytest.Pods(policytest.Selector("run", "backend")))))))
	w.check(t, []flowCase{
		{"default/frontend", "default/backend", "80/TCP", Allow},
		{"default/frontend", "default/backend", "8080/TCP", Allow},
		{"default/frontend", "default/backend", "53/UDP", Allow},
		{"default/frontend", "default/backend", "9/SCTP", Allow},
		{"default/frontend", "default/backend", "ICMP", Allow},
		{"default/frontend@v6", "default/backend@v6", "ICMPv6", Allow},
		{"default/frontend", "default/other", "80/TCP", Deny},
		{"default/frontend", "cassandra/cassandra", "9042/TCP", Deny},
		{"default/frontend", "kube-system/coredns", "53/UDP", Deny},
		{"default/frontend", outside, "80/TCP", Deny},
		{"default/backend", "default/frontend", "80/TCP", Allow},
		{"default/other", "default/backend", "80/TCP", Allow},
	})
}

// TestSeedMergedPoliciesEquivalence: seed 004 says example2a and example2b "combined/merged
// are the same as" example. Both are checked against what SPEC §2 says over a grid of
// flows, and against each other.
func TestSeedMergedPoliciesEquivalence(t *testing.T) {
	rule0 := policytest.To(policytest.Namespaces(policytest.Selector("id", "ns1")), policytest.Port("80/TCP"))
	rule1 := policytest.To(policytest.Pods(policytest.Selector("id", "backend")))
	example := policytest.NetworkPolicy("default", "example", policytest.Selector("id", "frontend"),
		policytest.Types(typeEgress), policytest.Egress(rule0, rule1))
	example2a := policytest.NetworkPolicy("default", "example2a", policytest.Selector("id", "frontend"),
		policytest.Types(typeEgress), policytest.Egress(rule0))
	example2b := policytest.NetworkPolicy("default", "example2b", policytest.Selector("id", "frontend"),
		policytest.Types(typeEgress), policytest.Egress(rule1))

	state := func(policies ...*networkingv1.NetworkPolicy) State {
		return State{
			Namespaces: []Namespace{ns("default", nil), ns("ns1", policytest.Labels("id", "ns1")), ns("ns2", policytest.Labels("id", "ns2"))},
			Pods: []Pod{
				pod("default", "frontend", policytest.Labels("id", "frontend"), dual(12, 10)...),
				pod("default", "backend", policytest.Labels("id", "backend"), dual(12, 11)...),
				pod("default", "other", policytest.Labels("id", "other"), dual(12, 12)...),
				pod("ns1", "svc", policytest.Labels("id", "svc"), dual(13, 10)...),
				pod("ns1", "backend", policytest.Labels("id", "backend"), dual(13, 11)...),
				pod("ns2", "backend", policytest.Labels("id", "backend"), dual(14, 11)...),
			},
			Policies: policies,
		}
	}

	// What the policy says, from SPEC §2: (namespace id=ns1 AND TCP 80) OR (pod id=backend
	// in default, any protocol).
	fromFrontend := func(to, port string) Verdict {
		switch to {
		case "default/backend":
			return Allow
		case "ns1/svc", "ns1/backend":
			if port == "80/TCP" {
				return Allow
			}
		}
		return Deny
	}
	var cases []flowCase
	for _, to := range []string{"default/backend", "default/other", "ns1/svc", "ns1/backend", "ns2/backend", outside} {
		for _, port := range []string{"80/TCP", "443/TCP", "80/UDP", "53/UDP", "80/SCTP", "ICMP"} {
			cases = append(cases, flowCase{"default/frontend", to, port, fromFrontend(to, port)})
			if to != outside {
				v6port := port
				if port == "ICMP" {
					v6port = "ICMPv6"
				}
				cases = append(cases, flowCase{"default/frontend@v6", to + "@v6", v6port, fromFrontend(to, port)})
			}
			// Unselected pods are not isolated.
			cases = append(cases, flowCase{"default/other", to, port, Allow})
		}
	}

	merged := compileWorld(t, state(example))
	split := compileWorld(t, state(example2a, example2b))
	t.Run("example", func(t *testing.T) { merged.check(t, cases) })
	t.Run("example2a+example2b", func(t *testing.T) { split.check(t, cases) })
	t.Run("same verdicts", func(t *testing.T) {
		for _, c := range cases {
			a, b := merged.decide(c.from, c.to, c.port), split.decide(c.from, c.to, c.port)
			if a.Verdict != b.Verdict {
				t.Errorf("%s -> %s %s: example says %v, example2a+example2b say %v", c.from, c.to, c.port, a.Verdict, b.Verdict)
			}
		}
	})
	t.Run("deciding rules", func(t *testing.T) {
		merged.checkJudgements(t, []judgementCase{
			{"default/frontend", "ns1/svc", "80/TCP",
				judged{code: Allowed, pod: "default/frontend", policy: "default/example", rule: 0},
				judged{code: NotIsolated, pod: "ns1/svc"}},
			{"default/frontend", "default/backend", "443/TCP",
				judged{code: Allowed, pod: "default/frontend", policy: "default/example", rule: 1},
				judged{code: NotIsolated, pod: "default/backend"}},
			{"default/frontend", "ns2/backend", "80/TCP",
				judged{code: NoRuleAllows, pod: "default/frontend"},
				judged{code: NotIsolated, pod: "ns2/backend"}},
		})
		split.checkJudgements(t, []judgementCase{
			{"default/frontend", "ns1/svc", "80/TCP",
				judged{code: Allowed, pod: "default/frontend", policy: "default/example2a", rule: 0},
				judged{code: NotIsolated, pod: "ns1/svc"}},
			{"default/frontend", "default/backend", "443/TCP",
				judged{code: Allowed, pod: "default/frontend", policy: "default/example2b", rule: 0},
				judged{code: NotIsolated, pod: "default/backend"}},
		})
	})
}

// ---------------------------------------------------------------------------------------
// Beyond the seeds: the edges of SPEC §2.

// semantics is the namespace the edge cases live in, with a client, a server and a
// bystander.
func semantics(policies ...*networkingv1.NetworkPolicy) State {
	return State{
		Namespaces: []Namespace{ns("x", nil), ns("y", nil)},
		Pods: []Pod{
			pod("x", "client", policytest.Labels("app", "client"), dual(20, 10)...),
			pod("x", "server", policytest.Labels("app", "server"), dual(20, 11)...),
			pod("x", "other", policytest.Labels("app", "other"), dual(20, 12)...),
			pod("y", "client", policytest.Labels("app", "client"), dual(21, 10)...),
		},
		Policies: policies,
	}
}

func serverPolicy(name string, tweaks ...policytest.Tweak) *networkingv1.NetworkPolicy {
	return policytest.NetworkPolicy("x", name, policytest.Selector("app", "server"), tweaks...)
}

// TestSeedSemantics covers the parts of SPEC §2 that neither the seeds nor upstream's e2e
// cases pin down.
func TestSeedSemantics(t *testing.T) {
	// endPort: a range includes both ends.
	t.Run("endPort range includes port and endPort, not endPort+1", func(t *testing.T) {
		w := compileWorld(t, semantics(
			serverPolicy("ingress-range", policytest.Ingress(policytest.From(policytest.Port("32000-32768/TCP")))),
			policytest.NetworkPolicy("x", "egress-range", policytest.Selector("app", "client"),
				policytest.Egress(policytest.To(policytest.Port("32000-32768/UDP"))))))
		w.check(t, []flowCase{
			{"y/client", "x/server", "31999/TCP", Deny},
			{"y/client", "x/server", "32000/TCP", Allow},
			{"y/client", "x/server", "32001/TCP", Allow},
			{"y/client", "x/server", "32768/TCP", Allow},
			{"y/client", "x/server", "32769/TCP", Deny},
			{"y/client@v6", "x/server@v6", "32768/TCP", Allow},
			{"y/client", "x/server", "32000/UDP", Deny},
			{"x/client", outside, "31999/UDP", Deny},
			{"x/client", outside, "32000/UDP", Allow},
			{"x/client", outside, "32768/UDP", Allow},
			{"x/client", outside, "32769/UDP", Deny},
			{"x/client", outside, "32768/TCP", Deny},
		})
	})

	// A named port matches a container port with that name AND the rule's protocol (TCP
	// when omitted).
	t.Run("named port: name matches but protocol differs", func(t *testing.T) {
		ports := withPorts(namedPort("dns", flow.UDP, 53), namedPort("serve-80-udp", flow.UDP, 80), namedPort("http", flow.TCP, 8080))
		state := State{
			Namespaces: []Namespace{ns("x", nil)},
			Pods: []Pod{
				pod("x", "client", policytest.Labels("app", "client"), dual(22, 10)...),
				tweak(pod("x", "udp-name-tcp-rule", policytest.Labels("app", "s1"), dual(22, 11)...), ports),
				tweak(pod("x", "dns-udp-rule", policytest.Labels("app", "s2"), dual(22, 12)...), ports),
				tweak(pod("x", "dns-no-protocol", policytest.Labels("app", "s3"), dual(22, 13)...), ports),
			},
			Policies: pols(
				policytest.NetworkPolicy("x", "s1", policytest.Selector("app", "s1"),
					policytest.Ingress(policytest.From(policytest.Port("serve-80-udp/TCP")))),
				policytest.NetworkPolicy("x", "s2", policytest.Selector("app", "s2"),
					policytest.Ingress(policytest.From(policytest.Port("dns/UDP")))),
				policytest.NetworkPolicy("x", "s3", policytest.Selector("app", "s3"),
					policytest.Ingress(policytest.From(policytest.Port("dns"))))),
		}
		w := compileWorld(t, state)
		w.check(t, []flowCase{
			{"x/client", "x/udp-name-tcp-rule", "80/TCP", Deny},
			{"x/client", "x/udp-name-tcp-rule", "80/UDP", Deny},
			{"x/client", "x/dns-udp-rule", "53/UDP", Allow},
			{"x/client@v6", "x/dns-udp-rule@v6", "53/UDP", Allow},
			{"x/client", "x/dns-udp-rule", "53/TCP", Deny},
			{"x/client", "x/dns-no-protocol", "53/UDP", Deny},
			{"x/client", "x/dns-no-protocol", "53/TCP", Deny},
		})
	})

	// For egress the named port resolves on the destination pod, never on the source.
	t.Run("named port resolves on the destination pod for egress", func(t *testing.T) {
		w := compileWorld(t, State{
			Namespaces: []Namespace{ns("x", nil)},
			Pods: []Pod{
				tweak(pod("x", "client", policytest.Labels("app", "client"), dual(23, 10)...), withPorts(namedPort("http", flow.TCP, 7070))),
				tweak(pod("x", "srv1", policytest.Labels("app", "srv"), dual(23, 11)...), withPorts(namedPort("http", flow.TCP, 8080))),
				tweak(pod("x", "srv2", policytest.Labels("app", "srv"), dual(23, 12)...), withPorts(namedPort("http", flow.TCP, 9090))),
				tweak(pod("x", "srv3", policytest.Labels("app", "srv"), dual(23, 13)...), withPorts(namedPort("web", flow.TCP, 8080))),
			},
			Policies: pols(policytest.NetworkPolicy("x", "client-http", policytest.Selector("app", "client"),
				policytest.Egress(policytest.To(policytest.Port("http"))))),
		})
		w.check(t, []flowCase{
			{"x/client", "x/srv1", "8080/TCP", Allow},
			{"x/client", "x/srv1", "9090/TCP", Deny},
			{"x/client", "x/srv2", "9090/TCP", Allow},
			{"x/client@v6", "x/srv2@v6", "9090/TCP", Allow},
			{"x/client", "x/srv2", "8080/TCP", Deny},
			{"x/client", "x/srv3", "8080/TCP", Deny}, // 8080 has another name there
			{"x/client", "x/srv1", "7070/TCP", Deny}, // the client's own http port means nothing
			{"x/client", outside, "8080/TCP", Deny},  // no pod, nothing to resolve the name on
		})
	})

	t.Run("protocol-only port entry matches every port of that protocol", func(t *testing.T) {
		w := compileWorld(t, semantics(serverPolicy("udp-only",
			policytest.Ingress(policytest.From(policytest.Port("/UDP"))))))
		w.check(t, []flowCase{
			{"x/client", "x/server", "1/UDP", Allow},
			{"x/client", "x/server", "53/UDP", Allow},
			{"x/client", "x/server", "65535/UDP", Allow},
			{"x/client@v6", "x/server@v6", "53/UDP", Allow},
			{"x/client", "x/server", "53/TCP", Deny},
			{"x/client", "x/server", "53/SCTP", Deny},
			{"x/client", "x/server", "ICMP", Deny},
		})
	})

	t.Run("rule without ports matches every protocol, ICMP included", func(t *testing.T) {
		w := compileWorld(t, semantics(
			serverPolicy("from-client",
				policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("app", "client"))))),
			policytest.NetworkPolicy("x", "other-tcp-80", policytest.Selector("app", "other"),
				policytest.Ingress(policytest.From(policytest.Port("80/TCP"))))))
		w.check(t, []flowCase{
			{"x/client", "x/server", "ICMP", Allow},
			{"x/client@v6", "x/server@v6", "ICMPv6", Allow},
			{"x/client", "x/server", "80/SCTP", Allow},
			{"x/client", "x/server", "12345/UDP", Allow},
			{"x/other", "x/server", "ICMP", Deny},
			{"x/client", "x/other", "80/TCP", Allow},
			{"x/client", "x/other", "ICMP", Deny}, // a rule with ports allows only those
			{"x/client@v6", "x/other@v6", "ICMPv6", Deny},
		})
	})

	// Both addresses of a pod are the pod; an ipBlock covers one family only.
	t.Run("dual-stack: either address of a pod is the pod", func(t *testing.T) {
		clientV4 := dual(20, 10)[0] + "/32"
		w := compileWorld(t, semantics(
			serverPolicy("from-client-pods",
				policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("app", "client"))))),
			policytest.NetworkPolicy("x", "other-from-client-v4-block", policytest.Selector("app", "other"),
				policytest.Ingress(policytest.From(policytest.CIDR(clientV4)))),
			policytest.NetworkPolicy("x", "client-egress", policytest.Selector("app", "client"),
				policytest.Egress(policytest.To(policytest.Pods(policytest.Selector("app", "server"))))),
		))
		w.check(t, []flowCase{
			{"x/client", "x/server", "80/TCP", Allow},
			{"x/client@v6", "x/server@v6", "80/TCP", Allow},
			{"x/other@v6", "x/server@v6", "80/TCP", Deny},
			{"x/client", "x/other", "80/TCP", Deny},         // client egress: server only
			{"x/client@v6", "x/other@v6", "80/TCP", Deny},   // same over IPv6
			{"x/client@v6", "2001:db8::1", "80/TCP", Deny},  // client egress over IPv6
			{"x/server@v6", "x/other@v6", "80/TCP", Deny},   // the block is IPv4 only
			{"x/server", "x/other", "80/TCP", Deny},         // not the client's address
			{"y/client@v6", "x/server@v6", "80/TCP", Deny},  // podSelector: namespace x only
			{"y/client@v6", "x/client@v6", "80/TCP", Allow}, // client's ingress is open
		})
		// The IPv4 block admits the client's IPv4 address.
		w2 := compileWorld(t, semantics(
			policytest.NetworkPolicy("x", "other-from-client-v4-block", policytest.Selector("app", "other"),
				policytest.Ingress(policytest.From(policytest.CIDR(clientV4))))))
		w2.check(t, []flowCase{
			{"x/client", "x/other", "80/TCP", Allow},
			{"x/client@v6", "x/other@v6", "80/TCP", Deny},
		})
	})

	// Traffic between a pod and its own node is always allowed: the node's addresses and
	// hostNetwork pods on it. Another node's addresses are not exempt.
	t.Run("own node is always allowed, another node is not", func(t *testing.T) {
		w := compileWorld(t, State{
			Namespaces: []Namespace{ns("x", nil)},
			Nodes: []Node{
				node("n1", "172.18.0.2", "fd00:172:18::2"),
				node("n2", "172.18.0.3", "fd00:172:18::3"),
			},
			Pods: []Pod{
				tweak(pod("x", "a", policytest.Labels("app", "a"), dual(24, 10)...), onNode("n1")),
				tweak(pod("x", "b", policytest.Labels("app", "b"), dual(25, 10)...), onNode("n2")),
				// hostNetwork pods carry their node's addresses; a deny-all in their
				// namespace does not select them.
				tweak(pod("x", "agent-n1", policytest.Labels("app", "agent"), "172.18.0.2", "fd00:172:18::2"), onNode("n1"), inHostNetwork()),
				tweak(pod("x", "agent-n2", policytest.Labels("app", "agent"), "172.18.0.3", "fd00:172:18::3"), onNode("n2"), inHostNetwork()),
			},
			Policies: pols(policytest.NetworkPolicy("x", "deny-all", policytest.Selector(),
				policytest.Types(typeIngress, typeEgress))),
		})
		w.check(t, []flowCase{
			{"172.18.0.2", "x/a", "80/TCP", Allow},
			{"fd00:172:18::2", "x/a@v6", "80/TCP", Allow},
			{"x/a", "172.18.0.2", "10250/TCP", Allow},
			{"x/a@v6", "fd00:172:18::2", "10250/TCP", Allow},
			{"172.18.0.3", "x/a", "80/TCP", Deny},
			{"x/a", "172.18.0.3", "10250/TCP", Deny},
			{"172.18.0.3", "x/b", "80/TCP", Allow},
			{"172.18.0.2", "x/b", "80/TCP", Deny},
			{"x/agent-n1", "x/a", "80/TCP", Allow}, // the hostNetwork pod on a's node
			{"x/agent-n1", "x/b", "80/TCP", Deny},
			{"x/agent-n2", "x/b", "80/TCP", Allow},
			{"x/agent-n1", outside, "443/TCP", Allow}, // node traffic, no pod to isolate
			{user, "x/agent-n1", "22/TCP", Allow},
			{"x/a", "x/b", "80/TCP", Deny},
		})
		w.checkJudgements(t, []judgementCase{
			{"172.18.0.2", "x/a", "80/TCP",
				judged{code: NoPod},
				judged{code: OwnNode, pod: "x/a"}},
			{"x/a", "172.18.0.2", "10250/TCP",
				judged{code: OwnNode, pod: "x/a"},
				judged{code: NoPod}},
			{"172.18.0.3", "x/a", "80/TCP",
				judged{code: NoPod},
				judged{code: NoRuleAllows, pod: "x/a"}},
		})
	})

	// Node addresses come from Node objects and from hostNetwork pods (doc.go): an address a
	// hostNetwork pod holds is its node's, even when the Node object does not list it or is
	// missing.
	t.Run("hostNetwork pod addresses count as their node's", func(t *testing.T) {
		w := compileWorld(t, State{
			Namespaces: []Namespace{ns("x", nil)},
			Nodes:      []Node{node("n1", "172.18.0.2")},
			Pods: []Pod{
				tweak(pod("x", "a", policytest.Labels("app", "a"), dual(24, 10)...), onNode("n1")),
				tweak(pod("x", "b", policytest.Labels("app", "b"), dual(25, 10)...), onNode("n2")),
				tweak(pod("x", "agent-n1", nil, "172.18.0.4"), onNode("n1"), inHostNetwork()),
				tweak(pod("x", "agent-n2", nil, "172.18.0.3", "fd00:172:18::3"), onNode("n2"), inHostNetwork()),
			},
			Policies: pols(policytest.NetworkPolicy("x", "deny-all", policytest.Selector(),
				policytest.Types(typeIngress, typeEgress))),
		})
		w.check(t, []flowCase{
			{"172.18.0.4", "x/a", "80/TCP", Allow}, // not in n1's Node object
			{"x/a", "172.18.0.4", "10250/TCP", Allow},
			{"172.18.0.4", "x/b", "80/TCP", Deny},
			{"172.18.0.3", "x/b", "80/TCP", Allow}, // n2 has no Node object
			{"fd00:172:18::3", "x/b@v6", "80/TCP", Allow},
			{"172.18.0.3", "x/a", "80/TCP", Deny},
			{"172.18.0.2", "x/b", "80/TCP", Deny},
		})
	})

	// ipBlock matches pod addresses on ingress too, and except works in both families.
	t.Run("ingress ipBlock with except over both families", func(t *testing.T) {
		client := dual(20, 10)
		w := compileWorld(t, semantics(serverPolicy("pods-but-client", policytest.Ingress(policytest.From(
			policytest.CIDR("10.244.0.0/16", client[0]+"/32"),
			policytest.CIDR("fd00:10:244::/56", client[1]+"/128"))))))
		w.check(t, []flowCase{
			{"x/other", "x/server", "80/TCP", Allow},
			{"x/other@v6", "x/server@v6", "80/TCP", Allow},
			{"y/client", "x/server", "80/TCP", Allow}, // a pod of another namespace, by address
			{"x/client", "x/server", "80/TCP", Deny},
			{"x/client@v6", "x/server@v6", "80/TCP", Deny},
			{user, "x/server", "80/TCP", Deny},
			{user6, "x/server@v6", "80/TCP", Deny},
			{"10.244.255.255", "x/server", "80/TCP", Allow},
			{"10.245.0.1", "x/server", "80/TCP", Deny},
			{"fd00:10:244:ff:ffff:ffff:ffff:ffff", "x/server@v6", "80/TCP", Allow},
			{"fd00:10:244:100::1", "x/server@v6", "80/TCP", Deny},
		})
	})

	t.Run("a pod may always talk to itself", func(t *testing.T) {
		w := compileWorld(t, semantics(policytest.NetworkPolicy("x", "deny-all", policytest.Selector(),
			policytest.Types(typeIngress, typeEgress))))
		w.check(t, []flowCase{
			{"x/server", "x/server", "80/TCP", Allow},
			{"x/server@v6", "x/server@v6", "80/TCP", Allow},
			{"x/server", "x/server", "53/UDP", Allow},
			{"x/server", "x/server", "ICMP", Allow},
			{"x/server", "x/client", "80/TCP", Deny},
		})
		w.checkJudgements(t, []judgementCase{
			{"x/server@v6", "x/server@v6", "80/TCP",
				judged{code: Self, pod: "x/server"},
				judged{code: Self, pod: "x/server"}},
		})
	})

	// Succeeded and Failed pods hold no address: another pod may reuse it, and it must not
	// be judged as the finished pod.
	t.Run("terminated pod's address is not the pod", func(t *testing.T) {
		pods := []Pod{
			pod("x", "server", policytest.Labels("app", "server"), dual(26, 10)...),
			pod("x", "client", policytest.Labels("app", "client"), dual(26, 11)...),
			pod("x", "trusted", policytest.Labels("role", "trusted"), dual(26, 12)...),
			tweak(pod("x", "done", policytest.Labels("role", "trusted"), "10.244.26.50"), inPhase("Succeeded")),
			tweak(pod("x", "failed", policytest.Labels("role", "trusted"), "10.244.26.51"), inPhase("Failed")),
			pod("x", "reuser", policytest.Labels("role", "untrusted"), "10.244.26.50"),
		}
		policies := pols(
			serverPolicy("from-trusted",
				policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("role", "trusted"))))),
			policytest.NetworkPolicy("x", "client-to-trusted", policytest.Selector("app", "client"),
				policytest.Egress(policytest.To(policytest.Pods(policytest.Selector("role", "trusted"))))))
		reversed := slices.Clone(pods)
		slices.Reverse(reversed)
		for _, order := range []struct {
			name string
			pods []Pod
		}{{"terminated pods first", pods}, {"terminated pods last", reversed}} {
			t.Run(order.name, func(t *testing.T) {
				w := compileWorld(t, State{Namespaces: []Namespace{ns("x", nil)}, Pods: order.pods, Policies: policies})
				w.check(t, []flowCase{
					{"x/trusted", "x/server", "80/TCP", Allow},
					{"10.244.26.50", "x/server", "80/TCP", Deny}, // now x/reuser's
					{"10.244.26.51", "x/server", "80/TCP", Deny}, // nobody's
					{"x/client", "x/trusted", "80/TCP", Allow},
					{"x/client", "10.244.26.50", "80/TCP", Deny},
					{"x/client", "10.244.26.51", "80/TCP", Deny},
				})
				w.checkJudgements(t, []judgementCase{
					{"10.244.26.50", "x/server", "80/TCP",
						judged{code: NotIsolated, pod: "x/reuser"},
						judged{code: NoRuleAllows, pod: "x/server"}},
					{"10.244.26.51", "x/server", "80/TCP",
						judged{code: NoPod},
						judged{code: NoRuleAllows, pod: "x/server"}},
				})
			})
		}
	})

	t.Run("pod without an address", func(t *testing.T) {
		st := semantics(serverPolicy("from-pending",
			policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("app", "pending"))))))
		st.Pods = append(st.Pods, tweak(pod("x", "pending", policytest.Labels("app", "pending")), inPhase("Pending")))
		w := compileWorld(t, st)
		w.check(t, []flowCase{
			{"x/client", "x/server", "80/TCP", Deny},
			{"10.244.20.99", "x/server", "80/TCP", Deny},
			{"x/server", "x/client", "80/TCP", Allow},
		})
	})

	t.Run("policy selecting no pod isolates nothing", func(t *testing.T) {
		w := compileWorld(t, semantics(
			policytest.NetworkPolicy("x", "selects-nothing", policytest.Selector("app", "nonexistent"),
				policytest.Types(typeIngress, typeEgress)),
			policytest.NetworkPolicy("y", "deny-all-in-y", policytest.Selector(),
				policytest.Types(typeIngress, typeEgress))))
		w.check(t, []flowCase{
			{"x/client", "x/server", "80/TCP", Allow},
			{"x/server@v6", "x/client@v6", "ICMPv6", Allow},
			{"x/server", outside, "443/TCP", Allow},
			{"y/client", "x/server", "80/TCP", Deny}, // namespace y's policy isolates y only
			{"x/client", "y/client", "80/TCP", Deny},
		})
		w.checkJudgements(t, []judgementCase{
			{"x/client", "x/server", "80/TCP",
				judged{code: NotIsolated, pod: "x/client"},
				judged{code: NotIsolated, pod: "x/server"}},
		})
	})

	// Omitted policyTypes = Ingress, plus Egress when there is an egress section; listed
	// policyTypes are taken as given.
	t.Run("policyTypes defaulting", func(t *testing.T) {
		toOther := policytest.To(policytest.Pods(policytest.Selector("app", "other")), policytest.Port("5432/TCP"))
		fromClient := policytest.From(policytest.Pods(policytest.Selector("app", "client")))
		cases := []struct {
			name   string
			policy *networkingv1.NetworkPolicy
			flows  []flowCase
		}{
			{"egress section, no policyTypes: Ingress and Egress",
				serverPolicy("p", policytest.Egress(toOther), policytest.Types()),
				[]flowCase{
					{"x/client", "x/server", "80/TCP", Deny}, // isolated for ingress, no ingress rules
					{"x/server", "x/other", "5432/TCP", Allow},
					{"x/server", "x/client", "80/TCP", Deny},
					{"x/server@v6", "x/client@v6", "80/TCP", Deny},
				}},
			{"ingress section, no policyTypes: Ingress only",
				serverPolicy("p", policytest.Ingress(fromClient), policytest.Types()),
				[]flowCase{
					{"x/client", "x/server", "80/TCP", Allow},
					{"x/other", "x/server", "80/TCP", Deny},
					{"x/server", outside, "443/TCP", Allow},
				}},
			{"no rules, no policyTypes: isolated for ingress",
				serverPolicy("p"),
				[]flowCase{
					{"x/client", "x/server", "80/TCP", Deny},
					{"x/server", "x/client", "80/TCP", Allow},
				}},
			{"policyTypes [Ingress] with an egress section: egress not isolated",
				serverPolicy("p",
					policytest.Ingress(fromClient), policytest.Egress(toOther), policytest.Types(typeIngress)),
				[]flowCase{
					{"x/server", "x/client", "80/TCP", Allow},
					{"x/server", outside, "443/TCP", Allow},
					{"x/client", "x/server", "80/TCP", Allow},
					{"x/other", "x/server", "80/TCP", Deny},
				}},
			{"policyTypes [Egress] with an ingress section: ingress not isolated",
				serverPolicy("p",
					policytest.Ingress(fromClient), policytest.Egress(toOther), policytest.Types(typeEgress)),
				[]flowCase{
					{"x/other", "x/server", "80/TCP", Allow},
					{"x/server", "x/other", "5432/TCP", Allow},
					{"x/server", "x/client", "80/TCP", Deny},
				}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				compileWorld(t, semantics(c.policy)).check(t, c.flows)
			})
		}
	})

	t.Run("several policies selecting a pod: the union of their rules", func(t *testing.T) {
		w := compileWorld(t, semantics(
			serverPolicy("client-80",
				policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("app", "client")), policytest.Port("80/TCP")))),
			serverPolicy("other-81",
				policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("app", "other")), policytest.Port("81/TCP")))),
			// Egress only: isolates egress and leaves ingress to the two above.
			serverPolicy("egress-to-other",
				policytest.Egress(policytest.To(policytest.Pods(policytest.Selector("app", "other")))))))
		w.check(t, []flowCase{
			{"x/client", "x/server", "80/TCP", Allow},
			{"x/client", "x/server", "81/TCP", Deny},
			{"x/other", "x/server", "81/TCP", Allow},
			{"x/other@v6", "x/server@v6", "81/TCP", Allow},
			{"x/other", "x/server", "80/TCP", Deny},
			{"y/client", "x/server", "80/TCP", Deny},
			{"x/server", "x/other", "9999/UDP", Allow},
			{"x/server", "x/client", "80/TCP", Deny},
		})
		w.checkJudgements(t, []judgementCase{
			{"x/other", "x/server", "81/TCP",
				judged{code: NotIsolated, pod: "x/other"},
				judged{code: Allowed, pod: "x/server", policy: "x/other-81", rule: 0}},
			{"x/client", "x/server", "81/TCP",
				judged{code: NotIsolated, pod: "x/client"},
				judged{code: NoRuleAllows, pod: "x/server"}},
			{"x/server", "x/other", "9999/UDP",
				judged{code: Allowed, pod: "x/server", policy: "x/egress-to-other", rule: 0},
				judged{code: NotIsolated, pod: "x/other"}},
		})
	})

	// In, NotIn, Exists and DoesNotExist, in pod and namespace selectors. NotIn and
	// DoesNotExist match objects without the key.
	t.Run("matchExpressions", func(t *testing.T) {
		targets := []struct {
			name string
			sel  *metav1.LabelSelector
		}{
			{"in", policytest.Exprs(policytest.In("tier", "web", "api"))},
			{"notin", policytest.Exprs(policytest.NotIn("tier", "web"))},
			{"exists", policytest.Exprs(policytest.Exists("canary"))},
			{"doesnotexist", policytest.Exprs(policytest.DoesNotExist("canary"))},
			{"labels-and-exprs", &metav1.LabelSelector{MatchLabels: policytest.Labels("tier", "api"),
				MatchExpressions: []metav1.LabelSelectorRequirement{policytest.Exists("canary")}}},
		}
		st := State{
			Namespaces: []Namespace{ns("x", nil)},
			Pods: []Pod{
				pod("x", "web", policytest.Labels("tier", "web"), dual(27, 10)...),
				pod("x", "api", policytest.Labels("tier", "api", "canary", "true"), dual(27, 11)...),
				pod("x", "db", policytest.Labels("tier", "db"), dual(27, 12)...),
				pod("x", "bare", nil, dual(27, 13)...),
			},
		}
		for i, tg := range targets {
			st.Pods = append(st.Pods, pod("x", "t-"+tg.name, policytest.Labels("target", tg.name), dual(28, 10+i)...))
			st.Policies = append(st.Policies, policytest.NetworkPolicy("x", tg.name, policytest.Selector("target", tg.name),
				policytest.Ingress(policytest.From(policytest.Pods(tg.sel)))))
		}
		allowed := map[string][]string{
			"in":               {"web", "api"},
			"notin":            {"api", "db", "bare"},
			"exists":           {"api"},
			"doesnotexist":     {"web", "db", "bare"},
			"labels-and-exprs": {"api"},
		}
		var cases []flowCase
		for _, tg := range targets {
			for _, src := range []string{"web", "api", "db", "bare"} {
				want := Deny
				if slices.Contains(allowed[tg.name], src) {
					want = Allow
				}
				cases = append(cases, flowCase{"x/" + src, "x/t-" + tg.name, "80/TCP", want})
			}
		}
		compileWorld(t, st).check(t, cases)
	})

	t.Run("matchExpressions on namespaces", func(t *testing.T) {
		w := compileWorld(t, State{
			Namespaces: []Namespace{ns("prod", policytest.Labels("env", "prod")), ns("staging", policytest.Labels("env", "staging")),
				ns("scratch", nil)},
			Pods: []Pod{
				pod("prod", "notin-target", policytest.Labels("app", "notin"), dual(29, 10)...),
				pod("prod", "exists-target", policytest.Labels("app", "exists"), dual(29, 11)...),
				pod("prod", "client", policytest.Labels("app", "client"), dual(29, 12)...),
				pod("staging", "client", policytest.Labels("app", "client"), dual(30, 12)...),
				pod("scratch", "client", policytest.Labels("app", "client"), dual(31, 12)...),
			},
			Policies: pols(
				policytest.NetworkPolicy("prod", "notin", policytest.Selector("app", "notin"),
					policytest.Ingress(policytest.From(policytest.Namespaces(policytest.Exprs(policytest.NotIn("env", "prod")))))),
				policytest.NetworkPolicy("prod", "exists", policytest.Selector("app", "exists"),
					policytest.Ingress(policytest.From(policytest.Namespaces(policytest.Exprs(policytest.Exists("env"))))))),
		})
		w.check(t, []flowCase{
			{"prod/client", "prod/notin-target", "80/TCP", Deny},
			{"staging/client", "prod/notin-target", "80/TCP", Allow},
			{"scratch/client", "prod/notin-target", "80/TCP", Allow}, // no env label: NotIn matches
			{"prod/client", "prod/exists-target", "80/TCP", Allow},
			{"staging/client", "prod/exists-target", "80/TCP", Allow},
			{"scratch/client", "prod/exists-target", "80/TCP", Deny},
		})
	})
}
