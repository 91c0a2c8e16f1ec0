package decisions

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"weak"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podwall/podwall/policy"
)

// Subscriber limits. A record takes 312 bytes in a buffer: a default buffer about 1.2 MiB,
// the largest 4.9 MiB; all buffers together hold at most MaxBuffered records, about 78 MiB
// (64 subscribers with the default buffer), whatever the clients ask.
const (
	// DefaultBuffer is the number of records a subscriber's buffer holds unless it asks
	// for another size.
	DefaultBuffer = 4096
	// MaxBuffer bounds a subscriber's buffer.
	MaxBuffer = 1 << 14
	// MaxSubscribers bounds the subscribers of one hub: each costs the datapath a filter
	// check and a channel send per verdict.
	MaxSubscribers = 64
	// MaxBuffered bounds the records the buffers of all subscribers hold together: a
	// subscriber's buffer is cut to what is left, and when nothing is left it is refused
	// (ErrTooManySubscribers).
	MaxBuffered = MaxSubscribers * DefaultBuffer
)

// ErrTooManySubscribers is returned by Subscribe when the hub has MaxSubscribers, or its
// subscribers' buffers hold MaxBuffered records.
var ErrTooManySubscribers = errors.New("decisions: too many subscribers")

// Hub hands records to subscribers. Publish never blocks: it copies the record into each
// matching subscriber's buffered channel, and when that channel is full the record is
// dropped and counted for that subscriber, which then reports the loss in its stream. The
// zero Hub has no subscribers and is ready to use; it must not be copied.
type Hub struct {
	n    atomic.Int64                    // subscribers
	subs atomic.Pointer[[]*Subscription] // copy on write, under mu

	mu                    sync.Mutex
	goneSent, goneDropped uint64 // counts of closed subscriptions, under mu
	buffered              int    // records the subscribers' buffers hold, under mu

	refs [2]atomic.Pointer[snapRef] // Ref's cache, by generation parity
}

// snapRef is a snapshot's weak reference with its generation.
type snapRef struct {
	gen uint64
	w   weak.Pointer[policy.Snapshot]
}

// Ref returns the weak reference a Record carries to s. weak.Make takes a lock and about
// 70 ns, so the hub keeps the references of two generations (a swap makes records of the
// old and the new one for a moment): a record then costs two atomic loads, and allocates
// nothing once the hub has met s. The cache holds no strong pointer.
func (h *Hub) Ref(s *policy.Snapshot) weak.Pointer[policy.Snapshot] {
	slot := &h.refs[s.Generation()%2]
	if r := slot.Load(); r != nil && r.w.Value() == s {
		return r.w
	}
	r := &snapRef{gen: s.Generation(), w: weak.Make(s)}
	slot.Store(r)
	return r.w
}

// Active reports whether anyone subscribes. Publishers check it first, so that records are
// not even made without a subscriber.
func (h *Hub) Active() bool { return h.n.Load() > 0 }

// Publish offers r to every subscriber whose filter matches. It copies r (the caller may
// reuse it), never blocks and never allocates.
func (h *Hub) Publish(r *Record) {
	subs := h.subs.Load()
	if subs == nil {
		return
	}
	for _, s := range *subs {
		if !s.m.record(r) {
			continue
		}
		select {
		case s.c <- *r:
			s.sent.Add(1)
		default:
			s.dropped.Add(1)
		}
	}
}

