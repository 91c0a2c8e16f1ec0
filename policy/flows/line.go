package flows

import (
	"encoding/json"
	"net/netip"
	"strings"
	"time"
	"unique"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/decisions"
	"github.com/podwall/podwall/policy/explain"
	"github.com/podwall/podwall/policy/flow"
)

// TypeFlow is the "type" of every Line.
const TypeFlow = "flow"

// Line is one flow as /debug/flows and the flow log write it (the package doc lists its
// fields). Its fields are a contract: add fields, never change or remove one.
type Line struct {
	Type        string             `json:"type"`
	Node        string             `json:"node,omitempty"`
	Family      string             `json:"family"`
	Protocol    string             `json:"protocol"`
	Src         string             `json:"src"`
	Dst         string             `json:"dst"`
	DstPort     uint16             `json:"dstPort"`
	SrcPod      string             `json:"srcPod,omitempty"`
	DstPod      string             `json:"dstPod,omitempty"`
	First       time.Time          `json:"first"`
	Last        time.Time          `json:"last"`
	Connections uint64             `json:"connections"`
	Verdict     string             `json:"verdict"`
	Reason      string             `json:"reason"`
	Policies    []string           `json:"policies,omitempty"`
	Egress      *explain.Judgement `json:"egress,omitempty"`
	Ingress     *explain.Judgement `json:"ingress,omitempty"`
	// Staged is reserved for the verdict staged policies would give (issue 13, part 1);
	// nil, and left out, until they exist.
	Staged     *Staged `json:"staged,omitempty"`
	Generation uint64  `json:"generation"`
}

// Staged is what staged policies would make of a flow.
type Staged struct {
	Verdict  string   `json:"verdict"`
	Reason   string   `json:"reason"`
	Policies []string `json:"policies,omitempty"`
}

// Seen is one verdict as the datapath's observer hands it to a Recorder: a small value
// (80 bytes), copied through a channel.
type Seen struct {
	Flow flow.Flow
	// Time is when the packet was received, in Unix nanoseconds.
	Time int64
	// Gen is the policy generation that decided.
	Gen   uint64
	Allow bool
}

// text is an interned string: one pointer, shared by every holder of an equal string.
type text = unique.Handle[string]

var noText text

func intern(s string) text {
	if s == "" {
		return noText
	}
	return unique.Make(s)
}

func (r *Recorder) value(t text) string {
	if t == noText {
		return ""
	}
	return t.Value()
}

// judged is what a flow's verdict says, spelled out once per flow and generation.
type judged struct {
	gen            uint64
	allow          bool
	srcPod, dstPod text
	reason         text
	policies       text // joined by ","; names never hold a comma
}

// entry is one flow: in the history, and in an interval of the flow log.
type entry struct {
	first, last int64 // Unix nanoseconds
	count       uint64
	judged
}

// spell spells out the verdict on f of generation gen with snapshot s (the one of that
// generation, or the one in force when it is gone).
func spell(s *policy.Snapshot, f flow.Flow, gen uint64, allow bool) judged {
	rec := decisions.Record{Flow: f, Allow: allow, Snapshot: s}
	e := rec.Event()
	return judged{gen: gen, allow: allow, srcPod: intern(e.SrcPod), dstPod: intern(e.DstPod),
		reason: intern(e.Reason), policies: intern(strings.Join(e.Policies, ","))}
}

// line makes the Line of flow f. snap, when it is of the entry's generation, adds the
// judged directions.
func (r *Recorder) line(f flow.Flow, e *entry, snap *policy.Snapshot) Line {
	l := Line{
		Type: TypeFlow, Node: r.cfg.Node, Protocol: f.Proto.String(), Src: addr(f.Src), Dst: addr(f.Dst), DstPort: f.Port,
		SrcPod: r.value(e.srcPod), DstPod: r.value(e.dstPod),
		First: time.Unix(0, e.first).UTC(), Last: time.Unix(0, e.last).UTC(), Connections: e.count,
		Verdict: verdict(e.allow), Reason: r.value(e.reason), Generation: e.gen,
	}
	switch {
	case f.Src.Is4():
		l.Family = "IPv4"
	case f.Src.Is6():
		l.Family = "IPv6"
	}
	if p := r.value(e.policies); p != "" {
		l.Policies = strings.Split(p, ",")
	}
	if snap != nil && snap.Generation() == e.gen {
		x := snap.Explain(f)
		l.Egress, l.Ingress = explain.JudgementOf(&x.Egress), explain.JudgementOf(&x.Ingress)
	}
	return l
}

// AppendJSON appends l as one line of JSON, newline included.
func AppendJSON(b []byte, l *Line) []byte {
	j, err := json.Marshal(l)
	if err != nil { // a Line holds only strings, numbers, times and slices of them
		panic(err)
	}
	b = append(b, j...)
	return append(b, '\n')
}

func verdict(allow bool) string {
	if allow {
		return "allow"
	}
	return "deny"
}

func addr(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
