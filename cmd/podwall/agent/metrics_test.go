package agent

import (
	"errors"
	"math"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/podwall/podwall/cmd/podwall/scrape"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
	pt "github.com/podwall/podwall/policy/policytest"
)

// verdictCases are a verdict of each kind the metrics tell apart, with a latency in each
// histogram bucket they fall in: 250 ns is the first bucket's bound, 10 ms beyond the last.
var verdictCases = []struct {
	src, dst netip.Addr
	port     uint16
	hit      bool
	latency  time.Duration
}{
	{webIP, dbIP, 3306, false, 250 * time.Nanosecond}, // deny: no rule of db-policy allows
	{webIP, dbIP, 3306, true, 251 * time.Nanosecond},  // the same from the cache
	{apiIP, dbIP, 3306, false, 3 * time.Microsecond},  // allow: db-policy
	{apiIP, webIP, 80, false, 10 * time.Millisecond},  // allow: web is not isolated
}

// observeCases observes n verdicts on queue q, cycling through verdictCases, and returns the
// sum of their latencies.
func (a *Agent) observeCases(n int, q uint16) time.Duration {
	var sum time.Duration
	for i := range n {
		c := verdictCases[i%len(verdictCases)]
		r := a.verdict(c.src, c.dst, c.port, c.hit)
		r.Latency, r.Queue = c.latency, q
		a.observe(r)
		sum += c.latency
	}
	return sum
}

