package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/decisions"
	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/manifests"
)

// syncBuffer is a bytes.Buffer safe for one writer and a polling reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tailRun runs `podwall tail args...` until cancel, like a user who presses Ctrl-C.
type tailRun struct {
	out, errOut syncBuffer
	cancel      context.CancelFunc
	done        chan error
}

func startTail(t *testing.T, args ...string) *tailRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &tailRun{cancel: cancel, done: make(chan error, 1)}
	cmd := newRoot()
	cmd.SetOut(&r.out)
	cmd.SetErr(&r.errOut)
	cmd.SetArgs(append([]string{"tail"}, args...))
	go func() { r.done <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop presses Ctrl-C and returns tail's error.
func (r *tailRun) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the next stop
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("tail did not end within 5s of Ctrl-C")
		return nil
	}
}

// waitFor polls until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func lines(s string) []string { return strings.Split(strings.TrimSuffix(s, "\n"), "\n") }

// The seeds' 3-tier example on node-1: web 10.244.1.10, api .11, db .12; db-policy admits
// only api on TCP 3306.
var (
	webIP = netip.MustParseAddr("10.244.1.10")
	apiIP = netip.MustParseAddr("10.244.1.11")
	dbIP  = netip.MustParseAddr("10.244.1.12")
)

// testStream is the decision stream of an agent on node-1 enforcing the 3-tier example.
type testStream struct {
	hub  decisions.Hub
	snap *policy.Snapshot
}

func newTestStream(t *testing.T) *testStream {
	t.Helper()
	s, err := manifests.Load(example)
	if err != nil {
		t.Fatal(err)
	}
	c := policy.NewCompiler("node-1")
	if err := c.Replace(s); err != nil {
		t.Fatal(err)
	}
	return &testStream{snap: c.Snapshot()}
}

// verdict publishes the decision on a TCP flow, as the agent does for a queued packet.
func (s *testStream) verdict(src, dst netip.Addr, port uint16, hit bool) {
	s.publish(src, dst, port, hit, 0)
}

// publish is verdict with the deny cache's TTL (set by the agent on denies it cached).
func (s *testStream) publish(src, dst netip.Addr, port uint16, hit bool, kernelDeny time.Duration) {
	s.publishWith(src, dst, port, func(r *decisions.Record) { r.CacheHit, r.KernelDenyTTL = hit, kernelDeny })
}

// publishWith publishes the decision on a TCP flow, its record set up by with.
func (s *testStream) publishWith(src, dst netip.Addr, port uint16, with func(*decisions.Record)) {
	f := flow.Flow{Src: src, Dst: dst, Proto: flow.TCP, Port: port}
	d := s.snap.Decide(f)
	r := decisions.Record{Time: time.Now(), Flow: f, SrcPort: 40000, Allow: d.LocalVerdict() == policy.Allow,
		Latency: 2 * time.Microsecond, Queue: 100}
	with(&r)
	s.hub.SetDecision(&r, &d, s.snap)
	s.hub.Publish(&r)
}

func TestTailJSON(t *testing.T) {
	a := newTestStream(t)
	srv := httptest.NewServer(decisions.Handler(&a.hub))
	t.Cleanup(srv.Close)                                                           // after tail's own cleanup
	tr := startTail(t, "--addr", srv.URL, "--pod", "prod/db", "--verdict", "deny") // not a terminal: JSON
	waitFor(t, "tail to subscribe", func() bool { return a.hub.Subscribers() == 1 })
	a.verdict(apiIP, dbIP, 3306, false) // allowed: filtered out by the agent
	a.verdict(webIP, dbIP, 3306, false)
	a.verdict(webIP, dbIP, 3306, true)
	waitFor(t, "two lines", func() bool { return strings.Count(tr.out.String(), "\n") == 2 })
	if err := tr.stop(t); err != nil {
		t.Fatalf("tail after Ctrl-C: %v", err)
	}
	for i, l := range lines(tr.out.String()) {
		var e decisions.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %d %q: %v", i, l, err)
		}
		if e.Type != "decision" || e.SrcPod != "prod/web" || e.DstPod != "prod/db" || e.Verdict != "deny" ||
			e.Policies[0] != "prod/db-policy" || e.CacheHit != (i == 1) {
			t.Errorf("line %d: %s", i, l)
		}
	}
	waitFor(t, "the agent to see tail go", func() bool { return a.hub.Subscribers() == 0 })
}

