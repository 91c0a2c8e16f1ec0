package policy

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"
)

// addrSet is a set of addresses made of ipBlocks (cidr minus except), stored as sorted,
// disjoint, non-adjacent closed ranges per family. A lookup scans a handful of ranges
// linearly and binary-searches many.
type addrSet struct {
	v4 []span4
	v6 []span6
}

type span4 struct{ lo, hi uint32 }

type u128 struct{ hi, lo uint64 }

type span6 struct{ lo, hi u128 }

func (a u128) less(b u128) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

func (a u128) cmp(b u128) int {
	switch {
	case a.less(b):
		return -1
	case b.less(a):
		return 1
	}
	return 0
}

func (a u128) inc() u128 {
	if a.lo == ^uint64(0) {
		return u128{a.hi + 1, 0}
	}
	return u128{a.hi, a.lo + 1}
}

func (a u128) dec() u128 {
	if a.lo == 0 {
		return u128{a.hi - 1, ^uint64(0)}
	}
	return u128{a.hi, a.lo - 1}
}

func v4(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }

func v6(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// prefixRange4 returns the first and last address of an IPv4 prefix.
func prefixRange4(p netip.Prefix) span4 {
	lo := v4(p.Masked().Addr())
	host := uint32(0)
	if p.Bits() < 32 {
		host = ^uint32(0) >> p.Bits()
	}
	return span4{lo, lo | host}
}

func prefixRange6(p netip.Prefix) span6 {
	lo := v6(p.Masked().Addr())
	var host u128
	switch b := p.Bits(); {
	case b == 0:
		host = u128{^uint64(0), ^uint64(0)}
	case b < 64:
		host = u128{^uint64(0) >> b, ^uint64(0)}
	case b < 128:
		host = u128{0, ^uint64(0) >> (b - 64)}
	}
	return span6{lo, u128{lo.hi | host.hi, lo.lo | host.lo}}
}

// addBlock adds cidr minus except to the set. Except prefixes of the other family or
// outside cidr are ignored (Validate rejects them).
func (s *addrSet) addBlock(cidr netip.Prefix, except []netip.Prefix) {
	if cidr.Addr().Is4() {
		cur := []span4{prefixRange4(cidr)}
		for _, e := range except {
			if e.Addr().Is4() {
				cur = subtract4(cur, prefixRange4(e))
			}
		}
		s.v4 = append(s.v4, cur...)
		return
	}
	cur := []span6{prefixRange6(cidr)}
	for _, e := range except {
		if e.Addr().Is6() {
			cur = subtract6(cur, prefixRange6(e))
		}
	}
	s.v6 = append(s.v6, cur...)
}

func subtract4(in []span4, x span4) []span4 {
	var out []span4
	for _, r := range in {
		if x.hi < r.lo || x.lo > r.hi {
			out = append(out, r)
			continue
		}
		if x.lo > r.lo {
			out = append(out, span4{r.lo, x.lo - 1})
		}
		if x.hi < r.hi {
			out = append(out, span4{x.hi + 1, r.hi})
		}
	}
	return out
}

func subtract6(in []span6, x span6) []span6 {
	var out []span6
	for _, r := range in {
		if x.hi.less(r.lo) || r.hi.less(x.lo) {
			out = append(out, r)
			continue
		}
		if r.lo.less(x.lo) {
			out = append(out, span6{r.lo, x.lo.dec()})
		}
		if x.hi.less(r.hi) {
			out = append(out, span6{x.hi.inc(), r.hi})
		}
	}
	return out
}

// normalize sorts and merges overlapping or adjacent ranges.
func (s *addrSet) normalize() {
	slices.SortFunc(s.v4, func(a, b span4) int { return cmp.Compare(a.lo, b.lo) })
	out4 := s.v4[:0]
	for _, r := range s.v4 {
		if n := len(out4); n > 0 && (out4[n-1].hi == ^uint32(0) || r.lo <= out4[n-1].hi+1) {
			out4[n-1].hi = max(out4[n-1].hi, r.hi)
			continue
		}
		out4 = append(out4, r)
	}
	s.v4 = slices.Clip(out4)

	slices.SortFunc(s.v6, func(a, b span6) int { return a.lo.cmp(b.lo) })
	out6 := s.v6[:0]
	for _, r := range s.v6 {
		if n := len(out6); n > 0 && (out6[n-1].hi == u128{^uint64(0), ^uint64(0)} || !out6[n-1].hi.inc().less(r.lo)) {
			if out6[n-1].hi.less(r.hi) {
				out6[n-1].hi = r.hi
			}
			continue
		}
		out6 = append(out6, r)
	}
	s.v6 = slices.Clip(out6)
}

// linearMax is the range count up to which contains scans instead of bisecting.
const linearMax = 8

// contains reports whether a is in the set.
func (s *addrSet) contains(a netip.Addr) bool {
	if a.Is4() {
		return contains4(s.v4, v4(a))
	}
	return contains6(s.v6, v6(a))
}

// contains4 reports whether x is in one of the ranges, which are sorted and disjoint.
func contains4(s []span4, x uint32) bool {
	if len(s) <= linearMax {
		for _, r := range s {
			if x >= r.lo && x <= r.hi {
				return true
			}
		}
		return false
	}
	i, j := 0, len(s)
	for i < j { // first range with hi >= x
		h := int(uint(i+j) >> 1)
		if s[h].hi < x {
			i = h + 1
		} else {
			j = h
		}
	}
	return i < len(s) && s[i].lo <= x
}

// contains6 reports whether x is in one of the ranges, which are sorted and disjoint.
func contains6(s []span6, x u128) bool {
	if len(s) <= linearMax {
		for _, r := range s {
			if !x.less(r.lo) && !r.hi.less(x) {
				return true
			}
		}
		return false
	}
	i, j := 0, len(s)
	for i < j {
		h := int(uint(i+j) >> 1)
		if s[h].hi.less(x) {
			i = h + 1
		} else {
			j = h
		}
	}
	return i < len(s) && !x.less(s[i].lo)
}
