package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podwall/podwall/cmd/podwall/scrape"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/decisions"
	"github.com/podwall/podwall/policy/explain"
	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/manifests"
)

// The seeds' 3-tier example on node-1: web 10.244.1.10, api .11, db .12; db-policy admits
// only api on TCP 3306.
var (
	webIP = netip.MustParseAddr("10.244.1.10")
	apiIP = netip.MustParseAddr("10.244.1.11")
	dbIP  = netip.MustParseAddr("10.244.1.12")
)

// example is the seeds' 3-tier example.
const example = "../../../deploy/examples/3tier"

// idleSource delivers nothing until its context ends.
var idleSource = policy.SourceFunc(func(ctx context.Context, _ func(policy.State, error)) error { <-ctx.Done(); return nil })

// testAgent is an agent on node-1 that has applied state s (the 3-tier example), without
// running: no datapath, no listeners. tweaks change its Config.
func testAgent(t testing.TB, tweaks ...func(*Config)) (*Agent, policy.State) {
	t.Helper()
	s, err := manifests.Load(example)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Node: "node-1", Source: idleSource, QueueNum: 100, Queues: 2, Log: slog.New(slog.DiscardHandler)}
	for _, tw := range tweaks {
		tw(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.setState(t, s)
	return a, s
}

func (a *Agent) setState(t testing.TB, s policy.State) {
	t.Helper()
	if !a.apply(s, nil) {
		t.Fatalf("state rejected: %s", *a.lastErr.Load())
	}
}

// verdict is what the datapath would hand observe for a flow: the engine's verdict.
func (a *Agent) verdict(src, dst netip.Addr, port uint16, hit bool) *datapath.Record[policy.Decision] {
	f := flow.Flow{Src: src, Dst: dst, Proto: 6, Port: port}
	d, allow, gen := a.inForce.Decide(f)
	return &datapath.Record[policy.Decision]{Time: time.Now(), Flow: f, SrcPort: 40000, Allow: allow, CacheHit: hit, Gen: gen, Decision: d,
		Latency: 2 * time.Microsecond, Queue: 100}
}

// metricValue returns one series' value, or -1 when the series does not exist; labels are
// "k=v,k=v" in the order the series has them.
func (a *Agent) metricValue(t testing.TB, name string, labels string) float64 {
	t.Helper()
	m, err := scrape.Gather(a.reg)
	if err != nil {
		t.Fatal(err)
	}
	var kv []string
	if labels != "" {
		for _, l := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(l, "=")
			kv = append(kv, k, v)
		}
	}
	if v, ok := m.Value(name, kv...); ok {
		return v
	}
	return -1
}

