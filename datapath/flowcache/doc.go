// Package flowcache is the datapath's verdict cache: a fixed-size,
// thread-safe LRU (github.com/hashicorp/golang-lru/v2) from a packed flow
// Key — source address, destination address, protocol, destination port —
// to a verdict of the datapath's choosing.
//
// It exists so that a burst of new connections between the same two
// endpoints (a client opening many connections to one service port) is
// judged once per policy snapshot rather than once per packet. Entries are
// stamped with the snapshot generation and only hit for that generation,
// so publishing a new snapshot invalidates the cache without a sweep
// (STYLE principle 2); nothing here knows what a policy is.
//
// The package defines no Prometheus metrics: Stats returns the hit, miss and
// eviction counters, and the datapath exports them with its own metrics.
package flowcache
