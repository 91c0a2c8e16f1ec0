package flows

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/manifests"
)

// The seeds' 3-tier example on node-1: web 10.244.1.10, api .11, db .12; db-policy admits
// only api on TCP 3306.
var (
	webIP = netip.MustParseAddr("10.244.1.10")
	apiIP = netip.MustParseAddr("10.244.1.11")
	dbIP  = netip.MustParseAddr("10.244.1.12")

	apiToDB  = flow.Flow{Src: apiIP, Dst: dbIP, Proto: flow.TCP, Port: 3306}
	webToDB  = flow.Flow{Src: webIP, Dst: dbIP, Proto: flow.TCP, Port: 3306}
	webToAPI = flow.Flow{Src: webIP, Dst: apiIP, Proto: flow.TCP, Port: 8080}
)

// example compiles the seeds' 3-tier example for node-1.
func example(t testing.TB) *policy.Snapshot {
	t.Helper()
	s, err := manifests.Load("../../deploy/examples/3tier")
	if err != nil {
		t.Fatal(err)
	}
	c := policy.NewCompiler("node-1")
	if err := c.Replace(s); err != nil {
		t.Fatal(err)
	}
	return c.Snapshot()
}

// newRecorder is a Recorder judging with snap; tweaks change its Config.
func newRecorder(snap *policy.Snapshot, tweaks ...func(*Config)) *Recorder {
	cfg := Config{Node: "node-1", Snapshot: func(uint64) *policy.Snapshot { return snap }, Logger: slog.New(slog.DiscardHandler)}
	for _, tw := range tweaks {
		tw(&cfg)
	}
	return NewRecorder(cfg)
}

// seen is the datapath's verdict on f at second sec, as observe hands it over.
func seen(snap *policy.Snapshot, f flow.Flow, sec int64) Seen {
	d := snap.Decide(f)
	return Seen{Flow: f, Time: time.Unix(1_700_000_000+sec, 0).UnixNano(), Gen: snap.Generation(), Allow: d.LocalVerdict() == policy.Allow}
}

