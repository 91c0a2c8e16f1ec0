package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The own-node hooks (see "A pod and its own node" in the package doc): traffic between a
// local pod and its own node (a node address, a host-network pod) never crosses the forward
// hook. A pod's packet to its node is the node's input, the node's packet to a pod is its
// output.
const (
	// InputChainName and OutputChainName are the base chains of the input and output hooks.
	InputChainName  = "input"
	OutputChainName = "output"

	// SetNodeEgress4 and SetNodeEgress6 hold the local pods whose traffic to their own node
	// a policy can deny: their new packets arriving at the node are queued (input hook).
	SetNodeEgress4 = "nodeegress4"
	SetNodeEgress6 = "nodeegress6"
	// SetNodeIngress4 and SetNodeIngress6 hold the local pods whose traffic from their own
	// node a policy can deny: the node's new packets to them are queued (output hook).
	SetNodeIngress4 = "nodeingress4"
	SetNodeIngress6 = "nodeingress6"

	// SetNodeEgressWindow4 and SetNodeEgressWindow6 (interval sets) hold this node's pod
	// ranges while a policy could deny a local pod's traffic to its node once it knows the
	// pod: a new packet arriving at the node from an address of these ranges that no local
	// pod known to the policy has is queued (input hook), and held (the new-pod window).
	// Empty otherwise.
	SetNodeEgressWindow4 = "nodeegresswindow4"
	SetNodeEgressWindow6 = "nodeegresswindow6"
	// SetNodeIngressWindow4 and SetNodeIngressWindow6 are the same for the node's traffic to
	// a local pod (output hook).
	SetNodeIngressWindow4 = "nodeingresswindow4"
	SetNodeIngressWindow6 = "nodeingresswindow6"
)

// nodeDefs lists the own-node sets, created and rendered after the window's.
var nodeDefs = []setDef{
	{SetNodeIngress4, unix.NFPROTO_IPV4},
	{SetNodeIngress6, unix.NFPROTO_IPV6},
	{SetNodeEgress4, unix.NFPROTO_IPV4},
	{SetNodeEgress6, unix.NFPROTO_IPV6},
}

// nodeEgressWindowDefs and nodeIngressWindowDefs list the own-node window's interval sets,
// created and rendered after nodeDefs.
var (
	nodeEgressWindowDefs  = []setDef{{SetNodeEgressWindow4, unix.NFPROTO_IPV4}, {SetNodeEgressWindow6, unix.NFPROTO_IPV6}}
	nodeIngressWindowDefs = []setDef{{SetNodeIngressWindow4, unix.NFPROTO_IPV4}, {SetNodeIngressWindow6, unix.NFPROTO_IPV6}}
)

// loopbackIndex is the interface index of lo, the same in every network namespace.
const loopbackIndex = 1

// chainRules is a base chain and its rules.
type chainRules struct {
	chain *nftables.Chain
	rules []rule
}

// nodeRuleset is the own-node part of the table: its sets and its two base chains.
type nodeRuleset struct {
	sets    []*nftables.Set // nodeDefs
	windows []*nftables.Set // nodeEgressWindowDefs, nodeIngressWindowDefs
	chains  []chainRules    // input, output
}

// nodeSets returns the own-node sets of t.
func nodeSets(t *nftables.Table) []*nftables.Set {
	var out []*nftables.Set
	for _, d := range nodeDefs {
		out = append(out, newSet(t, d))
	}
	return out
}

// newHookChain returns a base chain of t on hook, filter priority + ChainPriority, policy
// accept, like the forward chain.
func newHookChain(t *nftables.Table, name string, hook *nftables.ChainHook) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{
		Name:     name,
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  hook,
		Priority: nftables.ChainPriorityRef(ChainPriority),
		Policy:   &accept,
	}
}

