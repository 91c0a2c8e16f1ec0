package flows

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/explain"
)

// Defaults of Config.
const (
	// DefaultSize is the number of flows the history keeps.
	DefaultSize = 100_000
	// DefaultInterval is the flow log's interval.
	DefaultInterval = 10 * time.Second
	// queueLen is how many verdicts wait for the recorder's goroutine, shared among the
	// producers' rings (at least minRing each); beyond that Offer loses them (counted).
	// 16384 verdicts are 2.1 MiB.
	queueLen = 16384
	minRing  = 1024
	// drainEvery is how often the recorder's goroutine takes what waits. It polls, so that
	// Offer never pays for waking it. Every 5 ms, 16384 verdicts: up to 3.2 million a
	// second.
	drainEvery = 5 * time.Millisecond
	// errorLogEvery rate-limits the log of failed flow log writes; the counter counts each.
	errorLogEvery = time.Minute
)

// Config configures a Recorder.
type Config struct {
	// Node is the agent's node, written in every Line.
	Node string
	// Producers is the number of goroutines that call Offer, each with its own index (the
	// datapath's queue readers); 0 means 1.
	Producers int
	// Size is the number of flows the history keeps; 0 means DefaultSize.
	Size int
	// Snapshot returns the policy snapshot of generation gen, or the one in force when that
	// generation is gone. Required.
	Snapshot func(gen uint64) *policy.Snapshot
	// Proposal returns the staged proposal Seen.Staged names, nil when it is no longer
	// held; nil: no staged proposal is ever held.
	Proposal func(id uint32) *explain.Proposal
	// Log receives the flow log: each Write is a chunk of whole lines (File); nil: no flow
	// log.
	Log io.Writer
	// Interval is the flow log's interval; 0 means DefaultInterval.
	Interval time.Duration
	Logger   *slog.Logger
	// Count, when set, is called with every verdict the Recorder takes from a ring, before
	// it is recorded: the observer's counting, done off the queue readers. Calls never
	// overlap, and Flush returns only once every verdict offered before it was counted.
	// It must not block; it must not call the Recorder.
	Count func(*Seen)
}

// Recorder records the flows the datapath judges: the history and the flow log (see the
// package doc). Offer never blocks; Run does the work.
type Recorder struct {
	cfg   Config
	rings []*ring // one per producer
	lost  atomic.Uint64

	// taking is held by whoever takes from the rings (Run's goroutine, Flush): the
	// consumer side of the rings, cur and Config.Count are its.
	taking sync.Mutex

	mu   sync.Mutex // guards hist
	hist *lru

	// The flow log: cur is the interval being counted (Run's goroutine only), batches hands
	// cut intervals to the writer goroutine.
	cur                          map[key]entry
	batches                      chan map[key]entry
	logLines, logLost, logErrors atomic.Uint64
	lastErrLog                   time.Time // writer goroutine only
}

