package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/policy/policytest"
)

// The agent stopped and started again, killed (SIGKILL) or asked to stop (SIGTERM), failing
// closed and failing open, in this lab:
//
//	node-1: client, server (ingress: client on 80/TCP and 81/UDP), intruder, a, b
//
// While it is down, new connections to an isolated pod are dropped when failing closed
// (the table stays, its queues have no reader) and pass when failing open (the queue
// bypass, or no table after a graceful stop); established connections and pods no policy
// selects keep working in both. Failing closed, a connection attempt the policy denies
// never opens, not even when its SYN is retransmitted after the restart, while an allowed
// one is held and opens then. The restarted agent takes the table over as it was (same
// rules, same sets: nothing duplicated), reads every packet the kernel queues to it
// (kernel and agent counts agree, no queue drops), and revokes what failing open let
// through. A graceful stop exits within a few milliseconds.
func TestAgentRestart(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/client", "app/server", "app/intruder", "app/a", "app/b")
	e.write(policytest.Namespace("app", nil),
		e.podObject("app/client", map[string]string{"app": "client"}),
		e.podObject("app/server", map[string]string{"app": "server"}),
		e.podObject("app/intruder", map[string]string{"app": "intruder"}),
		e.podObject("app/a", nil), e.podObject("app/b", nil),
		policytest.NetworkPolicy("app", "server", policytest.Selector("app", "server"), policytest.Ingress(policytest.From(
			policytest.Pods(policytest.Selector("app", "client")), policytest.Port("80/TCP"), policytest.Port("81/UDP")))))
	e.Serve(80, 81)
	e.Warm()

	for _, mode := range []struct {
		name string
		args []string
	}{{"fail closed", nil}, {"fail open", []string{"--fail-open"}}} {
		failOpen := len(mode.args) > 0
		t.Run(mode.name, func(t *testing.T) {
			e := e.sub(t)
			if a := e.Agents["node-1"]; a != nil {
				if err := a.Stop(syscall.SIGTERM, 5*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			e.startOn("node-1", mode.args...)
			for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
				t.Run(sig.String(), func(t *testing.T) { e.sub(t).outage(sig, failOpen, mode.args) })
			}
		})
	}
}

// outage stops node-1's agent with sig, checks the datapath while it is down, restarts it
// with args and checks the takeover.
func (e *env) outage(sig syscall.Signal, failOpen bool, args []string) {
	t := e.T
	kept := []*held{
		e.hold("kept", "IPv4", "app/client", "app/server", "tcp", 80),
		e.hold("kept", "IPv6", "app/client", "app/server", "udp", 81),
		e.hold("kept", "IPv4", "app/a", "app/b", "tcp", 80),
	}
	table, rules := e.ruleset("node-1")

	a := e.Agents["node-1"]
	stopped := time.Now()
	if err := a.Stop(sig, 5*time.Second); err != nil {
		t.Fatalf("stop: %v\n%s", err, a.Logs())
	}
	exit := time.Since(stopped)
	hasTable := e.hasTable("node-1")
	if wantTable := !(failOpen && sig == syscall.SIGTERM); hasTable != wantTable {
		t.Errorf("after %v: table present = %v, want %v", sig, hasTable, wantTable)
	}
	t.Logf("%v: exited %v after the signal; table kept: %v", sig, exit.Round(100*time.Microsecond), hasTable)

	// While down.
	open := failOpen
	e.check(
		probe{from: "app/client", to: "app/server", port: 80, allow: open},
		probe{from: "app/intruder", to: "app/server", port: 80, allow: open},
		probe{from: "app/intruder", to: "app/server", port: 81, proto: "UDP", allow: open},
		probe{from: "app/a", to: "app/b", port: 80, allow: true},
	)
	e.checkHeld(kept)
	var sneaked *held // failing open: a connection the policy denies, opened while down
	if failOpen {
		sneaked = e.hold("cut", "IPv4", "app/intruder", "app/server", "tcp", 80)
	}
	// Failing closed: connection attempts that span the restart. Their SYN is dropped now
	// and retransmitted after a second, when the agent is back.
	type attempt struct {
		p   probe
		err chan error
	}
	var spanning []attempt
	if !failOpen {
		for _, p := range []probe{
			{from: "app/intruder", to: "app/server", port: 80, allow: false},
			{from: "app/client", to: "app/server", port: 80, allow: true},
		} {
			at := attempt{p, make(chan error, 1)}
			go func() { at.err <- e.probe("IPv4", at.p, 2500*time.Millisecond) }()
			spanning = append(spanning, at)
		}
	}
	// New connections stream through the restart: the new agent must read every packet
	// the kernel queues to it. The timeout is under a second, the first retransmission of
	// a lost SYN, and generous otherwise: a slow machine must not look like a drop.
	ctx, stopProbes := context.WithCancel(context.Background())
	defer stopProbes()
	stream := e.probeLoop(ctx, "IPv4", probe{from: "app/client", to: "app/server", port: 80}, 5*time.Millisecond, 900*time.Millisecond)

	restarted := time.Now()
	e.startOn("node-1", args...)
	t.Logf("restarted: ready %v after start", time.Since(restarted).Round(100*time.Microsecond))
	ready := time.Now()
	for _, at := range spanning {
		if err := <-at.err; (err == nil) != at.p.allow {
			t.Errorf("%s -> %s:%d attempted while down: connected = %v, want %v (%v)", at.p.from, at.p.to, at.p.port, err == nil, at.p.allow, err)
		}
	}
	stopProbes()
	for _, r := range stream.wait() {
		if r.start.After(ready) && !r.ok {
			t.Errorf("an allowed connection started %v after the restarted agent was ready failed: %v", r.start.Sub(ready), r.err)
		}
	}

	if got, n := e.ruleset("node-1"); got != table || n != rules {
		t.Errorf("after the restart the table differs (%d rules, before %d):\n%s\nbefore:\n%s", n, rules, got, table)
	}
	// Every packet the kernel queued to the restarted agent was read, none dropped. The two
	// counters are read one after the other while late packets (retransmissions, the last
	// probes) may still arrive, so they are compared once they agree or at the deadline.
	var agentRead, kernel, dropped uint64
	deadline := time.Now().Add(3 * time.Second)
	for {
		kernel, dropped = 0, 0
		for _, q := range e.queueStats("node-1") {
			kernel += uint64(q.IDSequence)
			dropped += q.Dropped + q.UserDropped
		}
		agentRead = uint64(e.metric("node-1", "podwall_datapath_packets_total"))
		if (agentRead == kernel && dropped == 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if agentRead != kernel || dropped != 0 {
		t.Errorf("restarted agent read %d packets, the kernel queued %d to it and dropped %d", agentRead, kernel, dropped)
	}
	e.checkHeld(kept)
	if sneaked != nil {
		e.conntrackOf("node-1").waitGone(e, ready, []*held{sneaked})
		e.checkHeld([]*held{sneaked})
	}
}

// startOn starts the agent of one node with extra flags, replacing the one the env knew,
// and waits until it is ready.
func (e *env) startOn(node string, args ...string) {
	e.T.Helper()
	e.StartAgent(node, e.config(e.Nodes[node], args...), 20*time.Second)
}

var (
	nftCounters = regexp.MustCompile(`counter packets \d+ bytes \d+`)
	// deniedElements are the elements of the deny cache's sets as nft lists them: transient
	// (they time out), so not part of what a restart must keep.
	deniedElements = regexp.MustCompile(`(?s)(set denied[46] \{[^}]*?)\s*elements = \{[^}]*\}`)
)

// ruleset returns node's podwall table as `nft list table` prints it (counters zeroed, the
// deny cache's elements left out) and its number of rules.
func (e *env) ruleset(node string) (string, int) {
	e.T.Helper()
	out, err := e.Nodes[node].Exec(context.Background(), "nft", "-j", "list", "table", "inet", "podwall").Output()
	if err != nil {
		e.T.Fatalf("nft -j list table in %s: %v", node, err)
	}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		e.T.Fatal(err)
	}
	rules := 0
	for _, o := range doc.Nftables {
		if _, ok := o["rule"]; ok {
			rules++
		}
	}
	text, err := e.Nodes[node].Exec(context.Background(), "nft", "list", "table", "inet", "podwall").Output()
	if err != nil {
		e.T.Fatalf("nft list table in %s: %v", node, err)
	}
	text = deniedElements.ReplaceAll(text, []byte("$1"))
	return nftCounters.ReplaceAllString(string(text), "counter"), rules
}

// hasTable reports whether node has the podwall table.
func (e *env) hasTable(node string) bool {
	return e.Nodes[node].Exec(context.Background(), "nft", "list", "table", "inet", "podwall").Run() == nil
}

// queueStats reads node's NFQUEUE instances.
func (e *env) queueStats(node string) []datapath.QueueStat {
	e.T.Helper()
	var qs []datapath.QueueStat
	if err := e.Nodes[node].Do(func() (err error) { qs, err = datapath.ReadQueueStats(); return err }); err != nil {
		e.T.Fatal(err)
	}
	return qs
}

// agentPID returns the PID of the podwall process in node's network namespace.
func (e *env) agentPID(node string) int {
	e.T.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(e.Nodes[node].Path(), &st); err != nil {
		e.T.Fatal(err)
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(d + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "podwall" {
			continue
		}
		if ns, err := os.Readlink(d + "/ns/net"); err == nil && ns == want {
			pid, _ := strconv.Atoi(filepath.Base(d))
			return pid
		}
	}
	e.T.Fatalf("no podwall process in %s", node)
	return 0
}

// rssKiB returns a process's resident set size (VmRSS) in KiB.
func rssKiB(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int
			_, err := fmt.Sscan(rest, &kb)
			return kb, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// A flood at an isolated pod from a pod of the lab — 200,000 TCP SYNs to random ports (each
// a new flow: the verdict cache churns) and then 200,000 UDP datagrams to one port (one
// flow, answered from the cache), all denied — does not take the agent down: /metrics and
// the decision stream answer throughout, memory stays bounded, established connections
// (to the flooded pod and between other pods) keep echoing, every flood packet is accounted
// for in the kernel — dropped by the deny cache, or queued and then either judged or counted
// as dropped (the queue's overflow counters, ENOBUFS) — and afterwards an allowed connection
// opens at once.
//
// The floods run twice: with the deny cache (the default), where the one-port flood costs
// the agent a handful of queued packets and the kernel drops the rest, and after a restart
// with --deny-cache-ttl 0, where every packet is queued. The log says how many packets of
// each flood reached the queue.
//
//	node-1: attacker, victim (ingress: client on 80/TCP), client, a, b
func TestFlood(t *testing.T) {
	const packets = 200_000
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/attacker", "app/victim", "app/client", "app/a", "app/b")
	e.write(policytest.Namespace("app", nil),
		e.podObject("app/attacker", nil), e.podObject("app/victim", map[string]string{"app": "victim"}),
		e.podObject("app/client", map[string]string{"app": "client"}), e.podObject("app/a", nil), e.podObject("app/b", nil),
		policytest.NetworkPolicy("app", "victim", policytest.Selector("app", "victim"), policytest.Ingress(policytest.From(
			policytest.Pods(policytest.Selector("app", "client")), policytest.Port("80/TCP")))))
	e.Serve(80, 81)
	e.Warm()
	e.start()
	kept := []*held{
		e.hold("kept", "IPv4", "app/client", "app/victim", "tcp", 80),
		e.hold("kept", "IPv4", "app/a", "app/b", "tcp", 80),
	}
	victim := e.Pods["app/victim"].IPv4

	for _, cache := range []struct {
		name string
		args []string
	}{{"deny cache", nil}, {"no deny cache", []string{"--deny-cache-ttl", "0"}}} {
		t.Run(cache.name, func(t *testing.T) {
			e := e.sub(t)
			if cache.args != nil {
				if err := e.Agents["node-1"].Stop(syscall.SIGTERM, 5*time.Second); err != nil {
					t.Fatal(err)
				}
				e.startOn("node-1", cache.args...)
			}
			pid := e.agentPID("node-1")
			for _, flood := range []struct {
				name    string
				oneFlow bool
				send    func() (int, error)
			}{
				{"SYN flood, random ports", false, func() (int, error) { return synFloodTo(e.Pods["app/attacker"], victim, 0, packets) }},
				{"UDP flood, one port", true, func() (int, error) { return udpFlood(e.Pods["app/attacker"], victim, 81, packets) }},
			} {
				t.Run(flood.name, func(t *testing.T) { e.sub(t).flood(pid, kept, flood.oneFlow, cache.args == nil, flood.send) })
			}
		})
	}
}

// flood runs one flood of TestFlood and checks what it did. withCache tells whether the
// agent runs with the deny cache; oneFlow, whether every packet of the flood is one flow.
func (e *env) flood(pid int, kept []*held, oneFlow, withCache bool, send func() (int, error)) {
	t := e.T
	rss0, _ := rssKiB(pid)
	q0, qs0, nobufs0 := e.queueCounts("node-1"), e.queueStats("node-1"), e.metric("node-1", "podwall_datapath_enobufs_total")
	hits0 := e.metric("node-1", "podwall_datapath_deny_cache_hits_total")
	adds0, addDrops0 := e.metric("node-1", "podwall_datapath_deny_cache_adds_total"), e.metric("node-1", "podwall_datapath_deny_cache_add_drops_total")

	ctx, stop := context.WithCancel(context.Background())
	mon := e.monitor(ctx, "node-1", pid, kept)
	start := time.Now()
	sent, err := send()
	if err != nil {
		t.Fatal(err)
	}
	sendTook := time.Since(start)
	drained := e.drained("node-1", q0.Agent)
	stop()
	m := mon.wait()

	q := e.queueCounts("node-1").sub(q0)
	var qdrop, udrop uint64
	for i, s := range e.queueStats("node-1") {
		if i < len(qs0) && qs0[i].Queue == s.Queue && qs0[i].PortID == s.PortID {
			qdrop += s.Dropped - qs0[i].Dropped
			udrop += s.UserDropped - qs0[i].UserDropped
		}
	}
	nobufs := e.metric("node-1", "podwall_datapath_enobufs_total") - nobufs0
	hits := uint64(e.metric("node-1", "podwall_datapath_deny_cache_hits_total") - hits0)
	adds, addDrops := e.metric("node-1", "podwall_datapath_deny_cache_adds_total")-adds0, e.metric("node-1", "podwall_datapath_deny_cache_add_drops_total")-addDrops0
	rss1, _ := rssKiB(pid)
	handledTook := drained.Sub(start)
	t.Logf("sent %d in %v (%.0f/s); dropped by the deny cache %d (flows added %v, not handed over %v); queued by the rules %d (%.2f %% of sent); agent read %d in %v (%.0f/s); queue full drops %d, socket drops %d, ENOBUFS %v",
		sent, sendTook.Round(time.Millisecond), float64(sent)/sendTook.Seconds(), hits, adds, addDrops, q.Queued(), 100*float64(q.Queued())/float64(sent),
		q.Agent, handledTook.Round(time.Millisecond), float64(q.Agent)/handledTook.Seconds(), qdrop, udrop, nobufs)
	t.Logf("RSS %d KiB before, peak %d KiB, %d KiB after; /metrics: %d answers, slowest %v, %d failed; stream: %d decisions; echoes: %d, slowest %v, %d failed",
		rss0, m.peakRSS, rss1, m.scrapes, m.slowest.Round(time.Millisecond), m.scrapeErrs, m.streamed,
		m.echoes, m.slowestEcho.Round(time.Millisecond), len(m.echoErrs))

	if q.Queued() != q.Agent+qdrop+udrop {
		t.Errorf("accounting: %d packets queued by the rules, %d read by the agent, %d + %d dropped by the queue", q.Queued(), q.Agent, qdrop, udrop)
	}
	if q.Queued()+hits < uint64(sent)*9/10 {
		t.Errorf("only %d + %d of %d flood packets reached the deny cache or the queue rules", hits, q.Queued(), sent)
	}
	switch {
	case !withCache && hits != 0:
		t.Errorf("without a deny cache, %d packets were dropped by it", hits)
	case withCache && oneFlow && q.Queued() > uint64(sent)/20:
		// What reaches the queue is what arrives between the first packet and the kernel's
		// element: at 400,000 packets/s, 1 % is 5 ms, which a loaded machine's scheduler
		// can take.
		t.Errorf("with the deny cache, %d of %d packets of one denied flow reached the queue; want at most 5 %%", q.Queued(), sent)
	}
	if m.scrapeErrs > 0 || m.scrapes < 2 || m.slowest > time.Second {
		t.Errorf("/metrics during the flood: %d answers, %d failed, slowest %v", m.scrapes, m.scrapeErrs, m.slowest)
	}
	// The stream answers throughout; it has decisions to carry when the agent read enough
	// packets (with the deny cache, a one-flow flood may give it none after subscribing).
	if m.streamErr != nil || (m.streamed == 0 && q.Agent >= 1000) {
		t.Errorf("decision stream during the flood: %d decisions, %v", m.streamed, m.streamErr)
	}
	for _, err := range m.echoErrs {
		t.Errorf("established connection during the flood: %v", err)
	}
	// Bounded: the flow cache (65,536 flows, each with the decision that made its verdict)
	// fills up during the random-port flood and then holds, next to the heap the stream's
	// subscriber grew while formatting what the reader read (150k of the 200k packets on
	// this machine, up from 40–90k before podwall served the queue itself); a flood of one
	// flow adds next to nothing.
	if m.peakRSS > 160<<10 || rss1 > rss0+96<<10 || (oneFlow && rss1 > rss0+16<<10) {
		t.Errorf("RSS grew from %d KiB to a peak of %d KiB, %d KiB after", rss0, m.peakRSS, rss1)
	}
	// Recovered: the queue is empty and new connections get their verdict at once.
	e.check(
		probe{from: "app/client", to: "app/victim", port: 80, allow: true},
		probe{from: "app/attacker", to: "app/victim", port: 80, allow: false},
	)
	e.checkHeld(kept)
}

// floodMonitor is what monitor saw during a flood.
type floodMonitor struct {
	done                chan struct{}
	peakRSS             int
	scrapes, scrapeErrs int
	slowest             time.Duration
	streamed            int
	streamErr           error
	echoes              int
	slowestEcho         time.Duration
	echoErrs            []error
}

func (m *floodMonitor) wait() *floodMonitor { <-m.done; return m }

// monitor scrapes node's /metrics and samples the agent's RSS every 50 ms, echoes on the
// held connections every 100 ms, and reads the decision stream, until ctx ends. It returns
// once the stream's subscription is in place (or failed), so that a flood started next
// cannot be judged before anyone listens.
func (e *env) monitor(ctx context.Context, node string, pid int, hs []*held) *floodMonitor {
	m := &floodMonitor{done: make(chan struct{})}
	subscribed := make(chan struct{})
	a := e.Agents[node]
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if kb, err := rssKiB(pid); err == nil && kb > m.peakRSS {
				m.peakRSS = kb
			}
			start := time.Now()
			code, _, err := a.Get(context.Background(), "/metrics")
			m.slowest = max(m.slowest, time.Since(start))
			m.scrapes++
			if err != nil || code != 200 {
				m.scrapeErrs++
			}
			sleepCtx(ctx, 50*time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			for _, h := range hs {
				start := time.Now()
				if err := lab.Echo(context.Background(), h.conn, time.Second); err != nil {
					m.echoErrs = append(m.echoErrs, fmt.Errorf("%v: %w", h, err))
				}
				m.slowestEcho = max(m.slowestEcho, time.Since(start))
				m.echoes++
			}
			sleepCtx(ctx, 100*time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		m.streamed, m.streamErr = e.readStream(ctx, node, subscribed)
	}()
	go func() { wg.Wait(); close(m.done) }()
	select {
	case <-subscribed:
	case <-m.done:
	}
	return m
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// readStream follows node's /debug/decisions until ctx ends and returns how many
// decisions arrived. It closes subscribed when the agent answered 200 (it subscribes before
// it answers), or when it returns.
func (e *env) readStream(ctx context.Context, node string, subscribed chan<- struct{}) (int, error) {
	var once sync.Once
	defer once.Do(func() { close(subscribed) })
	var c net.Conn
	if err := e.Nodes[node].Do(func() (err error) {
		c, err = net.Dial("tcp", "127.0.0.1:9091")
		return err
	}); err != nil {
		return 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := fmt.Fprintf(c, "GET /debug/decisions HTTP/1.1\r\nHost: 127.0.0.1:9091\r\nAccept: application/x-ndjson\r\n\r\n"); err != nil {
		return 0, err
	}
	r := bufio.NewReader(c)
	status, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if !strings.Contains(status, " 200 ") {
		return 0, fmt.Errorf("/debug/decisions: %s", strings.TrimSpace(status))
	}
	once.Do(func() { close(subscribed) })
	n := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if ctx.Err() != nil {
				return n, nil
			}
			return n, err
		}
		if strings.Contains(line, `"verdict"`) {
			n++
		}
	}
}

// drained waits until node's queues are empty and its agent has read no packet for 100 ms,
// and returns when it read the last one. before is the agent's packet count before.
func (e *env) drained(node string, before uint64) time.Time {
	e.T.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last, lastAt := before, time.Now()
	for time.Now().Before(deadline) {
		n := uint64(e.metric(node, "podwall_datapath_packets_total"))
		empty := true
		for _, q := range e.queueStats(node) {
			empty = empty && q.Len == 0
		}
		if n != last {
			last, lastAt = n, time.Now()
		} else if empty && time.Since(lastAt) > 100*time.Millisecond {
			return lastAt
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.T.Fatalf("%s: the agent was still reading packets after 30 s", node)
	return time.Time{}
}

// tcpChecksum is the TCP checksum over the IPv4 pseudo-header and seg.
func tcpChecksum(src, dst [4]byte, seg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
	}
	add(src[:])
	add(dst[:])
	sum += syscall.IPPROTO_TCP + uint32(len(seg))
	add(seg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// udpFlood sends n datagrams from p to dst:port on one socket, as fast as it can.
func udpFlood(p *lab.Pod, dst netip.Addr, port uint16, n int) (sent int, err error) {
	var c *net.UDPConn
	if err := p.Do(func() (err error) {
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, port)))
		return err
	}); err != nil {
		return 0, err
	}
	defer c.Close()
	msg := make([]byte, 16)
	for range n {
		if _, err := c.Write(msg); err == nil {
			sent++
		}
	}
	return sent, nil
}
