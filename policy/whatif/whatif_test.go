package whatif

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/manifests"
)

const example = "../../deploy/examples/3tier"

func load(t *testing.T, path string) policy.State {
	t.Helper()
	s, err := manifests.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func compile(t *testing.T, s policy.State) *policy.Snapshot {
	t.Helper()
	snap, err := policy.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// The 3-tier probes as the agent of node-1 recorded them: /debug/flows lines, a flow log
// interval and `podwall tail -o json` lines mixed.
const recorded = `{"type":"flow","node":"node-1","family":"IPv4","protocol":"TCP","src":"10.244.1.10","dst":"10.244.1.11","dstPort":5000,"first":"2026-12-03T10:00:00Z","last":"2026-12-03T10:00:05Z","connections":4,"verdict":"allow","reason":"x","generation":1}
{"type":"flow","node":"node-1","family":"IPv4","protocol":"TCP","src":"10.244.1.11","dst":"10.244.1.12","dstPort":3306,"first":"2026-12-03T10:00:00Z","last":"2026-12-03T10:00:09Z","connections":2,"verdict":"allow","reason":"x","generation":1}
{"type":"flow","node":"node-1","family":"IPv4","protocol":"TCP","src":"10.244.1.11","dst":"10.244.1.12","dstPort":3306,"first":"2026-12-03T10:00:10Z","last":"2026-12-03T10:00:19Z","connections":1,"verdict":"allow","reason":"x","generation":1}
{"type":"decision","time":"2026-12-03T10:00:20Z","node":"node-1","family":"IPv4","protocol":"TCP","src":"10.244.1.10","srcPort":40000,"dst":"10.244.1.12","dstPort":3306,"verdict":"deny","reason":"x","cacheHit":false,"latencyNs":1,"queue":0,"generation":1}
{"type":"dropped","time":"2026-12-03T10:00:21Z","count":3}
`

func readFlows(t *testing.T, inputs ...string) []Flow {
	t.Helper()
	var fs Flows
	for i, in := range inputs {
		if err := fs.Read(strings.NewReader(in), fmt.Sprintf("input%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	return fs.List()
}

// Flow lines, flow log intervals and decision lines become one flow per (source,
// destination, protocol, port): counts summed per node, the largest node's taken across nodes.
func TestReadMerges(t *testing.T) {
	other := strings.ReplaceAll(strings.SplitN(recorded, "\n", 3)[1], `"node-1"`, `"node-2"`) // api → db, 2 connections
	fl := readFlows(t, recorded, other)
	var got []string
	for _, f := range fl {
		got = append(got, fmt.Sprintf("%s n=%d %s..%s %v", f.Flow, f.Connections, f.First.Format("04:05"), f.Last.Format("04:05"), f.Nodes))
	}
	want := []string{
		"TCP 10.244.1.10 → 10.244.1.11:5000 n=4 00:00..00:05 [node-1]",
		"TCP 10.244.1.10 → 10.244.1.12:3306 n=1 00:20..00:20 [node-1]",
		"TCP 10.244.1.11 → 10.244.1.12:3306 n=3 00:00..00:19 [node-1 node-2]",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("flows:\n got %q\nwant %q", got, want)
	}
}

// A line that is not a record names its input and line; nothing of that input is taken.
func TestReadBadLines(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"{\"type\":\"flow\",\"src\":\"10.0.0.1\",\"dst\":\"10.0.0.2\",\"protocol\":\"TCP\",\"dstPort\":80}\nnot json\n", "flows.log:2: not a JSON"},
		{`{"src":"10.0.0.1"}`, `flows.log:1: no "type"`},
		{`{"type":"flow","src":"10.0.0.x","dst":"10.0.0.2","protocol":"TCP"}`, "flows.log:1: src:"},
		{`{"type":"flow","src":"10.0.0.1","dst":"fd00::1","protocol":"TCP"}`, "different IP families"},
		{`{"type":"flow","src":"10.0.0.1","dst":"10.0.0.2","protocol":"GRE"}`, "unknown protocol"},
	} {
		var fs Flows
		err := fs.Read(strings.NewReader(tc.in), "flows.log")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.in, err, tc.want)
		}
		if len(fs.List()) != 0 {
			t.Errorf("%q: flows taken from a bad input", tc.in)
		}
	}
}

func TestParseRef(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"NetworkPolicy/prod/db-policy", "NetworkPolicy/prod/db-policy"},
		{"netpol/prod/db-policy", "NetworkPolicy/prod/db-policy"},
		{"pod/prod/api", "Pod/prod/api"},
		{"Namespace/prod", "Namespace/prod"},
		{"node/node-1", "Node/node-1"},
		{"NetworkPolicy/db-policy", "error"},
		{"Namespace/a/b", "error"},
		{"Deployment/prod/x", "error"},
		{"pod/prod/", "error"},
	} {
		r, err := ParseRef(tc.in)
		got := r.String()
		if err != nil {
			got = "error"
		}
		if got != tc.want {
			t.Errorf("%s: %s (%v), want %s", tc.in, got, err, tc.want)
		}
	}
}

