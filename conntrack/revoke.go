package conntrack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/policy/flow"
)

// Policy is what the Revoker enforces: one policy generation. The agent implements it over
// a policy snapshot.
type Policy interface {
	// Generation identifies the policy, for logs.
	Generation() uint64
	// Isolated returns the local pod addresses isolated for ingress and for egress: only
	// connections to the former or from the latter can be denied.
	Isolated() (ingress, egress []netip.Addr)
	// Allow reports whether this node lets the flow pass (its local directions).
	Allow(flow.Flow) bool
}

// Kernel is the conntrack table the Revoker works on; *Table implements it.
type Kernel interface {
	Dump(fn func(*Entry)) error
	Mark(entries []*Entry, mark uint32) (marked, gone int, err error)
	Delete(entries []*Entry) (deleted, gone int, err error)
}

// DefaultMark is the connection mark bit that flags a revoked connection unless
// Config.Mark names another: bit 28. kube-proxy and the common CNIs mark packets (meta
// mark), not connections; a CNI that uses this bit of the connection mark needs another
// one (podwall run --revoke-mark).
const DefaultMark uint32 = 0x10000000

// Config configures a Revoker.
type Config struct {
	// Kernel is the conntrack table.
	Kernel Kernel
	// Mark is the bit (or bits) of the connection mark that flags a revoked connection:
	// the datapath drops every packet of a connection whose mark has all of them, in
	// either direction (datapath/nft, Config.RevokedMark). 0 means DefaultMark.
	Mark uint32
	// LocalAddrs returns the addresses of this network namespace. Connections from or to
	// them are the node's own (they never pass the forward hook) and are left alone, but
	// for those a NodePolicy judges (a pod and its own node). Nil
	// means the namespace's interface addresses.
	LocalAddrs func() ([]netip.Addr, error)
	// OnSweep, when set, is called after every sweep run by Run, from Run's goroutine.
	OnSweep func(Result)
	Log     *slog.Logger
}

// Result describes one sweep.
type Result struct {
	// Generation is the generation of the policy swept for.
	Generation uint64
	// Scanned counts the entries read; InScope those from an egress-isolated or to an
	// ingress-isolated local pod, which were judged.
	Scanned, InScope int
	// Revoked counts the entries marked revoked because the policy denies them; Gone
	// those the policy denies that disappeared before they could be marked.
	Revoked, Gone int
	// Held counts the entries found already marked that the policy still denies; Released
	// those found marked that it now allows, which were deleted so that their next packet
	// is judged anew.
	Held, Released int
	// Denied holds up to maxDenied of the revoked flows, for the log.
	Denied []flow.Flow
	// Started is when the sweep started; Took how long it ran.
	Started time.Time
	Took    time.Duration
	Err     error
}

const maxDenied = 8

// Stats counts what a Revoker did.
type Stats struct {
	Sweeps, Errors, Scanned, Revoked, Released uint64
}

// Revoker marks the conntrack entries of connections that the policy in force denies as
// revoked, so that the datapath drops their packets in both directions, and releases them
// when a later policy allows them again. See the package doc.
type Revoker struct {
	cfg Config

	mu      sync.Mutex
	pending Policy // the latest policy requested and not yet swept
	wake    chan struct{}

	// marks reports whether the table may hold entries this Revoker's mark flags: true
	// until a sweep has read the whole table and left none (an earlier run may have left
	// some). Without it, a sweep with nothing isolated need not read the table.
	marks atomic.Bool

	sweeps, errs, scanned, revoked, released atomic.Uint64
	sweepSeconds                             prometheus.Histogram // metrics.go
}

// NewRevoker returns a Revoker. Start it with Run. A Revoker that never runs (the agent's
// --keep-established) still exports its series, at zero.
func NewRevoker(cfg Config) *Revoker {
	if cfg.LocalAddrs == nil {
		cfg.LocalAddrs = interfaceAddrs
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Mark == 0 {
		cfg.Mark = DefaultMark
	}
	r := &Revoker{cfg: cfg, wake: make(chan struct{}, 1), sweepSeconds: newSweepSeconds()}
	r.marks.Store(true)
	return r
}

// Mark returns the connection mark bits that flag a revoked connection.
func (r *Revoker) Mark() uint32 { return r.cfg.Mark }

// SetKernel sets the table Run sweeps, when Config had none. Call it before Run.
func (r *Revoker) SetKernel(k Kernel) { r.cfg.Kernel = k }

// Request asks for a sweep for p. It never blocks: requests made while a sweep runs are
// coalesced, and the next sweep uses the latest policy requested.
func (r *Revoker) Request(p Policy) {
	r.mu.Lock()
	r.pending = p
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run sweeps for each requested policy until ctx ends. It runs on an OS thread of its own
// at a lower CPU priority (nice 10): a dump makes the kernel walk the whole conntrack hash
// table (all namespaces share it), and on a busy node that work should yield to the
// datapath and to applying the next policy, not delay them.
func (r *Revoker) Run(ctx context.Context) {
	runtime.LockOSThread() // never unlocked: the thread keeps its priority and ends with Run
	if err := unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 10); err != nil {
		r.cfg.Log.Debug("conntrack: lowering the sweep thread's priority", "err", err)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		}
		r.mu.Lock()
		p := r.pending
		r.pending = nil
		r.mu.Unlock()
		if p == nil {
			continue
		}
		res := r.Sweep(p)
		if errors.Is(res.Err, ErrInterrupted) && ctx.Err() == nil {
			// The table changed during the dump: an entry may have been skipped. Once more.
			again := r.Sweep(p)
			again.Revoked += res.Revoked
			again.Gone += res.Gone
			res = again
		}
		if r.cfg.OnSweep != nil {
			r.cfg.OnSweep(res)
		}
	}
}

