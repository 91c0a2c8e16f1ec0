package policy

// Fixtures for the semantic table tests: tiny panicking helpers, builders for podwall's pods,
// namespaces and nodes, and a truth-table harness modelled on the upstream e2e suite
// (kubernetes test/e2e/network/netpol: model.go, reachability.go, truthtable.go). Labels,
// selectors and NetworkPolicies are built with package policytest.
//
// Everything here panics on malformed input: a typo in a fixture is a bug in the test, not a
// case to handle.

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/policytest"
)

// metadataNameLabel is the label the API server puts on every namespace.
const metadataNameLabel = "kubernetes.io/metadata.name"

// ---------------------------------------------------------------------------------------
// Small panicking helpers.

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// ---------------------------------------------------------------------------------------
// Namespaces, pods and nodes.

// ns returns a namespace with the given labels plus kubernetes.io/metadata.name, as the API
// server sets it.
func ns(name string, labels map[string]string) Namespace {
	l := map[string]string{metadataNameLabel: name}
	for k, v := range labels {
		l[k] = v
	}
	return Namespace{Name: name, Labels: l}
}

// pod returns a running pod with the given addresses (primary first).
func pod(namespace, name string, labels map[string]string, ips ...string) Pod {
	p := Pod{Namespace: namespace, Name: name, Labels: labels, Phase: "Running"}
	for _, ip := range ips {
		p.IPs = append(p.IPs, mustAddr(ip))
	}
	return p
}

// podTweak changes one aspect of a fixture pod.
type podTweak func(*Pod)

// tweak applies tweaks to a copy of p.
func tweak(p Pod, tweaks ...podTweak) Pod {
	for _, t := range tweaks {
		t(&p)
	}
	return p
}

func withPorts(ports ...NamedPort) podTweak {
	return func(p *Pod) { p.Ports = append(p.Ports, ports...) }
}

func namedPort(name string, proto flow.Proto, port uint16) NamedPort {
	return NamedPort{Name: name, Proto: proto, Port: port}
}

func onNode(node string) podTweak { return func(p *Pod) { p.Node = node } }

func inHostNetwork() podTweak { return func(p *Pod) { p.HostNetwork = true } }

func inPhase(phase string) podTweak { return func(p *Pod) { p.Phase = phase } }

func node(name string, ips ...string) Node {
	n := Node{Name: name}
	for _, ip := range ips {
		n.IPs = append(n.IPs, mustAddr(ip))
	}
	return n
}

// Short names for the policyTypes, for policytest.Types.
const (
	typeIngress = networkingv1.PolicyTypeIngress
	typeEgress  = networkingv1.PolicyTypeEgress
)

// ---------------------------------------------------------------------------------------
// Compiling and probing single flows.

// mustCompile compiles a state or fails the test.
func mustCompile(t testing.TB, s State) *Snapshot {
	t.Helper()
	snap, err := Compile(s)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return snap
}

// world is a compiled state whose endpoints tests name as "ns/pod" (the pod's primary
// address, like `podwall explain`), "ns/pod@v6" (its second, IPv6 address) or an address.
type world struct {
	State
	snap *Snapshot
}

func compileWorld(t testing.TB, s State) *world {
	t.Helper()
	return &world{State: s, snap: mustCompile(t, s)}
}

func (w *world) addr(endpoint string) netip.Addr {
	if a, err := netip.ParseAddr(endpoint); err == nil {
		return a
	}
	key, family, _ := strings.Cut(endpoint, "@")
	for i := range w.Pods {
		if w.Pods[i].Key() != key {
			continue
		}
		p := &w.Pods[i]
		switch family {
		case "":
			return p.IPs[0]
		case "v6":
			for _, a := range p.IPs {
				if a.Is6() {
					return a
				}
			}
		case "v4":
			for _, a := range p.IPs {
				if a.Is4() {
					return a
				}
			}
		}
		panic("no " + family + " address on " + key)
	}
	panic("unknown endpoint " + endpoint)
}

// probe parses "3306/TCP", "53/UDP", "ICMP", "ICMPv6" into a protocol and port.
func probe(spec string) (flow.Proto, uint16) {
	num, protoName, ok := strings.Cut(spec, "/")
	if !ok {
		proto, err := flow.ParseProto(spec)
		if err != nil || proto.HasPorts() {
			panic("probe: want PORT/PROTO or ICMP, got " + spec)
		}
		return proto, 0
	}
	proto, err := flow.ParseProto(protoName)
	if err != nil {
		panic("probe: " + err.Error())
	}
	n, err := strconv.ParseUint(num, 10, 16)
	if err != nil {
		panic("probe: " + err.Error())
	}
	return proto, uint16(n)
}

// flowOf builds the flow from endpoint to endpoint on a probe spec.
func (w *world) flowOf(from, to, port string) flow.Flow {
	proto, n := probe(port)
	return flow.Flow{Src: w.addr(from), Dst: w.addr(to), Proto: proto, Port: n}
}

