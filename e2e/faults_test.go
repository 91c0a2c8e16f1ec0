package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/e2e/agent"
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
	e.node("node-1", 1)
	for i, k := range []string{"app/client", "app/server", "app/intruder", "app/a", "app/b"} {
		e.pod("node-1", k, i)
	}
	e.write(agent.Namespace("app", nil),
		e.podObject("app/client", map[string]string{"app": "client"}),
		e.podObject("app/server", map[string]string{"app": "server"}),
		e.podObject("app/intruder", map[string]string{"app": "intruder"}),
		e.podObject("app/a", nil), e.podObject("app/b", nil),
		netpol("app", "server", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "server"),
			Ingress: []networkingv1.NetworkPolicyIngressRule{from(ports("80/TCP", "81/UDP"), pods(sel("app", "client")))}}))
	e.serve(80, 81)
	e.warm()

	for _, mode := range []struct {
		name string
		args []string
	}{{"fail closed", nil}, {"fail open", []string{"--fail-open"}}} {
		failOpen := len(mode.args) > 0
		t.Run(mode.name, func(t *testing.T) {
			e := e.sub(t)
			if a := e.agents["node-1"]; a != nil {
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
	t := e.t
	kept := []*held{
		e.hold("kept", "IPv4", "app/client", "app/server", "tcp", 80),
		e.hold("kept", "IPv6", "app/client", "app/server", "udp", 81),
		e.hold("kept", "IPv4", "app/a", "app/b", "tcp", 80),
	}
	table, rules := e.ruleset("node-1")

	a := e.agents["node-1"]
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
	// the kernel queues to it.
	ctx, stopProbes := context.WithCancel(context.Background())
	defer stopProbes()
	stream := e.probeLoop(ctx, "IPv4", probe{from: "app/client", to: "app/server", port: 80}, 3*time.Millisecond, 300*time.Millisecond)

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
	var late int
	for _, r := range stream.wait() {
		if r.start.After(ready) && !r.ok {
			late++
		}
	}
	if late > 0 {
		t.Errorf("%d allowed connections started after the restarted agent was ready failed", late)
	}

	if got, n := e.ruleset("node-1"); got != table || n != rules {
		t.Errorf("after the restart the table differs (%d rules, before %d):\n%s\nbefore:\n%s", n, rules, got, table)
	}
	qs := e.queueStats("node-1")
	var kernel, dropped uint64
	for _, q := range qs {
		kernel += uint64(q.IDSequence)
		dropped += q.Dropped + q.UserDropped
	}
	if agentRead := uint64(e.metric("node-1", "podwall_datapath_packets_total", "")); agentRead != kernel || dropped != 0 {
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
	e.t.Helper()
	a, err := agent.Start(e.nodes[node], agent.Config{Binary: binary, Manifests: e.manifests, NodeName: e.nodes[node].Name(), Args: args})
	if err != nil {
		e.t.Fatal(err)
	}
	e.agents[node] = a
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.WaitReady(ctx); err != nil {
		e.t.Fatal(err)
	}
}

var nftCounters = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// ruleset returns node's podwall table as `nft list table` prints it (counters zeroed) and
// its number of rules.
func (e *env) ruleset(node string) (string, int) {
	e.t.Helper()
	out, err := e.nodes[node].Exec(context.Background(), "nft", "-j", "list", "table", "inet", "podwall").Output()
	if err != nil {
		e.t.Fatalf("nft -j list table in %s: %v", node, err)
	}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		e.t.Fatal(err)
	}
	rules := 0
	for _, o := range doc.Nftables {
		if _, ok := o["rule"]; ok {
			rules++
		}
	}
	text, err := e.nodes[node].Exec(context.Background(), "nft", "list", "table", "inet", "podwall").Output()
	if err != nil {
		e.t.Fatalf("nft list table in %s: %v", node, err)
	}
	return nftCounters.ReplaceAllString(string(text), "counter"), rules
}

// hasTable reports whether node has the podwall table.
func (e *env) hasTable(node string) bool {
	return e.nodes[node].Exec(context.Background(), "nft", "list", "table", "inet", "podwall").Run() == nil
}

// queueStats reads node's NFQUEUE instances.
func (e *env) queueStats(node string) []datapath.QueueStat {
	e.t.Helper()
	var qs []datapath.QueueStat
	if err := e.nodes[node].Do(func() (err error) { qs, err = datapath.ReadQueueStats(); return err }); err != nil {
		e.t.Fatal(err)
	}
	return qs
}

// agentPID returns the PID of the podwall process in node's network namespace.
func (e *env) agentPID(node string) int {
	e.t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(e.nodes[node].Path(), &st); err != nil {
		e.t.Fatal(err)
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
	e.t.Fatalf("no podwall process in %s", node)
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
