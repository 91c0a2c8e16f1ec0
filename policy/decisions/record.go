package decisions

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/explain"
	"github.com/podwall/podwall/policy/flow"
)

// Record is one verdict of the datapath as the stream carries it: a small value, copied into
// each subscriber's buffer by a non-blocking send. It holds no text: the pod and policy
// pointers of Decision point into Snapshot, which is immutable, so a Record stays valid for as
// long as it is kept, and Event spells it out in the subscriber's goroutine.
type Record struct {
	// Time is when the datapath received the packet.
	Time    time.Time
	Flow    flow.Flow
	SrcPort uint16
	// Allow is the verdict this node gave the packet.
	Allow bool
	// Decision is the decision that made the verdict; zero when Malformed is set.
	Decision policy.Decision
	// Snapshot is the policy whose generation decided (the one in force when it cannot be
	// told); never nil.
	Snapshot *policy.Snapshot
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
	KernelDenyTTLms int64  `json:"kernelDenyTTLms,omitempty"`
	Generation      uint64 `json:"generation"`
	// Malformed is set when the packet could not be judged (see Record.Malformed).
	Malformed string `json:"malformed,omitempty"`
	// Count is set on "dropped" lines: records this subscriber lost since the last report.
	Count uint64 `json:"count,omitempty"`
}

// Event spells the record out. It allocates: call it in the subscriber's goroutine.
func (r *Record) Event() Event {
	e := Event{
		Type: TypeDecision, Time: r.Time, Node: r.Snapshot.Node(),
		Protocol: r.Flow.Proto.String(), Src: addr(r.Flow.Src), SrcPort: r.SrcPort, Dst: addr(r.Flow.Dst), DstPort: r.Flow.Port,
		Verdict: verdict(r.Allow), CacheHit: r.CacheHit, LatencyNs: r.Latency.Nanoseconds(), Queue: r.Queue,
		KernelDenyTTLms: r.KernelDenyTTL.Milliseconds(), Generation: r.Snapshot.Generation(),
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
	x := r.Snapshot.Explain(r.Flow)
	if x.Src != nil {
		e.SrcPod = x.Src.Key()
	}
	if x.Dst != nil {
		e.DstPod = x.Dst.Key()
	}
	e.Egress, e.Ingress = explain.JudgementOf(&x.Egress), explain.JudgementOf(&x.Ingress)
	// The reason and policies of the verdict: the local directions that gave it (all local
	// directions when allowed, the denying ones when denied).
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
	e.Reason = strings.Join(reasons, "; ")
	if e.Reason == "" { // no direction judged here, or the policy changed under the verdict
		e.Reason = x.Reason
	}
	return e
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