// flowCase is one probe and its expected verdict.
type flowCase struct {
	from, to string // "ns/pod", "ns/pod@v6" or an address
	port     string // "80/TCP", "53/UDP", "ICMP"
	want     Verdict
}

// check decides every case and reports each wrong verdict with the engine's explanation.
func (w *world) check(t *testing.T, cases []flowCase) {
	t.Helper()
	for _, c := range cases {
		f := w.flowOf(c.from, c.to, c.port)
		if got := w.snap.Decide(f).Verdict; got != c.want {
			t.Errorf("%s -> %s %s: got %v, want %v (%s)", c.from, c.to, c.port, got, c.want, w.snap.Explain(f).Reason)
		}
	}
}

// decide is Decide on endpoint names.
func (w *world) decide(from, to, port string) Decision {
	return w.snap.Decide(w.flowOf(from, to, port))
}

// ---------------------------------------------------------------------------------------
// The upstream e2e model and its truth tables.

// The model of the upstream suite: namespaces x, y, z labelled ns=<name>, each with pods a,
// b, c labelled pod=<name>. Every pod serves ports 80 and 81 on TCP, UDP and SCTP, with
// container ports named serve-<port>-<protocol>. Each pod is dual-stack: an IPv4 and an
// IPv6 address, so every truth table is checked in both families.
var (
	modelNamespaces = []string{"x", "y", "z"}
	modelPodNames   = []string{"a", "b", "c"}
	modelPodKeys    = func() []string {
		var keys []string
		for _, n := range modelNamespaces {
			for _, p := range modelPodNames {
				keys = append(keys, n+"/"+p)
			}
		}
		return keys
	}()
)

// modelAddrs returns the IPv4 and IPv6 address of a model pod: x/a is 10.244.1.11 and
// fd00:10:244:1::11, y/c is 10.244.2.13 and fd00:10:244:2::13.
func modelAddrs(namespace, name string) (string, string) {
	n := strings.Index("xyz", namespace) + 1
	p := strings.Index("abc", name) + 11
	if n == 0 || p == 10 {
		panic("not a model pod: " + namespace + "/" + name)
	}
	return fmt.Sprintf("10.244.%d.%d", n, p), fmt.Sprintf("fd00:10:244:%d::%d", n, p)
}

// modelIP returns a model pod's address in CIDR form for one family ("v4" or "v6") with
// the given prefix length; modelIP("x/b", "v4", 32) is "10.244.1.12/32".
func modelIP(key, family string, bits int) string {
	n, p, _ := strings.Cut(key, "/")
	a4, a6 := modelAddrs(n, p)
	a := a4
	if family == "v6" {
		a = a6
	}
	return netip.PrefixFrom(mustAddr(a), bits).Masked().String()
}

// model is the upstream model as podwall objects. Tests mutate a fresh model to express
// the upstream label updates.
type model struct {
	Namespaces []Namespace
	Pods       []Pod
}

func newModel() *model {
	m := &model{}
	var ports []NamedPort
	for _, port := range []uint16{80, 81} {
		for _, proto := range []flow.Proto{flow.TCP, flow.UDP, flow.SCTP} {
			name := fmt.Sprintf("serve-%d-%s", port, strings.ToLower(proto.String()))
			ports = append(ports, namedPort(name, proto, port))
		}
	}
	for _, n := range modelNamespaces {
		m.Namespaces = append(m.Namespaces, ns(n, policytest.Labels("ns", n)))
		for _, p := range modelPodNames {
			a4, a6 := modelAddrs(n, p)
			m.Pods = append(m.Pods, tweak(pod(n, p, policytest.Labels("pod", p), a4, a6), withPorts(ports...)))
		}
	}
	return m
}

// labelNamespace adds a label to a model namespace.
func (m *model) labelNamespace(name, k, v string) *model {
	for i := range m.Namespaces {
		if m.Namespaces[i].Name == name {
			m.Namespaces[i].Labels[k] = v
			return m
		}
	}
	panic("no namespace " + name)
}

// labelPod adds a label to a model pod ("x/a").
func (m *model) labelPod(key, k, v string) *model {
	for i := range m.Pods {
		if m.Pods[i].Key() == key {
			m.Pods[i].Labels[k] = v
			return m
		}
	}
	panic("no pod " + key)
}

func (m *model) state(policies ...*networkingv1.NetworkPolicy) State {
	return State{Namespaces: m.Namespaces, Pods: m.Pods, Policies: policies}
}

func (m *model) pod(key string) *Pod {
	for i := range m.Pods {
		if m.Pods[i].Key() == key {
			return &m.Pods[i]
		}
	}
	panic("no pod " + key)
}

// podMatch matches model pods like upstream's Peer: an empty field matches everything.
type podMatch struct{ ns, pod string }

var anyPod = podMatch{}

func inNs(n string) podMatch { return podMatch{ns: n} }

