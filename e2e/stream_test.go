package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy/decisions"
)

// threeTierProbes are the 3-tier probes; only those to db are queued (db is the only
// isolated pod).
var threeTierProbes = []probe{
	{from: "user", to: "prod/web", port: 80, allow: true},
	{from: "prod/web", to: "prod/api", port: 5000, allow: true},
	{from: "prod/api", to: "prod/db", port: 3306, allow: true},
	{from: "prod/web", to: "prod/db", port: 3306, allow: false},
	{from: "user", to: "prod/db", port: 3306, allow: false},
	{from: "prod/api", to: "prod/db", port: 80, allow: false},
	{from: "prod/api", to: "prod/db", port: 3306, proto: "UDP", allow: false},
	{from: "prod/db", to: "prod/web", port: 80, allow: true}, // db is not egress-isolated
}

// dialIn dials from inside a lab namespace: how the tests reach an agent's listeners,
// which are on the loopback of its node's namespace.
func dialIn(ns *lab.NS) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// stream is one reader of an agent's /debug/decisions, collecting what it says.
type stream struct {
	mu      sync.Mutex
	events  []decisions.Event
	dropped uint64
	err     error
}

// stream subscribes to node's decision stream with a query ("?verdict=deny"); the
// subscription is live when it returns. It reads until the test ends.
func (e *env) stream(node, query string) *stream {
	e.T.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	client := &http.Client{Transport: &http.Transport{DialContext: dialIn(e.Nodes[node].NS), DisableKeepAlives: true}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:9091/debug/decisions"+query, nil)
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		e.T.Fatalf("decision stream of %s: %v", node, err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		e.T.Fatalf("decision stream of %s: %s", node, resp.Status)
	}
	s := &stream{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var ev decisions.Event
			err := json.Unmarshal(sc.Bytes(), &ev)
			s.mu.Lock()
			switch {
			case err != nil:
				s.err = fmt.Errorf("line %q: %w", sc.Text(), err)
			case ev.Type == decisions.TypeDecision:
				s.events = append(s.events, ev)
			case ev.Type == decisions.TypeDropped:
				s.dropped += ev.Count
			}
			s.mu.Unlock()
		}
	}()
	e.T.Cleanup(func() { cancel(); <-done })
	return s
}

// snapshot returns what the stream has said so far.
func (s *stream) snapshot() ([]decisions.Event, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events), s.dropped, s.err
}

// count returns the number of decisions with a verdict ("" for all).
func count(evs []decisions.Event, verdict string) int {
	n := 0
	for _, ev := range evs {
		if verdict == "" || ev.Verdict == verdict {
			n++
		}
	}
	return n
}

// tailProc is `podwall tail` running in a node's namespace, its stdout not a terminal.
type tailProc struct {
	cmd    *exec.Cmd
	out    syncBuffer
	stderr syncBuffer
	done   chan error
}

func (e *env) tail(node string, args ...string) *tailProc {
	e.T.Helper()
	tp := &tailProc{done: make(chan error, 1)}
	tp.cmd = exec.Command("ip", append([]string{"netns", "exec", e.Nodes[node].Name(), binary, "tail", "--addr", "127.0.0.1:9091"}, args...)...)
	tp.cmd.Stdout, tp.cmd.Stderr = &tp.out, &tp.stderr
	tp.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := tp.cmd.Start(); err != nil {
		e.T.Fatal(err)
	}
	go func() { tp.done <- tp.cmd.Wait() }()
	e.T.Cleanup(func() {
		tp.cmd.Process.Kill()
		<-tp.done
	})
	return tp
}

// interrupt sends Ctrl-C and waits for tail to exit.
func (tp *tailProc) interrupt() error {
	tp.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-tp.done:
		tp.done <- err
		return err
	case <-time.After(5 * time.Second):
		return fmt.Errorf("tail still running 5s after SIGINT")
	}
}

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

