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
)

// tallyCase is a verdict of each kind the metrics tell apart, with a latency in each
// histogram bucket they fall in: 250 ns is the first bucket's bound, 10 ms beyond the last.
var tallyCases = []struct {
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

// observeCases observes n verdicts on queue q, cycling through tallyCases, and returns the
// sum of their latencies.
func (a *Agent) observeCases(n int, q uint16) time.Duration {
	var sum time.Duration
	for i := range n {
		c := tallyCases[i%len(tallyCases)]
		r := a.verdict(c.src, c.dst, c.port, c.hit)
		r.Latency, r.Queue = c.latency, q
		a.observe(r)
		sum += c.latency
	}
	return sum
}

// wantTally checks every series counting verdicts after n verdicts of tallyCases (n a
// multiple of their number) and malformed ones (each 1 µs, denied), whose latencies sum to
// sum.
func wantTally(t *testing.T, a *Agent, n, malformed int, sum time.Duration) {
	t.Helper()
	m, err := scrape.Gather(a.reg)
	if err != nil {
		t.Fatal(err)
	}
	each := float64(n / len(tallyCases))
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

// A scrape counts every verdict observed before it, with the values observe counted when it
// counted on the queue reader: those waiting for the tally (its goroutine is not running
// here), and those a reader counted itself because its ring was full or it is not a reader.
// The flow history loses the latter, counted.
func TestTallyScrapeCountsEveryVerdict(t *testing.T) {
	a, _ := testAgent(t) // queues 100 and 101
	full := len(a.metrics.tally.rings[0].buf)
	over := 4 * 25
	sum := a.observeCases(full+over, 100)
	sum += a.observeCases(4, 7) // not a queue of the agent's
	for range 3 {
		a.observe(&datapath.Record[policy.Decision]{Flow: flow.Flow{Src: webIP, Dst: dbIP, Proto: 6}, Latency: time.Microsecond,
			Queue: 101, Malformed: errors.New("packet: truncated")})
	}
	wantTally(t, a, full+over+4, 3, sum)
	if lost := a.flows.Lost(); lost != uint64(over+4) {
		t.Errorf("flow history lost %d verdicts, want %d", lost, over+4)
	}
	// What a scrape took is not counted again.
	wantTally(t, a, full+over+4, 3, sum)
}

// Readers observing, the tally taking and scrapes at once count every verdict once (run
// with -race: the rings hand verdicts over without a data race).
func TestTallyConcurrent(t *testing.T) {
	a, _ := testAgent(t)
	stop := a.runFlows(t.Context())
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
	stop()
	wantTally(t, a, 2*n, 0, sums[0]+sums[1])
}

// BenchmarkTally is what the tally spends per verdict off the queue reader (counting it,
// offering it to the flow history), over the flows of BenchmarkDecide: the CPU a verdict
// costs is BenchmarkObserve's plus this.
func BenchmarkTally(b *testing.B) {
	a, _ := testAgent(b)
	defer a.runFlows(b.Context())()
	rec := &datapath.Record[policy.Decision]{SrcPort: 40000, Queue: 100, Latency: time.Microsecond}
	ring := a.metrics.tally.rings[0]
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%len(ring.buf) == 0 {
			b.StopTimer()
			a.metrics.tally.take()
			for j := range len(ring.buf) {
				a.decideInto(rec, benchFlows[j%len(benchFlows)])
				a.metrics.tally.offer(0, rec, &stagedVerdict{})
			}
			b.StartTimer()
		}
		a.metrics.tally.countOne(ring)
	}
}

// countOne counts the next verdict waiting in q, if any.
func (t *tally) countOne(q *tallyRing) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if h := q.head.Load(); h < q.tail.Load() {
		t.count(&q.buf[h&uint64(len(q.buf)-1)])
		q.head.Store(h + 1)
	}
}

// The staged verdicts are counted by the tally too: a scrape counts every one observed
// before it, waiting or counted by a reader whose ring was full.
func TestTallyStaged(t *testing.T) {
	a, s := testAgent(t)
	s.Policies = append(slices.Clone(s.Policies), stagedDenyAll())
	a.setState(t, s)
	n := len(a.metrics.tally.rings[0].buf) + 30
	for i := range n {
		f := benchFlows[i%len(benchFlows)]
		a.observe(a.verdict(f.Src, f.Dst, f.Port, false))
	}
	if v := a.metricValue(t, "podwall_policy_staged_verdicts_total", "policy=prod/deny-all,verdict=deny"); v != float64(n) {
		t.Errorf("staged deny count = %v, want %d (one per packet)", v, n)
	}
}

func BenchmarkObserveTakeInLoop(b *testing.B) {
	a, _ := testAgent(b)
	defer a.runFlows(b.Context())()
	rec := &datapath.Record[policy.Decision]{SrcPort: 40000, Queue: 100, Latency: time.Microsecond}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		a.decideInto(rec, benchFlows[i%len(benchFlows)])
		a.observe(rec)
		if i%1024 == 1023 {
			a.metrics.tally.take()
		}
	}
	b.ReportMetric(float64(a.metrics.tally.own.Load())/float64(b.N), "counted-on-reader/op")
}
