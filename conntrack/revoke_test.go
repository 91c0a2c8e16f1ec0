package conntrack

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/podwall/podwall/policy/flow"
)

// fakeKernel is a conntrack table in memory. Dump hands out one reused Entry, like the
// netlink table, so a Revoker that keeps an entry without Clone sees it change.
type fakeKernel struct {
	mu      sync.Mutex
	entries []*Entry
	dumps   int
	dumpErr error
	delErr  error
	deleted []*Entry
}

func (k *fakeKernel) Dump(fn func(*Entry)) error {
	k.mu.Lock()
	es := slices.Clone(k.entries)
	k.dumps++
	k.mu.Unlock()
	var e Entry
	for _, x := range es {
		e = *x
		e.orig = []byte{1} // Delete refuses entries without it
		fn(&e)
	}
	e = Entry{}
	return k.dumpErr
}

func (k *fakeKernel) Delete(es []*Entry) (deleted, gone int, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.delErr != nil {
		return 0, 0, k.delErr
	}
	for _, e := range es {
		i := slices.IndexFunc(k.entries, func(x *Entry) bool { return x.Orig == e.Orig })
		if i < 0 {
			gone++
			continue
		}
		k.deleted = append(k.deleted, k.entries[i])
		k.entries = slices.Delete(k.entries, i, i+1)
		deleted++
	}
	return deleted, gone, nil
}

// fakePolicy isolates some addresses and allows the flows allow accepts.
type fakePolicy struct {
	gen             uint64
	ingress, egress []netip.Addr
	allow           func(flow.Flow) bool
	judged          *[]flow.Flow
}

func (p fakePolicy) Generation() uint64                       { return p.gen }
func (p fakePolicy) Isolated() (ingress, egress []netip.Addr) { return p.ingress, p.egress }
func (p fakePolicy) Allow(f flow.Flow) bool {
	if p.judged != nil {
		*p.judged = append(*p.judged, f)
	}
	return p.allow(f)
}

func noLocal() ([]netip.Addr, error) { return nil, nil }

// The lab of these tests: node address 172.18.0.2; db 10.244.1.3 isolated for ingress,
// allowing only api 10.244.1.2 on TCP 3306; job 10.244.1.9 isolated for egress, allowing
// only UDP 53.
var (
	node = mustAddr("172.18.0.2")
	db   = mustAddr("10.244.1.3")
	api  = mustAddr("10.244.1.2")
	job  = mustAddr("10.244.1.9")
)

func labPolicy(judged *[]flow.Flow) fakePolicy {
	return fakePolicy{gen: 7, ingress: []netip.Addr{db}, egress: []netip.Addr{job}, judged: judged,
		allow: func(f flow.Flow) bool {
			if f.Dst == db && !(f.Src == api && f.Proto == 6 && f.Port == 3306) {
				return false
			}
			if f.Src == job && !(f.Proto == 17 && f.Port == 53) {
				return false
			}
			return true
		}}
}

// A sweep judges only the entries of isolated local pods, in the direction they are
// isolated, as the datapath judged the first packet (after DNAT), and deletes exactly the
// denied ones. The node's own connections are left alone.
func TestSweep(t *testing.T) {
	keep := []*Entry{
		entry(tcp("10.244.1.2", "10.244.1.3", 40000, 3306)),                    // api → db 3306: allowed
		entry(tcp("10.244.1.3", "10.244.1.5", 40001, 80)),                      // from db: db is not egress-isolated
		entry(tcp("10.244.1.5", "10.244.1.6", 40002, 80)),                      // neither end isolated: not judged
		entry(udp("10.244.1.9", "10.96.0.10", 40003, 53)),                      // job → DNS: allowed
		dnat(tcp("10.244.1.2", "10.96.0.20", 40004, 3306), "10.244.1.3", 3306), // api → Service → db:3306
		entry(tcp("172.18.0.2", "10.244.1.3", 40005, 8080)),                    // node → db (kubelet probe)
		entry(tcp("10.244.1.3", "172.18.0.2", 40006, 10250)),                   // db → node
		closed(entry(tcp("10.244.1.5", "10.244.1.3", 40007, 3306))),            // web → db, closed: nothing to cut
	}
	revoke := []*Entry{
		entry(tcp("10.244.1.5", "10.244.1.3", 40010, 3306)),                  // web → db: denied
		entry(udp("10.244.1.2", "10.244.1.3", 40011, 3306)),                  // api → db over UDP: denied
		entry(icmp("10.244.1.2", "10.244.1.3", 9)),                           // ping db: denied
		dnat(tcp("10.244.1.2", "10.96.0.20", 40012, 80), "10.244.1.3", 8080), // Service port 80 → db:8080
		entry(tcp("10.244.1.9", "10.244.1.5", 40013, 80)),                    // job → web: denied egress
	}
	k := &fakeKernel{entries: append(slices.Clone(keep), revoke...)}
	var judged []flow.Flow
	r := NewRevoker(Config{Kernel: k, LocalAddrs: func() ([]netip.Addr, error) { return []netip.Addr{node}, nil }})
	res := r.Sweep(labPolicy(&judged))
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if res.Scanned != len(keep)+len(revoke) || res.Revoked != len(revoke) || res.Gone != 0 {
		t.Errorf("result %+v, want %d scanned, %d revoked", res, len(keep)+len(revoke), len(revoke))
	}
	if res.InScope != 3+len(revoke) {
		t.Errorf("judged %d entries, want %d: %v", res.InScope, 3+len(revoke), judged)
	}
	for _, e := range revoke {
		if !slices.Contains(k.deleted, e) {
			t.Errorf("%v not revoked", e)
		}
	}
	for _, e := range keep {
		if slices.Contains(k.deleted, e) {
			t.Errorf("%v revoked", e)
		}
	}
	// The Service connection was judged against db, on db's port.
	if !slices.Contains(judged, flow.Flow{Src: api, Dst: db, Proto: flow.TCP, Port: 8080}) {
		t.Errorf("DNAT flow not judged at its real destination: %v", judged)
	}
	if s := r.Stats(); s.Sweeps != 1 || s.Revoked != uint64(len(revoke)) || s.Errors != 0 {
		t.Errorf("stats %+v", s)
	}
}