func TestObserveStreamsEveryVerdict(t *testing.T) {
	a, _ := testAgent(t)
	all, err := a.stream.Subscribe(decisions.Filter{}, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	denies, _ := a.stream.Subscribe(decisions.Filter{Verdict: "deny", Pod: []string{"prod/db"}}, 16)
	defer denies.Close()

	a.observe(a.verdict(webIP, dbIP, 3306, false))
	a.observe(a.verdict(webIP, dbIP, 3306, true)) // the retransmitted SYN, from the cache
	a.observe(a.verdict(apiIP, dbIP, 3306, false))
	a.observe(&datapath.Record[policy.Decision]{Flow: flow.Flow{Src: webIP, Dst: dbIP, Proto: 6}, Allow: false, Malformed: errors.New("packet: truncated")})

	if len(all.C()) != 4 || len(denies.C()) != 2 {
		t.Fatalf("all got %d records, denies %d; want 4 and 2", len(all.C()), len(denies.C()))
	}
	var got []string
	for range 4 {
		r := <-all.C()
		e := r.Event()
		got = append(got, fmt.Sprintf("%s>%s %s hit=%v %v", e.SrcPod, e.DstPod, e.Verdict, e.CacheHit, e.Policies))
	}
	want := []string{
		"prod/web>prod/db deny hit=false [prod/db-policy]",
		"prod/web>prod/db deny hit=true [prod/db-policy]",
		"prod/api>prod/db allow hit=false [prod/db-policy]",
		"> deny hit=false []",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestObserveMetrics(t *testing.T) {
	a, s := testAgent(t)
	a.observe(a.verdict(webIP, dbIP, 3306, false))
	a.observe(a.verdict(webIP, dbIP, 3306, true))
	a.observe(a.verdict(apiIP, dbIP, 3306, false))
	a.observe(a.verdict(apiIP, webIP, 80, false)) // web is not isolated: allowed, no policy
	for _, c := range []struct {
		name, labels string
		want         float64
	}{
		{"podwall_datapath_verdicts_total", "cache=miss,verdict=deny", 1},
		{"podwall_datapath_verdicts_total", "cache=hit,verdict=deny", 1},
		{"podwall_datapath_verdicts_total", "cache=miss,verdict=allow", 2},
		{"podwall_datapath_direction_verdicts_total", "code=no-rule-allows,direction=ingress,verdict=deny", 2},
		{"podwall_datapath_direction_verdicts_total", "code=allowed,direction=ingress,verdict=allow", 1},
		{"podwall_datapath_direction_verdicts_total", "code=not-isolated,direction=ingress,verdict=allow", 1},
		{"podwall_datapath_direction_verdicts_total", "code=not-isolated,direction=egress,verdict=allow", 4},
		{"podwall_policy_verdicts_total", "direction=ingress,policy=prod/db-policy,verdict=deny", 2},
		{"podwall_policy_verdicts_total", "direction=ingress,policy=prod/db-policy,verdict=allow", 1},
		{"podwall_policy_verdicts_total", "direction=egress,policy=prod/db-policy,verdict=deny", 0},
		{"podwall_policy_generation", "", float64(a.inForce.Generation())},
		{"podwall_policy_policies", "", 1},
		{"podwall_decisions_subscribers", "", 0},
	} {
		if got := a.metricValue(t, c.name, c.labels); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	// The policy goes: its series go with it.
	s.Policies = nil
	a.setState(t, s)
	if got := a.metricValue(t, "podwall_policy_verdicts_total", "direction=ingress,policy=prod/db-policy,verdict=deny"); got != -1 {
		t.Errorf("series of a deleted policy still there: %v", got)
	}
	a.observe(a.verdict(webIP, dbIP, 3306, false))
	if got := a.metricValue(t, "podwall_datapath_direction_verdicts_total", "code=not-isolated,direction=ingress,verdict=allow"); got != 2 {
		t.Errorf("not-isolated ingress after the policy went = %v, want 2", got)
	}
}

// TestObserveAllocatesNothing: Decide plus observe of a deny, with the stream idle and with
// a subscriber, and with the deny cache on (the hand-off, then its queue full: drops).
func TestObserveAllocatesNothing(t *testing.T) {
	for _, ttl := range []time.Duration{0, 2 * time.Second} {
		a, _ := testAgent(t, func(c *Config) { c.DenyCacheTTL = ttl })
		r := a.verdict(webIP, dbIP, 3306, false)
		if n := testing.AllocsPerRun(1000, func() { a.observe(r) }); n != 0 {
			t.Errorf("deny cache %v, no subscriber: %v allocs per verdict", ttl, n)
		}
		sub, _ := a.stream.Subscribe(decisions.Filter{}, 4)
		defer sub.Close()
		if n := testing.AllocsPerRun(5000, func() { a.observe(r) }); n != 0 {
			t.Errorf("deny cache %v, one subscriber: %v allocs per verdict", ttl, n)
		}
	}
}

func TestDebugRoutes(t *testing.T) {
	a, state := testAgent(t)
	srv := httptest.NewServer(a.DebugHandler())
	defer srv.Close()
	get := func(path string) (int, string, http.Header) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	if code, body, _ := get("/debug/"); code != 200 || !strings.Contains(body, "<title>podwall") {
		t.Errorf("/debug/: %d", code)
	}
	if code, body, _ := get("/debug"); code != 200 || !strings.Contains(body, "<title>podwall") { // redirected
		t.Errorf("/debug: %d", code)
	}
	if code, _, _ := get("/debug/nope"); code != 404 {
		t.Errorf("/debug/nope: %d", code)
	}

	// /debug/explain answers like `podwall explain -o json`: explain.Judge on the compiled
	// state, protocol TCP by default.
	offline, err := policy.Compile(state)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range [][]string{
		{"prod/web", "prod/db", "3306", "TCP"},
		{"prod/api", "prod/db", "3306", ""},
		{"192.0.2.10", "prod/db", "3306", "UDP"},
	} {
		proto := q[3]
		if proto == "" {
			proto = "TCP"
		}
		wantJSON, _ := json.Marshal(explain.Judge(offline, explain.Query{From: q[0], To: q[1], Port: json.Number(q[2]), Protocol: proto}))
		want := string(wantJSON) + "\n"
		path := fmt.Sprintf("/debug/explain?from=%s&to=%s&port=%s", q[0], q[1], q[2])
		if q[3] != "" {
			path += "&protocol=" + q[3]
		}
		code, got, h := get(path)
		if code != 200 || h.Get("Content-Type") != "application/json" || sameButLocal(t, got, want) != "" {
			t.Errorf("%s: %d\n got  %s want %s", path, code, got, want)
		}
	}
	for _, path := range []string{"/debug/explain?from=prod/web", "/debug/explain?from=prod/web&to=prod/db&port=x",
		"/debug/explain?from=prod/nope&to=prod/db&port=80", "/debug/explain?from=prod/web&to=prod/db&port=80&protocol=GRE"} {
		code, body, _ := get(path)
		var r explain.Answer
		if code != 400 || json.Unmarshal([]byte(body), &r) != nil || r.Error == "" {
			t.Errorf("%s: %d %s", path, code, body)
		}
	}

	// The stream, through the mux.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/debug/decisions?verdict=deny", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	a.observe(a.verdict(apiIP, dbIP, 3306, false))
	a.observe(a.verdict(webIP, dbIP, 3306, false))
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var e decisions.Event
	if err := json.Unmarshal([]byte(line), &e); err != nil || e.SrcPod != "prod/web" || e.Verdict != "deny" ||
		!strings.Contains(e.Reason, "db-policy") {
		t.Errorf("stream line %s (%v)", line, err)
	}
}

// benchFlows are the flows BenchmarkDecide, BenchmarkObserve and BenchmarkDecideStaged
// cycle through, so that their ratios compare the same decisions: a deny (web → db,
// no-rule-allows), an allow by a rule (api → db, db-policy) and a flow no policy isolates
// (api → web).
var benchFlows = [...]flow.Flow{
	{Src: webIP, Dst: dbIP, Proto: 6, Port: 3306},
	{Src: apiIP, Dst: dbIP, Proto: 6, Port: 3306},
	{Src: apiIP, Dst: webIP, Proto: 6, Port: 80},
}

// decideInto is what a queue reader does on a cache miss: decide f on the snapshot in force
// into its record.
func (a *Agent) decideInto(rec *datapath.Record[policy.Decision], f flow.Flow) {
	rec.Flow = f
	rec.Decision, rec.Allow, rec.Gen = a.inForce.Decide(f)
}

// BenchmarkObserve is the per-verdict cost of the agent on the queue reader past the
// kernel: the engine's Decide (what the datapath calls on a cache miss) plus observe
// (the flow history's hand-off, which carries what the metrics count, and the stream), with
// no subscriber and with one subscriber that keeps up. Its own goroutine's work counts in
// allocs/op too, which is why it only drains: what a subscriber spends to format a record is
// decisions.BenchmarkEvent. Compare with BenchmarkDecide (the same flows without observe).
//
// The flow recorder's work (recording and counting what observe handed over) is the
// benchmark's, between timed batches of verdicts, and reported as recorder-ns/op: a reader
// hands over a verdict every ~100 ns here, 1 000× more often than a queue's new connections
// arrive, and the recorder, which drains every 5 ms, would fall behind and leave the hand-off
// full — observe would then count inline, not what a reader does.
func BenchmarkObserve(b *testing.B) {
	for _, subs := range []int{0, 1} {
		b.Run(fmt.Sprintf("subscribers=%d", subs), func(b *testing.B) {
			a, _ := testAgent(b)
			done := make(chan struct{})
			defer close(done)
			for range subs {
				sub, _ := a.stream.Subscribe(decisions.Filter{}, decisions.DefaultBuffer)
				defer sub.Close()
				go func() {
					for {
						select {
						case <-sub.C(): // a reader that keeps up (formatting: decisions.BenchmarkEvent)
						case <-done:
							return
						}
					}
				}()
			}
			rec := &datapath.Record[policy.Decision]{SrcPort: 40000, Queue: 100, Latency: time.Microsecond}
			var recorder time.Duration
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				a.decideInto(rec, benchFlows[i%len(benchFlows)])
				a.observe(rec)
				if i%1024 == 1023 {
					b.StopTimer()
					start := time.Now()
					a.flows.Flush(nil)
					recorder += time.Since(start)
					b.StartTimer()
				}
			}
			b.ReportMetric(float64(a.flows.Lost())/float64(b.N), "flowsLost/op")
			b.ReportMetric(float64(recorder.Nanoseconds())/float64(b.N), "recorder-ns/op")
			if subs > 0 {
				sent, dropped := a.stream.Totals()
				b.ReportMetric(float64(dropped)/float64(sent+dropped), "dropped/op")
			}
		})
	}
}

// BenchmarkObserveRecorderRunning is BenchmarkObserve with no subscriber and the flow
// recorder's goroutine running beside the loop, as in Run: the loop outruns the 5 ms drain
// (flowsLost/op), and what the recorder cannot take the reader counts itself.
func BenchmarkObserveRecorderRunning(b *testing.B) {
	a, _ := testAgent(b)
	defer a.runFlows(b.Context())()
	rec := &datapath.Record[policy.Decision]{SrcPort: 40000, Queue: 100, Latency: time.Microsecond}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		a.decideInto(rec, benchFlows[i%len(benchFlows)])
		a.observe(rec)
	}
	b.ReportMetric(float64(a.flows.Lost())/float64(b.N), "flowsLost/op")
}

// BenchmarkDecide is the engine's Decide alone, into the record as a queue reader does, for
// comparison with BenchmarkObserve and BenchmarkDecideStaged.
func BenchmarkDecide(b *testing.B) {
	a, _ := testAgent(b)
	rec := &datapath.Record[policy.Decision]{SrcPort: 40000, Queue: 100, Latency: time.Microsecond}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		a.decideInto(rec, benchFlows[i%len(benchFlows)])
	}
}

// sameButLocal compares two explain answers, except for "local": the agent's /debug/explain
// knows its node, `podwall explain` has none. It returns "" when they agree.
func sameButLocal(t *testing.T, got, want string) string {
	t.Helper()
	var g, w explain.Answer
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		return err.Error()
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	for _, j := range []*explain.Judgement{g.Egress, g.Ingress} {
		if j != nil {
			j.Local = false
		}
	}
	if !reflect.DeepEqual(g, w) {
		return "differ"
	}
	return ""
}

// TestMetricsDocumented: every series the agent registers is listed in README.md beside
// this file (STYLE 13), and the Grafana dashboard uses only listed series.
func TestMetricsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range metricName.FindAllString(string(readme), -1) {
		documented[m] = true
	}
	a, _ := testAgent(t)
	mfs, err := a.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var registered []string
	for _, mf := range mfs {
		registered = append(registered, mf.GetName())
	}
	ch := make(chan *prometheus.Desc, 32)
	a.datapath.Describe(ch)       // with the queue series, which exist only while queues are bound
	a.staged.metrics.Describe(ch) // series exist only while staged policies do
	close(ch)
	for d := range ch {
		registered = append(registered, metricName.FindString(d.String()))
	}
	for _, m := range registered {
		if strings.HasPrefix(m, "podwall_") && !documented[m] {
			t.Errorf("%s is not listed in cmd/podwall/README.md", m)
		}
	}
	dash, err := os.ReadFile("../../../deploy/grafana/podwall.json")
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(dash) {
		t.Fatal("deploy/grafana/podwall.json is not JSON")
	}
	for _, m := range metricName.FindAllString(string(dash), -1) {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
		if !documented[base] {
			t.Errorf("the dashboard uses %s, which README.md does not list", m)
		}
	}
}

var metricName = regexp.MustCompile(`podwall_[a-z_]+[a-z]`)
