package decisions

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/podwall/podwall/policy/explain"
	"github.com/podwall/podwall/policy/flow"
)

// TestAppendJSONIsMarshal: the hand encoder writes exactly what encoding/json would.
func TestAppendJSONIsMarshal(t *testing.T) {
	s := snapshot(t)
	var events []Event
	for _, r := range []*Record{
		record(s, web, db, flow.TCP, 3306), record(s, api, db, flow.TCP, 3306), record(s, web, api, flow.TCP, 5000),
		record(s, ext, db, flow.UDP, 53), record(s, x, db, flow.TCP, 3306), record(s, web6, db6, flow.TCP, 3306),
		record(s, web, db, flow.ICMP, 0),
	} {
		r.CacheHit = true
		if !r.Allow {
			r.KernelDenyTTL = 2 * time.Second // a deny put in the kernel's deny cache
		} else if r.Flow.Proto == flow.TCP {
			r.KernelAllowTTL = 3 * time.Second // an allow put in the allow cache
		}
		events = append(events, r.Event())
	}
	if events[0].KernelDenyTTLms != 2000 || events[1].KernelDenyTTLms != 0 {
		t.Fatalf("kernelDenyTTLms of a cached deny %d, of an allow %d", events[0].KernelDenyTTLms, events[1].KernelDenyTTLms)
	}
	if events[1].KernelAllowTTLms != 3000 || events[0].KernelAllowTTLms != 0 {
		t.Fatalf("kernelAllowTTLms of a cached allow %d, of a deny %d", events[1].KernelAllowTTLms, events[0].KernelAllowTTLms)
	}
	bad := malformed(s)
	events = append(events, bad.Event(), Event{Type: TypeDropped, Count: 7})
	// Strings that need escaping, HTML-safe, and invalid UTF-8.
	odd := events[0]
	odd.Reason = "a\"b\\c\n\r\t\b\f\x01<tag>&amp; \u2028\u2029 é 漢 \xff\xfe end"
	odd.SrcPod, odd.Policies = "ns/<pod>", []string{"x&y", ""}
	odd.Ingress = &explain.Judgement{Verdict: "deny", Code: "c", AllowedBy: []explain.Rule{{Policy: "p\"q", Rule: -1}, {Policy: "r", Rule: 7}}, Reason: "\x7f"}
	events = append(events, odd)
	// A staged verdict (SPEC §2c), with and without policies.
	st := events[1]
	st.Staged = &explain.Staged{Verdict: "deny", Reason: "prod/db is isolated <by> deny-all", Policies: []string{"prod/deny-all", "cnp/x"}}
	st2 := events[2]
	st2.Staged = &explain.Staged{Verdict: "allow", Reason: "r", Policies: []string{}}
	events = append(events, st, st2)
	for i := range events {
		want, err := json.Marshal(&events[i])
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendJSON(nil, &events[i]); !bytes.Equal(got, want) {
			t.Errorf("event %d:\n got  %s\n want %s", i, got, want)
		}
	}
}

// TestEncoderRecords: what the stream writes for records is json.Marshal(r.Event()), also
// when the flow's fragment comes from the cache, and the Policy filter applies.
func TestEncoderRecords(t *testing.T) {
	s := snapshot(t)
	for _, sse := range []bool{false, true} {
		var h Hub
		sub, _ := h.Subscribe(Filter{Policy: []string{"db-policy"}}, 4)
		defer sub.Close()
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		enc := &encoder{w: bw, sse: sse, frags: fragments{s: sub}}
		var want []string
		for i, r := range []*Record{
			record(s, web, db, flow.TCP, 3306), record(s, web, db, flow.TCP, 3306), // the second from the cache
			record(s, web, api, flow.TCP, 5000), // web-egress only: filtered out
			record(s, api, db, flow.TCP, 3306),
			record(s, web, db, flow.TCP, 3306), // the flow again, now put in the kernel's deny cache
		} {
			r.SrcPort, r.Time, r.CacheHit, r.Latency = uint16(40000+i), t0.Add(time.Duration(i)*time.Millisecond), i == 1, time.Duration(i+1)*time.Microsecond
			if i == 4 {
				r.KernelDenyTTL = 1500 * time.Millisecond
			}
			if i == 3 {
				r.KernelAllowTTL = time.Second
			}
			enc.record(r)
			if i != 2 {
				e := r.Event()
				b, _ := json.Marshal(&e)
				want = append(want, string(b))
			}
		}
		enc.dropped(3)
		want = append(want, `{"type":"dropped","count":3}`)
		bw.Flush()
		sep := "\n"
		if sse {
			sep = "\n\n"
		}
		got := strings.Split(strings.TrimSuffix(out.String(), sep), sep)
		for i := range got {
			if sse {
				typ := "decision"
				if i == len(got)-1 {
					typ = "dropped"
				}
				if !strings.HasPrefix(got[i], "event: "+typ+"\ndata: ") {
					t.Errorf("SSE message %q", got[i])
				}
				got[i] = got[i][strings.Index(got[i], "data: ")+6:]
			}
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("sse=%v:\n got:\n%s\nwant:\n%s", sse, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if !strings.Contains(want[len(want)-2], `"queue":100,"kernelDenyTTLms":1500,"generation":`) {
			t.Errorf("the cached deny's line: %s", want[len(want)-2])
		}
		if len(enc.frags.m) != 3 {
			t.Errorf("cached fragments: %d, want 3 flows", len(enc.frags.m))
		}
	}
}

// BenchmarkEncode is a subscriber's cost per record written: a new flow (explained and
// encoded), and a flow seen before (from the cache).
func BenchmarkEncode(b *testing.B) {
	s := snapshot(b)
	var h Hub
	sub, _ := h.Subscribe(Filter{}, 4)
	defer sub.Close()
	for _, cached := range []bool{false, true} {
		name := "new-flow"
		if cached {
			name = "cached-flow"
		}
		b.Run(name, func(b *testing.B) {
			enc := &encoder{w: bufio.NewWriter(&bytes.Buffer{}), frags: fragments{s: sub}}
			r := record(s, web, db, flow.TCP, 3306)
			b.ReportAllocs()
			for b.Loop() {
				if !cached {
					r.Flow.Port++ // another flow each time
				}
				enc.record(r)
				enc.w.Reset(&bytes.Buffer{})
			}
		})
	}
}
