package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy/policytest"
)

// clusterPolicy returns the ClusterNetworkPolicy name with the spec written in YAML.
func clusterPolicy(t *testing.T, name, spec string) *cnpv1alpha2.ClusterNetworkPolicy {
	t.Helper()
	c := &cnpv1alpha2.ClusterNetworkPolicy{}
	if err := yaml.Unmarshal([]byte(spec), &c.Spec); err != nil {
		t.Fatal(err)
	}
	c.APIVersion, c.Kind, c.Name = cnpv1alpha2.GroupVersion.String(), "ClusterNetworkPolicy", name
	return c
}

// A ClusterNetworkPolicy cuts a pod off from its own node — the node's address, where its
// host-network pods (kubelet, node agents) listen — which NetworkPolicy never does: an Admin
// egress Deny to `nodes`, or to a `networks` CIDR holding the node's address. That traffic
// never crosses the forward hook (it is the node's input): enforced on real packets, TCP
// and UDP, IPv4 and IPv6, for the selected pod only; its established connections to the
// node are revoked. Without ClusterNetworkPolicy no packet between pods and their node is
// queued, and the node's own connections to the pod (its output) are never judged by an
// egress rule.
//
//	node-1 (labelled role=worker): web (app=web), api (app=api)
func TestClusterNetworkPolicyOwnNode(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/web", "app/api")
	nodeObj := e.Nodes["node-1"].Object("node-1")
	nodeObj.Labels = map[string]string{"role": "worker"}
	base := []any{nodeObj, policytest.Namespace("app", nil),
		e.podObject("app/web", map[string]string{"app": "web"}),
		e.podObject("app/api", map[string]string{"app": "api"})}
	node := e.nodeEndpoint("node-1") // a listener in the node's namespace: a host-network pod
	e.Serve(80)
	e.write(base...)
	e.start()
	with := func(cnps ...any) []any { return append(append([]any(nil), base...), cnps...) }
	allOpen := []probe{
		{from: "app/web", to: node, port: 80, allow: true},
		{from: "app/web", to: node, port: 80, proto: "UDP", allow: true},
		{from: "app/api", to: node, port: 80, allow: true},
		{from: node, to: "app/web", port: 80, allow: true},
		{from: node, to: "app/web", port: 80, proto: "UDP", allow: true},
	}

	t.Run("no ClusterNetworkPolicy: never queued", func(t *testing.T) {
		e := e.sub(t)
		before := e.queueCounts("node-1")
		e.check(allOpen...)
		if q := e.queueCounts("node-1").sub(before); q.Queued() != 0 || q.Kernel != 0 || q.Agent != 0 {
			t.Errorf("traffic between pods and their node queued without any ClusterNetworkPolicy: %v", q)
		}
	})

	denyNodes := clusterPolicy(t, "deny-nodes", `
tier: Admin
priority: 10
subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}
egress: [{action: Deny, to: [{nodes: {matchLabels: {role: worker}}}]}]
`)
	t.Run("Admin Deny to nodes", func(t *testing.T) {
		e := e.sub(t)
		ct := e.conntrackOf("node-1")
		hs := []*held{
			e.hold("cut", "IPv4", "app/web", node, "tcp", 80),
			e.hold("cut", "IPv6", "app/web", node, "udp", 80),
			e.hold("kept", "IPv4", "app/api", node, "tcp", 80),
			e.hold("kept", "IPv6", node, "app/web", "tcp", 80),
		}
		edited := time.Now()
		e.rewrite(with(denyNodes)...)
		ct.waitGone(e, edited, hs)
		e.checkHeld(hs)
		before := e.queueCounts("node-1")
		e.check(
			probe{from: "app/web", to: node, port: 80, allow: false},
			probe{from: "app/web", to: node, port: 80, proto: "UDP", allow: false},
			probe{from: "app/api", to: node, port: 80, allow: true},
			probe{from: node, to: "app/web", port: 80, allow: true},
			probe{from: node, to: "app/web", port: 80, proto: "UDP", allow: true},
			probe{from: "app/web", to: "app/api", port: 80, allow: true},
		)
		q := e.queueCounts("node-1").sub(before)
		t.Logf("queued: %v", q)
		if q.Rules["nodeegress4"] == 0 || q.Rules["nodeegress6"] == 0 {
			t.Errorf("web -> node not queued by the input chain: %v", q)
		}
		if q.Rules["nodeingress4"] != 0 || q.Rules["nodeingress6"] != 0 {
			t.Errorf("node -> web queued by the output chain, which no rule can deny: %v", q)
		}
		if got := e.metric("node-1", "podwall_datapath_node_queued_total", "direction", "egress"); got == 0 {
			t.Error("podwall_datapath_node_queued_total{direction=egress} stayed 0")
		}
	})

	t.Run("Admin Deny to a CIDR holding the node's address", func(t *testing.T) {
		e := e.sub(t)
		n := e.Nodes["node-1"]
		cidrs := []netip.Prefix{netip.PrefixFrom(n.UnderlayV4, 24).Masked(), netip.PrefixFrom(n.UnderlayV6, 64).Masked()}
		e.rewrite(with(clusterPolicy(t, "deny-node-cidr", `
tier: Admin
priority: 10
subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}
egress: [{action: Deny, to: [{networks: ["`+cidrs[0].String()+`", "`+cidrs[1].String()+`"]}]}]
`))...)
		e.check(
			probe{from: "app/web", to: node, port: 80, allow: false},
			probe{from: "app/web", to: node, port: 80, proto: "UDP", allow: false},
			probe{from: "app/api", to: node, port: 80, allow: true},
			probe{from: node, to: "app/web", port: 80, allow: true},
			probe{from: "app/web", to: "app/api", port: 80, allow: true},
		)
	})

	t.Run("policy removed: open again, never queued", func(t *testing.T) {
		e := e.sub(t)
		e.rewrite(base...)
		before := e.queueCounts("node-1")
		e.check(allOpen...)
		if q := e.queueCounts("node-1").sub(before); q.Queued() != 0 || q.Kernel != 0 {
			t.Errorf("queued after the ClusterNetworkPolicy went: %v", q)
		}
	})
}

