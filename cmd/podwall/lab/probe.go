package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Probe outcomes other than success. A probe's error wraps one of them
// (and the underlying error), so tests can tell a drop from a reject.
var (
	// ErrNoReply: nothing came back before the timeout (a silent drop).
	ErrNoReply = errors.New("no reply")
	// ErrRefused: the destination answered with a TCP RST or an ICMP port
	// unreachable (nothing listens, or a reject rule).
	ErrRefused = errors.New("refused")
	// ErrUnreachable: an ICMP host/network unreachable or administratively
	// prohibited came back, there is no route, or the sender's own
	// firewall refused the packet (EPERM).
	ErrUnreachable = errors.New("unreachable")
)

// classify wraps a socket error in the matching probe outcome.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %w", ErrNoReply, err)
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("%w: %w", ErrRefused, err)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return err
}

// Probe runs the probe of protocol proto — "TCP" (or ""), "UDP" or "SCTP": ProbeTCP,
// ProbeUDP or ProbeSCTP.
func Probe(ctx context.Context, proto string, from *NS, to netip.AddrPort, timeout time.Duration) error {
	switch proto {
	case "", "TCP":
		return ProbeTCP(ctx, from, to, timeout)
	case "UDP":
		return ProbeUDP(ctx, from, to, timeout)
	case "SCTP":
		return ProbeSCTP(ctx, from, to, timeout)
	}
	return fmt.Errorf("lab: no probe for protocol %q", proto)
}

// ProbeTCP connects from the namespace to `to`, sends a token and waits for
// it to come back, all within timeout. It returns nil only when the
// handshake completed and the echo arrived, which proves packets flow both
// ways; the destination must run ServeTCP.
func ProbeTCP(ctx context.Context, from *NS, to netip.AddrPort, timeout time.Duration) error {
	to = unmap(to)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var c net.Conn
	err := from.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", to.String())
		return err
	})
	if err != nil {
		return fmt.Errorf("tcp %s → %v: %w", from.role, to, classify(err))
	}
	defer c.Close()
	if err := echo(ctx, c); err != nil {
		return fmt.Errorf("tcp %s → %v: echo: %w", from.role, to, classify(err))
	}
	return nil
}

// ProbeUDP sends one datagram from the namespace to `to` and waits up to
// timeout for its echo; the destination must run ServeUDP. The datagram is
// not retransmitted: a drop of the first packet of a flow shows.
func ProbeUDP(ctx context.Context, from *NS, to netip.AddrPort, timeout time.Duration) error {
	to = unmap(to)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var c net.Conn
	err := from.Do(func() (err error) {
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
		return err
	})
	if err != nil {
		return fmt.Errorf("udp %s → %v: %w", from.role, to, classify(err))
	}
	defer c.Close()
	if err := echo(ctx, c); err != nil {
		return fmt.Errorf("udp %s → %v: %w", from.role, to, classify(err))
	}
	return nil
}

// Dial connects from the namespace to `to` over network ("tcp" or "udp")
// and returns the connection, to hold one flow open across a policy change
// and test it again with Echo. Echo servers close a connection that has
// been silent for two minutes.
func Dial(ctx context.Context, from *NS, network string, to netip.AddrPort) (net.Conn, error) {
	to = unmap(to)
	var c net.Conn
	err := from.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, to.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s %s → %v: %w", network, from.role, to, classify(err))
	}
	return c, nil
}

// Echo sends a token on a connection to an echo server (from Dial) and
// waits up to timeout for it to come back. Its errors wrap the probe
// outcomes like ProbeTCP's. After a timeout on a TCP connection the token
// may still arrive later: use a new connection, or expect the stream to be
// out of step.
func Echo(ctx context.Context, c net.Conn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := echo(ctx, c); err != nil {
		return fmt.Errorf("echo %v → %v: %w", c.LocalAddr(), c.RemoteAddr(), classify(err))
	}
	return nil
}

// echo writes a random token to c and reads until it comes back or ctx
// ends.
func echo(ctx context.Context, c net.Conn) error {
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	token := make([]byte, 16)
	rand.Read(token)
	if _, err := c.Write(token); err != nil {
		return err
	}
	got := make([]byte, len(token))
	if _, isUDP := c.(*net.UDPConn); isUDP {
		for {
			n, err := c.Read(got)
			if err != nil {
				return err
			}
			if n == len(token) && bytes.Equal(got, token) {
				return nil
			}
		}
	}
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, token) {
		return fmt.Errorf("echo mismatch: sent %x, got %x", token, got)
	}
	return nil
}

