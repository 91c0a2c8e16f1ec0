package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// ErrNotDelivered: the packet a trap waited for did not arrive in time.
var ErrNotDelivered = errors.New("not delivered")

// SpoofedSYN identifies a SYN sent by SpoofSYN.
type SpoofedSYN struct {
	Src, Dst netip.AddrPort
	Seq      uint32
}

// SpoofSYN sends one TCP SYN from the namespace to dst with the forged
// source address src, on a raw socket that carries its own IP header
// (IPPROTO_RAW, which implies IP_HDRINCL), so the kernel does not check or
// replace the source. A SYN that arrives is answered with a RST to src
// unless something listens; keep src inside the lab.
func SpoofSYN(from *NS, src netip.Addr, dst netip.AddrPort) (SpoofedSYN, error) {
	src, dst = src.Unmap(), unmap(dst)
	syn := SpoofedSYN{
		Src: netip.AddrPortFrom(src, uint16(32768+randUint32()%28232)),
		Dst: dst,
		Seq: randUint32(),
	}
	if src.Is6() != dst.Addr().Is6() || !src.IsValid() {
		return syn, fmt.Errorf("spoof %s: source %v and destination %v differ in family", from.role, src, dst)
	}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(syn.Src.Port()),
		DstPort: layers.TCPPort(dst.Port()),
		Seq:     syn.Seq,
		SYN:     true,
		Window:  64240,
	}
	var ip gopacket.SerializableLayer
	family := syscall.AF_INET
	var sa syscall.Sockaddr
	if src.Is4() {
		v4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Id: uint16(randUint32()),
			SrcIP: src.AsSlice(), DstIP: dst.Addr().AsSlice()}
		tcp.SetNetworkLayerForChecksum(v4)
		ip, sa = v4, &syscall.SockaddrInet4{Addr: dst.Addr().As4()}
	} else {
		v6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
			SrcIP: src.AsSlice(), DstIP: dst.Addr().AsSlice()}
		tcp.SetNetworkLayerForChecksum(v6)
		family = syscall.AF_INET6
		ip, sa = v6, &syscall.SockaddrInet6{Addr: dst.Addr().As16()}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp); err != nil {
		return syn, err
	}
	fd := -1
	err := from.Do(func() (err error) {
		fd, err = syscall.Socket(family, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.IPPROTO_RAW)
		return err
	})
	if err != nil {
		return syn, fmt.Errorf("spoof %s: raw socket: %w", from.role, err)
	}
	defer syscall.Close(fd)
	if err := syscall.Sendto(fd, buf.Bytes(), 0, sa); err != nil {
		return syn, fmt.Errorf("spoof %s: send %v → %v: %w", from.role, src, dst, classify(err))
	}
	return syn, nil
}

// SYNTrap records the TCP SYNs that reach a namespace for one port, seen
// on raw sockets before the TCP stack answers them.
type SYNTrap struct {
	ps   *packetServer
	syns sightings[SpoofedSYN]
}

// TrapSYN starts recording SYNs to port in the namespace. Start it before
// sending; Close it when done (the lab's Close also does).
func TrapSYN(in *NS, port uint16) (*SYNTrap, error) {
	t, err := trapSYN(in, port)
	if err != nil {
		return nil, err
	}
	if _, err := in.register(t); err != nil {
		return nil, err
	}
	return t, nil
}

// trapSYN starts a trap that the lab does not track.
func trapSYN(in *NS, port uint16) (*SYNTrap, error) {
	pcs, err := in.listenRaw("tcp")
	if err != nil {
		return nil, fmt.Errorf("netns %s: trap tcp/%d: %w", in.name, port, err)
	}
	t := &SYNTrap{ps: &packetServer{conns: pcs}}
	t.ps.start(func(_ net.PacketConn, b []byte, from net.Addr) {
		// Raw TCP sockets get the TCP header (the IP header is stripped).
		if len(b) < 20 || binary.BigEndian.Uint16(b[2:4]) != port || b[13]&0x12 != 0x02 { // SYN without ACK
			return
		}
		t.syns.add(SpoofedSYN{
			Src: netip.AddrPortFrom(ipOf(from), binary.BigEndian.Uint16(b[0:2])),
			Dst: netip.AddrPortFrom(netip.Addr{}, port),
			Seq: binary.BigEndian.Uint32(b[4:8]),
		})
	})
	return t, nil
}

// Wait waits up to timeout for the SYN (matched by source address and
// port and sequence number) and returns nil when it arrived, an error
// wrapping ErrNotDelivered otherwise. SYNs that arrived before the call
// count.
func (t *SYNTrap) Wait(ctx context.Context, syn SpoofedSYN, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if t.syns.wait(ctx, func(s SpoofedSYN) bool { return s.Src == syn.Src && s.Seq == syn.Seq }) {
		return nil
	}
	return fmt.Errorf("syn %v → %v: %w", syn.Src, syn.Dst, ErrNotDelivered)
}

// SYNs returns the SYNs recorded so far; their Dst holds only the port.
func (t *SYNTrap) SYNs() []SpoofedSYN { return t.syns.all() }

// Close stops recording.
func (t *SYNTrap) Close() error { return t.ps.Close() }

// ProbeSpoofedSYN sends a SYN with forged source src from one namespace to
// dst and reports whether it reached the namespace to within timeout: nil
// when it arrived, an error wrapping ErrNotDelivered when not. Use it to
// prove that anti-spoofing drops it (and, without enforcement, that the
// lab itself delivers it: nodes do no reverse-path filtering).
func ProbeSpoofedSYN(ctx context.Context, from *NS, src netip.Addr, to *NS, dst netip.AddrPort, timeout time.Duration) error {
	trap, err := trapSYN(to, dst.Port())
	if err != nil {
		return err
	}
	defer trap.Close()
	syn, err := SpoofSYN(from, src, dst)
	if err != nil {
		return err
	}
	return trap.Wait(ctx, syn, timeout)
}
