package flows

import (
	"net/netip"

	"github.com/podwall/podwall/policy/flow"
)

// key is a flow packed for the history's map: 36 bytes and no pointer, where flow.Flow is
// 56 bytes with two (netip.Addr's zone handles). At 100,000 flows that is 2 MB less map and
// nothing for the garbage collector to scan.
type key struct {
	src, dst [16]byte
	port     uint16
	proto    flow.Proto
	v4       bool
}

func keyOf(f flow.Flow) key {
	return key{src: f.Src.As16(), dst: f.Dst.As16(), port: f.Port, proto: f.Proto, v4: f.Src.Is4()}
}

func (k key) flow() flow.Flow {
	src, dst := netip.AddrFrom16(k.src), netip.AddrFrom16(k.dst)
	if k.v4 {
		src, dst = src.Unmap(), dst.Unmap()
	}
	return flow.Flow{Src: src, Dst: dst, Proto: k.proto, Port: k.port}
}

// lru is the history: at most max entries, the least recently seen evicted first. Entries
// live in one slice, linked by index (node 0 is the list's head); the map holds indexes. Per
// flow: a 96-byte node and a 40-byte map slot, no pointers (BenchmarkMemory).
type lru struct {
	index   map[key]int32
	nodes   []node
	max     int
	evicted uint64
}

type node struct {
	key        key
	prev, next int32
	entry
}

func newLRU(max int) *lru {
	l := &lru{index: map[key]int32{}, max: max, nodes: make([]node, 1, min(max, 1024)+1)}
	return l
}

func (l *lru) len() int { return len(l.index) }

// touch returns the entry of k, made the most recent, and whether it was there; a new entry
// is zero, and takes the place of the least recent one when the history is full.
func (l *lru) touch(k key) (*entry, bool) {
	if i, ok := l.index[k]; ok {
		l.unlink(i)
		l.pushFront(i)
		return &l.nodes[i].entry, true
	}
	var i int32
	if len(l.index) >= l.max {
		i = l.nodes[0].prev // the least recent
		l.unlink(i)
		delete(l.index, l.nodes[i].key)
		l.evicted++
	} else {
		l.nodes = append(l.nodes, node{})
		i = int32(len(l.nodes) - 1)
	}
	l.nodes[i] = node{key: k}
	l.index[k] = i
	l.pushFront(i)
	return &l.nodes[i].entry, false
}

func (l *lru) unlink(i int32) {
	n := &l.nodes[i]
	l.nodes[n.prev].next = n.next
	l.nodes[n.next].prev = n.prev
}

func (l *lru) pushFront(i int32) {
	head := &l.nodes[0]
	n := &l.nodes[i]
	n.prev, n.next = 0, head.next
	l.nodes[head.next].prev = i
	head.next = i
}

// each calls fn for every entry, the least recently seen first.
func (l *lru) each(fn func(k key, e *entry)) {
	for i := l.nodes[0].prev; i != 0; i = l.nodes[i].prev {
		fn(l.nodes[i].key, &l.nodes[i].entry)
	}
}
