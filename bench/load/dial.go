package load

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/cmd/podwall/lab"
)

// ConnectLoad is a closed-loop load of new TCP connections: Concurrency connects in flight
// until Count have finished, or Deadline has passed.
type ConnectLoad struct {
	// Dst is the server's address and first port; Ports consecutive ports from there are
	// used in turn (connection i goes to port Dst.Port()+i%Ports). Ports ≤ 1 means one.
	Dst   netip.AddrPort
	Ports int
	// Count bounds the connections started; Concurrency the connects in flight.
	Count, Concurrency int
	// Timeout bounds one connect (a SYN the kernel retransmits counts as slow, not lost,
	// up to Timeout); Deadline bounds the whole load.
	Timeout, Deadline time.Duration
	// Threads splits Count and Concurrency over this many generator threads (default 1).
	// Without a queue the kernel forwards a SYN, and answers it in the server, inside the
	// client's connect(2); one thread then caps the kernel-only rate at one CPU.
	Threads int

	first, step int // this thread's share of the ports
}

// ConnectResult is what a ConnectLoad did.
type ConnectResult struct {
	Started, OK, Failed int
	Elapsed             time.Duration
	// Latencies holds the connect time (connect(2) to writable) of each successful
	// connection, sorted.
	Latencies []time.Duration
	// Errors counts failures by errno name ("timeout" for connects that exceeded Timeout).
	Errors map[string]int
}

// Rate returns successful connections per second.
func (r ConnectResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

// Quantile returns the q-quantile (0..1) of the connect latencies.
func (r ConnectResult) Quantile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(q * float64(len(r.Latencies)))
	return r.Latencies[min(i, len(r.Latencies)-1)]
}

// Connect runs the load from namespace ns on Threads OS threads, each with non-blocking
// sockets and its own epoll instance, so the generator costs a few system calls per
// connection and no goroutine hand-offs. Each socket has SO_LINGER 0, so close sends a RST and leaves no
// TIME_WAIT behind: the load can reuse source ports at once, and conntrack forgets the
// connection in seconds (CLOSE state) rather than minutes.
//
// Connect needs root (namespaces).
func Connect(ns *lab.NS, c ConnectLoad) (ConnectResult, error) {
	if c.Ports < 1 {
		c.Ports = 1
	}
	if c.Concurrency < 1 || c.Count < 1 {
		return ConnectResult{}, errors.New("load: Count and Concurrency must be positive")
	}
	if int(c.Dst.Port())+c.Ports-1 > 0xffff {
		return ConnectResult{}, fmt.Errorf("load: ports %d+%d exceed 65535", c.Dst.Port(), c.Ports)
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Deadline <= 0 {
		c.Deadline = 5 * time.Minute
	}
	t := max(c.Threads, 1)
	if c.Concurrency < t || c.Count < t {
		t = 1
	}
	parts := make([]ConnectResult, t)
	errs := make([]error, t)
	var wg sync.WaitGroup
	for i := range t {
		sub := c
		sub.Count = c.Count/t + btoi(i < c.Count%t)
		sub.Concurrency = c.Concurrency/t + btoi(i < c.Concurrency%t)
		sub.first = i // interleave the ports: thread i takes i, i+t, i+2t, …
		sub.step = t
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = ns.Do(func() (err error) {
				parts[i], err = connect(sub)
				return err
			})
		}()
	}
	wg.Wait()
	res := ConnectResult{Errors: map[string]int{}}
	for _, p := range parts {
		res.Started += p.Started
		res.OK += p.OK
		res.Failed += p.Failed
		res.Elapsed = max(res.Elapsed, p.Elapsed)
		res.Latencies = append(res.Latencies, p.Latencies...)
		for k, v := range p.Errors {
			res.Errors[k] += v
		}
	}
	slices.Sort(res.Latencies)
	return res, errors.Join(errs...)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func connect(c ConnectLoad) (ConnectResult, error) {
	res := ConnectResult{Errors: map[string]int{}, Latencies: make([]time.Duration, 0, c.Count)}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return res, fmt.Errorf("load: epoll: %w", err)
	}
	defer unix.Close(ep)

	dst := c.Dst.Addr().Unmap()
	family := unix.AF_INET
	if dst.Is6() {
		family = unix.AF_INET6
	}
	sockaddr := func(port int) unix.Sockaddr {
		if dst.Is4() {
			return &unix.SockaddrInet4{Port: port, Addr: dst.As4()}
		}
		return &unix.SockaddrInet6{Port: port, Addr: dst.As16()}
	}
	linger := &unix.Linger{Onoff: 1, Linger: 0}

	// started[fd] is when the connect on fd began; zero when fd is not ours.
	var started []time.Time
	inflight := 0
	finish := func(fd int, ok bool, why string, now time.Time) {
		if ok {
			res.OK++
			res.Latencies = append(res.Latencies, now.Sub(started[fd]))
		} else {
			res.Failed++
			res.Errors[why]++
		}
		started[fd] = time.Time{}
		inflight--
		unix.Close(fd) // also leaves the epoll set
	}
	start := func(i int) error {
		fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("load: socket: %w", err)
		}
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, linger); err != nil {
			unix.Close(fd)
			return fmt.Errorf("load: SO_LINGER: %w", err)
		}
		for fd >= len(started) {
			started = append(started, time.Time{})
		}
		res.Started++
		inflight++
		started[fd] = time.Now()
		err = unix.Connect(fd, sockaddr(int(c.Dst.Port())+(c.first+i*max(c.step, 1))%c.Ports))
		if err != nil && !errors.Is(err, unix.EINPROGRESS) {
			finish(fd, false, errName(err), time.Now())
			return nil
		}
		ev := unix.EpollEvent{Events: unix.EPOLLOUT, Fd: int32(fd)}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			finish(fd, false, "epoll", time.Now())
			return fmt.Errorf("load: epoll_ctl: %w", err)
		}
		return nil
	}

	events := make([]unix.EpollEvent, 256)
	begin := time.Now()
	deadline := begin.Add(c.Deadline)
	lastSweep := begin
	next := 0
	for {
		now := time.Now()
		for inflight < c.Concurrency && next < c.Count && now.Before(deadline) {
			if err := start(next); err != nil {
				return res, err
			}
			next++
		}
		if inflight == 0 {
			break
		}
		n, err := unix.EpollWait(ep, events, 50)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return res, fmt.Errorf("load: epoll_wait: %w", err)
		}
		now = time.Now()
		for _, ev := range events[:max(n, 0)] {
			fd := int(ev.Fd)
			if started[fd].IsZero() {
				continue
			}
			soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
			switch {
			case err != nil:
				finish(fd, false, errName(err), now)
			case soerr != 0:
				finish(fd, false, errName(unix.Errno(soerr)), now)
			default:
				finish(fd, true, "", now)
			}
		}
		if now.Sub(lastSweep) > 100*time.Millisecond || now.After(deadline) {
			lastSweep = now
			for fd, t := range started {
				if !t.IsZero() && (now.Sub(t) > c.Timeout || now.After(deadline.Add(c.Timeout))) {
					finish(fd, false, "timeout", now)
				}
			}
		}
	}
	res.Elapsed = time.Since(begin)
	slices.Sort(res.Latencies)
	return res, nil
}

func errName(err error) string {
	var en unix.Errno
	if errors.As(err, &en) {
		if s := unix.ErrnoName(en); s != "" {
			return s
		}
	}
	return err.Error()
}
