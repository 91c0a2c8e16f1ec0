package e2e

import (
	"testing"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy/policytest"
)

// threeTierEnv is the seeds' 3-tier application on one node, enforced: user → web:80 →
// api:5000 → db:3306, db-policy admitting only api on TCP 3306. args are extra flags of the
// agent.
func threeTierEnv(t *testing.T, args ...string) *env {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "prod/web", "prod/api", "prod/db")
	e.AddExternal("user", 0, "node-1")
	e.write(
		policytest.Namespace("prod", nil),
		e.podObject("prod/web", map[string]string{"role": "web"}),
		e.podObject("prod/api", map[string]string{"role": "api", "name": "api-pod"}),
		e.podObject("prod/db", map[string]string{"role": "db"}),
		lab.DBPolicy("prod"),
	)
	e.Serve(80, 5000, 3306)
	e.start(args...)
	return e
}

// The seeds' 3-tier application: user → web:80 → api:5000 → db:3306 with db-policy.
// web → db is denied, api → db allowed, and replies flow (the probes read an echo).
func TestThreeTier(t *testing.T) {
	e := threeTierEnv(t)
	e.check(
		probe{from: "user", to: "prod/web", port: 80, allow: true},
		probe{from: "prod/web", to: "prod/api", port: 5000, allow: true},
		probe{from: "prod/api", to: "prod/db", port: 3306, allow: true},
		probe{from: "prod/web", to: "prod/db", port: 3306, allow: false},
		probe{from: "user", to: "prod/db", port: 3306, allow: false},
		probe{from: "prod/api", to: "prod/db", port: 80, allow: false},
		probe{from: "prod/api", to: "prod/db", port: 3306, proto: "UDP", allow: false},
		probe{from: "prod/db", to: "prod/web", port: 80, allow: true}, // db is not egress-isolated
	)
	// Only connections to db are queued (db is the only isolated pod): 5 per family, one
	// packet each; the 2 allowed ones accepted, the denied SYNs (retransmitted within the
	// probe timeout, answered by the cache) dropped.
	allowed := e.metric("node-1", "podwall_datapath_verdicts_total", "verdict", "allow")
	denied := e.metric("node-1", "podwall_datapath_verdicts_total", "verdict", "deny")
	if allowed != 2 {
		t.Errorf("allowed verdicts = %v, want 2 (api -> db over IPv4 and IPv6, one queued packet each)", allowed)
	}
	if denied < 8 {
		t.Errorf("denied verdicts = %v, want at least 8 (4 denied probes x 2 families)", denied)
	}
}
