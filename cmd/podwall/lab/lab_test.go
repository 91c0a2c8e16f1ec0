package lab

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// probeTimeout bounds every probe that is expected to succeed; probes
// expected to fail use failTimeout.
const (
	probeTimeout = 5 * time.Second
	failTimeout  = 300 * time.Millisecond
)

func needRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("lab: builds network namespaces; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("lab: needs root (network namespaces, veths, raw sockets); run as root")
	}
}

// cluster is the test topology: nodes a and b with pods a1, a2, b1, b2 and
// the external host x attached to a.
type cluster struct {
	lab          *Lab
	a, b         *Node
	a1, a2       *Pod
	b1, b2       *Pod
	x            *Pod
	buildElapsed time.Duration
}

func newCluster(t testing.TB, opts Options) *cluster {
	t.Helper()
	if opts.Logf == nil && opts.Log == nil {
		opts.Logf = t.Logf
	}
	start := time.Now()
	l, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	c := &cluster{lab: l}
	must := func(p *Pod, err error) *Pod {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if c.a, err = Plan(0).AddNode(l, "node-a"); err != nil {
		t.Fatal(err)
	}
	if c.b, err = Plan(1).AddNode(l, "node-b"); err != nil {
		t.Fatal(err)
	}
	addPod := func(n *Node, i, j int, name string) *Pod {
		v4, v6 := Plan(i).Pod(j)
		return must(n.AddPod(name, v4, v6))
	}
	c.a1 = addPod(c.a, 0, 0, "a1")
	c.a2 = addPod(c.a, 0, 1, "a2")
	c.b1 = addPod(c.b, 1, 0, "b1")
	c.b2 = addPod(c.b, 1, 1, "b2")
	x4, x6 := External(0)
	c.x = must(l.AddExternal("x", x4, x6, c.a))
	c.buildElapsed = time.Since(start)
	return c
}

// family picks the IPv4 or IPv6 address of a namespace.
type family struct {
	name string
	v6   bool
}

var families = []family{{"ipv4", false}, {"ipv6", true}}

func (f family) addr(ns *NS) netip.Addr {
	for _, a := range ns.Addrs() {
		if a.Is6() == f.v6 {
			return a
		}
	}
	panic(fmt.Sprintf("%s has no %s address", ns.Name(), f.name))
}

const (
	tcpPort  = 8080
	udpPort  = 8081
	sctpPort = 8082
)

// TestTopology proves that every path the e2e tests rely on carries TCP,
// UDP, SCTP and ICMP both ways, in IPv4 and IPv6.
func TestTopology(t *testing.T) {
	needRoot(t)
	c := newCluster(t, Options{})
	t.Logf("built 2 nodes × 2 pods + 1 external in %v", c.buildElapsed)

	all := []*NS{c.a.NS, c.b.NS, c.a1.NS, c.a2.NS, c.b1.NS, c.b2.NS, c.x.NS}
	sctp := map[*NS]*SCTPServer{}
	for _, ns := range all {
		if _, err := ns.ServeTCP(tcpPort); err != nil {
			t.Fatal(err)
		}
		if _, err := ns.ServeUDP(udpPort); err != nil {
			t.Fatal(err)
		}
		s, err := ns.ServeSCTP(sctpPort)
		if err != nil {
			t.Fatal(err)
		}
		sctp[ns] = s
	}

	paths := []struct {
		name     string
		from, to *NS
	}{
		// Pod to pod on one node: through the node's two pod veths.
		{"pod→pod same node", c.a1.NS, c.a2.NS},
		{"pod→pod same node, back", c.a2.NS, c.a1.NS},
		// Pod to pod across nodes: over the underlay, by pod CIDR routes.
		{"pod→pod across nodes", c.a1.NS, c.b1.NS},
		{"pod→pod across nodes, back", c.b2.NS, c.a2.NS},
		// Node to pod, from the node address: local and remote pods.
		{"node→local pod", c.a.NS, c.a1.NS},
		{"node→remote pod", c.a.NS, c.b2.NS},
		{"pod→own node", c.b1.NS, c.b.NS},
		{"pod→other node", c.b1.NS, c.a.NS},
		// Pods to the external host, which sits behind node a.
		{"pod→external via own node", c.a2.NS, c.x.NS},
		{"pod→external via other node", c.b1.NS, c.x.NS},
		{"external→pod", c.x.NS, c.b2.NS},
		// A pod to itself by its own address.
		{"pod→itself", c.a1.NS, c.a1.NS},
	}
	ctx := t.Context()
	for _, f := range families {
		for _, p := range paths {
			t.Run(f.name+"/"+p.name, func(t *testing.T) {
				t.Parallel()
				dst := f.addr(p.to)
				if err := ProbeTCP(ctx, p.from, netip.AddrPortFrom(dst, tcpPort), probeTimeout); err != nil {
					t.Error(err)
				}
				if err := ProbeUDP(ctx, p.from, netip.AddrPortFrom(dst, udpPort), probeTimeout); err != nil {
					t.Error(err)
				}
				if err := ProbeSCTP(ctx, p.from, netip.AddrPortFrom(dst, sctpPort), probeTimeout); err != nil {
					t.Error(err)
				}
				if err := sctp[p.to].WaitInit(ctx, f.addr(p.from), 0); err != nil {
					t.Errorf("sctp server in %s: %v; saw %v", p.to.Role(), err, sctp[p.to].Inits())
				}
				if err := ProbeICMP(ctx, p.from, dst, probeTimeout); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

// TestHeldConnection checks that a connection from Dial carries echoes
// until the lab is closed.
func TestHeldConnection(t *testing.T) {
	needRoot(t)
	c := newCluster(t, Options{})
	if _, err := c.b1.ServeTCP(tcpPort); err != nil {
		t.Fatal(err)
	}
	if _, err := c.b1.ServeUDP(udpPort); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, f := range families {
		for _, nw := range []struct {
			name string
			port uint16
		}{{"tcp", tcpPort}, {"udp", udpPort}} {
			conn, err := Dial(ctx, c.a1.NS, nw.name, netip.AddrPortFrom(f.addr(c.b1.NS), nw.port))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			for i := range 3 {
				if err := Echo(ctx, conn, probeTimeout); err != nil {
					t.Errorf("%s %s echo %d: %v", f.name, nw.name, i, err)
				}
			}
		}
	}
}

// TestProbeOutcomes checks that probes tell a closed port from a drop.
func TestProbeOutcomes(t *testing.T) {
	needRoot(t)
	c := newCluster(t, Options{})
	ctx := t.Context()
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			dst := f.addr(c.b1.NS)
			// Nothing listens: the kernel answers RST / port unreachable.
			if err := ProbeTCP(ctx, c.a1.NS, netip.AddrPortFrom(dst, 9), probeTimeout); !errors.Is(err, ErrRefused) {
				t.Errorf("tcp to closed port: got %v, want %v", err, ErrRefused)
			}
			if err := ProbeUDP(ctx, c.a1.NS, netip.AddrPortFrom(dst, 9), probeTimeout); !errors.Is(err, ErrRefused) {
				t.Errorf("udp to closed port: got %v, want %v", err, ErrRefused)
			}
			// No SCTP stack and no SCTPServer: nothing answers.
			if err := ProbeSCTP(ctx, c.a1.NS, netip.AddrPortFrom(dst, 9), failTimeout); !errors.Is(err, ErrNoReply) {
				t.Errorf("sctp without server: got %v, want %v", err, ErrNoReply)
			}
			// An address no node routes: node a answers unreachable, or
			// nothing comes back; either way it is no success.
			nowhere := netip.MustParseAddr("198.51.100.99")
			if f.v6 {
				nowhere = netip.MustParseAddr("2001:db8:ffff::99")
			}
			if err := ProbeTCP(ctx, c.a1.NS, netip.AddrPortFrom(nowhere, tcpPort), failTimeout); !errors.Is(err, ErrUnreachable) && !errors.Is(err, ErrNoReply) {
				t.Errorf("tcp to unrouted address: got %v, want %v or %v", err, ErrUnreachable, ErrNoReply)
			}
		})
	}
}

// TestSpoofedSYN shows that the lab itself delivers a SYN with a forged
// source (nodes do no reverse-path filtering): only podwall's anti-spoofing
// can drop it. The trap sees genuine SYNs too.
func TestSpoofedSYN(t *testing.T) {
	needRoot(t)
	c := newCluster(t, Options{})
	ctx := t.Context()
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			// a1 pretends to be b2. (Forging the receiver's own address
			// would not do: IPv4 drops such a martian source on input.)
			forged := f.addr(c.b2.NS)
			for _, to := range []*NS{c.a2.NS, c.b1.NS} {
				if err := ProbeSpoofedSYN(ctx, c.a1.NS, forged, to, netip.AddrPortFrom(f.addr(to), 7000), probeTimeout); err != nil {
					t.Errorf("spoofed SYN to %s: %v", to.Role(), err)
				}
			}
			// A SYN that is never sent is not reported.
			trap, err := TrapSYN(c.b1.NS, 7001)
			if err != nil {
				t.Fatal(err)
			}
			defer trap.Close()
			fake := SpoofedSYN{Src: netip.AddrPortFrom(forged, 1), Seq: 1}
			if err := trap.Wait(ctx, fake, failTimeout); !errors.Is(err, ErrNotDelivered) {
				t.Errorf("unsent SYN: got %v, want %v", err, ErrNotDelivered)
			}
		})
	}
}