// thePod matches one pod, "x/a".
func thePod(key string) podMatch {
	n, p, ok := strings.Cut(key, "/")
	if !ok {
		panic("thePod: want ns/pod, got " + key)
	}
	return podMatch{ns: n, pod: p}
}

func (m podMatch) matches(key string) bool {
	n, p, _ := strings.Cut(key, "/")
	return (m.ns == "" || m.ns == n) && (m.pod == "" || m.pod == p)
}

// reachability is the expected truth table over the model's 9 × 9 pod pairs, built like
// upstream's Reachability: start from all allowed (or all denied) and set exceptions in
// order, later calls overriding earlier ones.
type reachability struct {
	want map[[2]string]bool
}

func newReachability(allowed bool) *reachability {
	r := &reachability{want: map[[2]string]bool{}}
	for _, from := range modelPodKeys {
		for _, to := range modelPodKeys {
			r.want[[2]string{from, to}] = allowed
		}
	}
	return r
}

// allAllowed is newReachability(true): the table with no policy in force.
func allAllowed() *reachability { return newReachability(true) }

// expect sets one pair.
func (r *reachability) expect(from, to string, allowed bool) *reachability {
	k := [2]string{from, to}
	if _, ok := r.want[k]; !ok {
		panic("not a model pair: " + from + " -> " + to)
	}
	r.want[k] = allowed
	return r
}

// expectPeer sets every pair whose source matches from and destination matches to.
func (r *reachability) expectPeer(from, to podMatch, allowed bool) *reachability {
	for _, f := range modelPodKeys {
		for _, t := range modelPodKeys {
			if from.matches(f) && to.matches(t) {
				r.want[[2]string{f, t}] = allowed
			}
		}
	}
	return r
}

// expectAllIngress sets every pair into pod.
func (r *reachability) expectAllIngress(pod string, allowed bool) *reachability {
	return r.expectPeer(anyPod, thePod(pod), allowed)
}

// expectAllEgress sets every pair out of pod.
func (r *reachability) expectAllEgress(pod string, allowed bool) *reachability {
	return r.expectPeer(thePod(pod), anyPod, allowed)
}

// get returns the expected verdict of a pair. A pod may always talk to itself (SPEC §2), so
// the diagonal is allowed whatever the table says; upstream ignores loopback instead,
// because CNIs disagree on it.
func (r *reachability) get(from, to string) bool {
	return from == to || r.want[[2]string{from, to}]
}

// families of the model: each truth table is probed over both.
var modelFamilies = []struct {
	name  string
	index int // into Pod.IPs
}{{"IPv4", 0}, {"IPv6", 1}}

// checkReachabilityFamilies probes all 81 pairs of the model in the given address families
// on one port and protocol, and on a mismatch prints the expected, observed and comparison
// tables like upstream does, followed by the engine's reason for every wrong cell.
func checkReachabilityFamilies(t *testing.T, snap *Snapshot, m *model, proto flow.Proto, port uint16, want *reachability, families ...string) {
	t.Helper()
	for _, fam := range modelFamilies {
		if !contains(families, fam.name) {
			continue
		}
		observed := map[[2]string]bool{}
		var wrong []string
		for _, from := range modelPodKeys {
			for _, to := range modelPodKeys {
				f := flow.Flow{Src: m.pod(from).IPs[fam.index], Dst: m.pod(to).IPs[fam.index], Proto: proto, Port: port}
				got := snap.Decide(f).Verdict == Allow
				observed[[2]string{from, to}] = got
				if got != want.get(from, to) {
					wrong = append(wrong, fmt.Sprintf("  %s -> %s: got %v: %s", from, to, verdictOf(got), snap.Explain(f).Reason))
				}
			}
		}
		if len(wrong) == 0 {
			continue
		}
		t.Errorf("%d/%s over %s: %d of %d pairs wrong\nexpected:\n%s\nobserved:\n%s\ncomparison (X = wrong):\n%s\nwrong pairs:\n%s",
			port, proto, fam.name, len(wrong), len(modelPodKeys)*len(modelPodKeys),
			prettyTable(want.get),
			prettyTable(func(f, t string) bool { return observed[[2]string{f, t}] }),
			prettyTable(func(f, t string) bool { return observed[[2]string{f, t}] == want.get(f, t) }),
			strings.Join(wrong, "\n"))
	}
}

func verdictOf(allowed bool) Verdict {
	if allowed {
		return Allow
	}
	return Deny
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// prettyTable renders a truth table the way upstream does: rows are sources, columns
// destinations, "." for true and "X" for false.
func prettyTable(value func(from, to string) bool) string {
	var b strings.Builder
	b.WriteString("    -")
	for _, to := range modelPodKeys {
		b.WriteString("   " + to)
	}
	b.WriteByte('\n')
	for _, from := range modelPodKeys {
		b.WriteString("  " + from)
		for _, to := range modelPodKeys {
			mark := "X"
			if value(from, to) {
				mark = "."
			}
			b.WriteString("     " + mark)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