// readLines parses NDJSON flow lines, failing on any line that is not one.
func readLines(t *testing.T, r io.Reader) []Line {
	t.Helper()
	var out []Line
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l Line
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func history(t *testing.T, r *Recorder) map[string]Line {
	t.Helper()
	var b bytes.Buffer
	if _, err := r.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	out := map[string]Line{}
	for _, l := range readLines(t, &b) {
		out[l.SrcPod+">"+l.DstPod] = l
	}
	return out
}

// The history keeps one line per distinct flow with its pods, times, connection count,
// verdict and the policies and reason that gave it.
func TestHistory(t *testing.T) {
	snap := example(t)
	r := newRecorder(snap)
	r.take(new(seen(snap, apiToDB, 1)))
	r.take(new(seen(snap, webToDB, 2)))
	r.take(new(seen(snap, apiToDB, 3)))
	r.take(new(seen(snap, apiToDB, 5)))
	h := history(t, r)
	if len(h) != 2 {
		t.Fatalf("history has %d flows, want 2: %v", len(h), h)
	}
	api := h["prod/api>prod/db"]
	if api.Connections != 3 || api.Verdict != "allow" || api.Node != "node-1" || api.Protocol != "TCP" || api.DstPort != 3306 ||
		api.Src != "10.244.1.11" || api.Dst != "10.244.1.12" || api.Family != "IPv4" ||
		!api.First.Equal(time.Unix(1_700_000_001, 0)) || !api.Last.Equal(time.Unix(1_700_000_005, 0)) ||
		fmt.Sprint(api.Policies) != "[prod/db-policy]" || api.Ingress == nil || api.Ingress.Code != "allowed" || api.Staged != nil {
		t.Errorf("api → db: %+v", api)
	}
	web := h["prod/web>prod/db"]
	if web.Connections != 1 || web.Verdict != "deny" || fmt.Sprint(web.Policies) != "[prod/db-policy]" ||
		!strings.Contains(web.Reason, "no rule allows TCP/3306 from prod/web") {
		t.Errorf("web → db: %+v", web)
	}
}

// A flow judged again under a new policy generation carries the new verdict and reason.
func TestHistoryNewGeneration(t *testing.T) {
	s, err := manifests.Load("../../deploy/examples/3tier/cluster.yaml") // no db-policy
	if err != nil {
		t.Fatal(err)
	}
	c := policy.NewCompiler("node-1")
	if err := c.Replace(s); err != nil {
		t.Fatal(err)
	}
	open := c.Snapshot()
	closed := example(t)
	snaps := map[uint64]*policy.Snapshot{open.Generation(): open}
	r := newRecorder(nil, func(c *Config) {
		c.Snapshot = func(gen uint64) *policy.Snapshot { return snaps[gen] }
	})
	r.take(new(seen(open, webToDB, 1)))
	if l := history(t, r)["prod/web>prod/db"]; l.Verdict != "allow" || !strings.Contains(l.Reason, "not isolated") {
		t.Fatalf("before: %+v", l)
	}
	snaps = map[uint64]*policy.Snapshot{closed.Generation(): closed}
	r.take(new(seen(closed, webToDB, 2)))
	if l := history(t, r)["prod/web>prod/db"]; l.Verdict != "deny" || l.Connections != 2 || l.Generation != closed.Generation() ||
		!strings.Contains(l.Reason, "db-policy") {
		t.Errorf("after: %+v", l)
	}
}

// A full history forgets the least recently seen flow, and counts it.
func TestHistoryEvictsLeastRecentlySeen(t *testing.T) {
	snap := example(t)
	r := newRecorder(snap, func(c *Config) { c.Size = 2 })
	r.take(new(seen(snap, apiToDB, 1)))
	r.take(new(seen(snap, webToDB, 2)))
	r.take(new(seen(snap, apiToDB, 3))) // api → db is now the most recent
	r.take(new(seen(snap, webToAPI, 4)))
	h := history(t, r)
	if _, ok := h["prod/web>prod/db"]; ok || len(h) != 2 {
		t.Errorf("history %v: want api → db and web → api", h)
	}
	if got := counter(t, r, "podwall_flows_evicted_total"); got != 1 {
		t.Errorf("evicted %v, want 1", got)
	}
}

// Offer never waits: with the recorder behind, verdicts are lost and counted.
func TestOfferLosesWhenBehind(t *testing.T) {
	snap := example(t)
	r := newRecorder(snap) // not running: nothing drains the queue
	for i := range queueLen + 7 {
		s := seen(snap, apiToDB, int64(i))
		r.Offer(0, &s)
	}
	s := seen(snap, apiToDB, 1)
	r.Offer(1, &s) // not a producer
	r.Offer(-1, &s)
	if got := counter(t, r, "podwall_flows_lost_total"); got != 9 {
		t.Errorf("lost %v, want 9", got)
	}
}

// Flush has every verdict offered before it counted (Config.Count, once each, in order)
// and recorded before then runs; what was counted leaves no pointer into its snapshot in
// the ring.
func TestFlushCountsWhatWaits(t *testing.T) {
	snap := example(t)
	var counted []uint16
	r := newRecorder(snap, func(c *Config) {
		c.Producers = 2
		c.Count = func(s *Seen) { counted = append(counted, s.Flow.Port) }
	})
	d := snap.Decide(apiToDB)
	for i, f := range []flow.Flow{apiToDB, webToDB, webToAPI} {
		s := r.Slot(i % 2)
		*s = seen(snap, f, int64(i))
		s.Judged[policy.Ingress] = Judged{Pod: d.Ingress.Pod, Policy: d.Ingress.Policy, Local: true}
		r.Commit(i % 2)
	}
	var inThen []uint16
	r.Flush(func() { inThen = slices.Clone(counted) })
	if want := []uint16{apiToDB.Port, webToAPI.Port, webToDB.Port}; !slices.Equal(inThen, want) { // ring 0, then ring 1
		t.Errorf("counted %v when then ran, want %v", inThen, want)
	}
	if r.Len() != 3 {
		t.Errorf("history has %d flows, want 3", r.Len())
	}
	r.Flush(nil)
	if len(counted) != 3 {
		t.Errorf("counted %d verdicts after a second Flush, want 3", len(counted))
	}
	for _, q := range r.rings {
		for i := range q.buf {
			if j := q.buf[i].Judged; j[0].Pod != nil || j[1].Pod != nil || j[0].Policy != nil || j[1].Policy != nil {
				t.Fatalf("ring slot %d still points into the snapshot: %+v", i, j)
			}
		}
	}
}

// The flow log has one line per distinct flow per interval, with that interval's counts; the
// last interval is written when the recorder stops.
func TestLogIntervals(t *testing.T) {
	snap := example(t)
	var log bytes.Buffer
	r := newRecorder(snap, func(c *Config) { c.Log = &log; c.Interval = time.Hour })
	var w logWriter
	write := func() { // the writer's work, here in the test's goroutine
		select {
		case b := <-r.batches:
			r.writeBatch(&w, b)
		default:
		}
	}
	r.take(new(seen(snap, apiToDB, 1)))
	r.take(new(seen(snap, apiToDB, 2)))
	r.take(new(seen(snap, webToDB, 3)))
	r.cut()
	write()
	r.take(new(seen(snap, apiToDB, 11)))
	r.cut()
	write()
	r.cut() // an empty interval writes nothing
	write()
	lines := readLines(t, &log)
	var got []string
	for _, l := range lines {
		got = append(got, fmt.Sprintf("%s>%s %s %d %d-%d", l.SrcPod, l.DstPod, l.Verdict, l.Connections, l.First.Unix()-1_700_000_000, l.Last.Unix()-1_700_000_000))
	}
	want := "[prod/api>prod/db allow 2 1-2 prod/web>prod/db deny 1 3-3 prod/api>prod/db allow 1 11-11]"
	if fmt.Sprint(got) != want {
		t.Errorf("flow log:\n got %v\nwant %s", got, want)
	}
	if got := counter(t, r, "podwall_flows_log_lines_total"); got != 3 {
		t.Errorf("lines %v, want 3", got)
	}
}

// Run writes what Offer handed over when its context ends: the last interval is not lost.
func TestRunWritesLastInterval(t *testing.T) {
	snap := example(t)
	var log bytes.Buffer
	r := newRecorder(snap, func(c *Config) { c.Log = &log; c.Interval = time.Hour })
	s1, s2 := seen(snap, apiToDB, 1), seen(snap, webToDB, 2)
	r.Offer(0, &s1)
	r.Offer(0, &s2)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r.Run(ctx)
	if lines := readLines(t, &log); len(lines) != 2 {
		t.Errorf("flow log has %d lines, want 2", len(lines))
	}
	if r.Len() != 2 {
		t.Errorf("history has %d flows, want 2", r.Len())
	}
}

// blockedWriter is a disk that hangs: Write waits until release is closed.
type blockedWriter struct {
	entered chan struct{}
	release chan struct{}
}

func (w *blockedWriter) Write(p []byte) (int, error) {
	select {
	case w.entered <- struct{}{}:
	default:
	}
	<-w.release
	return len(p), nil
}

// A writer that does not keep up loses whole intervals, counted, and never holds up the
// recorder (nor so the datapath behind it).
func TestLogLossWhenWriterBlocked(t *testing.T) {
	snap := example(t)
	w := &blockedWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	r := newRecorder(snap, func(c *Config) { c.Log = w; c.Interval = time.Hour })
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.writeLog()
	}()
	defer func() {
		close(w.release)
		close(r.batches)
		<-done
	}()
	r.take(new(seen(snap, apiToDB, 1)))
	r.cut()
	<-w.entered // the writer hangs in the first interval's write
	r.take(new(seen(snap, apiToDB, 11)))
	r.take(new(seen(snap, webToDB, 12)))
	r.cut() // waits for the writer
	r.take(new(seen(snap, apiToDB, 21)))
	r.take(new(seen(snap, webToDB, 22)))
	r.take(new(seen(snap, webToAPI, 23)))
	r.cut() // lost: 3 lines
	r.take(new(seen(snap, apiToDB, 31)))
	if got := counter(t, r, "podwall_flows_log_lost_total"); got != 3 {
		t.Errorf("lost %v lines, want 3", got)
	}
	if h := history(t, r); h["prod/api>prod/db"].Connections != 4 {
		t.Errorf("the history stopped while the log was blocked: %+v", h["prod/api>prod/db"])
	}
}

