package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy/policytest"
)

// The table comes back. While probes of a denied connection run, an operator removes the
// agent's table (`nft flush ruleset`, what restarting nftables.service does, or `nft delete
// table inet podwall`): isolation is gone, and within a second the agent notices, puts the
// table and its sets back from the policy in force, counts the restore and is ready again;
// from then on every probe is denied again, and an allowed connection still works. Emptied
// sets come back too, within two seconds (their elements are compared once a second).
func TestTableRestored(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "prod/client", "prod/db", "prod/api")
	e.write(
		policytest.Namespace("prod", nil),
		e.podObject("prod/client", map[string]string{"app": "client"}),
		e.podObject("prod/db", map[string]string{"app": "db"}),
		e.podObject("prod/api", map[string]string{"app": "api"}),
		policytest.NetworkPolicy("prod", "db-in", policytest.Selector("app", "db"), policytest.Ingress(
			policytest.From(policytest.Pods(policytest.Selector("app", "api")), policytest.Port("80/TCP")))),
	)
	e.Serve(80)
	e.start()
	probes := []probe{
		{from: "prod/client", to: "prod/db", port: 80, allow: false},
		{from: "prod/api", to: "prod/db", port: 80, allow: true},
	}
	e.check(probes...)

	db4 := e.Pods["prod/db"].IPv4.String()
	for i, tc := range []struct {
		op     []string
		within time.Duration
	}{
		{[]string{"flush", "ruleset"}, time.Second},
		{[]string{"delete", "table", "inet", "podwall"}, time.Second},
		// The sets' elements are compared once a second.
		{[]string{"flush set inet podwall ingress4; flush set inet podwall ingress6"}, 2 * time.Second},
	} {
		op := tc.op
		t.Run(strings.Join(op, " "), func(t *testing.T) {
			e := e.sub(t)
			gen := e.Generation("node-1")
			// Denied probes, back to back in both families, until stop.
			type attempt struct {
				start time.Time
				fam   string
				err   error
			}
			var mu sync.Mutex
			var attempts []attempt
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for _, fam := range []string{"IPv4", "IPv6"} {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						a := attempt{start: time.Now(), fam: fam}
						a.err = e.Probe(fam, "TCP", "prod/client", "prod/db", 80, 150*time.Millisecond)
						mu.Lock()
						attempts = append(attempts, a)
						mu.Unlock()
					}
				})
			}

			if out, err := e.Nodes["node-1"].Exec(context.Background(), "nft", op...).CombinedOutput(); err != nil {
				close(stop)
				wg.Wait()
				t.Fatalf("nft %v: %v\n%s", op, err, out)
			}
			removed := time.Now()
			ctx, cancel := context.WithDeadline(context.Background(), removed.Add(tc.within))
			defer cancel()
			err := lab.Poll(ctx, 5*time.Millisecond, func() error {
				out, err := e.Nodes["node-1"].Exec(ctx, "nft", "list", "set", "inet", "podwall", "ingress4").Output()
				if err != nil {
					return err
				}
				if !strings.Contains(string(out), db4) {
					return fmt.Errorf("set ingress4 lacks %s", db4)
				}
				return nil
			})
			restored := time.Now() // or at the deadline, when it failed
			if err != nil {
				t.Errorf("%v after nft %v, table inet podwall is not back: %v", tc.within, op, err)
			}
			// Probe on for a while after the restore.
			time.AfterFunc(time.Second, func() { close(stop) })
			wg.Wait()
			if n := e.metric("node-1", "podwall_datapath_table_restores_total"); n != float64(i+1) {
				t.Errorf("%v table restores counted, want %d", n, i+1)
			}

			var before, after, through, leaked int
			for _, a := range attempts {
				switch {
				case a.start.Before(removed):
					before++
				case a.start.After(restored):
					after++
					if a.err == nil {
						if leaked++; leaked <= 5 {
							t.Errorf("%s probe started %v after the restore (or the deadline) connected", a.fam, a.start.Sub(restored))
						}
					}
				case a.err == nil:
					through++
				}
			}
			t.Logf("nft %v -> table restored (as the test saw it) in %v; probes: %d before, %d in the gap (%d connected), %d after",
				op, restored.Sub(removed), before, len(attempts)-before-after, through, after)
			if leaked > 5 {
				t.Errorf("... %d probes connected after the restore (or the deadline) in all", leaked)
			}
			if after == 0 {
				t.Error("no probe ran after the restore")
			}
			if logs := e.Agents["node-1"].Logs(); !strings.Contains(logs, "table damaged by someone else") || !strings.Contains(logs, "table restored") {
				t.Errorf("the agent did not log the damage and the restore:\n%s", logs)
			}
			if code, body := e.readyz("node-1"); code != 200 || !strings.Contains(body, fmt.Sprintf("generation=%d", gen)) {
				t.Errorf("/readyz after the restore: %d %q, want 200 at generation %d", code, body, gen)
			}
			e.check(probes...)
		})
	}
}