// Subscribe adds a subscriber with a filter and a buffer of n records (0 means
// DefaultBuffer; more than MaxBuffer, or than what MaxBuffered leaves, is cut). Close it
// when done. It fails on a bad filter and with ErrTooManySubscribers.
func (h *Hub) Subscribe(f Filter, n int) (*Subscription, error) {
	m, err := f.compile()
	if err != nil {
		return nil, err
	}
	if n <= 0 {
		n = DefaultBuffer
	}
	n = min(n, MaxBuffer)
	h.mu.Lock()
	defer h.mu.Unlock()
	n = min(n, MaxBuffered-h.buffered)
	if h.n.Load() >= MaxSubscribers || n <= 0 {
		return nil, ErrTooManySubscribers
	}
	h.buffered += n
	s := &Subscription{h: h, c: make(chan Record, n), m: m, Filter: f}
	var next []*Subscription
	if cur := h.subs.Load(); cur != nil {
		next = slices.Clone(*cur)
	}
	next = append(next, s)
	h.subs.Store(&next)
	h.n.Add(1)
	return s, nil
}

// Subscribers returns the number of subscribers.
func (h *Hub) Subscribers() int { return int(h.n.Load()) }

// Totals returns the records handed to subscribers and the records dropped because a
// subscriber's buffer was full, over all subscribers past and present.
func (h *Hub) Totals() (sent, dropped uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sent, dropped = h.goneSent, h.goneDropped
	if cur := h.subs.Load(); cur != nil {
		for _, s := range *cur {
			sent += s.sent.Load()
			dropped += s.dropped.Load()
		}
	}
	return sent, dropped
}

// Subscription is one subscriber: a buffered channel of records and its loss count.
type Subscription struct {
	// Filter is the filter the subscription was made with.
	Filter Filter

	h       *Hub
	c       chan Record
	m       matcher
	sent    atomic.Uint64
	dropped atomic.Uint64
	// reported is the part of dropped already returned by Lost; only the reader touches it.
	reported uint64
	closed   bool // under h.mu
}

// C is the subscriber's records. It is never closed: stop reading after Close.
func (s *Subscription) C() <-chan Record { return s.c }

// Match reports whether e passes the parts of the filter that need the spelled-out event
// (Policy). Records on C passed the rest already.
func (s *Subscription) Match(e *Event) bool { return s.m.event(e) }

// Lost returns the records dropped for this subscriber since the last call. Call it from
// the reading goroutine only.
func (s *Subscription) Lost() uint64 {
	d := s.dropped.Load()
	n := d - s.reported
	s.reported = d
	return n
}

// Dropped returns all records dropped for this subscriber.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close removes the subscriber. Idempotent.
func (s *Subscription) Close() {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	cur := *h.subs.Load()
	next := make([]*Subscription, 0, len(cur)-1)
	for _, x := range cur {
		if x != s {
			next = append(next, x)
		}
	}
	h.subs.Store(&next)
	h.n.Add(-1)
	h.buffered -= cap(s.c)
	// A publisher that loaded the old list may still count one record: close enough.
	h.goneSent += s.sent.Load()
	h.goneDropped += s.dropped.Load()
}

var (
	subscribersDesc = prometheus.NewDesc("podwall_decisions_subscribers",
		"Subscribers of the decision stream (/debug/decisions, podwall tail, the live page).", nil, nil)
	sentDesc = prometheus.NewDesc("podwall_decisions_sent_total",
		"Decision records handed to stream subscribers (one per subscriber whose filter matched).", nil, nil)
	droppedDesc = prometheus.NewDesc("podwall_decisions_dropped_total",
		"Decision records lost because a subscriber's buffer was full: the subscriber was too slow. Each subscriber is told its own losses in its stream.", nil, nil)
)

// Describe implements prometheus.Collector.
func (h *Hub) Describe(ch chan<- *prometheus.Desc) {
	ch <- subscribersDesc
	ch <- sentDesc
	ch <- droppedDesc
}

// Collect implements prometheus.Collector: the metrics in this package's README.
func (h *Hub) Collect(ch chan<- prometheus.Metric) {
	sent, dropped := h.Totals()
	ch <- prometheus.MustNewConstMetric(subscribersDesc, prometheus.GaugeValue, float64(h.Subscribers()))
	ch <- prometheus.MustNewConstMetric(sentDesc, prometheus.CounterValue, float64(sent))
	ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(dropped))
}