// counter reads one series of r.
func counter(t *testing.T, r *Recorder, name string) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 16)
	r.Collect(ch)
	close(ch)
	for m := range ch {
		if !strings.Contains(m.Desc().String(), `"`+name+`"`) {
			continue
		}
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		if d.Counter != nil {
			return d.Counter.GetValue()
		}
		return d.Gauge.GetValue()
	}
	t.Fatalf("no series %s", name)
	return 0
}

// manyFlows returns n distinct flows: clients of the lab's external range to the three pods,
// on a spread of ports.
func manyFlows(n int) []flow.Flow {
	out := make([]flow.Flow, n)
	dsts := []netip.Addr{webIP, apiIP, dbIP}
	for i := range out {
		src := netip.AddrFrom4([4]byte{198, 51, byte(i >> 16), byte(i >> 8)})
		out[i] = flow.Flow{Src: src, Dst: dsts[i%3], Proto: flow.TCP, Port: uint16(1024 + i%251)}
		if i%2 == 1 {
			out[i].Src = netip.AddrFrom4([4]byte{10, 244, 2, byte(i)}) // unknown pod-range clients
		}
	}
	return out
}

// BenchmarkInsert is the recorder goroutine's cost per verdict: a flow seen before (the
// common case: a client reconnecting) and a new one (spelled out: pods, reason, policies).
func BenchmarkInsert(b *testing.B) {
	snap := example(b)
	flows := manyFlows(DefaultSize)
	verdicts := make([]Seen, len(flows)) // decided beforehand: the benchmark is take's cost
	for i, f := range flows {
		verdicts[i] = seen(snap, f, int64(i))
	}
	b.Run("seen", func(b *testing.B) {
		r := newRecorder(snap)
		for _, s := range verdicts[:1000] {
			r.take(&s)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			r.take(&verdicts[i%1000])
			i++
		}
	})
	b.Run("new", func(b *testing.B) {
		r := newRecorder(snap, func(c *Config) { c.Size = 1000 })
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			r.take(&verdicts[i%len(verdicts)]) // each is new: the history holds the last 1000
			i++
		}
	})
}