// Stats returns the counters so far.
func (r *Revoker) Stats() Stats {
	return Stats{Sweeps: r.sweeps.Load(), Errors: r.errs.Load(), Scanned: r.scanned.Load(),
		Revoked: r.revoked.Load(), Released: r.released.Load()}
}

// Sweep reads the table once, judges every entry in p's scope with p, and marks those p
// denies as revoked; entries marked by an earlier sweep that p allows are deleted (their
// next packet is judged anew). It returns what it did; Result.Err is set when reading or
// writing failed (entries judged before a failure are still marked).
func (r *Revoker) Sweep(p Policy) (res Result) {
	res = Result{Generation: p.Generation(), Started: time.Now()}
	defer func() {
		res.Took = time.Since(res.Started)
		r.sweepSeconds.Observe(res.Took.Seconds())
		r.sweeps.Add(1)
		r.scanned.Add(uint64(res.Scanned))
		r.revoked.Add(uint64(res.Revoked))
		r.released.Add(uint64(res.Released))
		if res.Err != nil && !errors.Is(res.Err, ErrInterrupted) {
			r.errs.Add(1)
		}
	}()
	ingress, egress := p.Isolated()
	if len(ingress) == 0 && len(egress) == 0 && !r.marks.Load() {
		return res // nothing can be denied, and nothing is marked
	}
	in, eg := addrSet(ingress), addrSet(egress)
	local, err := r.cfg.LocalAddrs()
	if err != nil {
		res.Err = fmt.Errorf("conntrack: local addresses: %w", err)
		return res
	}
	node := ownNodeScope(p)
	own := addrSet(local)
	mark := r.cfg.Mark
	var denied, released []*Entry
	dumpErr := r.cfg.Kernel.Dump(func(e *Entry) {
		res.Scanned++
		f := e.Flow()
		if e.Mark&mark == mark {
			// Revoked earlier: it stays cut while the policy denies it, whatever the
			// scope (the pods may have lost their isolation since).
			if e.Closed() {
				return // a new SYN on the tuple replaces it
			}
			if p.Allow(f) {
				released = append(released, e.Clone())
			} else {
				res.Held++
			}
			return
		}
		if !eg[f.Src] && !in[f.Dst] {
			return
		}
		if (own[f.Src] || own[f.Dst]) && !node.judges(f, own) {
			return // the node's own traffic (input and output), unless a policy can cut it
		}
		if e.Closed() {
			return // nothing left to cut; a new SYN on the tuple is judged anew
		}
		res.InScope++
		if p.Allow(f) {
			return
		}
		denied = append(denied, e.Clone())
	})
	var errs []error
	if len(denied) > 0 {
		var err error
		res.Revoked, res.Gone, err = r.cfg.Kernel.Mark(denied, mark)
		errs = append(errs, err)
		for _, e := range denied[:min(maxDenied, len(denied))] {
			res.Denied = append(res.Denied, e.Flow())
		}
	}
	if len(released) > 0 {
		var err error
		res.Released, _, err = r.cfg.Kernel.Delete(released)
		errs = append(errs, err)
	}
	res.Err = errors.Join(append(errs, dumpErr)...)
	if dumpErr == nil {
		// Left marked: what this sweep marked or held (a failed write may leave more,
		// and a failed dump may have missed some: then keep looking).
		r.marks.Store(len(denied)+res.Held > 0 || res.Err != nil)
	}
	return res
}

func addrSet(addrs []netip.Addr) map[netip.Addr]bool {
	m := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		m[a.Unmap()] = true
	}
	return m
}

// interfaceAddrs returns the addresses of the calling thread's network namespace.
func interfaceAddrs() ([]netip.Addr, error) {
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(ifas))
	for _, ifa := range ifas {
		if n, ok := ifa.(*net.IPNet); ok {
			if a, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, a.Unmap())
			}
		}
	}
	return out, nil
}
