package decisions

import (
	"runtime"
	"slices"
	"strings"
	"testing"
	"weak"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/explain"
	"github.com/podwall/podwall/policy/flow"
)

// Records waiting in a subscriber's buffer, and the fragments its encoder keeps, do not pin
// the policy snapshot that decided them: once the agent has swapped it out (and dropped the
// previous one), it is collected, however many records still wait. A record whose snapshot
// is gone is still spelled out from what it carries: flow, verdict, pods, codes, the first
// allowing rule, the generation, and a reason that says the rest is gone.
func TestBufferedRecordsDoNotPinTheSnapshot(t *testing.T) {
	const n = 1000
	var h Hub
	sub, err := h.Subscribe(Filter{}, n)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	enc := fragments{s: sub}
	gone := func() weak.Pointer[policy.Snapshot] {
		s := unheldSnapshot(t) // the agent's snapshot in force, then swapped out
		for i := range n {
			r := record(s, api, db, flow.TCP, 3306)
			r.SrcPort = uint16(i)
			h.Publish(r)
		}
		enc.of(record(s, web, db, flow.TCP, 3306)) // the encoder met this generation
		return weak.Make(s)
	}()
	for range 3 {
		runtime.GC()
	}
	if len(sub.C()) != n {
		t.Fatalf("%d records buffered, want %d", len(sub.C()), n)
	}
	if gone.Value() != nil {
		t.Fatalf("%d buffered records (or the encoder's fragments) keep the swapped-out snapshot alive", n)
	}
	r := <-sub.C()
	e := r.Event()
	if e.SrcPod != "prod/api" || e.DstPod != "prod/db" || e.Verdict != "allow" || e.Generation == 0 ||
		e.Ingress == nil || e.Ingress.Code != "allowed" || !e.Ingress.Local || len(e.Ingress.AllowedBy) != 1 ||
		e.Ingress.AllowedBy[0].Policy != "prod/db-policy" || !strings.Contains(e.Reason, "no longer held") {
		t.Errorf("record of a collected snapshot: %s", js(e))
	}
	t.Logf("%s", js(e))
}

// The reduced event of a record whose snapshot is gone says what the full one says, less
// the names it cannot know: same pods, verdicts, codes and locality, and its allowing rule
// is one of the full event's.
func TestReducedEventAgrees(t *testing.T) {
	s := snapshot(t)
	bad := malformed(s)
	for _, r := range []*Record{
		record(s, web, db, flow.TCP, 3306), record(s, api, db, flow.TCP, 3306), record(s, web, api, flow.TCP, 5000),
		record(s, web, api, flow.TCP, 80), record(s, x, db, flow.TCP, 3306), record(s, ext, web, flow.TCP, 80),
		record(s, web6, db6, flow.UDP, 53), record(s, web, web, flow.ICMP, 0), &bad,
	} {
		full := r.Event()
		lost := *r
		lost.Snapshot = weak.Pointer[policy.Snapshot]{} // as after collection
		red := lost.Event()
		if red.SrcPod != full.SrcPod || red.DstPod != full.DstPod || red.Verdict != full.Verdict ||
			red.Generation != full.Generation || red.Node != full.Node || red.Malformed != full.Malformed {
			t.Errorf("reduced\n %s\nfull\n %s", js(red), js(full))
			continue
		}
		if r.Malformed != nil {
			continue
		}
		for _, p := range [][2]*explain.Judgement{{red.Egress, full.Egress}, {red.Ingress, full.Ingress}} {
			a, b := p[0], p[1]
			if a.Verdict != b.Verdict || a.Code != b.Code || a.Pod != b.Pod || a.Local != b.Local ||
				len(a.AllowedBy) > 0 && !slices.Contains(b.AllowedBy, a.AllowedBy[0]) {
				t.Errorf("reduced judgement\n %s\nfull\n %s", js(a), js(b))
			}
		}
	}
}
