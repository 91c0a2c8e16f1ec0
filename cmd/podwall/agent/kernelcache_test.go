package agent

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/datapath/nft"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/decisions"
	"github.com/podwall/podwall/policy/flow"
)

// fakeDenySet is the kernel's verdict caches as nft.Ruleset keeps them (datapath/nft's live
// tests hold the real ones to the same rules): a sync of a new generation empties them, and
// AddDenied and AddAllowed refuse the verdicts of any generation but the last one synced.
type fakeDenySet struct {
	mu      sync.Mutex
	gen     uint64
	elems   map[flow.Flow]uint64 // → the generation that added it
	allowed []flow.Flow
	err     error // returned by AddDenied when set
	hits    uint64
}

func newFakeDenySet(gen uint64) *fakeDenySet {
	return &fakeDenySet{gen: gen, elems: map[flow.Flow]uint64{}}
}

func (f *fakeDenySet) AddAllowed(gen uint64, as []flow.Flow) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if gen != f.gen {
		return 0, nft.ErrStale
	}
	f.allowed = append(f.allowed, as...)
	return len(as), nil
}

// sync is what apply does to the kernel before a new generation takes effect.
func (f *fakeDenySet) sync(gen uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if gen != f.gen {
		clear(f.elems)
		f.allowed = nil
	}
	f.gen = gen
}

func (f *fakeDenySet) AddDenied(gen uint64, flows []flow.Flow) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.err != nil:
		return 0, f.err
	case gen != f.gen:
		return 0, nft.ErrStale
	}
	for _, fl := range flows {
		f.elems[fl] = gen
	}
	return len(flows), nil
}

func (f *fakeDenySet) Counters() (nft.Counters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return nft.Counters{DenyCached: f.hits}, nil
}

// cached returns the flows in the cache, as strings, sorted.
func (f *fakeDenySet) cached() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []string{}
	for fl := range f.elems {
		out = append(out, fl.String())
	}
	slices.Sort(out)
	return out
}

// value reads a counter.
func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// runDenyCache runs c's adder on set until the test ends.
func runDenyCache(t *testing.T, c *kernelCache, set cacheSet) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.run(ctx, set) }()
	t.Cleanup(func() { cancel(); <-done })
}

// settle waits until the adder has dealt with n flows (added, stale or failed).
func settle(t *testing.T, c *kernelCache, n float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for value(c.adds)+value(c.stale) < n && value(c.errs) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("adder: %v added, %v stale, want %v in all", value(c.adds), value(c.stale), n)
		}
		time.Sleep(time.Millisecond)
	}
}

var (
	webToDB = flow.Flow{Src: webIP, Dst: dbIP, Proto: flow.TCP, Port: 3306}
	apiToDB = flow.Flow{Src: apiIP, Dst: dbIP, Proto: flow.UDP, Port: 53}
)

// offer hands over flows with ports, without waiting: when the queue is full it drops and
// counts; with the cache off, or for a protocol without ports, it takes nothing.
func TestDenyCacheOffer(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	if off := newDenyCache(0, log); off.offer(webToDB, 1) {
		t.Error("cache off: offer took a flow")
	}
	c := newDenyCache(2*time.Second, log)
	if c.offer(flow.Flow{Src: webIP, Dst: dbIP, Proto: flow.ICMP}, 1) {
		t.Error("offer took an ICMP flow (no ports: the kernel cache cannot key it)")
	}
	for i := range cacheQueueLen {
		if !c.offer(webToDB, 1) {
			t.Fatalf("offer %d refused with room in the queue", i)
		}
	}
	if c.offer(webToDB, 1) {
		t.Error("offer took a flow into a full queue")
	}
	if got := value(c.drops); got != 1 {
		t.Errorf("add drops = %v, want 1", got)
	}
}

// A deny of a replaced policy never enters the cache, even when it waited in the adder's
// queue across the policy change: it goes to the kernel with the generation that decided
// it, which the kernel refuses — whether the batch holds only old verdicts (refused by the
// kernel) or also new ones (left out by the adder). Would the adder stamp verdicts with the
// generation in force when it writes them, the first flow would survive into generation 2.
func TestDenyCacheNeverAddsAReplacedPolicysDeny(t *testing.T) {
	for _, tc := range []struct {
		name       string
		newVerdict bool // a verdict of generation 2 waits behind the old one
	}{{"old verdict alone", false}, {"old and new verdicts in one batch", true}} {
		t.Run(tc.name, func(t *testing.T) {
			c := newDenyCache(2*time.Second, slog.New(slog.DiscardHandler))
			set := newFakeDenySet(1)
			c.offer(webToDB, 1) // denied by generation 1 …
			set.sync(2)         // … which a new policy replaces before the adder runs
			want, n := []string{}, 1.0
			if tc.newVerdict {
				c.offer(apiToDB, 2)
				want, n = []string{apiToDB.String()}, 2
			}
			runDenyCache(t, c, set)
			settle(t, c, n)
			if got := set.cached(); !slices.Equal(got, want) {
				t.Errorf("cache holds %q, want %q", got, want)
			}
			if got := value(c.stale); got != 1 {
				t.Errorf("stale = %v, want 1", got)
			}
		})
	}
}

