package policy

// Code says why one direction of a flow got its verdict.
type Code uint8

// Codes. NoPod to NoRuleAllows are in the order Decide checks them for a pod no
// ClusterNetworkPolicy selects; the ClusterNetworkPolicy codes come last so that the values
// of the others stay what they were.
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
	// ClusterAccepted: an Accept rule of a ClusterNetworkPolicy decided; Policy.Tier says
	// which tier (the Admin tier is judged right after Self, the Baseline tier after
	// NetworkPolicy: see Snapshot.Decide). Allow.
	ClusterAccepted
	// ClusterDenied: a Deny rule of a ClusterNetworkPolicy decided. Deny.
	ClusterDenied
)

var codeNames = [...]string{"no-pod", "self", "own-node", "not-isolated", "allowed", "no-rule-allows", "cluster-accepted", "cluster-denied"}

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

// PolicyRef names a NetworkPolicy, or a ClusterNetworkPolicy (Tier Admin or Baseline, no
// Namespace).
type PolicyRef struct {
	Namespace, Name string
	Tier            Tier
}

// String returns namespace/name for a NetworkPolicy, cnp/name for a ClusterNetworkPolicy.
func (r PolicyRef) String() string {
	if r.Tier != NetworkPolicyTier {
		return "cnp/" + r.Name
	}
	return r.Namespace + "/" + r.Name
}

// Cluster reports whether r names a ClusterNetworkPolicy.
func (r PolicyRef) Cluster() bool { return r.Tier != NetworkPolicyTier }

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
	// Policy and Rule name the rule that decided: the first NetworkPolicy rule that allowed
	// the flow when Code is Allowed, the ClusterNetworkPolicy rule when Code is
	// ClusterAccepted or ClusterDenied. Rule indexes spec.ingress or spec.egress of that
	// policy.
	Policy *PolicyRef
	Rule   int
	// AdminPass and BaselinePass name the Pass rule that sent the flow on from the Admin
	// tier (to NetworkPolicy) and from the Baseline tier (to the default, allow); nil when
	// none did.
	AdminPass, BaselinePass *RuleRef
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
