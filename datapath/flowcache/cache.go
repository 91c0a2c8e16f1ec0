package flowcache

import (
	"fmt"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Cache is a fixed-size LRU of cached verdicts (any value type V) keyed by
// Key. Every entry is stamped with the generation of the policy snapshot
// that produced it, and Get only returns entries of the generation it is
// asked for: publishing a new snapshot invalidates the whole cache at once,
// without a sweep and without a lock beyond the LRU's own. Stale entries
// are overwritten by the next Add of their key or age out.
//
// It is safe for concurrent use by the queue readers. Get and Add take the
// LRU's mutex (a hit moves the entry to the front, so even Get writes).
type Cache[V any] struct {
	lru *lru.Cache[Key, entry[V]]

	hits, misses, evictions atomic.Uint64
}

type entry[V any] struct {
	gen uint64
	v   V
}

// Stats are the counters of a Cache since New.
type Stats struct {
	// Hits counts Gets that returned a value.
	Hits uint64
	// Misses counts Gets that did not: no entry, or an entry of another
	// generation.
	Misses uint64
	// Evictions counts entries dropped to make room for a new one: a
	// steadily growing count means the cache is too small for the
	// working set of flows. Purge is not counted.
	Evictions uint64
}

// New returns a Cache holding at most size entries. size must be positive.
func New[V any](size int) (*Cache[V], error) {
	// Evictions are counted from Add's result rather than an eviction
	// callback: the callback would also fire for every entry dropped by
	// Purge, and makes the LRU buffer evicted entries under its lock.
	l, err := lru.New[Key, entry[V]](size)
	if err != nil {
		return nil, fmt.Errorf("flowcache: size %d: %w", size, err)
	}
	return &Cache[V]{lru: l}, nil
}

// Get returns the value cached for k by snapshot generation gen, and
// reports whether there was one. It does not allocate.
func (c *Cache[V]) Get(k Key, gen uint64) (V, bool) {
	e, ok := c.lru.Get(k)
	if !ok || e.gen != gen {
		c.misses.Add(1)
		var zero V
		return zero, false
	}
	c.hits.Add(1)
	return e.v, true
}

// Add caches v for k, computed under snapshot generation gen, replacing any
// entry of k, and evicts the least recently used entry if the cache is full.
//
// Adding a new key allocates one list element inside the LRU (measured in
// BenchmarkAdd); replacing the entry of a key already cached does not.
// A racing Add of an older generation may replace a newer entry; that
// costs one miss, never a wrong hit, since Get checks the generation.
func (c *Cache[V]) Add(k Key, gen uint64, v V) {
	if c.lru.Add(k, entry[V]{gen: gen, v: v}) {
		c.evictions.Add(1)
	}
}

// Len returns the number of entries, stale ones included.
func (c *Cache[V]) Len() int { return c.lru.Len() }

// Purge drops every entry. It is not needed on a snapshot swap (a new
// generation does that for free); it frees the memory at once.
func (c *Cache[V]) Purge() { c.lru.Purge() }

// Stats returns the counters. They are read one by one, not as a
// consistent snapshot.
func (c *Cache[V]) Stats() Stats {
	return Stats{
		Hits:      c.hits.Load(),
		Misses:    c.misses.Load(),
		Evictions: c.evictions.Load(),
	}
}
