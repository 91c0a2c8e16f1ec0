package decisions

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"weak"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/explain"
	"github.com/podwall/podwall/policy/flow"
)

// Record is one verdict of the datapath as the stream carries it: a small value, copied into
// each subscriber's buffer by a non-blocking send. It holds no text and no strong pointer into
// the policy: what the filters and a reduced event need is copied out of the Decision (codes,
// the pods' and the allowing policy's names, which pin only their own bytes), and the snapshot
// that decided is referred to weakly. A subscriber that reads slowly may hold thousands of
// records over many policy generations; they do not keep those snapshots alive
// (TestBufferedRecordsDoNotPinTheSnapshot). Event spells a record out in the subscriber's
// goroutine: from its snapshot when that is still held (the agent holds the one in force and
// the one before), else from what the record carries.
type Record struct {
	// Time is when the datapath received the packet.
	Time    time.Time
	Flow    flow.Flow
	SrcPort uint16
	// Allow is the verdict this node gave the packet.
	Allow bool
	// Egress and Ingress are the judgements of the decision that made the verdict (see
	// Judged); zero when Malformed is set.
	Egress, Ingress Judged
	// Generation is the policy generation that decided; Node the node whose agent did.
	Generation uint64
	Node       string
	// Snapshot refers weakly to the snapshot of Generation (Hub.Ref makes it): Event
	// explains the record from it while it is alive.
	Snapshot weak.Pointer[policy.Snapshot]
	// CacheHit reports whether the flow cache answered.
	CacheHit bool
	// Latency is the time from receiving the packet to its verdict.
	Latency time.Duration
	// Queue is the NFQUEUE queue the packet came from.
	Queue uint16
	// Malformed is set when the packet could not be judged and Flow holds what could be
	// read: headers that cannot be read are denied whatever the failure policy; a later
	// fragment or an unreadable NFQUEUE message gets the failure policy's verdict.
	Malformed error
	// KernelDenyTTL is set on a deny whose flow was handed to the kernel's deny cache: for
	// this long, new packets of the flow (same source, destination, protocol and
	// destination port) are dropped by the kernel without reaching the agent, so no record
	// shows them.
	KernelDenyTTL time.Duration
	// KernelAllowTTL is set on an allow whose flow was handed to the kernel's allow cache
	// (opt-in): for this long, new connections of the flow (same source, destination,
	// protocol and destination port) are accepted by the kernel without reaching the agent,
	// so no record shows them.
	KernelAllowTTL time.Duration
	// Staged is what the staged policies would make of the packet (SPEC §2c); its Set is
	// false when no staged policy exists.
	Staged StagedRecord
}

// StagedRecord is what a Record keeps of the staged decision: the verdict this node would
// give were the staged policies enforced, and a weak reference to the proposal that gave
// it (explain.Proposal), from which Event spells it out while it is alive.
type StagedRecord struct {
	Set      bool
	Allow    bool
	Proposal weak.Pointer[explain.Proposal]
}

// Judged is what a Record keeps of one direction's policy.Judgement: values and strings, no
// pointer into the policy.
type Judged struct {
	Verdict policy.Verdict
	Code    policy.Code
	// Local reports whether the pod runs on this node (this node judges the direction).
	Local bool
	// Rule and Policy name the first rule that allowed the flow; valid when Code is Allowed.
	Rule   int32
	Policy policy.PolicyRef
	// Namespace and Name are the pod judged; empty when Code is NoPod.
	Namespace, Name string
}

// JudgedOf copies what a Record keeps of j. It allocates nothing.
func JudgedOf(j *policy.Judgement) Judged {
	x := Judged{Verdict: j.Verdict, Code: j.Code, Local: j.Local, Rule: int32(j.Rule)}
	if j.Pod != nil {
		x.Namespace, x.Name = j.Pod.Namespace, j.Pod.Name
	}
	if j.Policy != nil {
		x.Policy = *j.Policy
	}
	return x
}

func (j *Judged) pod() string {
	if j.Name == "" {
		return ""
	}
	return j.Namespace + "/" + j.Name
}

