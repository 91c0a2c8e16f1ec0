package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	corev1 "k8s.io/api/core/v1"

	"github.com/podwall/podwall/policy/policytest"
)

// No unenforced window at start. A fresh agent creates its table with the sets of its
// first policy in one transaction: no connection to an isolated pod opens once the table
// exists, while a steady stream of new connections runs through the start. A connection
// made before the agent ran, which the policy denies, is revoked once the agent is ready.
func TestStartWindow(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/client", "app/server")
	e.write(policytest.Namespace("app", nil),
		e.podObject("app/client", nil),
		e.podObject("app/server", map[string]string{"role": "locked"}),
		denyAllIngress("app"))
	e.Serve(80)
	e.Warm()
	before := e.hold("cut", "IPv4", "app/client", "app/server", "tcp", 80) // nothing enforces yet

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	log := e.probeLoop(ctx, "IPv4", probe{from: "app/client", to: "app/server", port: 80}, 2*time.Millisecond, 100*time.Millisecond)
	tableAt := e.watchTable(ctx, "node-1")
	e.start()
	ready := time.Now()
	time.Sleep(150 * time.Millisecond) // keep probing the started agent (a measurement window, not a wait)
	stop()
	recs := log.wait()
	appeared := <-tableAt
	if appeared.IsZero() {
		t.Fatal("never saw the podwall table appear")
	}
	var okBefore, deniedAfter int
	for _, r := range recs {
		switch {
		case r.ok && r.start.After(appeared):
			t.Errorf("a connection started %v after the table appeared went through", r.start.Sub(appeared))
		case r.ok:
			okBefore++
		case r.start.After(appeared):
			deniedAfter++
		}
	}
	t.Logf("%d probes: %d through before the table appeared, %d denied after; table seen %v before ready",
		len(recs), okBefore, deniedAfter, ready.Sub(appeared).Round(time.Millisecond))
	if okBefore == 0 || deniedAfter == 0 {
		t.Errorf("the probe stream did not span the start: %d through before, %d denied after", okBefore, deniedAfter)
	}
	// The startup sweep revokes the connection made before.
	e.conntrackOf("node-1").waitGone(e, ready, []*held{before})
	e.checkHeld([]*held{before})
}

