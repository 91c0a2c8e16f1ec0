package explain

import (
	"fmt"
	"slices"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
)

// Staged is the verdict the enforced policies plus the staged ones would give a flow (SPEC
// §2c): "allow" or "deny", the reason, and the policies that made it (the staged ones
// among them when they took part).
type Staged struct {
	Verdict  string   `json:"verdict"`
	Reason   string   `json:"reason"`
	Policies []string `json:"policies"`
}

// Proposal is what the staged policies propose: the snapshot compiled from the enforced
// policies plus the staged ones (policy.Staged), and the names of the staged ones
// (policy.StagedRefs).
type Proposal struct {
	Snap   *policy.Snapshot
	Staged map[string]bool
}

// Compile compiles s into the snapshot podwall enforces and, when s holds staged policies,
// the Proposal of them (nil otherwise).
func Compile(s policy.State) (*policy.Snapshot, *Proposal, error) {
	enforced, proposed, has := policy.Staged(s)
	snap, err := policy.Compile(enforced)
	if err != nil || !has {
		return snap, nil, err
	}
	psnap, err := policy.Compile(proposed)
	if err != nil {
		return nil, nil, fmt.Errorf("staged policies: %w", err)
	}
	return snap, &Proposal{Snap: psnap, Staged: policy.StagedRefs(proposed)}, nil
}

// Of reads x, an explanation from p.Snap with no node (explain), as a Staged verdict, and
// reports whether a staged policy took part in it (isolated, allowed, or a
// ClusterNetworkPolicy rule of it judged, in either direction). Both directions count.
func (p *Proposal) Of(x *policy.Explanation) (*Staged, bool) {
	allow := x.Verdict == policy.Allow
	st := &Staged{Verdict: x.Verdict.String(), Reason: x.Reason, Policies: []string{}}
	for _, d := range []*policy.DirExplanation{&x.Egress, &x.Ingress} {
		if !allow && d.Verdict != policy.Deny {
			continue
		}
		for _, pol := range JudgementOf(d).Policies {
			if !slices.Contains(st.Policies, pol) {
				st.Policies = append(st.Policies, pol)
			}
		}
	}
	return st, p.tookPart(x)
}

// Local is Of for a node's verdict: allow is the verdict the node gives under p (the
// directions it judges), read as VerdictOf reads a verdict.
func (p *Proposal) Local(x *policy.Explanation, allow bool) (*Staged, bool) {
	v := VerdictOf(x, allow)
	st := &Staged{Verdict: policy.Deny.String(), Reason: v.Reason, Policies: v.Policies}
	if allow {
		st.Verdict = policy.Allow.String()
	}
	if st.Policies == nil {
		st.Policies = []string{}
	}
	return st, p.tookPart(x)
}

func (p *Proposal) tookPart(x *policy.Explanation) bool {
	for _, d := range []*policy.DirExplanation{&x.Egress, &x.Ingress} {
		for _, r := range d.Isolating {
			if p.Staged[r.String()] {
				return true
			}
		}
		for _, a := range d.Allowing {
			if p.Staged[a.Policy.String()] {
				return true
			}
		}
		for _, c := range d.Cluster {
			if p.Staged[c.Rule.Policy.String()] {
				return true
			}
		}
		if (d.Code == policy.ClusterAccepted || d.Code == policy.ClusterDenied) && p.Staged[d.Policy.String()] {
			return true
		}
	}
	return false
}

// StagedVerdict spells out a node's staged verdict on f as the decision stream and the flow
// history report it: staged is the verdict p gave, enforced the one given. It returns nil
// when the two agree and no staged policy took part. p nil is a proposal no longer held:
// a differing verdict is still reported, with gone as its reason.
func StagedVerdict(p *Proposal, f flow.Flow, staged, enforced bool, gone string) *Staged {
	if p == nil {
		if staged == enforced {
			return nil
		}
		v := policy.Deny
		if staged {
			v = policy.Allow
		}
		return &Staged{Verdict: v.String(), Policies: []string{}, Reason: gone}
	}
	x := p.Snap.Explain(f)
	st, took := p.Local(&x, staged)
	if !took && staged == enforced {
		return nil
	}
	return st
}