// SetDecision fills the record's judgements, generation and node from the decision d made by
// snapshot s of this hub's agent, and its weak reference to s. It allocates nothing once the
// hub has met s (Hub.Ref).
func (h *Hub) SetDecision(r *Record, d *policy.Decision, s *policy.Snapshot) {
	r.Egress, r.Ingress = JudgedOf(&d.Egress), JudgedOf(&d.Ingress)
	r.Generation, r.Node, r.Snapshot = s.Generation(), s.Node(), h.Ref(s)
}

// Event types: the "type" field of every line of the stream.
const (
	TypeDecision = "decision"
	TypeDropped  = "dropped"
)

// Event is the JSON form of a Record: one line of /debug/decisions. Its fields are a
// contract (see the package doc); add fields, never change or remove one. A "dropped" line
// has only Type and Count.
type Event struct {
	Type string    `json:"type"`
	Time time.Time `json:"time"`
	// Node is the node whose agent gave the verdict.
	Node     string `json:"node,omitempty"`
	Family   string `json:"family"`   // "IPv4" or "IPv6"
	Protocol string `json:"protocol"` // "TCP", "UDP", "SCTP", "ICMP", "ICMPv6" or "proto-N"
	Src      string `json:"src"`
	SrcPort  uint16 `json:"srcPort"`
	Dst      string `json:"dst"`
	DstPort  uint16 `json:"dstPort"`
	SrcPod   string `json:"srcPod,omitempty"` // namespace/name
	DstPod   string `json:"dstPod,omitempty"`
	// Verdict is what this node did with the packet: "allow" or "deny".
	Verdict string `json:"verdict"`
	// Reason says why in one line: the denying direction(s), or every direction judged here.
	Reason string `json:"reason"`
	// Policies are the policies that made the verdict (namespace/name): the isolating
	// policies of a denying direction, the allowing policies of an allowed one.
	Policies  []string           `json:"policies,omitempty"`
	Egress    *explain.Judgement `json:"egress,omitempty"`
	Ingress   *explain.Judgement `json:"ingress,omitempty"`
	CacheHit  bool               `json:"cacheHit"`
	LatencyNs int64              `json:"latencyNs"`
	Queue     uint16             `json:"queue"`
	// KernelDenyTTLms is set on a deny whose flow went to the kernel's deny cache: for this
	// many milliseconds the kernel drops the flow's new packets itself, so they reach
	// neither the agent nor the stream (podwall_datapath_deny_cache_hits_total counts
	// them).
	KernelDenyTTLms int64 `json:"kernelDenyTTLms,omitempty"`
	// KernelAllowTTLms is set on an allow whose flow went to the kernel's allow cache
	// (podwall run --allow-cache-ttl): for this many milliseconds the kernel accepts the
	// flow's new connections itself, so they reach neither the agent nor the stream
	// (podwall_datapath_allow_cache_hits_total counts their packets).
	KernelAllowTTLms int64  `json:"kernelAllowTTLms,omitempty"`
	Generation       uint64 `json:"generation"`
	// Malformed is set when the packet could not be judged (see Record.Malformed).
	Malformed string `json:"malformed,omitempty"`
	// Count is set on "dropped" lines: records this subscriber lost since the last report.
	Count uint64 `json:"count,omitempty"`
	// Staged is what this node's verdict would be were the staged policies enforced (SPEC
	// §2c): set when it differs from Verdict or a staged policy took part in it.
	Staged *explain.Staged `json:"staged,omitempty"`
}

// Event spells the record out. It allocates: call it in the subscriber's goroutine.
func (r *Record) Event() Event {
	e := Event{
		Type: TypeDecision, Time: r.Time, Node: r.Node,
		Protocol: r.Flow.Proto.String(), Src: addr(r.Flow.Src), SrcPort: r.SrcPort, Dst: addr(r.Flow.Dst), DstPort: r.Flow.Port,
		Verdict: verdict(r.Allow), CacheHit: r.CacheHit, LatencyNs: r.Latency.Nanoseconds(), Queue: r.Queue,
		KernelDenyTTLms: r.KernelDenyTTL.Milliseconds(), KernelAllowTTLms: r.KernelAllowTTL.Milliseconds(), Generation: r.Generation,
	}
	switch {
	case r.Flow.Src.Is4():
		e.Family = "IPv4"
	case r.Flow.Src.Is6():
		e.Family = "IPv6"
	}
	if r.Malformed != nil {
		e.Malformed = r.Malformed.Error()
		e.Reason = "malformed packet (" + e.Malformed + "): " + e.Verdict
		return e
	}
	s := r.Snapshot.Value()
	if s == nil || s.Generation() != r.Generation {
		r.reduced(&e)
		return e
	}
	x := s.Explain(r.Flow)
	v := explain.VerdictOf(&x, r.Allow)
	e.SrcPod, e.DstPod, e.Egress, e.Ingress, e.Reason, e.Policies = v.SrcPod, v.DstPod, v.Egress, v.Ingress, v.Reason, v.Policies
	e.Staged = r.staged()
	return e
}

