package agent

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/flows"
)

// The tally: counting a verdict in the metrics (a histogram observation, three to five
// counters, the per-policy series found by name) costs more than deciding it, so the queue
// reader does not. observe copies what the metrics and the flow history need of a verdict
// (an observed) into the reader's own ring — a copy and one atomic store: no lock, no
// wake-up, nothing another reader writes — and one goroutine (run) takes what waits every
// tallyEvery, counts it (verdictMetrics.count) and offers it to the flow history. A scrape
// takes what waits first (verdictMetrics.Collect), so /metrics counts every verdict observed
// before it, as if observe had counted them itself. When a reader's ring is full, observe
// counts the verdict itself — the same count, the metrics are exact — and the flow history
// loses it (podwall_flows_lost_total).
//
// Measured (BenchmarkObserve, subscribers=0, against BenchmarkDecide over the same flows):
// Decide + observe cost 1.87× Decide when observe counted on the reader, 1.1× with the tally
// (bench/README.md has the run).
type tally struct {
	rings   []*tallyRing // one per queue reader: [Queue-QueueNum]
	metrics *verdictMetrics
	staged  *stagedMetrics
	flows   *flows.Recorder
	mu      sync.Mutex // one taker at a time: run, a scrape, stop
	// own counts the verdicts readers counted themselves (a full ring, not a reader).
	own atomic.Uint64
}

const (
	// tallyLen is how many verdicts wait for the tally, shared among the readers' rings (at
	// least minTallyRing each); an observed is 192 bytes: 16384 are 3 MiB.
	tallyLen     = 16384
	minTallyRing = 1024
	// tallyEvery is how often run takes what waits: every 2 ms, 16384 verdicts: up to 8
	// million a second before a reader counts on its own.
	tallyEvery = 2 * time.Millisecond
)

// observed is what the tally keeps of one verdict: the metrics' and the flow history's part
// of a datapath.Record, and its staged verdict.
type observed struct {
	flow            flow.Flow
	time            int64 // Unix nanoseconds
	gen             uint64
	latency         time.Duration
	egress, ingress judged
	staged          stagedVerdict
	allow, hit      bool
	malformed       bool
}

// judged is what the metrics count of a policy.Judgement. pod and policy point into the
// snapshot that decided; the tally clears them once counted, so that a ring pins no
// snapshot.
type judged struct {
	verdict policy.Verdict
	code    policy.Code
	local   bool
	pod     *policy.Pod
	policy  *policy.PolicyRef
}

func judgedOf(j *policy.Judgement) judged {
	return judged{verdict: j.Verdict, code: j.Code, local: j.Local, pod: j.Pod, policy: j.Policy}
}

func newTally(queues int, m *verdictMetrics, st *stagedMetrics, f *flows.Recorder) *tally {
	t := &tally{metrics: m, staged: st, flows: f}
	for range max(queues, 1) {
		t.rings = append(t.rings, newTallyRing(max(tallyLen/max(queues, 1), minTallyRing)))
	}
	return t
}

// offer hands one verdict of queue reader q (0 to the number of queues - 1) with its staged
// verdict to the tally, or counts it at once when the reader's ring is full or q is not a
// reader. It allocates nothing and never blocks.
func (t *tally) offer(q int, r *datapath.Record[policy.Decision], staged *stagedVerdict) {
	var o *observed
	var ring *tallyRing
	if q >= 0 && q < len(t.rings) {
		ring = t.rings[q]
		o = ring.next()
	}
	var own observed
	if o == nil {
		o = &own
	}
	o.flow, o.time, o.gen, o.latency = r.Flow, r.Time.UnixNano(), r.Gen, r.Latency
	o.egress, o.ingress = judgedOf(&r.Decision.Egress), judgedOf(&r.Decision.Ingress)
	o.staged = *staged
	o.allow, o.hit, o.malformed = r.Allow, r.CacheHit, r.Malformed != nil
	if o != &own {
		ring.publish()
		return
	}
	t.own.Add(1)
	t.metrics.count(o, false)
	if o.staged.decided {
		t.staged.count(&o.staged)
	}
	if !o.malformed {
		t.flows.Offer(-1, nil) // not a producer: lost, and counted as such (Offer's doc)
	}
}

// take counts what waits in every ring and offers it to the flow history.
func (t *tally) take() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, q := range t.rings {
		h, end := q.head.Load(), q.tail.Load()
		for ; h < end; h++ {
			t.count(&q.buf[h&uint64(len(q.buf)-1)])
		}
		q.head.Store(h)
	}
}

// count counts one verdict a ring handed over and offers it to the flow history. Under mu.
func (t *tally) count(o *observed) {
	t.metrics.count(o, true)
	if o.staged.decided {
		t.staged.count(&o.staged)
	}
	if !o.malformed {
		t.flows.Offer(0, &flows.Seen{Flow: o.flow, Time: o.time, Gen: o.gen, Allow: o.allow,
			Staged: o.staged.id(), StagedAllow: o.staged.allow})
	}
	o.egress, o.ingress, o.staged = judged{}, judged{}, stagedVerdict{} // pin no snapshot
}

// run takes what waits every tallyEvery until ctx ends, then once more.
func (t *tally) run(ctx context.Context) {
	tick := time.NewTicker(tallyEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			t.take()
			return
		case <-tick.C:
			t.take()
		}
	}
}

// tallyRing hands verdicts from one queue reader to the tally: a single-producer,
// single-consumer ring as flows' (policy/flows/ring.go), filled in place. The producer
// keeps the consumer's head as it last read it (seen), so it reads the consumer's cache line
// only when the ring looks full.
type tallyRing struct {
	head atomic.Uint64 // the next to take; written by the consumer only
	_    [56]byte      // head and the producer's fields on their own cache lines
	tail atomic.Uint64 // the next to fill; written by the producer only
	seen uint64        // head as the producer last read it; producer only
	_    [48]byte
	buf  []observed // len is a power of two
}

func newTallyRing(n int) *tallyRing {
	size := 1
	for size < n {
		size <<= 1
	}
	return &tallyRing{buf: make([]observed, size)}
}

// next returns the slot to fill, nil when the ring is full. Producer only; publish makes
// the filled slot the consumer's (tally.take).
func (q *tallyRing) next() *observed {
	t := q.tail.Load()
	if t-q.seen >= uint64(len(q.buf)) {
		if q.seen = q.head.Load(); t-q.seen >= uint64(len(q.buf)) {
			return nil
		}
	}
	return &q.buf[t&uint64(len(q.buf)-1)]
}

// publish hands the slot next returned to the consumer. Producer only.
func (q *tallyRing) publish() { q.tail.Store(q.tail.Load() + 1) }
