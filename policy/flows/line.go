package flows

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/podwall/podwall/policy"
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
	// Staged is the verdict this node would give were the staged policies enforced (SPEC
	// §2c), as /debug/decisions reports it: left out unless it differs from Verdict or a
	// staged policy took part (explain.StagedVerdict).
	Staged     *explain.Staged `json:"staged,omitempty"`
	Generation uint64          `json:"generation"`
}

// Seen is one verdict as the datapath's observer hands it to a Recorder: a small value
// (136 bytes), copied into a ring.
type Seen struct {
	Flow flow.Flow
	// Time is when the packet was received, in Unix nanoseconds.
	Time int64
	// Gen is the policy generation that decided.
	Gen   uint64
	Allow bool
	// StagedAllow is the staged verdict (SPEC §2c) of the staged proposal Staged names
	// (Config.Proposal); Staged is 0 when no staged policy existed.
	StagedAllow bool
	// CacheHit, Latency and Judged are the rest of what the observer's counters count
	// (Config.Count), which the Recorder itself does not read: whether the flow cache
	// answered, the time from receiving the packet to its verdict, and the judgement of
	// each direction (by policy.Direction) by the decision that made the verdict.
	CacheHit bool
	Staged   uint32
	Latency  time.Duration
	Judged   [2]Judged
}

// Judged is what Seen carries of one direction's policy.Judgement: its verdict and code,
// whether its pod is local, and its pod and policy (pointers into the snapshot that
// decided; the Recorder clears them once counted, so that a drained ring holds no
// snapshot).
type Judged struct {
	Pod     *policy.Pod
	Policy  *policy.PolicyRef
	Verdict policy.Verdict
	Code    policy.Code
	Local   bool
}

// entry is one flow: in the history, and in an interval of the flow log. It holds no text
// and no pointer: the pods, reason and policies are spelled out when a line is made, from
// the policy snapshot of the generation that decided (line).
type entry struct {
	first, last int64 // Unix nanoseconds
	count       uint64
	gen         uint64 // the policy generation of the last verdict
	allow       bool   // the last verdict
	stagedAllow bool   // the last staged verdict, of proposal staged (0: none)
	staged      uint32
}

// line makes the Line of flow f. snap is the snapshot of the entry's generation, or the one
// in force when that one is gone: the verdict is then the recorded one, and the reason says
// what the policy in force would do instead of why the old one did. The staged verdict is
// spelled out with the staged proposal that gave it; when that one is gone, the recorded
// staged verdict is kept (if it differs) with a reason saying so.
func (r *Recorder) line(f flow.Flow, e *entry, snap *policy.Snapshot) Line {
	l := Line{
		Type: TypeFlow, Node: r.cfg.Node, Protocol: f.Proto.String(), Src: f.Src.String(), Dst: f.Dst.String(), DstPort: f.Port,
		First: time.Unix(0, e.first).UTC(), Last: time.Unix(0, e.last).UTC(), Connections: e.count,
		Verdict: verdict(e.allow), Generation: e.gen,
	}
	switch {
	case f.Src.Is4():
		l.Family = "IPv4"
	case f.Src.Is6():
		l.Family = "IPv6"
	}
	x := snap.Explain(f)
	v := explain.VerdictOf(&x, e.allow) // as /debug/decisions
	l.SrcPod, l.DstPod, l.Egress, l.Ingress, l.Reason, l.Policies = v.SrcPod, v.DstPod, v.Egress, v.Ingress, v.Reason, v.Policies
	if snap.Generation() != e.gen {
		d := snap.Decide(f)
		l.Reason = "decided by policy generation " + strconv.FormatUint(e.gen, 10) + ", no longer held; generation " +
			strconv.FormatUint(snap.Generation(), 10) + " would " + d.LocalVerdict().String() + ": " + l.Reason
		l.Policies, l.Egress, l.Ingress = nil, nil, nil
	}
	if e.staged != 0 {
		var p *explain.Proposal
		if r.cfg.Proposal != nil {
			p = r.cfg.Proposal(e.staged)
		}
		l.Staged = explain.StagedVerdict(p, f, e.stagedAllow, e.allow,
			"the staged policies that gave this verdict are no longer held (they changed)")
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
