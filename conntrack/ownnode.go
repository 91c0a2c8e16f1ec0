package conntrack

import (
	"net/netip"

	"github.com/podwall/podwall/policy/flow"
)

// NodePolicy is a Policy that also judges some connections between a local pod and its own
// node (a ClusterNetworkPolicy can cut a pod off from its node; the datapath queues them in
// the node's input and output hooks). A Policy that does not implement it has the node's own
// connections left alone.
type NodePolicy interface {
	Policy
	// LocalNodeJudged returns the local pods whose connections from (ingress) and to
	// (egress) their own node the policy judges.
	LocalNodeJudged() (ingress, egress []netip.Addr)
}

// ownNode is the scope of a sweep among the node's own connections.
type ownNode struct {
	in, eg map[netip.Addr]bool
}

// ownNodeScope returns the own-node scope of p: empty unless p is a NodePolicy.
func ownNodeScope(p Policy) ownNode {
	np, ok := p.(NodePolicy)
	if !ok {
		return ownNode{}
	}
	in, eg := np.LocalNodeJudged()
	return ownNode{in: addrSet(in), eg: addrSet(eg)}
}

// judges reports whether f, a connection with an end of the node's own (own), is one the
// policy judges: from a pod of eg to the node, or from the node to a pod of in.
func (o ownNode) judges(f flow.Flow, own map[netip.Addr]bool) bool {
	return (o.eg[f.Src] && own[f.Dst]) || (own[f.Src] && o.in[f.Dst])
}