// staged spells out the staged decision when it differs from the verdict or a staged
// policy took part in it; nil otherwise. When its proposal is no longer held, a differing
// verdict is still reported, with a reason that says the rest is gone.
func (r *Record) staged() *explain.Staged {
	if !r.Staged.Set {
		return nil
	}
	return explain.StagedVerdict(r.Staged.Proposal.Value(), r.Flow, r.Staged.Allow, r.Allow,
		"the staged policies that gave this verdict are no longer held (they changed, or the stream reader fell behind)")
}

// reduced spells out a record whose snapshot is no longer held, from what it carries: the
// pods, codes and verdicts of both directions and the first allowing rule; the isolating
// policies and every other allowing rule are gone, and the reason says so.
func (r *Record) reduced(e *Event) {
	e.SrcPod, e.DstPod = r.Egress.pod(), r.Ingress.pod()
	e.Egress, e.Ingress = r.Egress.judgement(policy.Egress, r.Flow), r.Ingress.judgement(policy.Ingress, r.Flow)
	var reasons []string
	for _, j := range []*explain.Judgement{e.Egress, e.Ingress} {
		if !j.Local || (!r.Allow && j.Verdict != "deny") {
			continue
		}
		reasons = append(reasons, j.Reason)
		for _, p := range j.Policies {
			if !slices.Contains(e.Policies, p) {
				e.Policies = append(e.Policies, p)
			}
		}
	}
	if len(reasons) == 0 {
		reasons = append(reasons, e.Egress.Reason, e.Ingress.Reason)
	}
	e.Reason = strings.Join(reasons, "; ") + " (policy generation " + strconv.FormatUint(r.Generation, 10) +
		" is no longer held: the stream reader fell behind; other reasons are gone)"
}

// judgement spells out j without its snapshot, with the reasons Snapshot.Explain gives where
// they need nothing else.
func (j *Judged) judgement(dir policy.Direction, f flow.Flow) *explain.Judgement {
	x := &explain.Judgement{Verdict: j.Verdict.String(), Code: j.Code.String(), Pod: j.pod(), Local: j.Local}
	switch j.Code {
	case policy.NoPod:
		end := "source"
		if dir == policy.Ingress {
			end = "destination"
		}
		x.Reason = dir.String() + " not judged: " + end + " is not a pod"
	case policy.Self:
		x.Reason = x.Pod + " to itself is always allowed"
	case policy.OwnNode:
		x.Reason = dir.String() + " between " + x.Pod + " and its own node is always allowed"
	case policy.NotIsolated:
		x.Reason = x.Pod + " is not isolated for " + dir.String()
	case policy.Allowed:
		p := j.Policy.String()
		x.Policies, x.AllowedBy = []string{p}, []explain.Rule{{Policy: p, Rule: int(j.Rule)}}
		x.Reason = dir.String() + " of " + x.Pod + " allowed by " + p + " rule " + strconv.Itoa(int(j.Rule))
	case policy.NoRuleAllows:
		x.Reason = x.Pod + " is isolated for " + dir.String() + "; no rule allows " + f.Proto.String()
		if f.Proto.HasPorts() {
			x.Reason += "/" + strconv.Itoa(int(f.Port))
		}
	default: // a code this spelling does not know: say only what the record holds
		x.Reason = dir.String() + " of " + x.Pod + ": " + x.Verdict + " (" + x.Code + ")"
	}
	return x
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