// NewRecorder returns a Recorder for cfg.
func NewRecorder(cfg Config) *Recorder {
	if cfg.Size <= 0 {
		cfg.Size = DefaultSize
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Producers = max(cfg.Producers, 1)
	r := &Recorder{cfg: cfg}
	for range cfg.Producers {
		r.rings = append(r.rings, newRing(max(queueLen/cfg.Producers, minRing)))
	}
	r.hist = newLRU(cfg.Size)
	if cfg.Log != nil {
		r.cur = map[key]entry{}
		r.batches = make(chan map[key]entry, 1)
	}
	return r
}

// Offer hands one verdict of producer p over without waiting, and reports whether it did;
// when the recorder is behind, or p is not a producer (0 to Config.Producers-1), the
// verdict is lost and counted (Config.Count does not see it: the caller counts it itself).
// Each producer calls it from one goroutine at a time. It allocates nothing.
func (r *Recorder) Offer(p int, s *Seen) bool {
	if p < 0 || p >= len(r.rings) || !r.rings[p].offer(s) {
		r.lost.Add(1)
		return false
	}
	return true
}

// Slot is Offer in two steps, without a copy: it returns producer p's next slot, for the
// caller to fill — every field: it holds an older verdict — and hand over with Commit(p);
// nil when Offer would lose the verdict (counted: the caller counts it itself).
func (r *Recorder) Slot(p int) *Seen {
	if p >= 0 && p < len(r.rings) {
		if s := r.rings[p].slot(); s != nil {
			return s
		}
	}
	r.lost.Add(1)
	return nil
}

// Commit hands over the verdict filled in the slot Slot(p) returned.
func (r *Recorder) Commit(p int) { r.rings[p].commit() }

// Flush takes what waits in the rings now, on the caller's goroutine, then calls then (if
// not nil) before anything more is taken: every verdict offered before Flush was called is
// recorded and counted (Config.Count) when then runs. A scrape flushes, so that the
// counters are exact.
func (r *Recorder) Flush(then func()) {
	r.taking.Lock()
	defer r.taking.Unlock()
	r.drain()
	if then != nil {
		then()
	}
}

// Run records what Offer hands over until ctx ends; with a flow log it cuts an interval
// every Config.Interval, and the last one when ctx ends, and writes them.
func (r *Recorder) Run(ctx context.Context) {
	var tick <-chan time.Time
	drain := time.NewTicker(drainEvery)
	defer drain.Stop()
	done := make(chan struct{})
	if r.batches != nil {
		t := time.NewTicker(r.cfg.Interval)
		defer t.Stop()
		tick = t.C
		go func() {
			defer close(done)
			r.writeLog()
		}()
	} else {
		close(done)
	}
	for {
		select {
		case <-ctx.Done():
			// What is taken from now on (Flush: a scrape during shutdown) goes to the
			// history only: the last interval is the writer's.
			var last map[key]entry
			r.Flush(func() { last, r.cur = r.cur, nil })
			if r.batches != nil {
				if len(last) > 0 {
					r.batches <- last // the last interval waits for the writer
				}
				close(r.batches)
			}
			<-done
			return
		case <-drain.C:
			r.Flush(nil)
		case <-tick:
			r.Flush(r.cut)
		}
	}
}

// drain takes what waits in the rings, counts and records it, and clears the pointers
// counting needed (Seen.Judged). Under taking.
func (r *Recorder) drain() {
	for _, q := range r.rings {
		q.drain(func(s *Seen) {
			if r.cfg.Count != nil {
				r.cfg.Count(s)
			}
			r.take(s)
			s.Judged = [2]Judged{}
		})
	}
}

// take records one verdict. Under taking.
func (r *Recorder) take(s *Seen) {
	k := keyOf(s.Flow)
	r.mu.Lock()
	e, ok := r.hist.touch(k)
	if !ok {
		e.first, e.last = s.Time, s.Time
	}
	e.first, e.last = min(e.first, s.Time), max(e.last, s.Time)
	e.count++
	e.gen, e.allow, e.staged, e.stagedAllow = s.Gen, s.Allow, s.Staged, s.StagedAllow
	r.mu.Unlock()
	if r.cur == nil {
		return
	}
	c, ok := r.cur[k]
	if !ok {
		c.first, c.last = s.Time, s.Time
	}
	c.first, c.last = min(c.first, s.Time), max(c.last, s.Time)
	c.count++
	c.gen, c.allow, c.staged, c.stagedAllow = s.Gen, s.Allow, s.Staged, s.StagedAllow
	r.cur[k] = c
}

// cut ends the flow log's interval: its flows go to the writer, or are lost (counted) when
// the writer still has the previous interval waiting.
func (r *Recorder) cut() {
	if len(r.cur) == 0 {
		return
	}
	select {
	case r.batches <- r.cur:
	default:
		r.logLost.Add(uint64(len(r.cur)))
	}
	r.cur = make(map[key]entry, len(r.cur))
}

// writeLog writes the intervals Run cuts until batches is closed.
func (r *Recorder) writeLog() {
	var w logWriter
	for b := range r.batches {
		r.writeBatch(&w, b)
	}
}

// logWriter is the writer goroutine's scratch space.
type logWriter struct {
	buf   []byte
	items []item
}

type item struct {
	k key
	e entry
}

// maxWrite bounds the bytes of one Write to the flow log: an interval is written in chunks
// of whole lines of about this size.
const maxWrite = 256 << 10

// writeBatch writes one interval, one Line per flow in the order first seen, in chunks of
// whole lines (File writes each line with one write call).
func (r *Recorder) writeBatch(w *logWriter, b map[key]entry) {
	w.items = w.items[:0]
	for k, e := range b {
		w.items = append(w.items, item{k, e})
	}
	slices.SortFunc(w.items, func(a, b item) int { return cmp.Compare(a.e.first, b.e.first) })
	w.buf = w.buf[:0]
	lines := 0
	for i := range w.items {
		it := &w.items[i]
		l := r.line(it.k.flow(), &it.e, r.cfg.Snapshot(it.e.gen))
		w.buf = AppendJSON(w.buf, &l)
		lines++
		if len(w.buf) >= maxWrite || i == len(w.items)-1 {
			r.write(w.buf, lines)
			w.buf, lines = w.buf[:0], 0
		}
	}
}

// write hands whole lines to the log and counts them, written or lost.
func (r *Recorder) write(p []byte, lines int) {
	n, err := r.cfg.Log.Write(p)
	if err == nil {
		r.logLines.Add(uint64(lines))
		return
	}
	done := bytes.Count(p[:min(n, len(p))], []byte{'\n'})
	r.logLines.Add(uint64(done))
	r.logLost.Add(uint64(lines - done))
	r.logErrors.Add(1)
	if now := time.Now(); now.Sub(r.lastErrLog) >= errorLogEvery {
		r.lastErrLog = now
		r.cfg.Logger.Error("flow log: write failed; lines are lost until it works again", "err", err)
	}
}

// WriteTo writes the history as NDJSON, one Line per flow, least recently seen first. The
// history is copied under its lock; the lines are made outside it.
func (r *Recorder) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	items := make([]item, 0, r.hist.len())
	r.hist.each(func(k key, e *entry) { items = append(items, item{k, *e}) })
	r.mu.Unlock()
	bw := bufio.NewWriterSize(w, 64<<10)
	var n int64
	var buf []byte
	var snap *policy.Snapshot
	for i := range items {
		if snap == nil || snap.Generation() != items[i].e.gen {
			snap = r.cfg.Snapshot(items[i].e.gen)
		}
		l := r.line(items[i].k.flow(), &items[i].e, snap)
		buf = AppendJSON(buf[:0], &l)
		m, err := bw.Write(buf)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	return n, bw.Flush()
}

// Lost returns the number of verdicts Offer lost (podwall_flows_lost_total).
func (r *Recorder) Lost() uint64 { return r.lost.Load() }

// Len returns the number of flows in the history.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hist.len()
}

