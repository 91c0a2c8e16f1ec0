package policy

// NodeWindow reports, per direction, whether some ClusterNetworkPolicy of the snapshot, in
// either tier, has a rule of that direction that can match a node address (a rule without
// peers, with networks or with nodes): whether the traffic between a local pod the snapshot
// does not know yet and its own node could be denied once the pod is known — egress for the
// pod's traffic to its node, ingress for the node's traffic to it. Any policy counts, whatever
// its subject: the unknown pod's labels are unknown. The datapath holds such traffic at the
// node's input and output hooks only then (the new-pod window there); with no such policy a
// pod and its own node are always allowed, and nothing between them is queued.
func (s *Snapshot) NodeWindow() (ingress, egress bool) {
	for i := range s.groups {
		g := &s.groups[i]
		ingress = ingress || g.tables[Ingress].mayMatchAddrs()
		egress = egress || g.tables[Egress].mayMatchAddrs()
	}
	return ingress, egress
}
