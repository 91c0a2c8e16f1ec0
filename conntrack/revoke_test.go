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
	marked  []*Entry
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

func (k *fakeKernel) Mark(es []*Entry, mark uint32) (marked, gone int, err error) {
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
		k.entries[i].Mark |= mark
		k.marked = append(k.marked, k.entries[i])
		marked++
	}
	return marked, gone, nil
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
// isolated, as the datapath judged the first packet (after DNAT), and marks exactly the
// denied ones revoked (deleting none). The node's own connections are left alone.
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
		if !slices.Contains(k.marked, e) || e.Mark != DefaultMark {
			t.Errorf("%v not revoked (mark %#x)", e, e.Mark)
		}
	}
	for _, e := range keep {
		if slices.Contains(k.marked, e) {
			t.Errorf("%v revoked", e)
		}
	}
	if len(k.deleted) != 0 || len(k.entries) != len(keep)+len(revoke) {
		t.Errorf("deleted %v: revocation marks, it does not delete", k.deleted)
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

// Without isolated pods nothing can be denied: once a sweep has found no marked entry,
// the table is not even read.
func TestSweepNothingIsolated(t *testing.T) {
	k := &fakeKernel{entries: []*Entry{entry(tcp("10.244.1.5", "10.244.1.3", 1, 2))}}
	r := NewRevoker(Config{Kernel: k, LocalAddrs: noLocal})
	none := fakePolicy{allow: func(flow.Flow) bool { return false }}
	res := r.Sweep(none) // the first looks for marks an earlier run left
	if k.dumps != 1 || res.Revoked != 0 || len(k.marked) != 0 {
		t.Errorf("first sweep: dumps %d, result %+v", k.dumps, res)
	}
	res = r.Sweep(none)
	if k.dumps != 1 || res.Revoked != 0 || len(k.entries) != 1 {
		t.Errorf("dumps %d, result %+v", k.dumps, res)
	}
}

// A revoked connection stays revoked while the policy denies it, even once its pods are no
// longer isolated in that direction; when a policy allows it again its entry is deleted, so
// that its next packet is judged anew. With nothing marked left, sweeps without isolated
// pods stop reading the table.
func TestSweepMarkedEntries(t *testing.T) {
	webDB := entry(tcp("10.244.1.5", "10.244.1.3", 40010, 3306))
	jobWeb := entry(tcp("10.244.1.9", "10.244.1.5", 40013, 80))
	k := &fakeKernel{entries: []*Entry{webDB, jobWeb}}
	r := NewRevoker(Config{Kernel: k, LocalAddrs: noLocal, Mark: 0x4})
	if res := r.Sweep(labPolicy(nil)); res.Revoked != 2 || webDB.Mark != 0x4 || jobWeb.Mark != 0x4 {
		t.Fatalf("result %+v, marks %#x %#x", res, webDB.Mark, jobWeb.Mark)
	}
	// Again: already marked, held; nothing marked twice.
	if res := r.Sweep(labPolicy(nil)); res.Revoked != 0 || res.Held != 2 || len(k.marked) != 2 {
		t.Errorf("second sweep %+v, %d marks", res, len(k.marked))
	}
	// db loses its isolation (nothing isolated any more) but web → db is still judged:
	// this policy still denies job → web (outside its scope now), and allows web → db.
	lifted := fakePolicy{gen: 8, allow: func(f flow.Flow) bool { return f.Src != job }}
	res := r.Sweep(lifted)
	if res.Released != 1 || res.Held != 1 || !slices.Equal(k.deleted, []*Entry{webDB}) {
		t.Errorf("lifted: %+v, deleted %v", res, k.deleted)
	}
	all := fakePolicy{gen: 9, allow: func(flow.Flow) bool { return true }}
	if res := r.Sweep(all); res.Released != 1 || len(k.entries) != 0 {
		t.Errorf("all allowed: %+v, left %v", res, k.entries)
	}
	dumps := k.dumps
	if r.Sweep(all); k.dumps != dumps {
		t.Error("a sweep read the table with nothing isolated and nothing marked")
	}
	if s := r.Stats(); s.Revoked != 2 || s.Released != 2 {
		t.Errorf("stats %+v", s)
	}
}

// A failed dump still marks what was judged before it failed; a failed mark is reported
// and counted.
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
	if len(k.marked) != 1 {
		t.Errorf("entries marked: %v", k.marked)
	}
}
