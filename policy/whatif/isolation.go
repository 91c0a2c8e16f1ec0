package whatif

import (
	"net/netip"
	"slices"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/explain"
	"github.com/podwall/podwall/policy/flow"
)

// Isolation is a pod that the change isolates for a direction in which nothing isolated it
// before. The agents queue, judge and so record only the connections of isolated pods: such
// a pod's connections were recorded only where the other end was isolated, so the change
// may deny flows no agent ever recorded.
type Isolation struct {
	Pod       string   `json:"pod"`
	Direction string   `json:"direction"` // "ingress" or "egress"
	Policies  []string `json:"policies"`  // the policies isolating it after the change
}

// Documentation addresses (RFC 5737, RFC 3849): never a pod or a node.
var (
	outside4 = netip.MustParseAddr("192.0.2.1")
	outside6 = netip.MustParseAddr("2001:db8::1")
)

// NewlyIsolated returns the pods of after isolated for a direction in which before did not
// isolate them, sorted. A pod is isolated for a direction when the snapshot judges a flow of
// that direction by policy (any code but not-isolated) — asked with a flow to or from a
// documentation address.
func NewlyIsolated(before, after *policy.Snapshot) []Isolation {
	var out []Isolation
	for _, p := range after.Pods() {
		if len(p.IPs) == 0 || p.HostNetwork || p.Terminated() {
			continue
		}
		ip, other := p.IPs[0], outside4
		if ip.Is6() {
			other = outside6
		}
		for _, f := range []struct {
			dir  policy.Direction
			flow flow.Flow
		}{
			{policy.Ingress, flow.Flow{Src: other, Dst: ip, Proto: flow.TCP, Port: 1}},
			{policy.Egress, flow.Flow{Src: ip, Dst: other, Proto: flow.TCP, Port: 1}},
		} {
			if isolated(after, f.flow, f.dir) && !isolated(before, f.flow, f.dir) {
				x := after.Explain(f.flow)
				d := &x.Ingress
				if f.dir == policy.Egress {
					d = &x.Egress
				}
				out = append(out, Isolation{Pod: p.Key(), Direction: f.dir.String(), Policies: explain.JudgementOf(d).IsolatedBy})
			}
		}
	}
	slices.SortFunc(out, func(a, b Isolation) int {
		if a.Pod != b.Pod {
			if a.Pod < b.Pod {
				return -1
			}
			return 1
		}
		if a.Direction < b.Direction {
			return -1
		}
		return 1
	})
	return out
}

func isolated(s *policy.Snapshot, f flow.Flow, dir policy.Direction) bool {
	d := s.Decide(f)
	j := d.Ingress
	if dir == policy.Egress {
		j = d.Egress
	}
	return j.Code != policy.NotIsolated && j.Code != policy.NoPod
}
