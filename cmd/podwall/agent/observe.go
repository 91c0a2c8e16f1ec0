package agent

import (
	"time"

	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/decisions"
)

// observe is called by the datapath for every verdict, on a queue reader's goroutine. It
// must not block and allocates nothing.
//
// It asks the snapshot in force for the decision on the flow (Decide: no allocation; for a
// flow-cache hit too, whose verdict came from the same generation), counts it in the
// metrics (per direction and per policy), hands a denied flow with the generation that
// denied it to the kernel's deny cache (a non-blocking send, denycache.go), and — only
// when the decision stream has a subscriber — hands a Record to the stream's hub, which
// copies it into each subscriber's buffer without blocking. With no subscriber the stream
// costs one atomic load.
func (a *Agent) observe(r *datapath.Record) {
	snap := a.inForce.Load()
	var d policy.Decision
	if r.Malformed == nil {
		d = snap.Decide(r.Flow)
	}
	a.metrics.observe(r, &d)
	var kernelDeny time.Duration
	if !r.Allow && r.Malformed == nil && a.deny.offer(r.Flow, r.Gen) {
		kernelDeny = a.deny.ttl
	}
	if !a.stream.Active() {
		return
	}
	a.stream.Publish(&decisions.Record{Time: r.Time, Flow: r.Flow, SrcPort: r.SrcPort, Allow: r.Allow, Decision: d,
		Snapshot: snap, CacheHit: r.CacheHit, Latency: r.Latency, Queue: r.Queue, Malformed: r.Malformed,
		KernelDenyTTL: kernelDeny})
}