// Denies of the generation in force go in, a batch at a time, and a failed transaction is
// counted (and logged), not retried.
func TestDenyCacheAdds(t *testing.T) {
	c := newDenyCache(2*time.Second, slog.New(slog.DiscardHandler))
	set := newFakeDenySet(3)
	runDenyCache(t, c, set)
	c.offer(webToDB, 3)
	c.offer(apiToDB, 3)
	settle(t, c, 2)
	if got, want := set.cached(), []string{webToDB.String(), apiToDB.String()}; !slices.Equal(got, want) {
		t.Errorf("cache holds %q, want %q", got, want)
	}

	set.mu.Lock()
	set.err = errors.New("nft: add to the deny cache: set full")
	set.mu.Unlock()
	c.offer(flow.Flow{Src: webIP, Dst: apiIP, Proto: flow.SCTP, Port: 9}, 3)
	deadline := time.Now().Add(5 * time.Second)
	for value(c.errs) != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if adds, errs := value(c.adds), value(c.errs); adds != 2 || errs != 1 {
		t.Errorf("adds %v, errors %v; want 2 and 1", adds, errs)
	}
}

// observe hands a deny to the cache with the generation that decided it, and the stream's
// record says the kernel now drops the flow's repeats; allows, malformed packets and, with
// the cache off, nothing is handed over and the record says nothing.
func TestObserveDenyCache(t *testing.T) {
	for _, ttl := range []time.Duration{0, 1500 * time.Millisecond} {
		a, _ := testAgent(t, func(c *Config) { c.DenyCacheTTL = ttl })
		sub, _ := a.stream.Subscribe(decisions.Filter{}, 16)
		defer sub.Close()
		deny := a.verdict(webIP, dbIP, 3306, false)
		a.observe(deny)
		a.observe(a.verdict(apiIP, dbIP, 3306, false))
		a.observe(&datapath.Record[policy.Decision]{Flow: flow.Flow{Src: webIP, Dst: dbIP, Proto: flow.TCP}, Gen: deny.Gen, Malformed: errors.New("packet: truncated")})

		var got []int64
		for range 3 {
			r := <-sub.C()
			e := r.Event()
			got = append(got, e.KernelDenyTTLms)
		}
		want := []int64{ttl.Milliseconds(), 0, 0}
		if !slices.Equal(got, want) {
			t.Errorf("ttl %v: kernelDenyTTLms of deny, allow, malformed = %v, want %v", ttl, got, want)
		}
		if ttl == 0 {
			continue
		}
		if len(a.deny.ch) != 1 {
			t.Fatalf("ttl %v: %d flows handed to the deny cache, want 1", ttl, len(a.deny.ch))
		}
		if d := <-a.deny.ch; d.flow != deny.Flow || d.gen != deny.Gen {
			t.Errorf("handed over %v of generation %d, want %v of %d", d.flow, d.gen, deny.Flow, deny.Gen)
		}
	}
}

// The deny cache's series: the agent's counters, and the kernel's drops read at scrape
// (tableCounters, with the table's other counters).
func TestDenyCacheMetrics(t *testing.T) {
	a, _ := testAgent(t, func(c *Config) { c.DenyCacheTTL = 2 * time.Second })
	if got := a.metricValue(t, "podwall_datapath_deny_cache_hits_total", ""); got != 0 {
		t.Errorf("hits before the kernel table exists = %v, want 0", got)
	}
	set := newFakeDenySet(a.inForce.Generation())
	runDenyCache(t, a.deny, set)
	a.table.attach(set) // as Run attaches the ruleset
	a.observe(a.verdict(webIP, dbIP, 3306, false))
	settle(t, a.deny, 1)
	set.mu.Lock()
	set.hits = 7
	set.mu.Unlock()
	a.checkSeries(t, map[string]float64{
		"podwall_datapath_deny_cache_hits_total":       7,
		"podwall_datapath_deny_cache_adds_total":       1,
		"podwall_datapath_deny_cache_add_drops_total":  0,
		"podwall_datapath_deny_cache_stale_total":      0,
		"podwall_datapath_deny_cache_add_errors_total": 0,
	})
}

