package flows

import "sync/atomic"

// ring hands verdicts from one queue reader to the recorder's goroutine: a single-producer,
// single-consumer ring of Seen values with two atomic counters. Offering is a bounds check,
// a copy and a store — no lock, no wake-up, nothing shared with another reader — where a
// buffered channel takes a lock the draining goroutine contends for.
type ring struct {
	head atomic.Uint64 // the next to take; written by the consumer only
	_    [56]byte      // head and tail on their own cache lines
	tail atomic.Uint64 // the next to fill; written by the producer only
	_    [56]byte
	buf  []Seen // len is a power of two
}

func newRing(n int) *ring {
	size := 1
	for size < n {
		size <<= 1
	}
	return &ring{buf: make([]Seen, size)}
}

// offer adds s, or reports false when the ring is full. Producer only.
func (q *ring) offer(s *Seen) bool {
	t := q.tail.Load()
	if t-q.head.Load() >= uint64(len(q.buf)) {
		return false
	}
	q.buf[t&uint64(len(q.buf)-1)] = *s
	q.tail.Store(t + 1)
	return true
}

// drain calls fn with every value offered so far, in order. Consumer only.
func (q *ring) drain(fn func(*Seen)) {
	h, t := q.head.Load(), q.tail.Load()
	for ; h < t; h++ {
		fn(&q.buf[h&uint64(len(q.buf)-1)])
	}
	q.head.Store(h)
}
