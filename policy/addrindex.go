package policy

import (
	"encoding/binary"
	"net/netip"
)

// addrIndex is Snapshot.byIP again, as an open-addressing table keyed by the 16 bytes of
// an address, for Decide: a lookup hashes two words and compares two, where the map hashes
// and compares netip.Addr's 24 bytes. Addresses with a zone or IPv4-mapped IPv6 ones are
// left to the map (entryOf). Each Snapshot copies its predecessor's slots and applies the
// addresses touched since: a copy of a flat array, cheaper than the map's. Immutable once
// the Snapshot is returned.
type addrIndex struct {
	slots []addrSlot // a power of two long, at most half full; empty: e nil
	n     int
}

type addrSlot struct {
	hi, lo uint64
	e      *podEntry
}

// indexed reports whether an address goes into the index (else only into the map).
func indexed(a netip.Addr) bool { return a.Zone() == "" && !a.Is4In6() }

func addrKey(a netip.Addr) (hi, lo uint64) {
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
}

func (x *addrIndex) home(hi, lo uint64) int {
	h := (hi*0x9e3779b97f4a7c15 ^ lo) * 0xbf58476d1ce4e5b9
	return int(h >> 32 & uint64(len(x.slots)-1))
}

// get returns the entry of a key, or nil.
func (x *addrIndex) get(hi, lo uint64) *podEntry {
	if len(x.slots) == 0 {
		return nil
	}
	mask := len(x.slots) - 1
	for i := x.home(hi, lo); ; i = (i + 1) & mask {
		s := &x.slots[i]
		if s.e == nil {
			return nil
		}
		if s.hi == hi && s.lo == lo {
			return s.e
		}
	}
}

// set records the entry of an address (nil: none), growing the table when half full.
func (x *addrIndex) set(a netip.Addr, e *podEntry) {
	if !indexed(a) {
		return
	}
	hi, lo := addrKey(a)
	if e == nil {
		x.remove(hi, lo)
		return
	}
	if 2*(x.n+1) > len(x.slots) {
		x.grow()
	}
	mask := len(x.slots) - 1
	for i := x.home(hi, lo); ; i = (i + 1) & mask {
		s := &x.slots[i]
		if s.e == nil {
			*s = addrSlot{hi, lo, e}
			x.n++
			return
		}
		if s.hi == hi && s.lo == lo {
			s.e = e
			return
		}
	}
}

// remove forgets a key, shifting back the slots after it so that no probe stops short.
func (x *addrIndex) remove(hi, lo uint64) {
	if len(x.slots) == 0 {
		return
	}
	mask := len(x.slots) - 1
	i := x.home(hi, lo)
	for ; ; i = (i + 1) & mask {
		s := &x.slots[i]
		if s.e == nil {
			return
		}
		if s.hi == hi && s.lo == lo {
			break
		}
	}
	x.n--
	for j := (i + 1) & mask; x.slots[j].e != nil; j = (j + 1) & mask {
		// The slot at j moves to the hole at i unless its home lies cyclically in (i, j].
		k := x.home(x.slots[j].hi, x.slots[j].lo)
		if (j > i && (k <= i || k > j)) || (j < i && k <= i && k > j) {
			x.slots[i] = x.slots[j]
			i = j
		}
	}
	x.slots[i] = addrSlot{}
}

func (x *addrIndex) grow() {
	old := x.slots
	x.slots, x.n = make([]addrSlot, max(64, 2*len(old))), 0
	for _, s := range old {
		if s.e != nil {
			x.put(s)
		}
	}
}

func (x *addrIndex) put(s addrSlot) {
	mask := len(x.slots) - 1
	for i := x.home(s.hi, s.lo); ; i = (i + 1) & mask {
		if x.slots[i].e == nil {
			x.slots[i] = s
			x.n++
			return
		}
	}
}

// clone returns a copy that set may change.
func (x *addrIndex) clone() addrIndex {
	return addrIndex{slots: append([]addrSlot(nil), x.slots...), n: x.n}
}

// entryOf returns the entry of the live pod (or pods: conflict.go) owning an address, or
// nil: byIP[a].
func (s *Snapshot) entryOf(a netip.Addr) *podEntry {
	if !indexed(a) {
		return s.byIP[a]
	}
	return s.addrs.get(addrKey(a))
}