var (
	lostDesc = prometheus.NewDesc("podwall_flows_lost_total",
		"Verdicts not recorded in the flow history and log: the recorder was behind and its hand-off queue full.", nil, nil)
	trackedDesc = prometheus.NewDesc("podwall_flows_tracked",
		"Distinct flows (source, destination, protocol, destination port) in the flow history.", nil, nil)
	evictedDesc = prometheus.NewDesc("podwall_flows_evicted_total",
		"Flows evicted from the full flow history, least recently seen first.", nil, nil)
	logLinesDesc = prometheus.NewDesc("podwall_flows_log_lines_total",
		"Lines written to the flow log (--flow-log).", nil, nil)
	logLostDesc = prometheus.NewDesc("podwall_flows_log_lost_total",
		"Flow log lines lost: the writer was still writing the previous interval (a slow disk), or the write failed.", nil, nil)
	logErrorsDesc = prometheus.NewDesc("podwall_flows_log_errors_total",
		"Failed writes and rotations of the flow log.", nil, nil)
	logRotationsDesc = prometheus.NewDesc("podwall_flows_log_rotations_total",
		"Rotations of the flow log file (--flow-log-max-size).", nil, nil)
)

// Describe implements prometheus.Collector.
func (r *Recorder) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{lostDesc, trackedDesc, evictedDesc, logLinesDesc, logLostDesc, logErrorsDesc, logRotationsDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the series of the package doc.
func (r *Recorder) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	tracked, evicted := r.hist.len(), r.hist.evicted
	r.mu.Unlock()
	var rotations uint64
	if f, ok := r.cfg.Log.(*File); ok {
		rotations = f.Rotations()
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	counter(lostDesc, r.lost.Load())
	ch <- prometheus.MustNewConstMetric(trackedDesc, prometheus.GaugeValue, float64(tracked))
	counter(evictedDesc, evicted)
	counter(logLinesDesc, r.logLines.Load())
	counter(logLostDesc, r.logLost.Load())
	counter(logErrorsDesc, r.logErrors.Load())
	counter(logRotationsDesc, rotations)
}
