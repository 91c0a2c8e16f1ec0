package decisions

import (
	"errors"
	"net/netip"
	"runtime"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/policytest"
)

// The seeds' 3-tier application on node-1, plus web's egress policy and a pod on node-2:
//
//	prod/web  10.244.1.2  role=web            egress only to role=api on TCP 5000 (web-egress)
//	prod/api  10.244.1.3  role=api name=api-pod
//	prod/db   10.244.1.4  role=db             ingress only from name=api-pod on TCP 3306 (db-policy)
//	dev/x     10.244.2.2  (node-2)
const node = "node-1"

var (
	web  = netip.MustParseAddr("10.244.1.2")
	api  = netip.MustParseAddr("10.244.1.3")
	db   = netip.MustParseAddr("10.244.1.4")
	x    = netip.MustParseAddr("10.244.2.2")
	ext  = netip.MustParseAddr("192.0.2.10")
	web6 = netip.MustParseAddr("fd00:10:244:1::2")
	db6  = netip.MustParseAddr("fd00:10:244:1::4")
)

func pod(ns, name, node string, labels map[string]string, ips ...netip.Addr) policy.Pod {
	return policy.Pod{Namespace: ns, Name: name, Node: node, Labels: labels, IPs: ips, Phase: "Running"}
}

func threeTier() policy.State {
	return policy.State{
		Namespaces: []policy.Namespace{{Name: "prod"}, {Name: "dev"}},
		Pods: []policy.Pod{
			pod("prod", "web", node, map[string]string{"role": "web"}, web, web6),
			pod("prod", "api", node, map[string]string{"role": "api", "name": "api-pod"}, api),
			pod("prod", "db", node, map[string]string{"role": "db"}, db, db6),
			pod("dev", "x", "node-2", nil, x),
		},
		Policies: []*networkingv1.NetworkPolicy{
			policytest.NetworkPolicy("prod", "db-policy", policytest.Selector("role", "db"), policytest.Ingress(
				policytest.From(policytest.Pods(policytest.Selector("name", "api-pod")), policytest.Port("3306/TCP")))),
			policytest.NetworkPolicy("prod", "web-egress", policytest.Selector("role", "web"), policytest.Egress(
				policytest.To(policytest.Pods(policytest.Selector("role", "api")), policytest.Port("5000/TCP")),
				policytest.To(policytest.Pods(policytest.Selector("role", "db"))))),
		},
	}
}

// snapshot compiles threeTier and holds it until the test ends, as the agent holds the
// snapshot in force: records refer to it weakly.
func snapshot(t testing.TB) *policy.Snapshot {
	t.Helper()
	s := unheldSnapshot(t)
	t.Cleanup(func() { runtime.KeepAlive(s) })
	return s
}

// unheldSnapshot compiles threeTier; nothing but the caller holds it.
func unheldSnapshot(t testing.TB) *policy.Snapshot {
	t.Helper()
	c := policy.NewCompiler(node)
	if err := c.Replace(threeTier()); err != nil {
		t.Fatal(err)
	}
	return c.Snapshot()
}

var t0 = time.Date(2026, 11, 21, 10, 0, 0, 123456789, time.UTC)

// fixtureHub makes the records' snapshot references, as the agent's hub does.
var fixtureHub Hub

// record makes the Record the agent would for a flow the snapshot decides.
func record(s *policy.Snapshot, src, dst netip.Addr, proto flow.Proto, port uint16) *Record {
	f := flow.Flow{Src: src, Dst: dst, Proto: proto, Port: port}
	d := s.Decide(f)
	r := &Record{Time: t0, Flow: f, SrcPort: 40000, Allow: d.LocalVerdict() == policy.Allow, Latency: 1500 * time.Nanosecond, Queue: 100}
	fixtureHub.SetDecision(r, &d, s)
	return r
}

func malformed(s *policy.Snapshot) Record {
	return Record{Time: t0, Flow: flow.Flow{Src: web, Dst: db, Proto: flow.TCP}, Queue: 101,
		Generation: s.Generation(), Node: s.Node(), Snapshot: fixtureHub.Ref(s), Malformed: errors.New("packet: truncated")}
}
