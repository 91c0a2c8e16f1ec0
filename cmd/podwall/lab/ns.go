package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// NS is one named network namespace of the lab, bind-mounted at
// /run/netns/<name> so that `ip netns exec <name>` works.
type NS struct {
	name  string // full name, "pwlab-<runid>-<role>"
	role  string
	addrs []netip.Addr
	h     netns.NsHandle
	nl    *netlink.Handle
	logf  func(string, ...any)

	// mu guards servers and gone, and keeps h open while Do enters it.
	mu      sync.RWMutex
	servers []io.Closer
	gone    bool // set by destroy
}

// Name returns the namespace's full name, as `ip netns list` shows it.
func (n *NS) Name() string { return n.name }

// Role returns the short name the namespace was created with (node, pod or
// external host name).
func (n *NS) Role() string { return n.role }

// Path returns the namespace's bind mount, usable with setns(2) or nsenter.
func (n *NS) Path() string { return filepath.Join(netnsDir, n.name) }

// Addrs returns the namespace's own addresses: a pod's or external host's
// addresses, a node's underlay (node) addresses; IPv4 first.
func (n *NS) Addrs() []netip.Addr { return append([]netip.Addr(nil), n.addrs...) }

// String returns the namespace's name.
func (n *NS) String() string { return n.name }

// Do runs fn on an OS thread switched into the namespace and returns its
// error. Sockets that fn opens stay in the namespace after Do returns, so a
// server can keep serving from a goroutine. Goroutines that fn starts run
// in the process's own namespace, not in n.
//
// fn runs on a fresh goroutine locked to its thread; afterwards (also after
// a panic or runtime.Goexit) the thread is switched back and unlocked. If
// switching back fails the thread stays locked, so the runtime never reuses
// it in the wrong namespace: it ends the thread, or parks it for good if it
// is the process's main thread. A panic in fn is re-raised in the caller,
// and a Goexit (t.FailNow) is repeated in the caller.
func (n *NS) Do(fn func() error) error {
	type result struct {
		err    error
		panic  any
		goexit bool
	}
	done := make(chan result, 1)
	go func() {
		r := result{goexit: true} // cleared when fn returns or panics
		defer func() { done <- r }()
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			r = result{err: fmt.Errorf("netns %s: get current: %w", n.name, err)}
			return
		}
		defer orig.Close()
		if err := n.enter(); err != nil {
			runtime.UnlockOSThread()
			r = result{err: fmt.Errorf("netns %s: enter: %w", n.name, err)}
			return
		}
		defer func() {
			if err := netns.Set(orig); err != nil {
				// Stay locked: the thread is never reused.
				r.err = errors.Join(r.err, fmt.Errorf("netns %s: restore: %w", n.name, err))
				return
			}
			runtime.UnlockOSThread()
		}()
		func() {
			defer func() { r.panic = recover() }()
			r.err = fn()
		}()
		r.goexit = false
	}()
	r := <-done
	switch {
	case r.panic != nil:
		panic(r.panic)
	case r.goexit:
		runtime.Goexit()
	}
	return r.err
}

// enter switches the calling thread into the namespace, unless the lab
// has been closed.
func (n *NS) enter() error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.gone {
		return errors.New("lab is closed")
	}
	return netns.Set(n.h)
}

// Exec returns a command (not started) that runs name with args inside the
// namespace, through `ip netns exec`. The caller owns the process: Close
// does not kill it.
func (n *NS) Exec(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name, name}, args...)...)
}

// track registers a server to stop on Close. It reports false (and the
// caller must close c) when the lab is already closed.
func (n *NS) track(c io.Closer) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.gone {
		return false
	}
	n.servers = append(n.servers, c)
	return true
}

// closeServers stops the tracked servers; no new ones can start after.
func (n *NS) closeServers() {
	n.mu.Lock()
	s := n.servers
	n.servers = nil
	n.gone = true
	n.mu.Unlock()
	for _, c := range s {
		c.Close()
	}
}

// destroy closes the handles and deletes the namespace's name; the kernel
// frees the namespace once nothing else refers to it (open sockets do).
func (n *NS) destroy() error {
	n.closeServers()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	if n.h.IsOpen() {
		n.h.Close()
		n.h = netns.None()
	}
	return deleteNamed(n.name)
}

// setSysctls writes /proc/sys/<key> = value inside the namespace, in order.
func (n *NS) setSysctls(kv ...string) error {
	return n.Do(func() error {
		for i := 0; i+1 < len(kv); i += 2 {
			if err := writeSysctl(strings.ReplaceAll(kv[i], ".", "/"), kv[i+1]); err != nil {
				return fmt.Errorf("netns %s: sysctl %s=%s: %w", n.name, kv[i], kv[i+1], err)
			}
		}
		return nil
	})
}

// newNS creates the named namespace with loopback up and IPv6 duplicate
// address detection off, so addresses are usable at once.
func newNS(name, role string, logf func(string, ...any)) (*NS, error) {
	h, err := createNamed(name)
	if err != nil {
		return nil, err
	}
	n := &NS{name: name, role: role, h: h, logf: logf}
	fail := func(err error) (*NS, error) {
		return nil, errors.Join(err, n.destroy())
	}
	n.nl, err = netlink.NewHandleAt(h, syscall.NETLINK_ROUTE)
	if err != nil {
		return fail(fmt.Errorf("netns %s: netlink: %w", name, err))
	}
	lo, err := n.nl.LinkByName("lo")
	if err == nil {
		err = n.nl.LinkSetUp(lo)
	}
	if err != nil {
		return fail(fmt.Errorf("netns %s: lo up: %w", name, err))
	}
	if err := n.setSysctls(
		"net.ipv6.conf.all.accept_dad", "0",
		"net.ipv6.conf.default.accept_dad", "0",
	); err != nil {
		return fail(err)
	}
	logf("netns %s created", name)
	return n, nil
}

// createNamed creates a network namespace and bind-mounts it at
// /run/netns/<name>, like `ip netns add`. The creating thread is switched
// back; if that fails it is left locked so that it dies.
func createNamed(name string) (netns.NsHandle, error) {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return netns.None(), err
	}
	path := filepath.Join(netnsDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return netns.None(), fmt.Errorf("netns %s: %w", name, err)
	}
	f.Close()

	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		err = syscall.Mount("/proc/thread-self/ns/net", path, "none", syscall.MS_BIND, "")
		if rerr := netns.Set(orig); rerr != nil {
			errc <- errors.Join(err, fmt.Errorf("restore: %w", rerr))
			return // stay locked: the thread dies
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return netns.None(), fmt.Errorf("netns %s: %w", name, err)
	}
	h, err := netns.GetFromPath(path)
	if err != nil {
		deleteNamed(name)
		return netns.None(), fmt.Errorf("netns %s: %w", name, err)
	}
	return h, nil
}

// deleteNamed removes a namespace's bind mount and file, like
// `ip netns delete`; a missing namespace is not an error.
func deleteNamed(name string) error {
	path := filepath.Join(netnsDir, name)
	err := syscall.Unmount(path, syscall.MNT_DETACH)
	if err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("netns %s: unmount: %w", name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	return nil
}

// writeSysctl writes /proc/sys/<key> in the calling thread's namespace.
func writeSysctl(key, value string) error {
	return os.WriteFile("/proc/sys/"+key, []byte(value), 0)
}
