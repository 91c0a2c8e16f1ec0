package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy/manifests"
	"github.com/podwall/podwall/policy/policytest"
)

// An edit of the manifests takes effect without a restart; a broken edit changes nothing
// (the last good policy stays enforced, the agent stays ready), an invalid policy is
// enforced fail-closed alone, and the next good edit applies. The test also measures how long an edit takes to be enforced.
func TestReload(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/client", "app/server")
	base := []any{
		policytest.Namespace("app", nil),
		e.podObject("app/client", map[string]string{"name": "client"}),
		e.podObject("app/server", map[string]string{"name": "server"}),
	}
	// The states the test moves between. Each edit flips client → server:80, by
	// isolating server or not (the kernel's sets change) or by changing its rules (only
	// the compiled snapshot changes).
	server := policytest.Selector("name", "server")
	denyAll := policytest.NetworkPolicy("app", "server", server, policytest.Ingress())
	allowClient := policytest.NetworkPolicy("app", "server", server, policytest.Ingress(
		policytest.From(policytest.Pods(policytest.Selector("name", "client")), policytest.Port("80/TCP"))))
	broken := policytest.NetworkPolicy("app", "server", server, policytest.Ingress(
		policytest.From(policytest.CIDR("10.244.0.0/33"))))
	state := func(policies ...*networkingv1.NetworkPolicy) []any {
		return append(slices.Clone(base), anys(policies)...)
	}
	allowed := probe{from: "app/client", to: "app/server", port: 80, allow: true}
	denied := probe{from: "app/client", to: "app/server", port: 80, allow: false}

	e.Serve(80)
	e.write(state()...)
	e.start()
	e.check(allowed)

	t.Run("allow, deny, allow", func(t *testing.T) {
		e := e.sub(t)
		e.rewrite(state(denyAll)...)
		e.check(denied)
		e.rewrite(state(allowClient)...)
		e.check(allowed)
		e.rewrite(state(denyAll)...)
		e.check(denied)
		e.rewrite(state()...)
		e.check(allowed)
	})

	t.Run("broken edit keeps the last good state", func(t *testing.T) {
		e := e.sub(t)
		e.rewrite(state(allowClient)...)
		_, before := e.readyz("node-1")
		errsBefore := e.metric("node-1", "podwall_source_errors_total")
		if err := os.WriteFile(e.manifests, []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: app\n   labels: {}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := lab.Poll(ctx, 5*time.Millisecond, func() error {
			if n := e.metric("node-1", "podwall_source_errors_total"); n <= errsBefore {
				return fmt.Errorf("podwall_source_errors_total still %v", n)
			}
			return nil
		}); err != nil {
			t.Fatalf("the broken edit was not reported: %v\n%s", err, e.Agents["node-1"].Logs())
		}
		if code, body := e.readyz("node-1"); code != 200 || body != before {
			t.Errorf("after a broken edit /readyz = %d %q, want 200 %q", code, body, before)
		}
		e.check(allowed) // allowClient, the last good state
		e.rewrite(state(denyAll)...)
		e.check(denied)
	})

	// An invalid policy is rejected alone: enforced fail-closed (it isolates server and
	// allows nothing, not even what allowClient, the policy it replaces, allowed), counted,
	// and the agent stays ready; the next good edit applies.
	t.Run("invalid policy fails closed alone", func(t *testing.T) {
		e := e.sub(t)
		e.rewrite(state(allowClient)...)
		e.check(allowed)
		e.rewrite(state(broken)...)
		e.check(denied) // the broken policy would allow 10.244.0.0/16 if it were read as /16
		e.check(probe{from: "app/client", to: "app/server", port: 80, proto: "UDP", allow: false})
		if n := e.metric("node-1", "podwall_policy_invalid", "kind", "NetworkPolicy", "name", "server", "namespace", "app"); n != 1 {
			t.Errorf("podwall_policy_invalid{app/server} = %v, want 1", n)
		}
		if code, _ := e.readyz("node-1"); code != 200 {
			t.Errorf("after an invalid policy /readyz = %d, want 200", code)
		}
		e.rewrite(state(allowClient)...)
		e.check(allowed)
	})

	t.Run("edit to enforcement latency", func(t *testing.T) {
		e := e.sub(t)
		staging := filepath.Join(t.TempDir(), "cluster.yaml")
		states := [][]any{state(denyAll), state(allowClient), state(denyAll), state()}
		want := []bool{false, true, false, true}
		kinds := []string{"isolate (sets change)", "allow by rule (snapshot only)", "deny by rule (snapshot only)", "unisolate (sets change)"}
		byKind := map[string][]time.Duration{}
		// The subtest before left allowClient in force.
		e.rewrite(state()...)
		const edits = 40
		var viaProbe, viaReadyz []time.Duration
		for i := range edits {
			s, allow := states[i%len(states)], want[i%len(states)]
			if err := manifests.Write(staging, s...); err != nil {
				t.Fatal(err)
			}
			_, body := e.readyz("node-1")
			var gen uint64
			fmt.Sscanf(body, "ok generation=%d", &gen)
			renamed := time.Now()
			if err := os.Rename(staging, e.manifests); err != nil {
				t.Fatal(err)
			}
			p, r := e.enforced(renamed, allow, gen)
			viaProbe, viaReadyz = append(viaProbe, p), append(viaReadyz, r)
			k := kinds[i%len(kinds)]
			byKind[k] = append(byKind[k], p)
		}
		e.check(allowed) // the last state, no policy
		t.Logf("edit -> first probe with the new verdict (%d edits): %s", edits, quantiles(viaProbe))
		t.Logf("edit -> /readyz reports the new generation (%d edits): %s", edits, quantiles(viaReadyz))
		for _, k := range kinds {
			t.Logf("  by probe, %s: %s", k, quantiles(byKind[k]))
		}
	})
}

// enforced waits until client → server:80/TCP shows verdict allow and the agent on
// node-1 reports a generation after gen, and returns how long after renamed each
// happened. A probe counts from the moment it started: its SYN is judged at once, and an
// allowed one answers within a millisecond, so staggered probers with short timeouts find
// the first moment of the new verdict within about 5 ms.
func (e *env) enforced(renamed time.Time, allow bool, gen uint64) (viaProbe, viaReadyz time.Duration) {
	e.T.Helper()
	const probers, timeout, pause, limit = 8, 40 * time.Millisecond, 4 * time.Millisecond, 5 * time.Second
	var mu sync.Mutex
	var first time.Time // start of the earliest probe with the new verdict
	var wg sync.WaitGroup
	pr := probe{from: "app/client", to: "app/server", port: 80}
	for i := range probers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * timeout / probers) // stagger
			for {
				start := time.Now()
				err := e.probe("IPv4", pr, timeout)
				if (err == nil) == allow {
					mu.Lock()
					if first.IsZero() || start.Before(first) {
						first = start
					}
					mu.Unlock()
					return
				}
				if time.Since(renamed) > limit {
					return
				}
				time.Sleep(pause) // paced: every allowed probe leaves a socket in TIME_WAIT
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var readyAt time.Time
	err := lab.Poll(ctx, time.Millisecond, func() error {
		g, err := e.Agents["node-1"].Generation(ctx)
		if err != nil {
			return err
		}
		if g <= gen {
			return fmt.Errorf("still at generation %d", g)
		}
		readyAt = time.Now()
		return nil
	})
	wg.Wait()
	if err != nil {
		e.T.Fatalf("agent did not apply the edit within %v: %v", limit, err)
	}
	if first.IsZero() {
		e.T.Fatalf("client -> server did not become allow=%v within %v", allow, limit)
	}
	return max(first.Sub(renamed), 0), readyAt.Sub(renamed)
}

// quantiles formats p50, p90, p99 and max of ds.
func quantiles(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.5) - 1
		return s[min(max(i, 0), len(s)-1)].Round(100 * time.Microsecond)
	}
	return fmt.Sprintf("p50 %v, p90 %v, p99 %v, max %v", q(0.50), q(0.90), q(0.99), s[len(s)-1].Round(100*time.Microsecond))
}

