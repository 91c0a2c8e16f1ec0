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
// It hands the decision that made the verdict (the Record's, cached with it on a cache hit;
// never decided again), with the staged verdict when staged policies exist, to the tally
// (tally.go: a copy into the queue reader's own ring), which counts it in the metrics, per
// direction and per policy, and offers it to the flow history and log off the reader. It
// hands a denied flow with the generation that denied it to the kernel's deny cache (a
// non-blocking send, denycache.go), and — only when the decision stream has a subscriber —
// a Record with a weak reference to the snapshot of the deciding generation to the
// stream's hub, which copies it into each subscriber's buffer without blocking (a buffered
// record pins no snapshot: decisions.Record). With no subscriber the stream costs one
// atomic load.
func (a *Agent) observe(r *datapath.Record[policy.Decision]) {
	var kernelDeny time.Duration
	if !r.Allow && r.Malformed == nil && a.deny.offer(r.Flow, r.Gen) {
		kernelDeny = a.deny.ttl
	}
	q := int(r.Queue) - int(a.cfg.QueueNum)
	if !a.stream.Active() {
		sv := a.staged.observe(r, nil)
		a.metrics.tally.offer(q, r, &sv)
		return
	}
	rec := decisions.Record{Time: r.Time, Flow: r.Flow, SrcPort: r.SrcPort, Allow: r.Allow, CacheHit: r.CacheHit,
		Latency: r.Latency, Queue: r.Queue, Malformed: r.Malformed, KernelDenyTTL: kernelDeny}
	a.stream.SetDecision(&rec, &r.Decision, a.inForce.of(r.Gen))
	rec.Generation = r.Gen // the generation that decided, even when its snapshot is no longer held
	sv := a.staged.observe(r, &rec)
	a.metrics.tally.offer(q, r, &sv)
	a.stream.Publish(&rec)
}
