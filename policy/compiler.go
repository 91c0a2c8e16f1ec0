package policy

import (
	"maps"
	"net/netip"
	"reflect"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Compiler turns Kubernetes objects into Snapshots and keeps what it needs to make the next
// Snapshot cheaply after a change: a pod change re-evaluates selectors against that pod only,
// a policy change re-evaluates that policy only, and the rule table of a set of policies
// (ruleTable) is built once, when a pod is first isolated by that set, and kept while one
// is. Set/Delete and Replace record changes; Snapshot applies them. A Compiler is not safe
// for concurrent use.
type Compiler struct {
	node string
	gen  uint64

	namespaces map[string]map[string]string // name → labels (declared namespaces)
	nodes      map[string]*Node
	pods       map[string]*podState // ns/name →
	podsByNS   map[string]map[*podState]struct{}
	policies   map[string]*policyState // ns/name →
	policiesNS map[string]map[*compiledPolicy]struct{}
	cnps       clusterPolicies     // ClusterNetworkPolicies (cnp.go)
	peers      map[string]*peerDef // canonical key →
	peerByID   map[uint32]*peerDef
	nextPeer   uint32
	portNames  map[string]uint32
	owners     map[netip.Addr][]*podState // live pod addresses → pods claiming them
	nextSerial uint64                     // of the last compiled policy
	tables     map[string]*tableUse       // Compiler.table's key →
	tableKey   []byte                     // Compiler.table's scratch
	builder    tableBuilder

	dirty      map[*podState]struct{} // entries to rebuild
	refresh    map[*podState]refresh  // entries to copy with new peers or groups (build.go)
	touched    map[netip.Addr]struct{}
	removed    []*podEntry // entries of deleted pods
	nodesDirty bool
	last       *Snapshot

	// Objects rejected alone (invalid.go, problem.go).
	sourceProblems []Problem           // State.Problems of the last Replace
	sourcePolicies map[string]error    // ns/name → the problem the source reported of a policy
	rejectedNS     map[string]bool     // namespaces the source rejected
	problemsDirty  bool                // the snapshot's problems changed
	conflicts      map[netip.Addr]bool // addresses claimed by several live pods (conflict.go)
	conflictsDirty bool
}

// podState is the compiler's mutable record of one pod.
type podState struct {
	key   string // namespace/name
	pod   *Pod
	peers []uint32  // sorted ids of the peers whose selectors match the pod; copy on write
	entry *podEntry // the entry published last, nil before the first Snapshot
}

// policyState is the compiler's record of one NetworkPolicy.
type policyState struct {
	// obj is a copy of the object last recorded under this name; cp.invalid says whether it
	// passed Validate (an object equal to it in metadata and spec, what Validate reads, would
	// do the same) and srcErr whether its source reported a problem with it.
	obj    *networkingv1.NetworkPolicy
	srcErr string
	cp     *compiledPolicy
}

// NewCompiler returns an empty Compiler for the given node: pods whose spec.nodeName is node
// are local (Judgement.Local). node may be empty when nothing is local (explain).
func NewCompiler(node string) *Compiler {
	return &Compiler{
		node:       node,
		namespaces: map[string]map[string]string{},
		nodes:      map[string]*Node{},
		pods:       map[string]*podState{},
		podsByNS:   map[string]map[*podState]struct{}{},
		policies:   map[string]*policyState{},
		policiesNS: map[string]map[*compiledPolicy]struct{}{},
		peers:      map[string]*peerDef{},
		peerByID:   map[uint32]*peerDef{},
		portNames:  map[string]uint32{},
		owners:     map[netip.Addr][]*podState{},
		tables:     map[string]*tableUse{},
		dirty:      map[*podState]struct{}{},
		refresh:    map[*podState]refresh{},
		touched:    map[netip.Addr]struct{}{},

		sourcePolicies: map[string]error{},
		conflicts:      map[netip.Addr]bool{},
	}
}

// Compile compiles a complete state into a Snapshot with no local node. Objects it cannot use
// are rejected alone (Snapshot.Problems); see Replace for the error.
func Compile(s State) (*Snapshot, error) {
	c := NewCompiler("")
	if err := c.Replace(s); err != nil {
		return nil, err
	}
	return c.Snapshot(), nil
}

// Replace makes the compiler's objects equal to s, recording only what differs. It validates
// each policy it does not already hold unchanged. It never refuses a state for one object:
// an object it cannot use is rejected alone (Problem; an invalid policy is enforced
// fail-closed, invalid.go) and listed by Snapshot.Problems, so the error is nil; it is kept
// for a check of the state as a whole.
func (c *Compiler) Replace(s State) error {
	c.setProblems(s.Problems)                     // first: holds and setPolicy read the policies' problems
	last := make(map[string]int, len(s.Policies)) // ns/name → index of its last policy in s
	held := make([]bool, len(s.Policies))
	for i, np := range s.Policies {
		last[np.Namespace+"/"+np.Name] = i
		held[i] = c.holds(np)
	}
	applyCNPs := c.replaceClusterPolicies(s.ClusterPolicies)

	seen := map[string]bool{}
	for _, n := range s.Namespaces {
		seen[n.Name] = true
		c.SetNamespace(n)
	}
	for name := range c.namespaces {
		if !seen[name] {
			c.DeleteNamespace(name)
		}
	}
	clear(seen)
	for i := range s.Nodes {
		seen[s.Nodes[i].Name] = true
		c.SetNode(s.Nodes[i])
	}
	for name := range c.nodes {
		if !seen[name] {
			c.DeleteNode(name)
		}
	}
	// Pods before policies: a new peer evaluates its selector over the pods of the namespaces
	// it can match, which is far cheaper than every new pod evaluating every peer.
	clear(seen)
	for i := range s.Pods {
		seen[s.Pods[i].Key()] = true
		c.SetPod(s.Pods[i])
	}
	for key, ps := range c.pods {
		if !seen[key] {
			c.DeletePod(ps.pod.Namespace, ps.pod.Name)
		}
	}
	for i, np := range s.Policies {
		if !held[i] && last[np.Namespace+"/"+np.Name] == i { // of one name, the last wins
			c.setPolicy(np)
		}
	}
	for key, ps := range c.policies {
		if _, ok := last[key]; !ok {
			c.DeletePolicy(ps.cp.ref.Namespace, ps.cp.ref.Name)
		}
	}
	applyCNPs()
	return nil
}

// SetNamespace records a namespace or a change of its labels.
func (c *Compiler) SetNamespace(n Namespace) {
	l := make(map[string]string, len(n.Labels)+1)
	maps.Copy(l, n.Labels)
	l[corev1.LabelMetadataName] = n.Name
	if old, ok := c.namespaces[n.Name]; ok && maps.Equal(old, l) {
		return
	}
	c.namespaces[n.Name] = l
	c.reselectNamespace(n.Name)
}

// DeleteNamespace forgets a namespace's labels.
func (c *Compiler) DeleteNamespace(name string) {
	if _, ok := c.namespaces[name]; !ok {
		return
	}
	delete(c.namespaces, name)
	c.reselectNamespace(name)
}

// SetNode records a node's addresses.
func (c *Compiler) SetNode(n Node) {
	if old, ok := c.nodes[n.Name]; ok && slices.Equal(old.IPs, n.IPs) && maps.Equal(old.Labels, n.Labels) {
		return
	}
	c.nodes[n.Name] = &Node{Name: n.Name, IPs: slices.Clone(n.IPs), Labels: maps.Clone(n.Labels)}
	c.nodesDirty = true
}

// DeleteNode forgets a node.
func (c *Compiler) DeleteNode(name string) {
	if _, ok := c.nodes[name]; ok {
		delete(c.nodes, name)
		c.nodesDirty = true
	}
}

// SetPod records a pod or a change of it.
func (c *Compiler) SetPod(p Pod) {
	key := p.Key()
	ps := c.pods[key]
	if ps != nil && podEqual(ps.pod, &p) {
		return
	}
	np := clonePod(&p)
	if ps == nil {
		ps = &podState{pod: np, key: key}
		c.pods[key] = ps
		byNS := c.podsByNS[p.Namespace]
		if byNS == nil {
			byNS = map[*podState]struct{}{}
			c.podsByNS[p.Namespace] = byNS
		}
		byNS[ps] = struct{}{}
		c.claim(ps, true)
		c.selectPeers(ps)
	} else {
		old := ps.pod
		c.claim(ps, false)
		ps.pod = np
		c.claim(ps, true)
		if !maps.Equal(old.Labels, np.Labels) || livePod(old) != livePod(np) {
			c.selectPeers(ps)
		}
		if old.HostNetwork {
			c.nodesDirty = true
		}
	}
	if np.HostNetwork {
		c.nodesDirty = true
	}
	c.dirty[ps] = struct{}{}
}

// DeletePod forgets a pod.
func (c *Compiler) DeletePod(namespace, name string) {
	ps := c.pods[namespace+"/"+name]
	if ps == nil {
		return
	}
	c.claim(ps, false)
	delete(c.pods, ps.pod.Key())
	delete(c.podsByNS[namespace], ps)
	if len(c.podsByNS[namespace]) == 0 {
		delete(c.podsByNS, namespace)
	}
	delete(c.dirty, ps)
	delete(c.refresh, ps)
	if ps.entry != nil {
		c.removed = append(c.removed, ps.entry)
		c.releaseTables(ps.entry)
	}
	if ps.pod.HostNetwork {
		c.nodesDirty = true
	}
}

// SetPolicy records a NetworkPolicy, validating it unless the compiler holds it unchanged.
// An invalid policy is recorded all the same, fail-closed (invalid.go); the error names the
// policy on every problem.
func (c *Compiler) SetPolicy(np *networkingv1.NetworkPolicy) error {
	if !c.holds(np) {
		c.setPolicy(np)
	}
	if cp := c.policies[np.Namespace+"/"+np.Name].cp; cp.invalid != nil {
		return nameProblems(np, cp.invalid)
	}
	return nil
}

// holds reports whether np equals, in metadata and spec, the policy recorded under its name,
// and its source reports the same problem with it, if any.
func (c *Compiler) holds(np *networkingv1.NetworkPolicy) bool {
	ps := c.policies[np.Namespace+"/"+np.Name]
	return ps != nil && ps.srcErr == c.sourceErr(np) &&
		reflect.DeepEqual(ps.obj.ObjectMeta, np.ObjectMeta) && reflect.DeepEqual(ps.obj.Spec, np.Spec)
}

// sourceErr returns the text of the problem np's source reported, or "".
func (c *Compiler) sourceErr(np *networkingv1.NetworkPolicy) string {
	if err := c.sourcePolicies[np.Namespace+"/"+np.Name]; err != nil {
		return err.Error()
	}
	return ""
}

// setPolicy records a NetworkPolicy, compiling it (fail-closed when invalid) unless it is
// valid and its spec is the one recorded.
func (c *Compiler) setPolicy(np *networkingv1.NetworkPolicy) {
	key := np.Namespace + "/" + np.Name
	old := c.policies[key]
	bad := c.policyProblem(np)
	if old != nil && bad == nil && old.cp.invalid == nil && reflect.DeepEqual(old.obj.Spec, np.Spec) {
		old.obj = np.DeepCopy() // new metadata, same rules
		return
	}
	var cp *compiledPolicy
	if bad != nil {
		cp = c.compileInvalid(np, bad)
	} else {
		cp = c.compilePolicy(np)
	}
	if bad != nil || (old != nil && old.cp.invalid != nil) {
		c.problemsDirty = true
	}
	c.policies[key] = &policyState{obj: np.DeepCopy(), srcErr: c.sourceErr(np), cp: cp}
	byNS := c.policiesNS[np.Namespace]
	if byNS == nil {
		byNS = map[*compiledPolicy]struct{}{}
		c.policiesNS[np.Namespace] = byNS
	}
	byNS[cp] = struct{}{}
	c.markSelected(cp)
	if old != nil {
		delete(byNS, old.cp)
		c.markSelected(old.cp)
		c.release(old.cp)
	}
}

// DeletePolicy forgets a NetworkPolicy.
func (c *Compiler) DeletePolicy(namespace, name string) {
	key := namespace + "/" + name
	ps := c.policies[key]
	if ps == nil {
		return
	}
	delete(c.policies, key)
	if ps.cp.invalid != nil {
		c.problemsDirty = true
	}
	delete(c.policiesNS[namespace], ps.cp)
	if len(c.policiesNS[namespace]) == 0 {
		delete(c.policiesNS, namespace)
	}
	c.markSelected(ps.cp)
	c.release(ps.cp)
}

// markSelected marks dirty the pods a policy selects.
func (c *Compiler) markSelected(cp *compiledPolicy) {
	for ps := range c.podsByNS[cp.ref.Namespace] {
		if cp.podSel.Matches(labels.Set(ps.pod.Labels)) {
			c.dirty[ps] = struct{}{}
		}
	}
}