// buildNode returns the own-node sets and chains of t for cfg with the queue rendered in
// mode, the same queue action as the forward chain's (fail-open bypass flag included):
//
//	chain input {
//		type filter hook input priority filter + 10; policy accept;
//		ct mark & <revoked> == <revoked> counter drop
//		ct state established,related accept
//		iif "lo" accept
//		icmpv6 type 130-137 accept
//		icmpv6 type 143 accept
//		ip saddr @nodeegress4 ip saddr . ip daddr . meta l4proto . th dport @denied4 counter drop
//		ip6 saddr @nodeegress6 ip6 saddr . ip6 daddr . meta l4proto . th dport @denied6 counter drop
//		ip saddr @nodeegress4 counter <queue>
//		ip6 saddr @nodeegress6 counter <queue>
//		ip saddr @nodeegresswindow4 ip saddr != @local4 counter <queue>
//		ip6 saddr @nodeegresswindow6 ip6 saddr != @local6 counter <queue>
//	}
//	chain output {
//		type filter hook output priority filter + 10; policy accept;
//		ct mark & <revoked> == <revoked> counter drop
//		ct state established,related accept
//		oif "lo" accept
//		icmpv6 type 130-137 accept
//		icmpv6 type 143 accept
//		ip daddr @nodeingress4 ip saddr . ip daddr . meta l4proto . th dport @denied4 counter drop
//		ip6 daddr @nodeingress6 ip6 saddr . ip6 daddr . meta l4proto . th dport @denied6 counter drop
//		ip daddr @nodeingress4 counter <queue>
//		ip6 daddr @nodeingress6 counter <queue>
//		ip daddr @nodeingresswindow4 ip daddr != @local4 counter <queue>
//		ip6 daddr @nodeingresswindow6 ip6 daddr != @local6 counter <queue>
//	}
//
// (the deny-cache rules only with the cache on, Config.DenyCacheTTL).
func buildNode(t *nftables.Table, cfg Config, mode QueueMode) nodeRuleset {
	queueText, queueExpr := queueAction(cfg, mode)
	nr := nodeRuleset{sets: nodeSets(t)}
	for _, d := range slices.Concat(nodeEgressWindowDefs, nodeIngressWindowDefs) {
		nr.windows = append(nr.windows, newRangeSet(t, d))
	}
	for _, h := range []struct {
		name    string
		hook    *nftables.ChainHook
		lo      string
		loKey   expr.MetaKey
		field   string
		set4    string
		set6    string
		window4 string
		window6 string
	}{
		{InputChainName, nftables.ChainHookInput, "iif", expr.MetaKeyIIF, "saddr", SetNodeEgress4, SetNodeEgress6,
			SetNodeEgressWindow4, SetNodeEgressWindow6},
		{OutputChainName, nftables.ChainHookOutput, "oif", expr.MetaKeyOIF, "daddr", SetNodeIngress4, SetNodeIngress6,
			SetNodeIngressWindow4, SetNodeIngressWindow6},
	} {
		cr := chainRules{chain: newHookChain(t, h.name, h.hook)}
		// A connection the revoker marked (a pod's connection to its node that a policy
		// change denies) stays cut in both directions, as in forward.
		cr.rules = append(cr.rules, revokedRules(cfg)...)
		cr.rules = append(cr.rules, establishedRule(),
			// iif "lo" accept / oif "lo" accept: the node talking to itself is never a pod's
			// traffic, whatever the addresses say.
			rule{
				text: fmt.Sprintf("%s \"lo\" accept", h.lo),
				exprs: []expr.Any{
					&expr.Meta{Key: h.loKey, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, loopbackIndex)},
					&expr.Verdict{Kind: expr.VerdictAccept},
				},
			})
		cr.rules = append(cr.rules, linkControlRules()...)
		// The deny cache, forward's sets: a pod retrying a connection to its node that the
		// agent denied is dropped here, not queued again. Only for the pods the chain
		// queues: the node's own traffic pays one lookup in a small set, not the flow's.
		// The allow cache likewise: a pod's connection to its node like one just allowed.
		gate := cacheGate{h.set4, h.set6, h.field == "daddr"}
		for _, k := range cacheKinds {
			cr.rules = append(cr.rules, k.rules(cfg, gate)...)
		}
		cr.rules = append(cr.rules,
			addrQueueRule(h.set4, unix.NFPROTO_IPV4, h.field, queueText, queueExpr),
			addrQueueRule(h.set6, unix.NFPROTO_IPV6, h.field, queueText, queueExpr))
		// The new-pod window at this hook: a pod the policy does not know yet, while a
		// policy could deny its traffic with its node (the window sets hold the ranges).
		cr.rules = append(cr.rules,
			windowRule(h.window4, SetLocal4, unix.NFPROTO_IPV4, h.field, queueText, queueExpr),
			windowRule(h.window6, SetLocal6, unix.NFPROTO_IPV6, h.field, queueText, queueExpr))
		nr.chains = append(nr.chains, cr)
	}
	return nr
}