// An agent started on manifests holding an invalid policy becomes ready with the file's
// other objects: the invalid policy isolates the pod it selects and allows nothing, a good
// policy beside it applies, and pods neither selects stay open.
func TestStartWithInvalidPolicy(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/client", "app/server", "app/other")
	e.Serve(80)
	e.write(
		policytest.Namespace("app", nil),
		e.podObject("app/client", map[string]string{"name": "client"}),
		e.podObject("app/server", map[string]string{"name": "server"}),
		e.podObject("app/other", map[string]string{"name": "other"}),
		policytest.NetworkPolicy("app", "bad", policytest.Selector("name", "server"), policytest.Ingress(
			policytest.From(policytest.CIDR("010.244.0.0/16")))),
		policytest.NetworkPolicy("app", "other", policytest.Selector("name", "other"), policytest.Ingress()),
	)
	e.start() // fails the test unless the agent becomes ready
	e.check(
		probe{from: "app/client", to: "app/server", port: 80, allow: false},
		probe{from: "app/client", to: "app/other", port: 80, allow: false},
		probe{from: "app/server", to: "app/client", port: 80, allow: true},
	)
	if n := e.metric("node-1", "podwall_policy_invalid", "kind", "NetworkPolicy", "name", "bad", "namespace", "app"); n != 1 {
		t.Errorf("podwall_policy_invalid{app/bad} = %v, want 1", n)
	}
	if logs := e.Agents["node-1"].Logs(); !strings.Contains(logs, "spec.ingress[0].from[0].ipBlock.cidr") {
		t.Errorf("the rejection is not logged with its field:\n%s", logs)
	}
}