// TestNaming checks names against Linux limits and the firewall's view:
// pod veths carry the veth prefix, external hosts' do not.
func TestNaming(t *testing.T) {
	needRoot(t)
	c := newCluster(t, Options{VethPrefix: "cali"})
	if !strings.HasPrefix(c.lab.Prefix(), DefaultPrefix) {
		t.Errorf("lab prefix %q does not start with %q", c.lab.Prefix(), DefaultPrefix)
	}
	for _, ns := range c.lab.Namespaces() {
		if !strings.HasPrefix(ns.Name(), c.lab.Prefix()) {
			t.Errorf("namespace %s lacks the run prefix %s", ns.Name(), c.lab.Prefix())
		}
	}
	for _, p := range []*Pod{c.a1, c.a2, c.b1, c.b2} {
		if !strings.HasPrefix(p.HostVeth, "cali") || len(p.HostVeth) > 15 {
			t.Errorf("pod %s: host veth %q: want prefix cali, ≤ 15 characters", p.Role(), p.HostVeth)
		}
	}
	if strings.HasPrefix(c.x.HostVeth, "cali") || !c.x.External {
		t.Errorf("external host veth %q carries the pod prefix", c.x.HostVeth)
	}
	// `ip netns exec` works and shows what the lab configured.
	out, err := c.a1.Exec(t.Context(), "ip", "-br", "addr", "show", "dev", "eth0").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns exec: %v: %s", err, out)
	}
	for _, a := range c.a1.Addrs() {
		if !strings.Contains(string(out), a.String()) {
			t.Errorf("eth0 of a1 lacks %v: %s", a, out)
		}
	}
	out, err = c.a.Exec(t.Context(), "ip", "-br", "link", "show", "dev", c.a1.HostVeth).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "UP") {
		t.Errorf("host veth %s of a1: %v: %s", c.a1.HostVeth, err, out)
	}

	// Bad input is refused, all problems at once.
	if _, err := New(Options{VethPrefix: "toolongprefix", RunID: "Bad!"}); err == nil ||
		!strings.Contains(err.Error(), "veth prefix") || !strings.Contains(err.Error(), "run id") {
		t.Errorf("bad options: got %v", err)
	}
	if _, err := c.a.AddPod("a1", netip.MustParseAddr("10.244.0.99"), netip.Addr{}); err == nil {
		t.Error("duplicate pod name accepted")
	}
	if _, err := c.a.AddPod("stray", netip.MustParseAddr("10.244.1.99"), netip.Addr{}); err == nil {
		t.Error("pod outside the node's CIDR accepted")
	}
}