// BenchmarkMemory is the heap a full history of DefaultSize flows holds.
func BenchmarkMemory(b *testing.B) {
	snap := example(b)
	flows := manyFlows(DefaultSize)
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r := newRecorder(snap)
		for i, f := range flows {
			r.take(new(seen(snap, f, int64(i))))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if r.Len() != DefaultSize {
			b.Fatalf("history has %d flows", r.Len())
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/DefaultSize, "B/flow")
		runtime.KeepAlive(r)
	}
}

// BenchmarkOffer is what the datapath pays per verdict to record it: a copy into the
// reader's ring. enqueue: the ring has room (the common case: the recorder's goroutine
// drains it every 5 ms); full: the recorder is behind and the verdict is lost (counted). The
// goroutine's work per verdict is BenchmarkInsert.
func BenchmarkOffer(b *testing.B) {
	snap := example(b)
	s := seen(snap, apiToDB, 1)
	b.Run("enqueue", func(b *testing.B) {
		r := newRecorder(snap)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if i++; i%minRing == 0 {
				b.StopTimer()
				r.rings[0].drain(func(*Seen) {})
				b.StartTimer()
			}
			r.Offer(0, &s)
		}
		if r.Lost() != 0 {
			b.Fatalf("lost %d", r.Lost())
		}
	})
	b.Run("slot", func(b *testing.B) { // as the agent hands a verdict over: filled in place
		r := newRecorder(snap)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if i++; i%minRing == 0 {
				b.StopTimer()
				r.rings[0].drain(func(*Seen) {})
				b.StartTimer()
			}
			p := r.Slot(0)
			p.Flow, p.Time, p.Gen, p.Allow = s.Flow, s.Time, s.Gen, s.Allow
			r.Commit(0)
		}
		if r.Lost() != 0 {
			b.Fatalf("lost %d", r.Lost())
		}
	})
	b.Run("full", func(b *testing.B) {
		r := newRecorder(snap)
		for range queueLen {
			r.Offer(0, &s)
		}
		b.ReportAllocs()
		for b.Loop() {
			r.Offer(0, &s)
		}
	})
}

