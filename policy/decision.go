package policy

// Code says why one direction of a flow got its verdict.
type Code uint8

// Codes, in the order Decide checks them.
const (
	// NoPod: the endpoint judged for this direction is not a pod podwall knows (an external
	// address, a node, a hostNetwork pod): NetworkPolicy does not apply. Allow.
	NoPod Code = iota
	// Self: a pod talking to itself. Always allowed.
	Self
	// OwnNode: traffic between a pod and its own node. Always allowed.
	OwnNode
	// NotIsolated: no policy isolates the pod for this direction. Allow.
	NotIsolated
	// Allowed: a rule of a policy selecting the pod allows the flow. Allow.
	Allowed
	// NoRuleAllows: the pod is isolated for this direction and no rule allows the flow. Deny.
	NoRuleAllows
)

var codeNames = [...]string{"no-pod", "self", "own-node", "not-isolated", "allowed", "no-rule-allows"}

func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "unknown"
}

// Direction is ingress or egress.
type Direction uint8

// Directions.
const (
	Egress Direction = iota
	Ingress
)

func (d Direction) String() string {
	if d == Ingress {
		return "ingress"
	}
	return "egress"
}

// PolicyRef names a NetworkPolicy.
type PolicyRef struct {
	Namespace, Name string
}

func (r PolicyRef) String() string { return r.Namespace + "/" + r.Name }

// Judgement is the verdict of one direction and why. It is a small value: the text is made
// only when asked (Snapshot.Explain).
type Judgement struct {
	Verdict Verdict
	Code    Code
	// Pod is the pod judged for this direction (source for egress, destination for
	// ingress); nil when Code is NoPod.
	Pod *Pod
	// Local reports whether Pod runs on the snapshot's node (Snapshot.Node).
	Local bool
	// Policy and Rule name the first rule that allowed the flow; valid when Code is Allowed.
	// Rule indexes spec.ingress or spec.egress of that policy.
	Policy *PolicyRef
	Rule   int
}

// Decision is the verdict on a flow with the judgement of each direction. Verdict allows only
// when both directions do.
type Decision struct {
	Verdict         Verdict
	Egress, Ingress Judgement
}

// LocalVerdict is the verdict of the directions judged on the snapshot's node: what this
// node's datapath enforces (the other node judges the other direction).
func (d *Decision) LocalVerdict() Verdict {
	if d.Egress.Local && d.Egress.Verdict == Deny {
		return Deny
	}
	if d.Ingress.Local && d.Ingress.Verdict == Deny {
		return Deny
	}
	return Allow
}