// TestClose checks that Close leaves no namespace of the run behind, stops
// the servers and can be called again.
func TestClose(t *testing.T) {
	needRoot(t)
	c := newCluster(t, Options{})
	if _, err := c.a1.ServeTCP(tcpPort); err != nil {
		t.Fatal(err)
	}
	if got := listNetns(t, c.lab.Prefix()); len(got) != 8 {
		t.Fatalf("before Close: %d namespaces %v, want 8 (underlay, 2 nodes, 4 pods, 1 external)", len(got), got)
	}
	start := time.Now()
	if err := c.lab.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Close took %v", time.Since(start))
	if got := listNetns(t, c.lab.Prefix()); len(got) != 0 {
		t.Errorf("after Close: namespaces %v left", got)
	}
	if _, err := os.Stat(filepath.Join(RunDir, c.lab.RunID())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("owner file after Close: %v", err)
	}
	if err := c.lab.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := c.a.AddPod("late", netip.MustParseAddr("10.244.0.99"), netip.Addr{}); err == nil {
		t.Error("AddPod after Close succeeded")
	}
	// A closed namespace is never entered (its handle's number may belong
	// to another file by now).
	if err := c.a1.Do(func() error { return nil }); err == nil {
		t.Error("Do after Close succeeded")
	}
	if _, err := c.a1.ServeUDP(udpPort); err == nil {
		t.Error("ServeUDP after Close succeeded")
	}
}

// listNetns returns the names `ip netns list` shows that start with prefix.
func listNetns(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			names = append(names, f[0])
		}
	}
	return names
}