// A pod whose address appears later (the manifests gain its status.podIP) is protected
// from the moment the agent reports the generation that knows it: the kernel sets are
// synced before the engine's snapshot is swapped, and /readyz reports the snapshot. A
// connection that reached the pod while its address was unknown is revoked.
func TestPodIPLater(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/client", "app/server")
	pending := e.podObject("app/server", map[string]string{"role": "locked"})
	pending.Status = corev1.PodStatus{Phase: corev1.PodPending}
	objs := func(server *corev1.Pod) []any {
		return []any{policytest.Namespace("app", nil), e.podObject("app/client", nil), server, denyAllIngress("app")}
	}
	e.Serve(80)
	e.Warm()
	e.write(objs(pending)...)
	e.start()
	hs := []*held{
		e.hold("cut", "IPv4", "app/client", "app/server", "tcp", 80),
		e.hold("cut", "IPv6", "app/client", "app/server", "udp", 80),
	}
	e.check(probe{from: "app/client", to: "app/server", port: 80, allow: true}) // unknown address: no policy applies

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	log4 := e.probeLoop(ctx, "IPv4", probe{from: "app/client", to: "app/server", port: 80}, 2*time.Millisecond, 100*time.Millisecond)
	log6 := e.probeLoop(ctx, "IPv6", probe{from: "app/client", to: "app/server", port: 80, proto: "UDP"}, 2*time.Millisecond, 100*time.Millisecond)
	gen, err := e.Agents["node-1"].Generation(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the probe streams run before the edit (a measurement window)
	edited := time.Now()
	e.write(objs(e.podObject("app/server", map[string]string{"role": "locked"}))...)
	known := e.waitGeneration("node-1", gen)
	time.Sleep(100 * time.Millisecond) // and after it
	stop()
	for _, l := range []*probeLog{log4, log6} {
		recs := l.wait()
		var firstDenied time.Time
		for _, r := range recs {
			if r.ok && r.start.After(known) {
				t.Errorf("%s: a connection started %v after /readyz reported the pod's address went through", l.name, r.start.Sub(known))
			}
			if !r.ok && r.start.After(edited) && (firstDenied.IsZero() || r.start.Before(firstDenied)) {
				firstDenied = r.start
			}
		}
		if firstDenied.IsZero() {
			t.Errorf("%s: no probe was denied after the edit", l.name)
			continue
		}
		t.Logf("%s: %d probes; edit -> first denied probe %v, edit -> /readyz generation %v", l.name, len(recs),
			firstDenied.Sub(edited).Round(100*time.Microsecond), known.Sub(edited).Round(100*time.Microsecond))
	}
	e.conntrackOf("node-1").waitGone(e, edited, hs)
	e.checkHeld(hs)
}

// probeLog records a stream of probes.
type probeLog struct {
	name string
	mu   sync.Mutex
	recs []probeRec
	wg   sync.WaitGroup
}

type probeRec struct {
	start, end time.Time
	ok         bool
	err        error
}

// probeLoop starts one probe every interval, each with its own goroutine and timeout, until
// ctx ends; wait returns the records.
func (e *env) probeLoop(ctx context.Context, fam string, pr probe, interval, timeout time.Duration) *probeLog {
	l := &probeLog{name: fmt.Sprintf("%s %s %s -> %s:%d", fam, proto(pr), pr.from, pr.to, pr.port)}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				start := time.Now()
				err := e.probe(fam, pr, timeout)
				l.mu.Lock()
				l.recs = append(l.recs, probeRec{start: start, end: time.Now(), ok: err == nil, err: err})
				l.mu.Unlock()
			}()
		}
	}()
	return l
}

func (l *probeLog) wait() []probeRec {
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	recs := slices.Clone(l.recs)
	slices.SortFunc(recs, func(a, b probeRec) int { return a.start.Compare(b.start) })
	return recs
}

// watchTable polls node's nftables every half millisecond until ctx ends and then sends
// when the podwall table was first seen (zero if never).
func (e *env) watchTable(ctx context.Context, node string) <-chan time.Time {
	e.T.Helper()
	f, err := os.Open(e.Nodes[node].Path())
	if err != nil {
		e.T.Fatal(err)
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())), nftables.AsLasting())
	if err != nil {
		e.T.Fatal(err)
	}
	out := make(chan time.Time, 1)
	go func() {
		defer f.Close()
		defer c.CloseLasting()
		var seen time.Time
		defer func() { out <- seen }()
		for ctx.Err() == nil {
			ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
			now := time.Now()
			if err == nil && slices.ContainsFunc(ts, func(t *nftables.Table) bool { return t.Name == "podwall" }) {
				seen = now
				return
			}
			time.Sleep(500 * time.Microsecond)
		}
	}()
	return out
}

// waitGeneration polls node's /readyz every millisecond until it reports a generation
// after gen, and returns when it did.
func (e *env) waitGeneration(node string, gen uint64) time.Time {
	e.T.Helper()
	at := e.pollGeneration(node, gen)
	if at.IsZero() {
		e.T.Fatalf("agent on %s still at generation %d after 5 s\n%s", node, gen, e.Agents[node].Logs())
	}
	return at
}

// pollGeneration is waitGeneration for any goroutine: it returns the zero time when the
// agent is still at gen after 5 s.
func (e *env) pollGeneration(node string, gen uint64) time.Time {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		if g, err := e.Agents[node].Generation(ctx); err == nil && g > gen {
			return time.Now()
		}
		select {
		case <-ctx.Done():
			return time.Time{}
		case <-time.After(time.Millisecond):
		}
	}
}
