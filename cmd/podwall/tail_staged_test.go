package main

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
	"weak"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/decisions"
	"github.com/podwall/podwall/policy/explain"
	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/manifests"
)

// stagedStream is the stream of an agent on node-1 enforcing the 3-tier example with a
// staged policy isolating api for ingress (so web -> db stays denied alike, web -> api
// changes).
type stagedStream struct {
	testStream
	prop *explain.Proposal
}

func newStagedStream(t *testing.T) *stagedStream {
	t.Helper()
	s, err := manifests.Load(threeTierWith(t, strings.NewReplacer("podSelector: {}", "podSelector: {matchLabels: {name: api-pod}}", "[Ingress, Egress]", "[Ingress]").Replace(stagedDenyAll)))
	if err != nil {
		t.Fatal(err)
	}
	enforced, proposed, has := policy.Staged(s)
	if !has {
		t.Fatal("no staged policy")
	}
	c, pc := policy.NewCompiler("node-1"), policy.NewCompiler("node-1")
	if err := c.Replace(enforced); err != nil {
		t.Fatal(err)
	}
	if err := pc.Replace(proposed); err != nil {
		t.Fatal(err)
	}
	return &stagedStream{testStream{snap: c.Snapshot()}, &explain.Proposal{Snap: pc.Snapshot(), Staged: policy.StagedRefs(proposed)}}
}

// verdict publishes the decision on a TCP flow with its staged decision, as the agent does.
func (s *stagedStream) verdict(src, dst netip.Addr, port uint16) {
	f := flow.Flow{Src: src, Dst: dst, Proto: flow.TCP, Port: port}
	d := s.snap.Decide(f)
	r := decisions.Record{Time: time.Now(), Flow: f, SrcPort: 40000, Allow: d.LocalVerdict() == policy.Allow, Queue: 100}
	s.hub.SetDecision(&r, &d, s.snap)
	sd := s.prop.Snap.Decide(f)
	r.Staged = decisions.StagedRecord{Set: true, Allow: sd.LocalVerdict() == policy.Allow, Proposal: weak.Make(s.prop)}
	s.hub.Publish(&r)
}

// tail marks the decisions with a staged verdict; --staged-diff shows only those whose
// verdict would change.
func TestTailStaged(t *testing.T) {
	for _, diff := range []bool{false, true} {
		a := newStagedStream(t)
		srv := httptest.NewServer(decisions.Handler(&a.hub))
		t.Cleanup(srv.Close) // after tail's own cleanup
		args := []string{"--addr", srv.URL, "-o", "text", "--color", "never"}
		if diff {
			args = append(args, "--staged-diff")
		}
		tr := startTail(t, args...)
		waitFor(t, "tail to subscribe", func() bool { return a.hub.Subscribers() == 1 })
		a.verdict(webIP, apiIP, 5000) // allow; staged deny by prod/deny-all
		a.verdict(webIP, dbIP, 3306)  // deny either way, no staged policy part of it
		a.verdict(apiIP, dbIP, 3306)  // allow either way
		a.verdict(webIP, apiIP, 5001) // allow; staged deny: the last line
		waitFor(t, "the last line", func() bool { return strings.Contains(tr.out.String(), "TCP/5001") })
		tr.stop(t)
		ls := lines(tr.out.String())
		want := 4
		if diff {
			want = 2
		}
		if len(ls) != want {
			t.Fatalf("--staged-diff=%v: %d lines, want %d:\n%s", diff, len(ls), want, tr.out.String())
		}
		if !strings.Contains(ls[0], "ALLOW") || !strings.Contains(ls[0], "staged: DENY by prod/deny-all (") {
			t.Errorf("line 0 has no staged marker: %q", ls[0])
		}
		if !diff && (strings.Contains(ls[1], "staged:") || strings.Contains(ls[2], "staged:")) {
			t.Errorf("a marker on a decision the staged policies leave alone:\n%s", tr.out.String())
		}
	}
}
