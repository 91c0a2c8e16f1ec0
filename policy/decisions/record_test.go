package decisions

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/explain"
	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/policytest"
)

func TestEventDenied(t *testing.T) {
	s := snapshot(t)
	r := record(s, api, db, flow.TCP, 80)
	e := r.Event()
	want := Event{Type: "decision", Time: t0, Node: node, Family: "IPv4", Protocol: "TCP",
		Src: "10.244.1.3", SrcPort: 40000, Dst: "10.244.1.4", DstPort: 80, SrcPod: "prod/api", DstPod: "prod/db",
		Verdict: "deny", Policies: []string{"prod/db-policy"}, LatencyNs: 1500, Queue: 100, Generation: s.Generation()}
	got := e
	got.Reason, got.Egress, got.Ingress = "", nil, nil
	if !equalJSON(got, want) {
		t.Errorf("event:\n got  %s\n want %s", js(got), js(want))
	}
	if want := "prod/db is isolated for ingress by db-policy; no rule allows TCP/80 from prod/api"; e.Reason != want {
		t.Errorf("reason = %q, want %q", e.Reason, want)
	}
	in := e.Ingress
	if in == nil || in.Verdict != "deny" || in.Code != "no-rule-allows" || in.Pod != "prod/db" || !in.Local ||
		!slices.Equal(in.Policies, []string{"prod/db-policy"}) || !slices.Equal(in.IsolatedBy, []string{"prod/db-policy"}) || in.AllowedBy != nil {
		t.Errorf("ingress = %s", js(in))
	}
	eg := e.Egress
	if eg == nil || eg.Verdict != "allow" || eg.Code != "not-isolated" || eg.Pod != "prod/api" || !eg.Local || eg.Policies != nil {
		t.Errorf("egress = %s", js(eg))
	}
}

func TestEventAllowedByBothDirections(t *testing.T) {
	s := snapshot(t)
	e := record(s, web, db, flow.TCP, 3306).Event() // web may reach db (any port), db admits only api
	if e.Verdict != "deny" || !slices.Equal(e.Policies, []string{"prod/db-policy"}) {
		t.Fatalf("web -> db: %s", js(e))
	}
	// Egress allowed by web-egress rule 1 is not part of the deny's reason.
	if strings.Contains(e.Reason, "web-egress") || e.Egress.Code != "allowed" ||
		!slices.Equal(e.Egress.AllowedBy, []explain.Rule{{Policy: "prod/web-egress", Rule: 1}}) || !slices.Equal(e.Egress.Policies, []string{"prod/web-egress"}) {
		t.Errorf("web -> db: %s", js(e))
	}

	e = record(s, api, db, flow.TCP, 3306).Event()
	if e.Verdict != "allow" || !slices.Equal(e.Policies, []string{"prod/db-policy"}) ||
		!slices.Equal(e.Ingress.AllowedBy, []explain.Rule{{Policy: "prod/db-policy", Rule: 0}}) {
		t.Errorf("api -> db: %s", js(e))
	}
	if want := "prod/api is not isolated for egress; ingress of prod/db allowed by prod/db-policy rule 0"; e.Reason != want {
		t.Errorf("api -> db reason = %q, want %q", e.Reason, want)
	}

	e = record(s, web, api, flow.TCP, 5000).Event()
	if e.Verdict != "allow" || !slices.Equal(e.Policies, []string{"prod/web-egress"}) {
		t.Errorf("web -> api: %s", js(e))
	}
}

