package flowcache

import (
	"encoding/binary"
	"net/netip"

	"github.com/podwall/podwall/policy/flow"
)

// Key identifies a flow in the verdict cache: source address, destination
// address, IP protocol and destination port (the source port is left out:
// the verdict does not depend on it, so all connections from one client
// to one service share an entry).
//
// It is packed into a 36-byte array: no pointers, no padding, no strings.
// The cache is a Go map under the LRU, so every lookup hashes and compares
// the key, and the map's slots hold it. Hashing costs the same for any
// fixed-size key; what differs is size: at a realistic flow count the map
// no longer fits the CPU caches, and a key half the size of a pair of
// netip.AddrPorts means half the cache lines per probe. A string key would
// also have to be formatted, which allocates per packet. BenchmarkMapKey
// measures the three; bench/README.md has the figures.
//
// Layout: bytes 0–15 the source and 16–31 the destination address as
// 16-byte IPv6 (IPv4 in its IPv4-mapped form), 32 the protocol, 33–34 the
// destination port (big endian), 35 which of the two addresses are IPv4.
// The last byte keeps an IPv4 flow apart from an IPv6 flow between the
// IPv4-mapped forms of the same addresses, which policy may judge
// differently (an IPv4 ipBlock does not contain ::ffff:10.0.0.1).
//
// The zero Key is valid (invalid addresses, protocol 0, port 0) and, like
// any Key, comparable with ==.
type Key struct {
	b [36]byte
}

// Bits of byte 35.
const (
	src4 = 1 << iota
	dst4
)

// KeyOf packs a flow into a Key. Address zones are dropped.
func KeyOf(f flow.Flow) Key {
	var k Key
	s, d := f.Src.As16(), f.Dst.As16()
	copy(k.b[0:16], s[:])
	copy(k.b[16:32], d[:])
	k.b[32] = byte(f.Proto)
	binary.BigEndian.PutUint16(k.b[33:35], f.Port)
	if f.Src.Is4() {
		k.b[35] |= src4
	}
	if f.Dst.Is4() {
		k.b[35] |= dst4
	}
	return k
}

// Flow unpacks the key (without zones).
func (k Key) Flow() flow.Flow {
	return flow.Flow{Src: k.addr(0, src4), Dst: k.addr(16, dst4), Proto: flow.Proto(k.b[32]),
		Port: binary.BigEndian.Uint16(k.b[33:35])}
}

func (k Key) addr(off int, is4 byte) netip.Addr {
	a := netip.AddrFrom16([16]byte(k.b[off : off+16]))
	if k.b[35]&is4 != 0 {
		return a.Unmap()
	}
	return a
}

// String formats k as its flow, for tests and logs.
func (k Key) String() string { return k.Flow().String() }