// waitFor polls cond every 20ms for up to 10s and fails the test with msg() when it never holds.
func (e *env) waitFor(cond func() bool, msg func() string) {
	e.T.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.T.Fatal(msg())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// queuedFlow is what a probe looks like in a decision: its 5-tuple less the source port.
type queuedFlow struct {
	fam, src, dst, proto string
	port                 uint16
}

func (e *env) flowOf(fam string, pr probe) queuedFlow {
	return queuedFlow{fam, e.Addr(pr.from, fam).String(), e.Addr(pr.to, fam).String(), proto(pr), pr.port}
}

func flowOfEvent(ev *decisions.Event) queuedFlow {
	return queuedFlow{ev.Family, ev.Src, ev.Dst, ev.Protocol, ev.DstPort}
}

// TestStream reads the decision stream while the 3-tier probes run: every denied probe is
// there, denied, naming db-policy; the allowed one to db too; nothing else (the other pods are
// not isolated). `podwall tail -o json` and a filtered stream see the same denials, and the
// metrics count exactly what the stream carried.
func TestStream(t *testing.T) {
	e := threeTierEnv(t)
	all := e.stream("node-1", "")
	dbDenies := e.stream("node-1", "?verdict=deny&policy=db-policy&direction=ingress")
	tp := e.tail("node-1", "--pod", "prod/db", "--verdict", "deny") // stdout is a pipe: JSON
	e.waitFor(func() bool { return e.metric("node-1", "podwall_decisions_subscribers") == 3 },
		func() string { return "tail never subscribed: " + tp.stderr.String() })
	allowBefore, denyBefore := e.verdicts("node-1")
	queuedBefore := e.metric("node-1", "podwall_datapath_queue_queued_total")

	e.check(threeTierProbes...)

	allow, deny := e.verdicts("node-1")
	allow, deny = allow-allowBefore, deny-denyBefore
	e.waitFor(func() bool {
		evs, _, _ := all.snapshot()
		return count(evs, "allow") >= int(allow) && count(evs, "deny") >= int(deny)
	}, func() string {
		evs, dropped, err := all.snapshot()
		return fmt.Sprintf("stream has %d allow and %d deny decisions (%d dropped, err %v), metrics %v and %v",
			count(evs, "allow"), count(evs, "deny"), dropped, err, allow, deny)
	})
	evs, dropped, err := all.snapshot()
	if err != nil || dropped != 0 {
		t.Fatalf("stream: err %v, dropped %d", err, dropped)
	}
	// The metrics count what the stream carried, verdict by verdict.
	if count(evs, "allow") != int(allow) || count(evs, "deny") != int(deny) {
		t.Errorf("stream: %d allow, %d deny; podwall_datapath_verdicts_total: %v allow, %v deny",
			count(evs, "allow"), count(evs, "deny"), allow, deny)
	}
	// Every probe to db, and only those, with its verdict and db-policy named.
	want := map[queuedFlow]probe{}
	for _, fam := range []string{"IPv4", "IPv6"} {
		for _, pr := range threeTierProbes {
			if pr.to == "prod/db" {
				want[e.flowOf(fam, pr)] = pr
			}
		}
	}
	seen := map[queuedFlow]bool{}
	for i := range evs {
		ev := &evs[i]
		f := flowOfEvent(ev)
		pr, ok := want[f]
		if !ok {
			t.Errorf("decision on a flow no probe made, or of a pod that is not isolated: %+v", ev)
			continue
		}
		seen[f] = true
		verdict := map[bool]string{true: "allow", false: "deny"}[pr.allow]
		srcPod := pr.from
		if pr.from == "user" {
			srcPod = ""
		}
		if ev.Verdict != verdict || ev.DstPod != "prod/db" || ev.SrcPod != srcPod || !slices.Equal(ev.Policies, []string{"prod/db-policy"}) ||
			ev.Ingress == nil || !ev.Ingress.Local || ev.Node != e.Nodes["node-1"].Name() || ev.Time.IsZero() || ev.LatencyNs <= 0 {
			t.Errorf("%s %s -> %s %s/%d: decision %+v (ingress %+v)", f.fam, pr.from, pr.to, proto(pr), pr.port, ev, ev.Ingress)
		}
		if !pr.allow && !strings.Contains(ev.Reason, "prod/db is isolated for ingress by db-policy; no rule allows "+proto(pr)+"/"+fmt.Sprint(pr.port)+" from ") {
			t.Errorf("%s %s -> %s: reason %q", f.fam, pr.from, pr.to, ev.Reason)
		}
	}
	for f, pr := range want {
		if !seen[f] {
			t.Errorf("%s %s -> %s %s/%d: no decision in the stream", f.fam, pr.from, pr.to, proto(pr), pr.port)
		}
	}

	// Per direction and per policy, the metrics agree with the stream.
	for _, c := range []struct {
		labels []string
		want   int
	}{
		{[]string{"direction", "ingress", "policy", "prod/db-policy", "verdict", "deny"}, count(evs, "deny")},
		{[]string{"direction", "ingress", "policy", "prod/db-policy", "verdict", "allow"}, count(evs, "allow")},
	} {
		if got := e.metric("node-1", "podwall_policy_verdicts_total", c.labels...); int(got) != c.want {
			t.Errorf("podwall_policy_verdicts_total%q = %v, want %d", c.labels, got, c.want)
		}
	}
	if got := e.metric("node-1", "podwall_datapath_direction_verdicts_total", "code", "no-rule-allows", "direction", "ingress", "verdict", "deny"); int(got) != count(evs, "deny") {
		t.Errorf("ingress no-rule-allows denials = %v, want %d", got, count(evs, "deny"))
	}
	if got := e.metric("node-1", "podwall_decisions_dropped_total"); got != 0 {
		t.Errorf("podwall_decisions_dropped_total = %v", got)
	}
	if got := e.metric("node-1", "podwall_datapath_queue_dropped_total"); got != 0 {
		t.Errorf("podwall_datapath_queue_dropped_total = %v", got)
	}
	if got := e.metric("node-1", "podwall_datapath_queue_queued_total") - queuedBefore; int(got) != len(evs) {
		t.Errorf("podwall_datapath_queue_queued_total grew by %v, want %d (every queued packet got a decision)", got, len(evs))
	}

	// The filtered stream and tail saw exactly the denials.
	var denials []decisions.Event
	for _, ev := range evs {
		if ev.Verdict == "deny" {
			denials = append(denials, ev)
		}
	}
	e.waitFor(func() bool {
		f, _, _ := dbDenies.snapshot()
		return len(f) >= len(denials) && strings.Count(tp.out.String(), "\n") >= len(denials)
	}, func() string {
		f, _, _ := dbDenies.snapshot()
		return fmt.Sprintf("filtered stream %d, tail %d lines, want %d denials\ntail stderr: %s", len(f), strings.Count(tp.out.String(), "\n"), len(denials), tp.stderr.String())
	})
	if err := tp.interrupt(); err != nil {
		t.Errorf("tail after Ctrl-C: %v\n%s", err, tp.stderr.String())
	}
	filtered, _, _ := dbDenies.snapshot()
	var tailed []decisions.Event
	for _, l := range strings.Split(strings.TrimSpace(tp.out.String()), "\n") {
		var ev decisions.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("tail -o json line %q: %v", l, err)
		}
		tailed = append(tailed, ev)
	}
	key := func(ev decisions.Event) string {
		return fmt.Sprintf("%s %v %s %s:%d %s:%d %s", ev.Verdict, ev.Time.UnixNano(), ev.Protocol, ev.Src, ev.SrcPort, ev.Dst, ev.DstPort, ev.Policies)
	}
	for name, got := range map[string][]decisions.Event{"filtered stream": filtered, "podwall tail": tailed} {
		a, b := make([]string, len(got)), make([]string, len(denials))
		for i := range got {
			a[i] = key(got[i])
		}
		for i := range denials {
			b[i] = key(denials[i])
		}
		slices.Sort(a)
		slices.Sort(b)
		if !slices.Equal(a, b) {
			t.Errorf("%s:\n%s\nwant the denials:\n%s", name, strings.Join(a, "\n"), strings.Join(b, "\n"))
		}
	}

	// /debug/explain answers from the live snapshot like `podwall explain -o json`.
	code, body, err := e.Agents["node-1"].Get(context.Background(), "/debug/explain?from=prod/web&to=prod/db&port=3306")
	var x struct{ Verdict, Reason string }
	if err != nil || code != 200 || json.Unmarshal([]byte(body), &x) != nil || x.Verdict != "deny" || !strings.Contains(x.Reason, "db-policy") {
		t.Errorf("/debug/explain: %d %s %v", code, body, err)
	}
}