// linkControlRules return the rules that accept IPv6 link control between a pod and its node:
// neighbour discovery (router and neighbour solicitations and advertisements, redirects:
// ICMPv6 types 133–137) and multicast listener discovery (130–132, and 143, MLDv2 reports).
// Conntrack does not track them (they are never established), so without these rules a pod
// the chain queues would have them judged as connections to its node: a ClusterNetworkPolicy
// egress Deny to networks holding ff02::/16 or fe80::/10 (::/0, say, after an Accept of the
// cluster's pods) would deny the pod's solicitations for its gateway, and with them all of
// its IPv6 traffic, the allowed included; a fail-closed ingress Deny would deny the node's
// probes of the pod's address. They are the link's plumbing, not a pod's connection, and
// forward never sees them (they do not leave the link):
//
//	icmpv6 type 130-137 accept
//	icmpv6 type 143 accept
func linkControlRules() []rule {
	icmpv6 := func(text string, cmp expr.Any) rule {
		return rule{
			text: text,
			exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
				cmp,
				&expr.Verdict{Kind: expr.VerdictAccept},
			},
		}
	}
	return []rule{
		icmpv6("icmpv6 type 130-137 accept", &expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{130}, ToData: []byte{137}}),
		icmpv6("icmpv6 type 143 accept", &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{143}}),
	}
}

// establishedRule is "ct state established,related accept".
func establishedRule() rule {
	return rule{
		text: "ct state established,related accept",
		exprs: []expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{
				SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED),
				Xor:  []byte{0, 0, 0, 0},
			},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
			&expr.Verdict{Kind: expr.VerdictAccept},
		},
	}
}

// wantNode adds the own-node sets' elements to want: ingress are the local pods whose
// traffic from their node is judged, egress those whose traffic to it is.
func wantNode(want map[string]map[netip.Addr]bool, ingress, egress []netip.Addr) error {
	bad := addByFamily(want, ingress, SetNodeIngress4, SetNodeIngress6, "own-node judged address")
	return syncErr(append(bad, addByFamily(want, egress, SetNodeEgress4, SetNodeEgress6, "own-node judged address")...))
}

// nodeDamage is Damage for the own-node chains: "" when both hold the rules Program put
// in them. Call with r.mu held.
func (r *Ruleset) nodeDamage() (string, error) {
	for _, cr := range buildNode(r.want.table, r.cfg, r.mode).chains {
		rules, err := r.conn.GetRules(r.want.table, cr.chain)
		if errors.Is(err, unix.ENOENT) {
			return fmt.Sprintf("chain %s is gone", cr.chain.Name), nil
		}
		if err != nil {
			return "", fmt.Errorf("nft: read rules of chain %s: %w", cr.chain.Name, err)
		}
		if len(rules) != len(cr.rules) {
			return fmt.Sprintf("chain %s has %d rules, want %d", cr.chain.Name, len(rules), len(cr.rules)), nil
		}
	}
	return "", nil
}