// Producers offering at once, each into its own ring, while the recorder drains: every
// verdict is either recorded or counted as lost, none twice (run with -race).
func TestRingsConcurrent(t *testing.T) {
	snap := example(t)
	const producers, each = 4, 20000
	r := newRecorder(snap, func(c *Config) { c.Producers = producers })
	flows := manyFlows(producers)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			s := seen(snap, flows[p], 1)
			for range each {
				r.Offer(p, &s)
			}
		})
	}
	wg.Wait()
	cancel()
	<-done
	var recorded uint64
	r.mu.Lock()
	r.hist.each(func(_ key, e *entry) { recorded += e.count })
	r.mu.Unlock()
	if recorded+r.Lost() != producers*each {
		t.Errorf("recorded %d + lost %d != offered %d", recorded, r.Lost(), producers*each)
	}
}

// A flow whose deciding generation is gone keeps its recorded verdict; the reason says so and
// what the policy in force would do.
func TestHistoryGenerationGone(t *testing.T) {
	s, err := manifests.Load("../../deploy/examples/3tier/cluster.yaml") // no db-policy
	if err != nil {
		t.Fatal(err)
	}
	c := policy.NewCompiler("node-1")
	if err := c.Replace(s); err != nil {
		t.Fatal(err)
	}
	open := c.Snapshot()
	closed := example(t) // another compiler: generation 1 too, so make it look newer
	inForce := closed
	r := newRecorder(nil, func(c *Config) { c.Snapshot = func(uint64) *policy.Snapshot { return inForce } })
	v := seen(open, webToDB, 1)
	v.Gen = closed.Generation() + 7 // a generation no longer held
	r.take(&v)
	l := history(t, r)["prod/web>prod/db"]
	want := fmt.Sprintf("decided by policy generation %d, no longer held; generation %d would deny: ", v.Gen, closed.Generation())
	if l.Verdict != "allow" || !strings.HasPrefix(l.Reason, want) || l.Egress != nil || l.Policies != nil {
		t.Errorf("line %+v, want verdict allow and reason %q…", l, want)
	}
}

// The history's LRU agrees with golang-lru's on a random sequence of flows.
func TestLRUAgreesWithReference(t *testing.T) {
	const size = 64
	mine := newLRU(size)
	ref, _ := simplelru.NewLRU[key, int](size, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	flows := manyFlows(200)
	for i := range 20000 {
		f := flows[rng.IntN(len(flows))]
		k := keyOf(f)
		if k.flow() != f {
			t.Fatalf("key of %v gives back %v", f, k.flow())
		}
		e, _ := mine.touch(k)
		e.count++
		n, _ := ref.Get(k)
		ref.Add(k, n+1)
		if i%1000 == 0 || i == 19999 {
			var got []key
			mine.each(func(k key, e *entry) {
				if n, _ := ref.Peek(k); uint64(n) != e.count {
					t.Fatalf("%v: count %d, want %d", k.flow(), e.count, n)
				}
				got = append(got, k)
			})
			if !slices.Equal(got, ref.Keys()) {
				t.Fatalf("after %d: order differs", i)
			}
		}
	}
}