func closed(e *Entry) *Entry { e.TCPState = TCPTimeWait; return e }

// Without isolated pods nothing can be denied: the table is not even read.
func TestSweepNothingIsolated(t *testing.T) {
	k := &fakeKernel{entries: []*Entry{entry(tcp("10.244.1.5", "10.244.1.3", 1, 2))}}
	r := NewRevoker(Config{Kernel: k, LocalAddrs: noLocal})
	res := r.Sweep(fakePolicy{allow: func(flow.Flow) bool { return false }})
	if k.dumps != 0 || res.Revoked != 0 || len(k.entries) != 1 {
		t.Errorf("dumps %d, result %+v", k.dumps, res)
	}
}

// A failed dump still deletes what was judged before it failed; a failed delete is
// reported and counted.
func TestSweepErrors(t *testing.T) {
	k := &fakeKernel{entries: []*Entry{entry(tcp("10.244.1.5", "10.244.1.3", 1, 80))}, dumpErr: errors.New("boom")}
	r := NewRevoker(Config{Kernel: k, LocalAddrs: noLocal})
	res := r.Sweep(labPolicy(nil))
	if res.Err == nil || res.Revoked != 1 {
		t.Errorf("result %+v: want the error and 1 revoked", res)
	}
	k = &fakeKernel{entries: []*Entry{entry(tcp("10.244.1.5", "10.244.1.3", 1, 80))}, delErr: errors.New("nope")}
	r = NewRevoker(Config{Kernel: k, LocalAddrs: noLocal})
	if res := r.Sweep(labPolicy(nil)); res.Err == nil || res.Revoked != 0 {
		t.Errorf("result %+v: want the error and 0 revoked", res)
	}
	if s := r.Stats(); s.Errors != 1 {
		t.Errorf("stats %+v: want 1 error", s)
	}
	r = NewRevoker(Config{Kernel: k, LocalAddrs: func() ([]netip.Addr, error) { return nil, errors.New("no addrs") }})
	if res := r.Sweep(labPolicy(nil)); res.Err == nil {
		t.Error("sweep without local addresses succeeded")
	}
}

// Requests never block and coalesce: a burst of requests while a sweep runs leads to one
// more sweep, for the latest policy.
func TestRunCoalesces(t *testing.T) {
	k := &fakeKernel{entries: []*Entry{entry(tcp("10.244.1.5", "10.244.1.3", 1, 80))}}
	results := make(chan Result, 100)
	r := NewRevoker(Config{Kernel: k, LocalAddrs: noLocal, OnSweep: func(res Result) { results <- res }})
	started, block := make(chan struct{}), make(chan struct{})
	blocking := fakePolicy{gen: 1, ingress: []netip.Addr{db}, allow: func(flow.Flow) bool { close(started); <-block; return true }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	r.Request(blocking)
	<-started
	for g := uint64(2); g <= 50; g++ {
		p := labPolicy(nil)
		p.gen = g
		r.Request(p)
	}
	close(block)
	var gens []uint64
	for len(gens) < 2 {
		select {
		case res := <-results:
			gens = append(gens, res.Generation)
		case <-time.After(5 * time.Second):
			t.Fatalf("sweeps so far: %v", gens)
		}
	}
	if !slices.Equal(gens, []uint64{1, 50}) {
		t.Errorf("swept generations %v, want [1 50]", gens)
	}
	select {
	case res := <-results:
		t.Errorf("extra sweep %+v", res)
	case <-time.After(20 * time.Millisecond):
	}
	cancel()
	<-done
	if len(k.entries) != 0 {
		t.Errorf("entries left: %v", k.entries)
	}
}