func TestEventEndpoints(t *testing.T) {
	s := snapshot(t)
	// IPv6, an external source: no source pod, egress not judged.
	e := record(s, web6, db6, flow.TCP, 3306).Event()
	if e.Family != "IPv6" || e.Src != "fd00:10:244:1::2" || e.SrcPod != "prod/web" || e.Verdict != "deny" {
		t.Errorf("IPv6: %s", js(e))
	}
	e = record(s, ext, db, flow.UDP, 53).Event()
	if e.SrcPod != "" || e.Egress.Code != "no-pod" || e.Egress.Local || e.Protocol != "UDP" || e.Verdict != "deny" ||
		!strings.Contains(e.Reason, "UDP/53 from 192.0.2.10") {
		t.Errorf("external: %s", js(e))
	}
	// A remote pod: its egress is judged on node-2 (not local).
	e = record(s, x, db, flow.TCP, 3306).Event()
	if e.SrcPod != "dev/x" || e.Egress.Local || !e.Ingress.Local || e.Verdict != "deny" {
		t.Errorf("remote source: %s", js(e))
	}
}

func TestEventMalformed(t *testing.T) {
	r := malformed(snapshot(t))
	e := r.Event()
	if e.Malformed != "packet: truncated" || e.Verdict != "deny" || e.Egress != nil || e.Ingress != nil ||
		e.Reason != "malformed packet (packet: truncated): deny" {
		t.Errorf("malformed: %s", js(e))
	}
}

// TestEventJSONFields pins the names of the contract's fields.
func TestEventJSONFields(t *testing.T) {
	s := snapshot(t)
	r := record(s, web, db, flow.TCP, 3306)
	r.CacheHit = true
	var m map[string]any
	if err := json.Unmarshal([]byte(js(r.Event())), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"type", "time", "node", "family", "protocol", "src", "srcPort", "dst", "dstPort",
		"srcPod", "dstPod", "verdict", "reason", "policies", "egress", "ingress", "cacheHit", "latencyNs", "queue", "generation"} {
		if _, ok := m[k]; !ok {
			t.Errorf("field %q missing in %v", k, m)
		}
	}
	for _, k := range []string{"verdict", "code", "pod", "local", "policies", "isolatedBy", "reason"} {
		if _, ok := m["ingress"].(map[string]any)[k]; !ok {
			t.Errorf("ingress field %q missing in %v", k, m["ingress"])
		}
	}
	if m["time"] != "2026-11-21T10:00:00.123456789Z" || m["cacheHit"] != true {
		t.Errorf("time %v cacheHit %v", m["time"], m["cacheHit"])
	}
}

func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func equalJSON(a, b any) bool { return js(a) == js(b) }

// BenchmarkEvent is a subscriber's cost per record: spell it out and encode it as JSON.
func BenchmarkEvent(b *testing.B) {
	s := snapshot(b)
	r := record(s, web, db, flow.TCP, 3306)
	b.ReportAllocs()
	for b.Loop() {
		e := r.Event()
		if _, err := json.Marshal(&e); err != nil {
			b.Fatal(err)
		}
	}
}

// A deny by an invalid policy (enforced fail-closed) names it and the field in the stream's
// reason, in the JSON line as in the Event.
func TestEventNamesInvalidPolicy(t *testing.T) {
	st := threeTier()
	st.Policies = append(st.Policies, policytest.NetworkPolicy("prod", "bad", policytest.Selector("name", "api-pod"),
		policytest.Ingress(policytest.From(policytest.CIDR("010.0.0.0/8")))))
	c := policy.NewCompiler(node)
	if err := c.Replace(st); err != nil {
		t.Fatal(err)
	}
	r := record(c.Snapshot(), web, api, flow.TCP, 5000)
	if r.Allow {
		t.Fatal("web -> api allowed; want the invalid policy to isolate api")
	}
	e := r.Event()
	want := `policy prod/bad is invalid (spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "010.0.0.0/8"`
	if !strings.Contains(e.Reason, want) || !strings.Contains(e.Reason, "isolates, allows nothing") {
		t.Errorf("reason %q does not name the invalid policy and field", e.Reason)
	}
	if !slices.Contains(e.Policies, "prod/bad") {
		t.Errorf("policies %v: want prod/bad", e.Policies)
	}
	if line := string(AppendJSON(nil, &e)); !strings.Contains(line, `policy prod/bad is invalid`) {
		t.Errorf("JSON line lacks the reason: %s", line)
	}
}
