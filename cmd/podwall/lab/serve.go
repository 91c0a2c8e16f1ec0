package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// idleTimeout ends an echo connection that has been quiet this long, so a
// forgotten client cannot pin a server goroutine.
const idleTimeout = 2 * time.Minute

// ServeTCP starts a TCP echo server on port, on all of the namespace's
// addresses of both families, and returns its closer. Every connection
// echoes what it receives until the peer closes it. The server also stops
// when the lab is closed.
func (n *NS) ServeTCP(port uint16) (io.Closer, error) {
	var ln net.Listener
	err := n.Do(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(int(port))))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netns %s: serve tcp/%d: %w", n.name, port, err)
	}
	s := &tcpServer{ln: ln, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.serve()
	return n.register(s)
}

type tcpServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool // nil once closed
	once  sync.Once
}

func (s *tcpServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.conns == nil {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			echoStream(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

func echoStream(c net.Conn) {
	buf := make([]byte, 4096)
	for {
		c.SetDeadline(time.Now().Add(idleTimeout))
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (s *tcpServer) Close() error {
	var err error
	s.once.Do(func() {
		err = s.ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.conns = nil
		s.mu.Unlock()
		s.wg.Wait()
	})
	return err
}

// ServeUDP starts a UDP echo server on port, on all of the namespace's
// addresses of both families, and returns its closer. Each datagram is sent
// back to its sender. Replies leave from the address the kernel picks for
// the sender, which is the address probed as long as the namespace has one
// address per family (true of every lab namespace).
func (n *NS) ServeUDP(port uint16) (io.Closer, error) {
	var pc net.PacketConn
	err := n.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", net.JoinHostPort("", strconv.Itoa(int(port))))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netns %s: serve udp/%d: %w", n.name, port, err)
	}
	s := &packetServer{conns: []net.PacketConn{pc}}
	s.start(func(pc net.PacketConn, b []byte, from net.Addr) {
		pc.WriteTo(b, from)
	})
	return n.register(s)
}

// packetServer runs one read loop per packet socket.
type packetServer struct {
	conns []net.PacketConn
	wg    sync.WaitGroup
	once  sync.Once
}

func (s *packetServer) start(handle func(pc net.PacketConn, b []byte, from net.Addr)) {
	for _, pc := range s.conns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			buf := make([]byte, 65536)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue // e.g. ECONNREFUSED from an earlier reply
				}
				handle(pc, buf[:n], from)
			}
		}()
	}
}

func (s *packetServer) Close() error {
	var errs []error
	s.once.Do(func() {
		for _, pc := range s.conns {
			errs = append(errs, pc.Close())
		}
		s.wg.Wait()
	})
	return errors.Join(errs...)
}

// register makes Close of the lab stop c too.
func (n *NS) register(c io.Closer) (io.Closer, error) {
	if !n.track(c) {
		c.Close()
		return nil, fmt.Errorf("netns %s: lab is closed", n.name)
	}
	return c, nil
}

// SCTPServer answers SCTP INIT chunks for one port with an INIT ACK, on
// raw sockets: the kernel has no SCTP stack, so nothing else would answer.
// It also records every INIT it saw (all of them, for the server's life),
// so a test can tell a dropped INIT from a dropped reply.
type SCTPServer struct {
	port  uint16
	ps    *packetServer
	inits sightings[SCTPInit]
}

// SCTPInit describes an INIT chunk that reached a SCTPServer.
type SCTPInit struct {
	// From is the sender's address and SCTP source port.
	From netip.AddrPort
	// Tag is the chunk's initiate tag, the verification tag of the reply.
	Tag uint32
}

// listenRaw opens a raw IPv4 and a raw IPv6 socket for protocol proto ("132", "tcp")
// inside the namespace; on failure it closes what it opened.
func (n *NS) listenRaw(proto string) ([]net.PacketConn, error) {
	var pcs []net.PacketConn
	err := n.Do(func() error {
		for _, nw := range []string{"ip4:" + proto, "ip6:" + proto} {
			pc, err := net.ListenPacket(nw, "")
			if err != nil {
				return err
			}
			pcs = append(pcs, pc)
		}
		return nil
	})
	if err != nil {
		for _, pc := range pcs {
			pc.Close()
		}
		return nil, err
	}
	return pcs, nil
}