// Proposed objects replace those of the same kind and name and add the others; deletions
// remove; deleting what does not exist is an error.
func TestApply(t *testing.T) {
	cur := load(t, example)
	prop := load(t, "testdata/api-egress.yaml")
	s, err := Apply(cur, prop, []Ref{{"Pod", "prod", "web"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Policies) != 2 || len(s.Pods) != 2 || len(cur.Pods) != 3 || len(cur.Policies) != 1 {
		t.Errorf("applied: %d policies, %d pods; in force left with %d, %d", len(s.Policies), len(s.Pods), len(cur.Policies), len(cur.Pods))
	}
	same := load(t, example+"/db-policy.yaml")
	if s, _ := Apply(cur, same, nil); len(s.Policies) != 1 {
		t.Errorf("a same-name policy added instead of replacing: %d policies", len(s.Policies))
	}
	if _, err := Apply(cur, policy.State{}, []Ref{{"NetworkPolicy", "prod", "nope"}}); err == nil || !strings.Contains(err.Error(), "NetworkPolicy/prod/nope") {
		t.Errorf("deleting a missing policy: %v", err)
	}
}

// judgeChange re-judges the recorded 3-tier flows under the example plus a proposal.
func judgeChange(t *testing.T, proposed string, deletes ...Ref) []Change {
	t.Helper()
	cur := load(t, example)
	var prop policy.State
	if proposed != "" {
		prop = load(t, proposed)
	}
	next, err := Apply(cur, prop, deletes)
	if err != nil {
		t.Fatal(err)
	}
	return Judge(compile(t, cur), compile(t, next), readFlows(t, recorded))
}

// Closing api → db lists exactly that flow, newly denied by the proposed policy, with its
// count and the new reason.
func TestJudgeNewlyDenied(t *testing.T) {
	changes := judgeChange(t, "testdata/api-egress.yaml")
	if len(changes) != 1 {
		t.Fatalf("%d changes, want 1: %+v", len(changes), changes)
	}
	c := changes[0]
	if c.Kind != NewlyDenied || c.Connections != 3 || fmt.Sprint(c.Policies) != "[prod/api-egress]" ||
		c.After.SrcPod != "prod/api" || c.After.DstPod != "prod/db" || c.Before.Verdict != "allow" ||
		!strings.Contains(c.After.Reason, "prod/api is isolated for egress by api-egress; no rule allows TCP/3306 to prod/db") {
		t.Errorf("change %+v", c)
	}
	var text bytes.Buffer
	WriteText(&text, changes, 3, []Isolation{{"prod/api", "egress", []string{"prod/api-egress"}}})
	for _, want := range []string{"1 of 3 recorded flows would change: 1 newly denied, 0 newly allowed",
		"Newly denied by prod/api-egress: 1 flow, 3 connections", "prod/api (10.244.1.11) -> prod/db (10.244.1.12) TCP/3306  3 connections",
		"Newly isolated: ", "  prod/api for egress by prod/api-egress\n"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	WriteJSON(&js, changes)
	var l Line
	if err := json.Unmarshal(js.Bytes(), &l); err != nil || l.Change != "newly-denied" || l.Connections != 3 || l.Verdict != "deny" ||
		l.Was.Verdict != "allow" || l.Egress == nil || l.Egress.Verdict != "deny" || l.DstPort != 3306 {
		t.Errorf("json %s (%v)", js.String(), err)
	}
}

// Deleting the db policy newly allows web → db, attributed to the policy that denied it.
func TestJudgeNewlyAllowed(t *testing.T) {
	changes := judgeChange(t, "", Ref{"NetworkPolicy", "prod", "db-policy"})
	if len(changes) != 1 || changes[0].Kind != NewlyAllowed || changes[0].After.SrcPod != "prod/web" ||
		fmt.Sprint(changes[0].Policies) != "[prod/db-policy]" {
		t.Errorf("changes %+v", changes)
	}
}

// A proposal that changes no verdict reports none.
func TestJudgeNoChange(t *testing.T) {
	if changes := judgeChange(t, "testdata/web-open.yaml"); len(changes) != 0 {
		t.Errorf("changes %+v", changes)
	}
	var text bytes.Buffer
	WriteText(&text, nil, 3, nil)
	if !strings.Contains(text.String(), "No verdict would change: 3 recorded flows re-judged") {
		t.Errorf("text %q", text.String())
	}
}

// Newly denied flows come first, whatever their policies.
func TestJudgeOrder(t *testing.T) {
	changes := judgeChange(t, "testdata/api-egress.yaml", Ref{"NetworkPolicy", "prod", "db-policy"})
	var got []string
	for _, c := range changes {
		got = append(got, c.Kind+" "+c.After.SrcPod+">"+c.After.DstPod)
	}
	if want := "[newly-denied prod/api>prod/db newly-allowed prod/web>prod/db]"; fmt.Sprint(got) != want {
		t.Errorf("order %v, want %s", got, want)
	}
}

// A proposal isolating a pod nothing isolated before names it: the agents recorded its
// connections only where the other end was isolated.
func TestNewlyIsolated(t *testing.T) {
	cur := load(t, example)
	next, err := Apply(cur, load(t, "testdata/api-egress.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := NewlyIsolated(compile(t, cur), compile(t, next))
	if want := "[{prod/api egress [prod/api-egress]}]"; fmt.Sprint(got) != want {
		t.Errorf("newly isolated %v, want %s", got, want)
	}
	// db is isolated for ingress before and after: not named.
	if got := NewlyIsolated(compile(t, cur), compile(t, cur)); len(got) != 0 {
		t.Errorf("no change: newly isolated %v", got)
	}
}