// New refuses a deny cache TTL the kernel cannot take.
func TestNewDenyCacheTTL(t *testing.T) {
	for _, ttl := range []time.Duration{-time.Second, nft.MaxDenyCacheTTL + time.Millisecond, 1500 * time.Microsecond} {
		_, err := New(Config{Node: "n", Source: idleSource, Queues: 1, DenyCacheTTL: ttl})
		if err == nil {
			t.Errorf("New with deny cache TTL %v: no error", ttl)
		}
	}
}

// observe hands an allow to the allow cache (when on) with the generation that decided it
// when it sees the flow again (a verdict-cache hit), and the stream's record says the
// kernel now accepts the flow's new connections; a flow's first allow (a miss), a deny and a
// malformed packet are not handed over.
func TestObserveAllowCache(t *testing.T) {
	for _, ttl := range []time.Duration{0, 2500 * time.Millisecond} {
		a, _ := testAgent(t, func(c *Config) { c.AllowCacheTTL = ttl })
		sub, _ := a.stream.Subscribe(decisions.Filter{}, 16)
		defer sub.Close()
		a.observe(a.verdict(apiIP, dbIP, 3306, false)) // first sight: a miss
		allow := a.verdict(apiIP, dbIP, 3306, true)
		a.observe(allow)
		a.observe(a.verdict(webIP, dbIP, 3306, true))
		a.observe(&datapath.Record[policy.Decision]{Flow: flow.Flow{Src: apiIP, Dst: dbIP, Proto: flow.TCP}, Allow: true, CacheHit: true, Gen: allow.Gen, Malformed: errors.New("packet: truncated")})

		var got []int64
		for range 4 {
			r := <-sub.C()
			e := r.Event()
			got = append(got, e.KernelAllowTTLms)
		}
		if want := []int64{0, ttl.Milliseconds(), 0, 0}; !slices.Equal(got, want) {
			t.Errorf("ttl %v: kernelAllowTTLms of allow (miss), allow (hit), deny, malformed = %v, want %v", ttl, got, want)
		}
		if ttl == 0 {
			if a.allow.ch != nil {
				t.Error("allow cache off: it has a queue")
			}
			continue
		}
		if len(a.allow.ch) != 1 {
			t.Fatalf("%d flows handed to the allow cache, want 1", len(a.allow.ch))
		}
		if d := <-a.allow.ch; d.flow != allow.Flow || d.gen != allow.Gen {
			t.Errorf("handed over %v of generation %d, want %v of %d", d.flow, d.gen, allow.Flow, allow.Gen)
		}
	}
}

// The allow cache's adder writes what it was handed with its generation, through
// AddAllowed (not AddDenied), and its series count it; its hits come from the kernel's
// counters of the allow cache's rules, not the deny cache's.
func TestAllowCacheAddsAndMetrics(t *testing.T) {
	a, _ := testAgent(t, func(c *Config) { c.AllowCacheTTL = 2 * time.Second })
	set := newFakeDenySet(a.inForce.Generation())
	runDenyCache(t, a.allow, set)
	a.table.attach(set) // as Run attaches the ruleset
	allow := a.verdict(apiIP, dbIP, 3306, true)
	a.observe(allow)
	settle(t, a.allow, 1)
	set.mu.Lock()
	set.hits = 5 // the deny cache's
	got, denied := slices.Clone(set.allowed), len(set.elems)
	set.mu.Unlock()
	if !slices.Equal(got, []flow.Flow{allow.Flow}) || denied != 0 {
		t.Errorf("allow cache holds %v, deny cache %d flows; want %v and none", got, denied, allow.Flow)
	}
	a.checkSeries(t, map[string]float64{
		"podwall_datapath_allow_cache_hits_total":  0,
		"podwall_datapath_allow_cache_adds_total":  1,
		"podwall_datapath_allow_cache_stale_total": 0,
		"podwall_datapath_deny_cache_adds_total":   0,
	})
}

// checkSeries checks the values of series without labels.
func (a *Agent) checkSeries(t *testing.T, want map[string]float64) {
	t.Helper()
	for name, v := range want {
		if got := a.metricValue(t, name, ""); got != v {
			t.Errorf("%s = %v, want %v", name, got, v)
		}
	}
}
