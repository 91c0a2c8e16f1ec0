package datapath

import (
	"errors"
	"os"
	"time"

	"github.com/podwall/podwall/datapath/flowcache"
	"github.com/podwall/podwall/policy/flow"
)

// Waiter is implemented by a Decider that can tell a flow it cannot judge yet: one with an
// address of the node's pod ranges that no pod of the policy has (a pod so new that the
// policy does not know it, or an address no pod was given). The readers hold such a packet
// until a policy that knows the address is in force, or until Config.HoldTimeout (see "The
// new-pod window" in the package doc). A Decider without it is never waited for.
type Waiter interface {
	// Unknown reports whether the policy of generation gen does not know a local pod
	// address of f. It must not allocate.
	Unknown(f flow.Flow, gen uint64) bool
}

// Hold defaults.
const (
	// DefaultHoldTimeout bounds how long a packet waits for the policy to know its pod.
	// The agent learns a new pod's address from the API (the kubelet reports it once the
	// sandbox has it; the agent's informer sees it tens of milliseconds later): 2 s is far
	// above that, and below TCP's first SYN retransmission timeout (1 s) doubled, so a
	// connection held this long and then dropped fails as one lost SYN would.
	DefaultHoldTimeout = 2 * time.Second
	// DefaultMaxHeld is how many packets a reader holds at most; beyond it a packet gets
	// the failure policy's verdict at once (counted in Stats.HeldOverflow). Held packets
	// also occupy the kernel's queue (Config.MaxQueueLen, 4096 by default).
	DefaultMaxHeld = 1024
	// holdPoll is how often a reader holding packets looks for a new generation.
	holdPoll = 5 * time.Millisecond
)

// ErrHoldExpired is the reason of a verdict given by the failure policy to a held packet:
// no policy in force knew the pod address of its flow within Config.HoldTimeout, or the
// reader could hold no more.
var ErrHoldExpired = errors.New("datapath: held: no policy knew the pod address of the flow in time")

// heldPacket is a packet a reader holds: its id and what it needs to judge it later.
type heldPacket struct {
	id       uint32
	flow     flow.Flow
	srcPort  uint16
	since    time.Time // when it was received
	deadline time.Time
}

// park holds packet id, whose flow rec describes and which the policy of rec.Gen cannot
// judge; with no room left it gives the failure policy's verdict at once.
func (r *reader[D]) park(fd int, id uint32, rec *Record[D]) {
	q := r.q
	if len(r.held) == cap(r.held) {
		q.heldOverflow.Add(1)
		r.expire(fd, id, rec.Flow, rec.SrcPort, rec.Time)
		return
	}
	r.held = append(r.held, heldPacket{id: id, flow: rec.Flow, srcPort: rec.SrcPort, since: rec.Time,
		deadline: rec.Time.Add(q.cfg.HoldTimeout)})
	q.heldTotal.Add(1)
	q.holding.Add(1)
	if len(r.held) == 1 {
		r.heldGen = rec.Gen
	}
}

// expire gives a packet the failure policy's verdict, with ErrHoldExpired as its reason.
func (r *reader[D]) expire(fd int, id uint32, f flow.Flow, srcPort uint16, since time.Time) {
	rec := &r.recs[r.n]
	now := time.Now()
	*rec = Record[D]{Time: since, Flow: f, SrcPort: srcPort, Allow: r.q.cfg.FailOpen, Malformed: ErrHoldExpired,
		Held: now.Sub(since), Latency: now.Sub(since), Queue: r.num}
	r.hold(fd, id, rec)
}

// release answers the held packets it can: when the generation in force changed since it
// last looked (or all is set), it judges each again and answers those the new policy
// knows; it gives the failure policy's verdict to those past their deadline (all of them
// when stopping). Then it sets the socket's read deadline so that the reader wakes for the
// next look: holdPoll from now, or the earliest deadline if sooner; no deadline when
// nothing is held.
func (r *reader[D]) release(fd int, stopping bool) {
	if len(r.held) == 0 {
		r.clearDeadline()
		return
	}
	q := r.q
	now := time.Now()
	gen := q.decider.Generation()
	rejudge := gen != r.heldGen
	if !rejudge && !stopping && r.deadline && now.Before(r.wakeAt) {
		return // nothing new before the wake-up already set
	}
	r.heldGen = gen
	earliest := time.Time{}
	for i := 0; i < len(r.held); {
		h := &r.held[i]
		answered := false
		if rejudge && !stopping {
			rec := &r.recs[r.n]
			*rec = Record[D]{Time: h.since, Flow: h.flow, SrcPort: h.srcPort, Queue: r.num}
			rec.Decision, rec.Allow, rec.Gen = q.decider.Decide(h.flow)
			if !q.waiter.Unknown(h.flow, rec.Gen) {
				rec.Held = now.Sub(h.since)
				rec.Latency = rec.Held
				q.cache.Add(flowcache.KeyOf(h.flow), rec.Gen, cached[D]{rec.Allow, rec.Decision})
				q.heldReleased.Add(1)
				r.hold(fd, h.id, rec)
				answered = true
			}
		}
		if !answered && (stopping || !now.Before(h.deadline)) {
			q.heldExpired.Add(1)
			r.expire(fd, h.id, h.flow, h.srcPort, h.since)
			answered = true
		}
		if answered {
			q.holding.Add(-1)
			r.held[i] = r.held[len(r.held)-1]
			r.held = r.held[:len(r.held)-1]
			continue
		}
		if earliest.IsZero() || h.deadline.Before(earliest) {
			earliest = h.deadline
		}
		i++
	}
	if len(r.held) == 0 || stopping {
		r.clearDeadline()
		return
	}
	wake := now.Add(holdPoll)
	if earliest.Before(wake) {
		wake = earliest
	}
	r.setDeadline(wake)
	r.deadline, r.wakeAt = true, wake
}

// clearDeadline removes the read deadline release set, if any.
func (r *reader[D]) clearDeadline() {
	if r.deadline {
		r.setDeadline(time.Time{})
		r.deadline = false
	}
}

// woken reports whether err is the read deadline that release set: the reader then looks
// at its held packets and goes on reading.
func (r *reader[D]) woken(err error) bool {
	return r.deadline && errors.Is(err, os.ErrDeadlineExceeded) && !r.q.stopping.Load() && r.q.ctx.Err() == nil
}

// releaseOn is release run on the socket's descriptor outside the receive loop (after a
// wake-up), followed by a flush of the verdicts it wrote.
func (r *reader[D]) releaseOn(fd uintptr) {
	r.release(int(fd), false) // sets the expired deadline again, or clears it
	r.flush(int(fd))
}