// ProbeSCTP sends an SCTP INIT from the namespace to `to` on a raw socket
// and waits up to timeout for the INIT ACK; the destination must run
// ServeSCTP. This kernel has no SCTP stack, so the INIT is crafted with
// gopacket and nothing answers but a SCTPServer.
func ProbeSCTP(ctx context.Context, from *NS, to netip.AddrPort, timeout time.Duration) error {
	to = unmap(to)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nw := "ip4:132"
	if to.Addr().Is6() {
		nw = "ip6:132"
	}
	var pc net.PacketConn
	if err := from.Do(func() (err error) {
		pc, err = net.ListenPacket(nw, "")
		return err
	}); err != nil {
		return fmt.Errorf("sctp %s → %v: %w", from.role, to, err)
	}
	defer pc.Close()
	srcPort := uint16(32768 + randUint32()%28232) // Linux's ephemeral range
	tag := randUint32() | 1
	init := layers.SCTPInit{
		SCTPChunk:                      layers.SCTPChunk{Type: layers.SCTPChunkTypeInit},
		InitiateTag:                    tag,
		AdvertisedReceiverWindowCredit: 65535,
		OutboundStreams:                1,
		InboundStreams:                 1,
		InitialTSN:                     randUint32(),
	}
	pkt, err := buildSCTP(srcPort, to.Port(), 0, &init)
	if err != nil {
		return err
	}
	dst := &net.IPAddr{IP: to.Addr().AsSlice()}
	err = readUntil(ctx, pc, func() error {
		_, err := pc.WriteTo(pkt, dst)
		return err
	}, func(b []byte, from net.Addr) bool {
		h, _, ok := parseSCTPInit(b, layers.SCTPChunkTypeInitAck)
		return ok && h.src == to.Port() && h.dst == srcPort && h.vtag == tag && ipOf(from) == to.Addr()
	})
	if err != nil {
		return fmt.Errorf("sctp %s → %v: %w", from.role, to, classify(err))
	}
	return nil
}

// ProbeICMP sends an ICMP (ICMPv6) echo request from the namespace to `to`
// on a raw socket and waits up to timeout for the echo reply. The
// destination's kernel answers; no server is needed.
func ProbeICMP(ctx context.Context, from *NS, to netip.Addr, timeout time.Duration) error {
	to = to.Unmap()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nw, reqType, replyType := "ip4:icmp", byte(8), byte(0)
	if to.Is6() {
		nw, reqType, replyType = "ip6:ipv6-icmp", 128, 129
	}
	var pc net.PacketConn
	if err := from.Do(func() (err error) {
		pc, err = net.ListenPacket(nw, "")
		return err
	}); err != nil {
		return fmt.Errorf("icmp %s → %v: %w", from.role, to, err)
	}
	defer pc.Close()
	// type, code, checksum, identifier, sequence, 16 bytes of data. The
	// kernel fills in the ICMPv6 checksum; IPv4's is ours to compute.
	msg := make([]byte, 8+16)
	msg[0] = reqType
	rand.Read(msg[4:])
	if !to.Is6() {
		binary.BigEndian.PutUint16(msg[2:], inetChecksum(msg))
	}
	err := readUntil(ctx, pc, func() error {
		_, err := pc.WriteTo(msg, &net.IPAddr{IP: to.AsSlice()})
		return err
	}, func(b []byte, src net.Addr) bool {
		return len(b) == len(msg) && b[0] == replyType && b[1] == 0 &&
			bytes.Equal(b[4:], msg[4:]) && ipOf(src) == to
	})
	if err != nil {
		return fmt.Errorf("icmp %s → %v: %w", from.role, to, classify(err))
	}
	return nil
}

// readUntil calls send, then reads packets from pc until match accepts
// one or ctx ends.
func readUntil(ctx context.Context, pc net.PacketConn, send func() error, match func(b []byte, from net.Addr) bool) error {
	deadline, _ := ctx.Deadline()
	pc.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := send(); err != nil {
		return err
	}
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		if match(buf[:n], from) {
			return nil
		}
	}
}

// buildSCTP serialises an SCTP packet (common header and one chunk) with
// its CRC32c checksum.
func buildSCTP(src, dst uint16, vtag uint32, chunk gopacket.SerializableLayer) ([]byte, error) {
	buf := gopacket.NewSerializeBuffer()
	hdr := &layers.SCTP{SrcPort: layers.SCTPPort(src), DstPort: layers.SCTPPort(dst), VerificationTag: vtag}
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, hdr, chunk); err != nil {
		return nil, err
	}
	b := bytes.Clone(buf.Bytes())
	clear(b[8:12])
	binary.LittleEndian.PutUint32(b[8:12], crc32.Checksum(b, castagnoli))
	return b, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func sctpChecksumOK(b []byte) bool {
	want := binary.LittleEndian.Uint32(b[8:12])
	c := bytes.Clone(b)
	clear(c[8:12])
	return crc32.Checksum(c, castagnoli) == want
}

// inetChecksum is the Internet checksum (RFC 1071) of b.
func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func ipOf(a net.Addr) netip.Addr {
	var ip net.IP
	switch a := a.(type) {
	case *net.IPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	case *net.TCPAddr:
		ip = a.IP
	}
	addr, _ := netip.AddrFromSlice(ip)
	return addr.Unmap()
}

// unmap turns an IPv4-mapped IPv6 address into IPv4, so the probe uses
// the family of the address's meaning.
func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func randUint32() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}

// Poll calls fn at once and then every interval until it returns nil, and
// returns nil; or until ctx ends, and returns fn's last error.
func Poll(ctx context.Context, interval time.Duration, fn func() error) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := fn()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-t.C:
		}
	}
}