// ServeSCTP starts an SCTPServer on port for both families.
func (n *NS) ServeSCTP(port uint16) (*SCTPServer, error) {
	pcs, err := n.listenRaw("132")
	if err != nil {
		return nil, fmt.Errorf("netns %s: serve sctp/%d: %w", n.name, port, err)
	}
	s := &SCTPServer{port: port, ps: &packetServer{conns: pcs}}
	s.ps.start(s.handle)
	if _, err := n.register(s); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *SCTPServer) handle(pc net.PacketConn, b []byte, from net.Addr) {
	h, init, ok := parseSCTPInit(b, layers.SCTPChunkTypeInit)
	if !ok || h.dst != s.port || h.vtag != 0 {
		return
	}
	ip, ok := netip.AddrFromSlice(from.(*net.IPAddr).IP)
	if !ok {
		return
	}
	s.inits.add(SCTPInit{From: netip.AddrPortFrom(ip.Unmap(), h.src), Tag: init.InitiateTag})
	ack := layers.SCTPInit{
		SCTPChunk:                      layers.SCTPChunk{Type: layers.SCTPChunkTypeInitAck},
		InitiateTag:                    randUint32(),
		AdvertisedReceiverWindowCredit: 65535,
		OutboundStreams:                1,
		InboundStreams:                 1,
		InitialTSN:                     randUint32(),
		// The state cookie is mandatory in an INIT ACK; nobody reads it.
		Parameters: []layers.SCTPInitParameter{{Type: 7, Value: []byte("podwall-lab-cookie")}},
	}
	pkt, err := buildSCTP(s.port, h.src, init.InitiateTag, &ack)
	if err != nil {
		return
	}
	pc.WriteTo(pkt, from)
}

// Inits returns the INIT chunks received so far.
func (s *SCTPServer) Inits() []SCTPInit { return s.inits.all() }

// WaitInit waits up to timeout for an INIT from src (any port) and
// returns nil when one arrived, an error wrapping ErrNotDelivered when not.
// INITs that arrived before the call count.
func (s *SCTPServer) WaitInit(ctx context.Context, src netip.Addr, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	src = src.Unmap()
	if s.inits.wait(ctx, func(i SCTPInit) bool { return i.From.Addr() == src }) {
		return nil
	}
	return fmt.Errorf("sctp INIT from %v to port %d: %w", src, s.port, ErrNotDelivered)
}

// Close stops the server.
func (s *SCTPServer) Close() error { return s.ps.Close() }

// sctpHeader is the SCTP common header.
type sctpHeader struct {
	src, dst uint16
	vtag     uint32
}

// parseSCTPInit decodes an SCTP packet whose first chunk is an INIT or
// INIT ACK (typ) with a valid checksum.
func parseSCTPInit(b []byte, typ layers.SCTPChunkType) (sctpHeader, *layers.SCTPInit, bool) {
	if len(b) < 12+20 || layers.SCTPChunkType(b[12]) != typ || !sctpChecksumOK(b) {
		return sctpHeader{}, nil, false
	}
	p := gopacket.NewPacket(b, layers.LayerTypeSCTP, gopacket.NoCopy)
	sl, _ := p.Layer(layers.LayerTypeSCTP).(*layers.SCTP)
	lt := layers.LayerTypeSCTPInit
	if typ == layers.SCTPChunkTypeInitAck {
		lt = layers.LayerTypeSCTPInitAck
	}
	il, _ := p.Layer(lt).(*layers.SCTPInit)
	if sl == nil || il == nil {
		return sctpHeader{}, nil, false
	}
	return sctpHeader{src: uint16(sl.SrcPort), dst: uint16(sl.DstPort), vtag: sl.VerificationTag}, il, true
}

// sightings is a list of observations that can be waited on.
type sightings[T any] struct {
	mu      sync.Mutex
	items   []T
	changed chan struct{} // closed and replaced on every add
}

func (s *sightings[T]) add(v T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items = append(s.items, v)
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

func (s *sightings[T]) all() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]T(nil), s.items...)
}

// wait reports whether an item matching ok arrives before ctx ends.
func (s *sightings[T]) wait(ctx context.Context, ok func(T) bool) bool {
	seen := 0
	for {
		s.mu.Lock()
		for ; seen < len(s.items); seen++ {
			if ok(s.items[seen]) {
				s.mu.Unlock()
				return true
			}
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}
