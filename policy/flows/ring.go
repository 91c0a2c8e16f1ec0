package flows

import "sync/atomic"

// ring hands verdicts from one queue reader to the recorder's goroutine: a single-producer,
// single-consumer ring of Seen values with two atomic counters. Offering is a bounds check,
// filling a slot in place and one store — no lock, no wake-up, nothing shared with another
// reader — where a buffered channel takes a lock the draining goroutine contends for.
type ring struct {
	head atomic.Uint64 // the next to take; written by the consumer only
	_    [56]byte      // head and tail on their own cache lines
	tail atomic.Uint64 // the next to fill; written by the producer only
	// limit is the producer's own bound on tail, head+len(buf) as it last read head: the
	// producer reads head (the consumer's line) only when it reaches limit.
	limit uint64
	_     [48]byte
	buf   []Seen // len is a power of two
}

func newRing(n int) *ring {
	size := 1
	for size < n {
		size <<= 1
	}
	q := &ring{buf: make([]Seen, size)}
	q.limit = uint64(size)
	return q
}

// slot returns the slot to fill next, nil when the ring is full. Producer only.
func (q *ring) slot() *Seen {
	t := q.tail.Load()
	if t >= q.limit {
		limit := q.head.Load() + uint64(len(q.buf))
		if t >= limit {
			return nil
		}
		q.limit = limit
	}
	return &q.buf[t&uint64(len(q.buf)-1)]
}

// commit hands over the slot slot returned. Producer only.
func (q *ring) commit() { q.tail.Store(q.tail.Load() + 1) }

// offer adds s, or reports false when the ring is full. Producer only.
func (q *ring) offer(s *Seen) bool {
	p := q.slot()
	if p == nil {
		return false
	}
	*p = *s
	q.commit()
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