// The kernel's deny cache at the node's input hook: a pod retrying a connection to its own
// node that a ClusterNetworkPolicy denies — its SYN retransmitted, new connections to the same
// port — costs the agent one queued packet, one decision; the kernel drops the repeats
// (counted in podwall_datapath_deny_cache_hits_total). A policy change that allows the flow,
// while the cache still holds it (TTL 10 s here), lets the very next SYN through, judged by
// the new policy.
//
//	node-1 (labelled role=worker): web (app=web)
func TestClusterNetworkPolicyOwnNodeDenyCache(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/web")
	nodeObj := e.Nodes["node-1"].Object("node-1")
	nodeObj.Labels = map[string]string{"role": "worker"}
	base := []any{nodeObj, policytest.Namespace("app", nil), e.podObject("app/web", map[string]string{"app": "web"})}
	node := e.nodeEndpoint("node-1")
	e.Serve(80)
	const deny = `{action: Deny, to: [{nodes: {matchLabels: {role: worker}}}]}`
	policy := func(egress ...string) []any {
		return append(append([]any(nil), base...), clusterPolicy(t, "web-to-node", `
tier: Admin
priority: 10
subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}
egress: [`+strings.Join(egress, ", ")+`]
`))
	}
	e.write(policy(deny)...)
	e.start("--deny-cache-ttl", "10s")
	denies := e.stream("node-1", "?verdict=deny")

	type counts struct{ queued, hits float64 }
	snap := func(fam string) counts {
		q := e.queueCounts("node-1")
		set := map[string]string{"IPv4": "nodeegress4", "IPv6": "nodeegress6"}[fam]
		return counts{float64(q.Rules[set]), e.metric("node-1", "podwall_datapath_deny_cache_hits_total")}
	}
	toNode := probe{from: "app/web", to: node, port: 80}
	for _, fam := range []string{"IPv4", "IPv6"} {
		t.Run(fam, func(t *testing.T) {
			e := e.sub(t)
			before := snap(fam)
			// A SYN and its retransmission (initial RTO 1 s), then three new connections.
			if err := e.probe(fam, toNode, 1500*time.Millisecond); err == nil {
				t.Fatal("a denied connection to the node opened")
			}
			for range 3 {
				if err := e.probe(fam, toNode, 100*time.Millisecond); err == nil {
					t.Fatal("a denied connection to the node opened")
				}
			}
			after := snap(fam)
			if q, h := after.queued-before.queued, after.hits-before.hits; q != 1 || h != 4 {
				t.Errorf("5 SYNs of web -> node: %v queued at input, %v dropped by the deny cache; want 1 and 4", q, h)
			}
			evs, _, err := denies.snapshot()
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, ev := range evs {
				if flowOfEvent(&ev) == e.flowOf(fam, toNode) {
					n++
					if ev.KernelDenyTTLms != 10000 {
						t.Errorf("the deny does not say the kernel drops the repeats: %+v", ev)
					}
				}
			}
			if n != 1 {
				t.Errorf("stream: %d denies of web -> node, want 1", n)
			}
		})
	}

	// Both flows are in the cache for 10 s; the edit accepts TCP 80 to the node before the Deny.
	t.Run("a policy change lets the next SYN through", func(t *testing.T) {
		e := e.sub(t)
		e.rewrite(policy(`{action: Accept, to: [{nodes: {matchLabels: {role: worker}}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}`, deny)...)
		for _, fam := range []string{"IPv4", "IPv6"} {
			before := snap(fam)
			if err := e.probe(fam, toNode, 900*time.Millisecond); err != nil {
				t.Errorf("%s: the first connection after the policy allowed it: %v", fam, err)
			}
			after := snap(fam)
			if q, h := after.queued-before.queued, after.hits-before.hits; q != 1 || h != 0 {
				t.Errorf("%s: %v queued at input, %v dropped by the deny cache; want 1 and 0", fam, q, h)
			}
		}
	})
}

