package kube

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// measureLatency makes changes through the API, each flipping whether a connection to
// prod/db (on node-1) passes, and measures, from just before the API call:
//
//   - enforced: until the agent on node-1 reports a new generation on /readyz, which it
//     does only once the kernel sets are synced and the snapshot is published, so the change
//     is in force for the next packet;
//   - connected: for changes that allow, until the first new connection passes (attempts
//     every ≤ 5 ms).
//
// Each change is then checked with a probe. Three kinds, alternating: the policy's port,
// the client pod's label, the client namespace's label.
func measureLatency(t *testing.T, e *env) {
	const pairs = 8 // per kind: 2 × 8 × 3 = 48 changes
	type change struct {
		kind string
		do   func()
		want probe
	}
	var changes []change
	for range pairs {
		changes = append(changes,
			change{"policy", func() { e.applyPolicy(dbPolicy(3307)) }, probe{"prod/api", "prod/db", 3306, false}},
			change{"policy", func() { e.applyPolicy(dbPolicy(3306)) }, probe{"prod/api", "prod/db", 3306, true}},
			change{"pod label", func() { e.labelPod("prod/api", map[string]any{"name": nil}) }, probe{"prod/api", "prod/db", 3306, false}},
			change{"pod label", func() { e.labelPod("prod/api", map[string]any{"name": "api-pod"}) }, probe{"prod/api", "prod/db", 3306, true}},
			change{"namespace label", func() { e.labelNamespace("other", map[string]any{"team": "trusted"}) }, probe{"other/client", "prod/db", 3306, true}},
			change{"namespace label", func() { e.labelNamespace("other", map[string]any{"team": "untrusted"}) }, probe{"other/client", "prod/db", 3306, false}},
		)
	}

	enforced := map[string][]time.Duration{}
	var connected, calls []time.Duration
	for _, c := range changes {
		before := e.Generation("node-1")
		stop := make(chan struct{})
		firstConn := make(chan time.Duration, 1)
		start := time.Now()
		if c.want.allow {
			go func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if e.connects("IPv4", c.want, 5*time.Millisecond) {
						firstConn <- time.Since(start)
						return
					}
				}
			}()
		}
		c.do()
		calls = append(calls, time.Since(start))
		for e.Generation("node-1") <= before {
			if time.Since(start) > 10*time.Second {
				close(stop)
				t.Fatalf("%s change (%s): no new generation on node-1 within 10s", c.kind, c.want)
			}
		}
		d := time.Since(start)
		enforced[c.kind] = append(enforced[c.kind], d)
		enforced["all"] = append(enforced["all"], d)
		if c.want.allow {
			select {
			case d := <-firstConn:
				connected = append(connected, d)
			case <-time.After(5 * time.Second):
				t.Errorf("%s change (%s): no connection within 5s", c.kind, c.want)
			}
		}
		close(stop)
		if got := e.connects("IPv4", c.want, probeTimeout); got != c.want.allow {
			t.Errorf("%s change (%s): generation reported, but connected=%v", c.kind, c.want, got)
		}
	}

	var report strings.Builder
	fmt.Fprintf(&report, "API change → enforced on the pod's node (agent generation), %d changes:\n", len(enforced["all"]))
	for _, kind := range []string{"all", "policy", "pod label", "namespace label"} {
		fmt.Fprintf(&report, "  %-16s %s\n", kind, summary(enforced[kind]))
	}
	fmt.Fprintf(&report, "API change → first connection allowed, %d changes: %s\n", len(connected), summary(connected))
	fmt.Fprintf(&report, "of which the API call itself: %s", summary(calls))
	t.Log(report.String())
	if p99 := percentile(enforced["all"], 99); p99 > 2*time.Second {
		t.Errorf("p99 change → enforced is %v; want well under a second", p99)
	}
}

func summary(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	return fmt.Sprintf("p50 %v  p90 %v  p99 %v  max %v (n=%d)", percentile(ds, 50), percentile(ds, 90),
		percentile(ds, 99), slices.Max(ds).Round(100*time.Microsecond), len(ds))
}

// percentile returns the nearest-rank percentile p of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100 // ceil(n·p/100)
	return s[max(i, 1)-1].Round(100 * time.Microsecond)
}
