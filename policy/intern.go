package policy

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// peerDef is one distinct pod/namespace selector pair used by some policy peer. Policies
// share it: it is evaluated once per pod, and a rule refers to it by id.
type peerDef struct {
	id     uint32
	key    string
	ns     string          // the policy namespace; used when nsSel is nil
	nsSel  labels.Selector // nil: pods of ns only
	podSel labels.Selector
	refs   int
}

// peer returns the id of the peer for a valid selector pair, creating and evaluating it when
// new. nsSel nil means the pods of namespace ns; podSel nil means every pod.
func (c *Compiler) peer(ns string, nsSel, podSel *metav1.LabelSelector) uint32 {
	var p peerDef
	var key string
	if nsSel == nil {
		p.ns = ns
		key = "ns=" + ns
	} else {
		p.nsSel = validated(metav1.LabelSelectorAsSelector(nsSel))
		key = "nssel=" + p.nsSel.String()
	}
	p.podSel = labels.Everything()
	if podSel != nil {
		p.podSel = validated(metav1.LabelSelectorAsSelector(podSel))
	}
	key += "|pods=" + p.podSel.String()
	if q, ok := c.peers[key]; ok {
		q.refs++
		return q.id
	}
	c.nextPeer++
	p.id, p.key, p.refs = c.nextPeer, key, 1
	q := &p
	c.peers[key] = q
	c.peerByID[q.id] = q
	c.peerCandidates(q, func(ps *podState) {
		if c.peerMatches(q, ps.pod) {
			// ids grow monotonically, so a new id goes last.
			ps.peers = append(slices.Clip(ps.peers), q.id)
			c.refreshPod(ps, refreshPeers)
		}
	})
	return q.id
}

// release drops a policy's references to its peers, forgetting peers no policy uses.
func (c *Compiler) release(cp *compiledPolicy) {
	for _, id := range cp.peerIDs {
		p := c.peerByID[id]
		if p == nil {
			continue
		}
		if p.refs--; p.refs > 0 {
			continue
		}
		delete(c.peers, p.key)
		delete(c.peerByID, id)
		c.peerCandidates(p, func(ps *podState) {
			if i, ok := slices.BinarySearch(ps.peers, id); ok {
				ps.peers = slices.Delete(slices.Clone(ps.peers), i, i+1)
				c.refreshPod(ps, refreshPeers)
			}
		})
	}
}

// selectPeers evaluates every peer against the pod.
func (c *Compiler) selectPeers(ps *podState) {
	var ids []uint32
	if livePod(ps.pod) {
		for _, p := range c.peers {
			if c.peerMatches(p, ps.pod) {
				ids = append(ids, p.id)
			}
		}
	}
	slices.Sort(ids)
	ps.peers = ids
}

// reselectNamespace re-evaluates the peers of every pod in a namespace whose labels changed.
func (c *Compiler) reselectNamespace(name string) {
	for ps := range c.podsByNS[name] {
		c.selectPeers(ps)
		c.dirty[ps] = struct{}{}
	}
}

func (c *Compiler) peerMatches(p *peerDef, pod *Pod) bool {
	if !livePod(pod) {
		return false
	}
	if p.nsSel == nil {
		if pod.Namespace != p.ns {
			return false
		}
	} else if c.rejectedNS[pod.Namespace] || !p.nsSel.Matches(c.nsLabels(pod.Namespace)) {
		return false // a rejected namespace's labels are unknown (Problem)
	}
	return p.podSel.Matches(labels.Set(pod.Labels))
}

// peerCandidates calls fn for every pod whose namespace the peer can match.
func (c *Compiler) peerCandidates(p *peerDef, fn func(*podState)) {
	if p.nsSel == nil {
		for ps := range c.podsByNS[p.ns] {
			fn(ps)
		}
		return
	}
	for ns, pods := range c.podsByNS {
		if !p.nsSel.Matches(c.nsLabels(ns)) {
			continue
		}
		for ps := range pods {
			fn(ps)
		}
	}
}

// nsLabels returns a namespace's labels; an undeclared namespace has only its name label.
func (c *Compiler) nsLabels(name string) labels.Set {
	if l, ok := c.namespaces[name]; ok {
		return l
	}
	return labels.Set{corev1.LabelMetadataName: name}
}

// portName returns the id of a port name, numbering names from 1 as they first appear: rules
// and pods compare named ports by id.
func (c *Compiler) portName(name string) uint32 {
	id, ok := c.portNames[name]
	if !ok {
		id = uint32(len(c.portNames) + 1)
		c.portNames[name] = id
	}
	return id
}