// The new-pod window at the node's input hook: a pod the agent does not know yet (its
// manifest has no address) that a ClusterNetworkPolicy would cut off from its node once
// known is not let through unjudged — its connections to its node are held until the agent
// learns its address, then denied. Without a ClusterNetworkPolicy that could deny it, the
// unknown pod talks to its node at once (nothing held, nothing queued at input); the node →
// pod direction, which no rule here can deny, is never held.
//
//	node-1 (labelled role=worker): new (app=web, address unknown at first)
func TestClusterNetworkPolicyOwnNodeNewPod(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/new")
	nodeObj := e.Nodes["node-1"].Object(e.Nodes["node-1"].Name()) // the agent's node: its pod ranges
	nodeObj.Labels = map[string]string{"role": "worker"}
	web := map[string]string{"app": "web"}
	pending := e.podObject("app/new", web)
	pending.Status = corev1.PodStatus{Phase: corev1.PodPending}
	denyNodes := clusterPolicy(t, "deny-nodes", `
tier: Admin
priority: 10
subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}
egress: [{action: Deny, to: [{nodes: {matchLabels: {role: worker}}}]}]
`)
	objs := func(more ...any) []any {
		return append([]any{nodeObj, policytest.Namespace("app", nil)}, more...)
	}
	node := e.nodeEndpoint("node-1")
	e.Serve(80)
	e.write(objs(pending)...)
	e.start("--hold-timeout", "10s")

	t.Run("no ClusterNetworkPolicy: an unknown pod and its node are never held", func(t *testing.T) {
		e := e.sub(t)
		before := e.queueCounts("node-1")
		e.check(probe{from: "app/new", to: node, port: 80, allow: true}, probe{from: node, to: "app/new", port: 80, allow: true})
		if q := e.queueCounts("node-1").sub(before); q.Queued() != 0 || q.Kernel != 0 {
			t.Errorf("queued: %v, want nothing", q)
		}
	})

	t.Run("held until known, then denied", func(t *testing.T) {
		e := e.sub(t)
		e.rewrite(objs(pending, denyNodes)...)
		type attempt struct {
			fam  string
			done time.Time
			err  error
		}
		attempts := []*attempt{{fam: "IPv4"}, {fam: "IPv6"}}
		var wg sync.WaitGroup
		for _, a := range attempts {
			wg.Go(func() {
				a.err = e.probe(a.fam, probe{from: "app/new", to: node, port: 80}, 4*time.Second)
				a.done = time.Now()
			})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		err := lab.Poll(ctx, 10*time.Millisecond, func() error {
			if n := e.metric("node-1", "podwall_datapath_held"); n < 2 {
				return fmt.Errorf("%v packets held, want 2", n)
			}
			return nil
		})
		// While new is unknown, the node still reaches it: no rule can deny that direction.
		e.check(probe{from: node, to: "app/new", port: 80, allow: true})
		for _, a := range attempts {
			if !a.done.IsZero() && a.err == nil {
				t.Errorf("%s new -> node: connected while the agent did not know app/new", a.fam)
			}
		}
		if err != nil {
			wg.Wait()
			t.Fatalf("%v\n%s", err, e.Agents["node-1"].Logs())
		}
		released := e.metric("node-1", "podwall_datapath_held_released_total")
		e.rewrite(objs(e.podObject("app/new", web), denyNodes)...)
		wg.Wait()
		for _, a := range attempts {
			if a.err == nil {
				t.Errorf("%s new -> node: connected once app/new is known, want denied", a.fam)
			}
		}
		if n := e.metric("node-1", "podwall_datapath_held_released_total") - released; n < 2 {
			t.Errorf("held_released_total grew by %v, want at least 2", n)
		}
		if n := e.metric("node-1", "podwall_datapath_held_expired_total"); n != 0 {
			t.Errorf("held_expired_total %v, want 0: every held packet was judged", n)
		}
		e.check(probe{from: "app/new", to: node, port: 80, allow: false}, probe{from: node, to: "app/new", port: 80, allow: true})
	})
}

// IPv6 neighbour discovery between a pod and its node is the link's plumbing, not a
// connection: a pod that resolves its gateway by solicitation (as with the ptp CNI plugin;
// the lab's pods otherwise hold a permanent entry) keeps its IPv6 traffic under a "no
// internet" ClusterNetworkPolicy — Accept to every pod, then Deny ::/0 and 0.0.0.0/0, which
// holds the node's addresses and ff02::/16 — whose subject the input chain queues. Its
// solicitations are never queued nor denied; its connections to the node are.
//
//	node-1: web (app=web, resolves fe80::1 by solicitation), api
func TestClusterNetworkPolicyOwnNodeNeighbourDiscovery(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/web", "app/api")
	node := e.nodeEndpoint("node-1")
	e.Serve(80)
	e.write(e.Nodes["node-1"].Object(e.Nodes["node-1"].Name()), policytest.Namespace("app", nil),
		e.podObject("app/web", map[string]string{"app": "web"}),
		e.podObject("app/api", map[string]string{"app": "api"}),
		clusterPolicy(t, "no-internet", `
tier: Admin
priority: 10
subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}
egress:
- {action: Accept, to: [{namespaces: {}}]}
- {action: Deny, to: [{networks: ["0.0.0.0/0", "::/0"]}]}
`))
	e.start()
	denies := e.stream("node-1", "?verdict=deny")
	// The node answers for web's gateway, fe80::1, on web's veth; web forgets its permanent
	// entry and every neighbour it learnt.
	ctx := context.Background()
	web := e.Pods["app/web"]
	for _, c := range []struct {
		ns   *lab.NS
		args []string
	}{
		{e.Nodes["node-1"].NS, []string{"-6", "addr", "add", "fe80::1/64", "dev", web.HostVeth, "nodad"}},
		{web.NS, []string{"-6", "neigh", "del", "fe80::1", "dev", "eth0"}},
		{web.NS, []string{"-6", "neigh", "flush", "dev", "eth0"}},
	} {
		if out, err := c.ns.Exec(ctx, "ip", c.args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", c.args, err, out)
		}
	}
	before := e.queueCounts("node-1")
	e.check(
		probe{from: "app/web", to: "app/api", port: 80, allow: true},
		probe{from: "app/web", to: node, port: 80, allow: false},
	)
	if out, _ := web.NS.Exec(ctx, "ip", "-6", "neigh", "show", "fe80::1").CombinedOutput(); !strings.Contains(string(out), "lladdr") {
		t.Errorf("web did not resolve its gateway by solicitation: %q", out)
	}
	evs, _, err := denies.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Protocol == "ICMPv6" {
			t.Errorf("ICMPv6 denied: %s -> %s: %s", ev.Src, ev.Dst, ev.Reason)
		}
	}
	if q := e.queueCounts("node-1").sub(before); q.Rules["nodeegress4"] != 1 || q.Rules["nodeegress6"] != 1 {
		t.Errorf("queued at input: %v, want web -> node only, once per family", q)
	}
}