// wantVerdicts checks every series counting verdicts after n verdicts of verdictCases (n a
// multiple of their number) and malformed ones (each 1 µs, denied), whose latencies sum to
// sum.
func wantVerdicts(t *testing.T, a *Agent, n, malformed int, sum time.Duration) {
	t.Helper()
	m, err := scrape.Gather(a.reg)
	if err != nil {
		t.Fatal(err)
	}
	each := float64(n / len(verdictCases))
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"podwall_datapath_verdicts_total", []string{"verdict", "deny", "cache", "miss"}, each + float64(malformed)},
		{"podwall_datapath_verdicts_total", []string{"verdict", "deny", "cache", "hit"}, each},
		{"podwall_datapath_verdicts_total", []string{"verdict", "allow", "cache", "miss"}, 2 * each},
		{"podwall_datapath_verdicts_total", []string{"verdict", "allow", "cache", "hit"}, 0},
		{"podwall_datapath_direction_verdicts_total", []string{"direction", "ingress", "verdict", "deny", "code", "no-rule-allows"}, 2 * each},
		{"podwall_datapath_direction_verdicts_total", []string{"direction", "ingress", "verdict", "allow", "code", "allowed"}, each},
		{"podwall_datapath_direction_verdicts_total", []string{"direction", "ingress", "verdict", "allow", "code", "not-isolated"}, each},
		{"podwall_datapath_direction_verdicts_total", []string{"direction", "egress", "verdict", "allow", "code", "not-isolated"}, 4 * each},
		{"podwall_datapath_direction_verdicts_total", []string{"direction", "egress", "verdict", "deny", "code", "no-rule-allows"}, 0},
		{"podwall_policy_verdicts_total", []string{"policy", "prod/db-policy", "direction", "ingress", "verdict", "deny"}, 2 * each},
		{"podwall_policy_verdicts_total", []string{"policy", "prod/db-policy", "direction", "ingress", "verdict", "allow"}, each},
		{"podwall_policy_verdicts_total", []string{"policy", "prod/db-policy", "direction", "egress", "verdict", "deny"}, 0},
		{"podwall_datapath_decide_seconds_bucket", []string{"le", "2.5e-07"}, each},
		{"podwall_datapath_decide_seconds_bucket", []string{"le", "5e-07"}, 2 * each},
		{"podwall_datapath_decide_seconds_bucket", []string{"le", "1e-06"}, 2*each + float64(malformed)},
		{"podwall_datapath_decide_seconds_bucket", []string{"le", "2e-06"}, 2*each + float64(malformed)},
		{"podwall_datapath_decide_seconds_bucket", []string{"le", "4e-06"}, 3*each + float64(malformed)},
		{"podwall_datapath_decide_seconds_bucket", []string{"le", "0.008192"}, 3*each + float64(malformed)},
		{"podwall_datapath_decide_seconds_bucket", []string{"le", "+Inf"}, 4*each + float64(malformed)},
		{"podwall_datapath_decide_seconds_count", nil, 4*each + float64(malformed)},
	} {
		if got, ok := m.Value(c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v (%v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	// The sum adds float seconds in the order verdicts are counted: equal up to rounding.
	wantSum := (sum + time.Duration(malformed)*time.Microsecond).Seconds()
	if got, _ := m.Value("podwall_datapath_decide_seconds_sum"); math.Abs(got-wantSum) > 1e-9*wantSum {
		t.Errorf("podwall_datapath_decide_seconds_sum = %v, want %v", got, wantSum)
	}
}

// The series counting verdicts after a known set of them, spread over the queue readers
// (each counts in its own shard) and a queue that is not the agent's: the values the
// prometheus counters and histogram gave before the shards (the sum up to rounding).
func TestMetricsAfterKnownVerdicts(t *testing.T) {
	a, _ := testAgent(t) // queues 100 and 101
	sum := a.observeCases(4*30, 100)
	sum += a.observeCases(4*20, 101)
	sum += a.observeCases(4, 7) // not a queue of the agent's
	for range 3 {
		a.observe(&datapath.Record[policy.Decision]{Flow: flow.Flow{Src: webIP, Dst: dbIP, Proto: 6}, Latency: time.Microsecond,
			Queue: 101, Malformed: errors.New("packet: truncated")})
	}
	wantVerdicts(t, a, 4*51, 3, sum)
	// Scraping counts nothing.
	wantVerdicts(t, a, 4*51, 3, sum)
}

// Readers observing, the flow recorder counting what they hand it and scrapes at once
// count every verdict once (run with -race: the shards and the recorder's tally are
// written and read without a data race).
func TestMetricsConcurrent(t *testing.T) {
	a, _ := testAgent(t)
	defer a.runFlows(t.Context())() // as in Run
	const n = 4 * 5000
	var wg sync.WaitGroup
	sums := make([]time.Duration, 2)
	for i, q := range []uint16{100, 101} {
		wg.Go(func() { sums[i] = a.observeCases(n, q) })
	}
	done := make(chan struct{})
	scraped := make(chan struct{})
	go func() {
		defer close(scraped)
		for {
			select {
			case <-done:
				return
			default:
				if _, err := a.reg.Gather(); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	wg.Wait()
	close(done)
	<-scraped
	wantVerdicts(t, a, 2*n, 0, sums[0]+sums[1])
}

// A verdict is counted for the policies of the generation that decided it, also when it is
// observed after the next snapshot is in force: a deny decided under db-policy alone counts
// for db-policy, not for a policy isolating db that came after.
func TestMetricsGenerationThatDecided(t *testing.T) {
	a, s := testAgent(t)
	r := a.verdict(webIP, dbIP, 3306, false)
	s.Policies = append(slices.Clone(s.Policies), pt.NetworkPolicy("prod", "db-lockdown", pt.Selector("role", "db")))
	a.setState(t, s)
	a.observe(r)
	wantDeniedByDBPolicyOnly(t, a)
}

// The flow recorder counts the verdicts the readers hand it, on its goroutine; it counts
// those a scrape finds waiting first, and the readers count those it could not take (its
// hand-off full): a scrape still counts every verdict once.
func TestMetricsWhenHandOffFull(t *testing.T) {
	a, _ := testAgent(t) // nothing drains the hand-off but a scrape
	const n = 4 * 2100   // more than a reader's ring holds (8192 with two queues)
	sum := a.observeCases(n, 100)
	lost := a.flows.Lost()
	if lost == 0 {
		t.Fatalf("the hand-off took all %d verdicts: the test does not fill it", n)
	}
	wantVerdicts(t, a, n, 0, sum)
	if got, _ := scrapeValue(t, a, "podwall_flows_lost_total"); got != float64(lost) {
		t.Errorf("podwall_flows_lost_total = %v, want %d", got, lost)
	}
}

// A verdict still waiting for the flow recorder when two new generations come into force
// is counted for the policies of the generation that decided it: a deny decided under
// db-policy alone counts for db-policy, not for db-lockdown, which came after.
func TestMetricsWaitingVerdictKeepsItsGeneration(t *testing.T) {
	a, s := testAgent(t) // nothing drains the hand-off but a scrape and a new index
	a.observe(a.verdict(webIP, dbIP, 3306, false))
	s.Policies = append(slices.Clone(s.Policies), pt.NetworkPolicy("prod", "db-lockdown", pt.Selector("role", "db")))
	a.setState(t, s)
	s.Policies = append(slices.Clone(s.Policies), pt.NetworkPolicy("prod", "web-lockdown", pt.Selector("role", "web")))
	a.setState(t, s)
	wantDeniedByDBPolicyOnly(t, a)
}

// scrapeValue returns one series' value from a scrape of a's registry.
func scrapeValue(t *testing.T, a *Agent, name string, labels ...string) (float64, bool) {
	t.Helper()
	m, err := scrape.Gather(a.reg)
	if err != nil {
		t.Fatal(err)
	}
	return m.Value(name, labels...)
}

// wantDeniedByDBPolicyOnly checks that the one deny observed counts for prod/db-policy, the
// policy that decided it, and not for prod/db-lockdown, which came after.
func wantDeniedByDBPolicyOnly(t *testing.T, a *Agent) {
	t.Helper()
	for _, c := range []struct {
		labels string
		want   float64
	}{
		{"direction=ingress,policy=prod/db-policy,verdict=deny", 1},
		{"direction=ingress,policy=prod/db-lockdown,verdict=deny", 0},
	} {
		if got := a.metricValue(t, "podwall_policy_verdicts_total", c.labels); got != c.want {
			t.Errorf("podwall_policy_verdicts_total{%s} = %v, want %v", c.labels, got, c.want)
		}
	}
}