func TestTailText(t *testing.T) {
	a := newTestStream(t)
	srv := httptest.NewServer(decisions.Handler(&a.hub))
	t.Cleanup(srv.Close) // after tail's own cleanup
	tr := startTail(t, "--addr", strings.TrimPrefix(srv.URL, "http://"), "-o", "text", "--color", "always")
	waitFor(t, "tail to subscribe", func() bool { return a.hub.Subscribers() == 1 })
	a.verdict(webIP, dbIP, 3306, false)
	a.verdict(apiIP, dbIP, 3306, false)
	a.verdict(webIP, dbIP, 3306, true)
	a.publish(webIP, dbIP, 3306, false, 2*time.Second)
	a.publishWith(apiIP, dbIP, 3306, func(r *decisions.Record) {
		r.KernelAllowTTL = 1500 * time.Millisecond
	})
	waitFor(t, "five lines", func() bool { return strings.Count(tr.out.String(), "\n") == 5 })
	tr.stop(t)
	ls := lines(tr.out.String())
	for i, want := range []struct{ verdict, colour, src string }{
		{"DENY ", red, "prod/web"}, {"ALLOW", green, "prod/api"}, {"DENY ", red, "prod/web"},
	} {
		l := ls[i]
		for _, s := range []string{bold + want.colour + want.verdict + reset, want.src + "  → prod/db",
			want.colour + "prod/db-policy" + reset, "TCP/3306"} {
			if !strings.Contains(l, s) {
				t.Errorf("line %d %q lacks %q", i, l, s)
			}
		}
	}
	if !strings.Contains(ls[0], "no rule allows TCP/3306 from prod/web") || !strings.HasSuffix(ls[2], "(cached)") ||
		!strings.HasSuffix(ls[3], "prod/web (repeats dropped by the kernel for 2s)") ||
		!strings.HasSuffix(ls[4], "(new connections accepted by the kernel for 1.5s)") {
		t.Errorf("reasons: %q", ls)
	}
	// Aligned: the reason starts in the same column on every line.
	col := func(l, s string) int { return len([]rune(l[:strings.Index(l, s)])) }
	if a, b := col(ls[0], "prod/db-policy"), col(ls[1], "prod/db-policy"); a != b {
		t.Errorf("policy column at %d and %d:\n%s", a, b, strings.Join(ls, "\n"))
	}
}

// TestTailReconnects: the agent ends the stream (a restart); tail reconnects and goes on.
func TestTailReconnects(t *testing.T) {
	var mu sync.Mutex
	conns := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		conns++
		n := conns
		mu.Unlock()
		switch n {
		case 1:
			fmt.Fprintln(w, `{"type":"decision","verdict":"deny","srcPod":"a/one"}`)
			return // the agent goes away
		case 2:
			http.Error(w, "starting", http.StatusServiceUnavailable) // not quite up yet
			return
		}
		fmt.Fprintln(w, `{"type":"dropped","count":3}`)
		fmt.Fprintln(w, `{"type":"decision","verdict":"allow","srcPod":"a/two"}`)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close) // after tail's own cleanup
	tr := startTail(t, "--addr", srv.URL, "-o", "json")
	waitFor(t, "three lines", func() bool { return strings.Count(tr.out.String(), "\n") == 3 })
	if err := tr.stop(t); err != nil {
		t.Fatal(err)
	}
	ls := lines(tr.out.String())
	if !strings.Contains(ls[0], "a/one") || !strings.Contains(ls[1], `"dropped"`) || !strings.Contains(ls[2], "a/two") {
		t.Errorf("output %q", ls)
	}
	errs := tr.errOut.String()
	for _, want := range []string{"the agent ended the stream; reconnecting in 250ms", "503 Service Unavailable: starting; reconnecting in 500ms", "connected to"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
}

func TestTailNoAgentUntilCtrlC(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.Listener.Addr().String()
	srv.Close() // nothing listens there now
	tr := startTail(t, "--addr", addr)
	waitFor(t, "a retry", func() bool { return strings.Count(tr.errOut.String(), "reconnecting") >= 2 })
	if err := tr.stop(t); err != nil {
		t.Errorf("Ctrl-C while retrying: %v", err)
	}
}

func TestTailBadInput(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close) // after tail's own cleanup
	for _, args := range [][]string{
		{"--verdict", "maybe"},
		{"--direction", "up", "-o", "yaml"},
		{"--addr", "ftp://x"},
		{"--addr", srv.URL}, // 404: not an agent
	} {
		tr := startTail(t, args...)
		select {
		case err := <-tr.done:
			if err == nil {
				t.Errorf("%q: no error", args)
			}
			tr.done <- err
		case <-time.After(5 * time.Second):
			t.Errorf("%q: tail kept running", args)
		}
	}
}