// TestSweep checks that Sweep removes namespaces of dead runs (owner
// process gone, owner's PID reused, owner file missing), honours olderThan
// and leaves a live run alone. It uses its own prefix so it never touches
// other runs.
func TestSweep(t *testing.T) {
	needRoot(t)
	const prefix = "pwsweeptest-"
	live, err := New(Options{Prefix: prefix, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if _, err := Plan(0).AddNode(live, "n"); err != nil {
		t.Fatal(err)
	}

	// A run whose owner exited.
	done := exec.Command("true")
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	deadRun := staleRun(t, prefix, fmt.Sprintf("pid %d\nstart 1\n", done.Process.Pid), "node-a", "pod-1")
	// A run whose owner PID is now someone else (ours, other start time).
	reusedRun := staleRun(t, prefix, fmt.Sprintf("pid %d\nstart 1\n", os.Getpid()), "node-a")
	// A run without an owner file.
	orphanRun := staleRun(t, prefix, "", "node-a")

	// Young stale namespaces survive a sweep for old ones.
	removed, err := Sweep(prefix, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 0 {
		t.Errorf("Sweep(1h) removed %v, want nothing", removed)
	}

	removed, err = Sweep(prefix, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("swept %v", removed)
	for _, run := range []string{deadRun, reusedRun, orphanRun} {
		if got := listNetns(t, prefix+run+"-"); len(got) != 0 {
			t.Errorf("stale run %s: namespaces %v left", run, got)
		}
		if _, err := os.Stat(filepath.Join(RunDir, run)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stale run %s: owner file left: %v", run, err)
		}
	}
	if len(removed) != 4 {
		t.Errorf("removed %v, want 4 namespaces", removed)
	}
	if got := listNetns(t, live.Prefix()); len(got) != 2 {
		t.Errorf("live run: namespaces %v, want underlay and node", got)
	}
	if _, err := os.Stat(filepath.Join(RunDir, live.RunID())); err != nil {
		t.Errorf("live run's owner file: %v", err)
	}
}

// staleRun creates bare namespaces for a fake earlier run, with the given
// owner file content ("" for none), and returns the run id.
func staleRun(t *testing.T, prefix, ownerFile string, roles ...string) string {
	t.Helper()
	run := randomHex(3)
	if ownerFile != "" {
		if err := os.WriteFile(filepath.Join(RunDir, run), []byte(ownerFile), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, role := range roles {
		name := prefix + run + "-" + role
		h, err := createNamed(name)
		if err != nil {
			t.Fatal(err)
		}
		h.Close()
		t.Cleanup(func() { deleteNamed(name) })
	}
	t.Cleanup(func() { os.Remove(filepath.Join(RunDir, run)) })
	return run
}

// BenchmarkBuild measures building and closing 2 nodes × 8 pods.
func BenchmarkBuild(b *testing.B) {
	needRoot(b)
	for b.Loop() {
		l, err := New(Options{})
		if err != nil {
			b.Fatal(err)
		}
		for i := range 2 {
			p := Plan(i)
			n, err := p.AddNode(l, fmt.Sprintf("node-%d", i))
			if err != nil {
				b.Fatal(err)
			}
			for j := range 8 {
				v4, v6 := p.Pod(j)
				if _, err := n.AddPod(fmt.Sprintf("p%d-%d", i, j), v4, v6); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDoRestoresNamespace checks that Do leaves the caller's namespace as
// it was, also when fn fails or panics.
func TestDoRestoresNamespace(t *testing.T) {
	needRoot(t)
	c := newCluster(t, Options{})
	self, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var inside string
	if err := c.a1.Do(func() (err error) {
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside == self {
		t.Errorf("Do ran in the caller's namespace %s", self)
	}
	boom := errors.New("boom")
	if err := c.a1.Do(func() error { return boom }); !errors.Is(err, boom) {
		t.Errorf("Do error: got %v, want %v", err, boom)
	}
	func() {
		defer func() {
			if r := recover(); r != "panic in ns" {
				t.Errorf("recovered %v, want the panic of fn", r)
			}
		}()
		c.a1.Do(func() error { panic("panic in ns") })
	}()
	// fn calling Goexit (t.FailNow) ends the caller's goroutine too.
	reachedc := make(chan bool)
	go func() {
		reached := false
		defer func() { reachedc <- reached }()
		c.a1.Do(func() error { runtime.Goexit(); return nil })
		reached = true
	}()
	if <-reachedc {
		t.Error("Do returned after fn called runtime.Goexit")
	}
	// Many calls later, every thread of the process is back in its
	// namespace or gone (the Goexit thread dies, asynchronously).
	for range 50 {
		c.a2.Do(func() error { return nil })
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	err = Poll(ctx, 10*time.Millisecond, func() error {
		for _, task := range threads(t) {
			ns, err := os.Readlink(filepath.Join("/proc/self/task", task, "ns/net"))
			if err == nil && ns != self {
				return fmt.Errorf("thread %s (pid %d) left in %s", task, os.Getpid(), ns)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func threads(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Name())
	}
	return ids
}

// TestMain removes what killed earlier runs left behind.
func TestMain(m *testing.M) {
	flag.Parse()
	if os.Geteuid() == 0 && !testing.Short() {
		if removed, err := Sweep(DefaultPrefix, 0); err != nil {
			fmt.Fprintln(os.Stderr, err)
		} else if len(removed) > 0 {
			fmt.Fprintf(os.Stderr, "lab: swept stale namespaces %v\n", removed)
		}
	}
	os.Exit(m.Run())
}
