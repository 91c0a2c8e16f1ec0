package load

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/cmd/podwall/lab"
)

// Acceptor accepts TCP connections on one port and closes them at once: the server side
// of a connect load. It costs an accept4 and a close per connection, nothing per byte, and
// no goroutine or poller registration per connection.
type Acceptor struct {
	f        *os.File // the listening socket
	accepted atomic.Uint64
	done     chan struct{}
}

// Accept starts an Acceptor in namespace ns on port, both families.
func Accept(ns *lab.NS, port uint16) (*Acceptor, error) {
	var fd int
	err := ns.Do(func() (err error) {
		fd, err = listen6(port)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("load: accept on %s:%d: %w", ns.Name(), port, err)
	}
	// A non-blocking descriptor: os.NewFile registers it with the runtime poller, so
	// RawConn.Read below waits for readability without a thread.
	a := &Acceptor{f: os.NewFile(uintptr(fd), "acceptor"), done: make(chan struct{})}
	rc, err := a.f.SyscallConn()
	if err != nil {
		a.f.Close()
		return nil, err
	}
	go func() {
		defer close(a.done)
		// The callback drains the accept queue, then asks the poller to wait for more.
		// Read returns when the socket is closed.
		for {
			err := rc.Read(func(fd uintptr) bool {
				for {
					nfd, _, err := unix.Accept4(int(fd), unix.SOCK_CLOEXEC)
					switch {
					case err == nil:
						unix.Close(nfd)
						a.accepted.Add(1)
					case errors.Is(err, unix.EAGAIN):
						return false
					case errors.Is(err, unix.EINTR), errors.Is(err, unix.ECONNABORTED):
					default:
						return true
					}
				}
			})
			if err != nil {
				return
			}
		}
	}()
	return a, nil
}

// listen6 opens a non-blocking dual-stack TCP listening socket on port.
func listen6(port uint16) (int, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for _, o := range []struct{ level, opt, v int }{
		{unix.SOL_SOCKET, unix.SO_REUSEADDR, 1},
		{unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.v); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet6{Port: int(port)}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// Accepted returns how many connections were accepted so far.
func (a *Acceptor) Accepted() uint64 { return a.accepted.Load() }

// Close stops the acceptor.
func (a *Acceptor) Close() error {
	err := a.f.Close()
	<-a.done
	return err
}

// Sink is a TCP server that reads and discards everything each connection sends, and
// reports the byte count of each connection when it ends: the server side of a bulk
// throughput test.
type Sink struct {
	ln   net.Listener
	ends chan int64
	wg   sync.WaitGroup
}

// Serve starts a Sink in namespace ns on port.
func Serve(ns *lab.NS, port uint16) (*Sink, error) {
	var ln net.Listener
	err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", ":"+strconv.Itoa(int(port)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("load: sink on %s:%d: %w", ns.Name(), port, err)
	}
	s := &Sink{ln: ln, ends: make(chan int64, 16)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				n, _ := io.CopyBuffer(io.Discard, c, make([]byte, 1<<20))
				select {
				case s.ends <- n:
				default:
				}
			}()
		}
	}()
	return s, nil
}

// Close stops the sink.
func (s *Sink) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

// StreamResult is one bulk transfer.
type StreamResult struct {
	Bytes   int64
	Elapsed time.Duration
}

// Gbps returns the goodput in gigabits per second.
func (r StreamResult) Gbps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / r.Elapsed.Seconds() / 1e9
}

// Stream opens one TCP connection from ns to the sink at dst, then sends size bytes and
// waits until the sink has read them all. The clock starts after the handshake, so the
// result is the established connection's throughput alone. It gives up after timeout.
func (s *Sink) Stream(ns *lab.NS, dst string, size int64, timeout time.Duration) (StreamResult, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", dst, 5*time.Second)
		return err
	})
	if err != nil {
		return StreamResult{}, fmt.Errorf("load: stream dial %s: %w", dst, err)
	}
	defer c.Close()
	for len(s.ends) > 0 { // results of earlier connections
		<-s.ends
	}
	c.SetDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1<<20)
	begin := time.Now()
	var sent int64
	for sent < size {
		n, err := c.Write(buf[:min(int64(len(buf)), size-sent)])
		sent += int64(n)
		if err != nil {
			return StreamResult{Bytes: sent, Elapsed: time.Since(begin)}, fmt.Errorf("load: stream: %w", err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	select {
	case got := <-s.ends:
		r := StreamResult{Bytes: got, Elapsed: time.Since(begin)}
		if got != size {
			return r, fmt.Errorf("load: stream: sink read %d of %d bytes", got, size)
		}
		return r, nil
	case <-time.After(timeout):
		return StreamResult{Bytes: sent, Elapsed: time.Since(begin)}, errors.New("load: stream: sink did not finish")
	}
}
