package explain

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/manifests"
)

// threeTier is the seeds' 3-tier example: db-policy admits only api on TCP 3306.
func threeTier(t *testing.T) *policy.Snapshot {
	t.Helper()
	s, err := manifests.Load("../../deploy/examples/3tier")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := policy.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func TestJudge(t *testing.T) {
	snap := threeTier(t)
	for _, tc := range []struct {
		q                Query
		verdict, ingress string // ingress: code of the ingress judgement
		policies         []string
		err              string
	}{
		{q: Query{From: "prod/api", To: "prod/db", Port: "3306"}, verdict: "allow", ingress: "allowed", policies: []string{"prod/db-policy"}},
		{q: Query{From: "prod/web", To: "prod/db", Port: "3306", Protocol: "tcp"}, verdict: "deny", ingress: "no-rule-allows", policies: []string{"prod/db-policy"}},
		{q: Query{From: "192.0.2.10", To: "prod/web", Port: "80"}, verdict: "allow", ingress: "not-isolated"},
		{q: Query{From: "prod/api", To: "prod/db", Protocol: "ICMP"}, verdict: "deny", ingress: "no-rule-allows", policies: []string{"prod/db-policy"}},
		{q: Query{From: "prod/web", To: "prod/db"}, err: "port: TCP needs a port"},
		{q: Query{From: "prod/web", To: "prod/db", Port: "70000"}, err: "port: want 0-65535"},
		{q: Query{From: "prod/web", To: "prod/db", Port: "80", Protocol: "GRE"}, err: "protocol: unknown protocol"},
		{q: Query{From: "web", To: "prod/db", Port: "80"}, err: `from: endpoint "web": want ns/pod`},
		{q: Query{From: "prod/web", To: "prod/nope", Port: "80"}, err: `to: endpoint "prod/nope": no such pod`},
		{q: Query{From: "10.244.1.10", To: "fd00::1", Port: "80"}, err: "different IP families"},
	} {
		a := Judge(snap, tc.q)
		if tc.err != "" {
			if !strings.Contains(a.Error, tc.err) || a.Verdict != "" {
				t.Errorf("%+v: error %q verdict %q, want an error with %q", tc.q, a.Error, a.Verdict, tc.err)
			}
			continue
		}
		if a.Error != "" || a.Verdict != tc.verdict || a.Ingress.Code != tc.ingress ||
			strings.Join(a.Ingress.Policies, ",") != strings.Join(tc.policies, ",") || a.From != tc.q.From || a.Port != tc.q.Port {
			t.Errorf("%+v: %+v ingress %+v", tc.q, a, a.Ingress)
		}
	}
}

func TestParseFlowDropsPortOfPortlessProtocols(t *testing.T) {
	f, err := ParseFlow(threeTier(t), Query{From: "prod/web", To: "prod/db", Port: "80", Protocol: "icmp"})
	if err != nil || f.Proto != flow.ICMP || f.Port != 0 {
		t.Errorf("got %v, %v", f, err)
	}
}

func TestBatch(t *testing.T) {
	in := strings.NewReader(`{"from":"prod/api","to":"prod/db","port":3306}

not json
{"from":"prod/web","to":"prod/db","port":3306,"protocol":"UDP"}
`)
	var out bytes.Buffer
	var reported []string
	bad, err := Batch(threeTier(t), in, &out, func(msg string) { reported = append(reported, msg) })
	if err != nil || bad != 1 || len(reported) != 1 || !strings.HasPrefix(reported[0], "line 3: ") {
		t.Fatalf("bad=%d err=%v reported=%q", bad, err, reported)
	}
	var answers []Answer
	dec := json.NewDecoder(&out)
	for dec.More() {
		var a Answer
		if err := dec.Decode(&a); err != nil {
			t.Fatal(err)
		}
		answers = append(answers, a)
	}
	if len(answers) != 3 || answers[0].Verdict != "allow" || answers[1].Error == "" || answers[2].Verdict != "deny" || answers[2].Protocol != "UDP" {
		t.Errorf("answers: %+v", answers)
	}
}

func TestParsePorts(t *testing.T) {
	got, err := ParsePorts("80/TCP, 53/udp,0/ICMP,8080")
	want := []Port{{80, flow.TCP}, {53, flow.UDP}, {0, flow.ICMP}, {8080, flow.TCP}}
	if err != nil || len(got) != len(want) {
		t.Fatalf("got %v, %v", got, err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("port %d: %v, want %v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"", "0/TCP", "80/GRE", "x/UDP", "70000/TCP"} {
		if _, err := ParsePorts(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}
