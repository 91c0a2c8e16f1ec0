package agent

import (
	"time"

	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/decisions"
	"github.com/podwall/podwall/policy/flows"
)

// observe is called by the datapath for every verdict, on a queue reader's goroutine. It
// must not block and allocates nothing.
//
// It has the decision that made the verdict (the Record's, cached with it on a cache hit;
// never decided again) counted in the metrics, per direction and per policy; hands a
// denied flow with the generation that denied it to the kernel's deny cache (a non-blocking
// send, kernelcache.go), and with the allow cache on an allowed flow seen before (a cache
// hit) to the allow cache likewise; and — only when the decision stream has a subscriber — hands a Record with a
// weak reference to the snapshot of the deciding generation to the stream's hub, which
// copies it into each subscriber's buffer without blocking (a buffered record pins no
// snapshot: decisions.Record). With no subscriber the stream costs one atomic load. Every
// verdict also goes to the flow history and log, with the staged verdict when staged
// policies exist, and with what the metrics count, which the flow recorder's goroutine
// counts (offerFlow: a small value written in place into the queue reader's own ring, one
// atomic store; flows.go, metrics.go).
func (a *Agent) observe(r *datapath.Record[policy.Decision]) {
	var kernelDeny time.Duration
	if !r.Allow && r.Malformed == nil && a.deny.offer(r.Flow, r.Gen) {
		kernelDeny = a.deny.ttl
	}
	var kernelAllow time.Duration
	// The allow cache takes a flow on its second sight (a verdict-cache hit: judged before
	// by the same generation), so a flow seen once costs the kernel nothing.
	if r.Allow && r.CacheHit && a.allow.on() && r.Malformed == nil && a.allow.offer(r.Flow, r.Gen) {
		kernelAllow = a.allow.ttl
	}
	if !a.stream.Active() {
		id, allow := a.staged.observe(r, nil)
		a.offerFlow(r, id, allow)
		return
	}
	rec := decisions.Record{Time: r.Time, Flow: r.Flow, SrcPort: r.SrcPort, Allow: r.Allow, CacheHit: r.CacheHit,
		Latency: r.Latency, Queue: r.Queue, Malformed: r.Malformed, KernelDenyTTL: kernelDeny, KernelAllowTTL: kernelAllow}
	a.stream.SetDecision(&rec, &r.Decision, a.inForce.of(r.Gen))
	rec.Generation = r.Gen // the generation that decided, even when its snapshot is no longer held
	id, allow := a.staged.observe(r, &rec)
	a.offerFlow(r, id, allow)
	a.stream.Publish(&rec)
}

// offerFlow hands r's verdict, with the staged one (proposal id, 0: none), to the flow
// history and log, and so to the metrics, which the flow recorder counts on its goroutine
// (verdictMetrics.take); when the recorder cannot take it (its ring is full), the metrics
// count it here. A malformed packet, which has no flow, is counted here. The verdict is
// written in place in the recorder's ring (Recorder.Slot): no copy.
func (a *Agent) offerFlow(r *datapath.Record[policy.Decision], staged uint32, stagedAllow bool) {
	if r.Malformed != nil {
		a.metrics.malformed(r)
		return
	}
	p := int(r.Queue) - int(a.cfg.QueueNum)
	if s := a.flows.Slot(p); s != nil {
		seenOf(s, r, staged, stagedAllow)
		a.flows.Commit(p)
		return
	}
	var s flows.Seen
	seenOf(&s, r, staged, stagedAllow)
	a.metrics.count(a.metrics.shard(r.Queue), &s)
}

// seenOf fills s with r's verdict, every field.
func seenOf(s *flows.Seen, r *datapath.Record[policy.Decision], staged uint32, stagedAllow bool) {
	s.Flow, s.Time, s.Gen, s.Allow, s.CacheHit, s.Latency = r.Flow, r.Time.UnixNano(), r.Gen, r.Allow, r.CacheHit, r.Latency
	s.Staged, s.StagedAllow = staged, stagedAllow
	for dir, j := range [2]*policy.Judgement{policy.Egress: &r.Decision.Egress, policy.Ingress: &r.Decision.Ingress} {
		o := &s.Judged[dir]
		o.Pod, o.Policy, o.Verdict, o.Code, o.Local = j.Pod, j.Policy, j.Verdict, j.Code, j.Local
	}
}
