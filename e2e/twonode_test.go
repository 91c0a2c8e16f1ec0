package e2e

import (
	"testing"

	"github.com/podwall/podwall/policy/policytest"
)

// Egress is judged on the source pod's node, ingress on the destination pod's node, and a
// connection passes only when both allow it. Each node's agent sees only its own side, so
// the per-node verdict counters and queue-rule counters show which node decided what.
//
//	node-1: a (egress-isolated: only to b), c (not isolated)
//	node-2: b (ingress-isolated: only from c), d (not isolated)
func TestTwoNodes(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddNode("node-2", 2)
	e.AddPods("node-1", "app/a", "app/c")
	e.AddPods("node-2", "app/b", "app/d")
	e.write(
		policytest.Namespace("app", nil),
		e.podObject("app/a", map[string]string{"app": "a"}),
		e.podObject("app/b", map[string]string{"app": "b"}),
		e.podObject("app/c", map[string]string{"app": "c"}),
		e.podObject("app/d", map[string]string{"app": "d"}),
		policytest.NetworkPolicy("app", "a-only-to-b", policytest.Selector("app", "a"),
			policytest.Egress(policytest.To(policytest.Pods(policytest.Selector("app", "b"))))),
		policytest.NetworkPolicy("app", "b-only-from-c", policytest.Selector("app", "b"),
			policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("app", "c"))))),
	)
	e.Serve(80)
	e.start()

	// What each node says about one connection, per family: "allow" or "deny" when its
	// agent judges the first packet, "" when the node never queues it. The queue rule that
	// fires is the isolated pod's: egress on node-1 (a), ingress on node-2 (b).
	steps := []struct {
		name         string
		p            probe
		node1, node2 string
	}{
		// node-1 allows a's egress, node-2 denies b's ingress.
		{"a->b", probe{from: "app/a", to: "app/b", port: 80, allow: false}, "allow", "deny"},
		// node-1 does not queue (c is not isolated), node-2 allows b's ingress.
		{"c->b", probe{from: "app/c", to: "app/b", port: 80, allow: true}, "", "allow"},
		// node-1 denies a's egress; node-2 never sees the packet.
		{"a->d", probe{from: "app/a", to: "app/d", port: 80, allow: false}, "deny", ""},
		// Same node: b's ingress denies.
		{"d->b", probe{from: "app/d", to: "app/b", port: 80, allow: false}, "", "deny"},
		// Nobody isolated, nobody queues.
		{"c->d", probe{from: "app/c", to: "app/d", port: 80, allow: true}, "", ""},
	}
	for _, proto := range []string{"UDP", "TCP"} {
		for _, s := range steps {
			t.Run(proto+"/"+s.name, func(t *testing.T) {
				e := e.sub(t)
				p := s.p
				p.proto = proto
				before := map[string][2]float64{}
				beforeQ := map[string]queued{}
				for _, n := range []string{"node-1", "node-2"} {
					a, d := e.verdicts(n)
					before[n] = [2]float64{a, d}
					beforeQ[n] = e.queueCounts(n)
				}
				e.check(p)
				for n, want := range map[string]string{"node-1": s.node1, "node-2": s.node2} {
					a, d := e.verdicts(n)
					allowed, denied := a-before[n][0], d-before[n][1]
					q := e.queueCounts(n).sub(beforeQ[n])
					// One packet per family: UDP sends one datagram; TCP's SYN is not
					// retransmitted within the probe timeout (initial RTO 1 s), and an
					// accepted SYN's reply makes the rest of the connection established.
					var wantAllow, wantDeny float64
					switch want {
					case "allow":
						wantAllow = 2
					case "deny":
						wantDeny = 2
					}
					if allowed != wantAllow || denied != wantDeny {
						t.Errorf("%s: %v allowed, %v denied; want %v, %v", n, allowed, denied, wantAllow, wantDeny)
					}
					wantRule := map[string]string{"node-1": "egress", "node-2": "ingress"}[n]
					var wantQ uint64
					if want != "" {
						wantQ = 1
					}
					if q.Rules[wantRule+"4"] != wantQ || q.Rules[wantRule+"6"] != wantQ || q.Queued() != 2*wantQ || q.Kernel != 2*wantQ || q.Agent != 2*wantQ {
						t.Errorf("%s queued: %v; want %d on each %s rule and nothing else", n, q, wantQ, wantRule)
					}
				}
			})
		}
	}
}
