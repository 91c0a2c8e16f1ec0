package policy_test

// The upstream ClusterNetworkPolicy conformance suite (kubernetes-sigs/network-policy-api
// v0.3.0, conformance/), replayed on the compiler: its fixtures (conformance/base, embedded
// in the module as conformance.Manifests) become a State, and every PokeServer of every
// test becomes one expected verdict; each policy or namespace mutation of a test is a step
// applied incrementally to the same Compiler, as the suite applies it to the same cluster.

import (
	"bytes"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"text/template"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	"sigs.k8s.io/network-policy-api/conformance"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
)

// hostPorts are the suite's HostNetworkPorts (the ports host-network pods listen on).
var hostPorts = []int{34345, 34346, 34347, 34348, 34349, 34350, 34351, 34352}

const nsPrefix = "network-policy-conformance-"

// conformanceNodes are the two nodes of the fixture: pods NAME-0 run on the first, NAME-1
// on the second; host-network pods have their node's address.
var conformanceNodes = []policy.Node{
	{Name: "worker-0", IPs: []netip.Addr{netip.MustParseAddr("172.18.0.2")}, Labels: map[string]string{"kubernetes.io/os": "linux"}},
	{Name: "worker-1", IPs: []netip.Addr{netip.MustParseAddr("172.18.0.3")}, Labels: map[string]string{"kubernetes.io/os": "linux"}},
}

// cnpWorld is the cluster of one conformance test.
type cnpWorld struct {
	t     *testing.T
	c     *policy.Compiler
	state policy.State
	snap  *policy.Snapshot
}

// readManifest renders one of the suite's template files and splits it into documents.
func readManifest(t *testing.T, path string) [][]byte {
	t.Helper()
	raw, err := conformance.Manifests.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tpl := template.Must(template.New(path).Parse(string(raw)))
	var b bytes.Buffer
	if err := tpl.Execute(&b, struct{ HostNetworkPorts []int }{hostPorts}); err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	for _, d := range strings.Split(b.String(), "\n---") {
		if strings.TrimSpace(d) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

// newCNPWorld builds the suite's base cluster plus the objects of the given manifests.
func newCNPWorld(t *testing.T, manifests ...string) *cnpWorld {
	w := &cnpWorld{t: t, c: policy.NewCompiler("worker-0")}
	w.state.Nodes = slices.Clone(conformanceNodes)
	podNo := 0
	for _, path := range append([]string{"base/manifests.yaml"}, manifests...) {
		for _, doc := range readManifest(t, path) {
			var meta metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			switch meta.Kind {
			case "Namespace":
				var n corev1.Namespace
				mustUnmarshal(t, doc, &n)
				w.state.Namespaces = append(w.state.Namespaces, policy.FromNamespace(&n))
			case "StatefulSet":
				var ss appsv1.StatefulSet
				mustUnmarshal(t, doc, &ss)
				for i := range int(*ss.Spec.Replicas) {
					podNo++
					w.state.Pods = append(w.state.Pods, statefulPod(t, &ss, i, podNo))
				}
			case "ClusterNetworkPolicy":
				var cnp cnpv1alpha2.ClusterNetworkPolicy
				mustUnmarshal(t, doc, &cnp)
				w.state.ClusterPolicies = append(w.state.ClusterPolicies, &cnp)
			case "NetworkPolicy":
				var np networkingv1.NetworkPolicy
				mustUnmarshal(t, doc, &np)
				w.state.Policies = append(w.state.Policies, &np)
			default:
				t.Fatalf("%s: unexpected kind %q", path, meta.Kind)
			}
		}
	}
	w.apply()
	return w
}

func mustUnmarshal(t *testing.T, doc []byte, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		if err := yaml.Unmarshal(doc, v); err != nil {
			t.Fatal(err)
		}
	}
}

// statefulPod returns replica i of a StatefulSet, as the API server and kubelet would
// report it: its template's labels plus the StatefulSet's pod name and index labels, its named ports, on node worker-i, with pod address
// 10.244.0.n — or its node's address when it is host-networked.
func statefulPod(t *testing.T, ss *appsv1.StatefulSet, i, n int) policy.Pod {
	name := fmt.Sprintf("%s-%d", ss.Name, i)
	labels := maps.Clone(ss.Spec.Template.Labels)
	labels["statefulset.kubernetes.io/pod-name"] = name // the StatefulSet controller sets these
	labels["apps.kubernetes.io/pod-index"] = fmt.Sprint(i)
	p := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ss.Namespace, Name: name, Labels: labels},
		Spec:       ss.Spec.Template.Spec,
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.244.0.%d", n)},
	}
	p.Spec.NodeName = conformanceNodes[i].Name
	if p.Spec.HostNetwork {
		p.Status.PodIP = conformanceNodes[i].IPs[0].String()
	}
	pod, err := policy.FromPod(&p)
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

// apply compiles the current state incrementally and checks that a compiler starting from
// nothing makes the same decisions (checked by poke).
func (w *cnpWorld) apply() {
	w.t.Helper()
	if err := w.c.Replace(w.state); err != nil {
		w.t.Fatal(err)
	}
	w.snap = w.c.Snapshot()
}

func (w *cnpWorld) addr(key string) netip.Addr {
	ns, name, _ := strings.Cut(key, "/")
	p := w.snap.Pod(nsPrefix+ns, name)
	if p == nil {
		w.t.Fatalf("no pod %s", key)
	}
	return p.IPs[0]
}

func (w *cnpWorld) cnp(name string) *cnpv1alpha2.ClusterNetworkPolicy {
	for i, c := range w.state.ClusterPolicies {
		if c.Name == name {
			// Mutations work on a copy, as a PATCH does: the compiler must see a new object.
			w.state.ClusterPolicies[i] = c.DeepCopy()
			return w.state.ClusterPolicies[i]
		}
	}
	w.t.Fatalf("no ClusterNetworkPolicy %s", name)
	return nil
}

// act is one action of a step: a poke (an expected verdict) or a mutation.
type act struct {
	from, to, proto string
	port            int
	want            bool
	mutate          func(*cnpWorld)
}

func poke(from, to, proto string, port int, want bool) act {
	return act{from: from, to: to, proto: proto, port: port, want: want}
}

// mutate applies changes to the cluster as one update.
func mutate(changes ...func(*cnpWorld)) act {
	return act{mutate: func(w *cnpWorld) {
		for _, c := range changes {
			c(w)
		}
		w.apply()
	}}
}

// cnpStep is one t.Run of an upstream test.
type cnpStep struct {
	name string
	do   []act
}

// conformanceTest is one upstream test: its manifests and steps.
type conformanceTest struct {
	name      string
	manifests []string
	steps     []cnpStep
}

func (ct conformanceTest) run(t *testing.T) {
	w := newCNPWorld(t, ct.manifests...)
	for _, st := range ct.steps {
		t.Run(st.name, func(t *testing.T) {
			w.t = t
			for i, a := range st.do {
				if a.mutate != nil {
					a.mutate(w)
					continue
				}
				proto, err := flow.ParseProto(strings.ToUpper(a.proto))
				if err != nil {
					t.Fatal(err)
				}
				f := flow.Flow{Src: w.addr(a.from), Dst: w.addr(a.to), Proto: proto, Port: uint16(a.port)}
				d := w.snap.Decide(f)
				if got := d.Verdict == policy.Allow; got != a.want {
					t.Errorf("#%d %s → %s %s/%d: allowed=%v, want %v: %s", i, a.from, a.to, a.proto, a.port, got, a.want, w.snap.Explain(f).Reason)
				}
				// The same state compiled from nothing decides the same.
				fresh, err := policy.Compile(w.state)
				if err != nil {
					t.Fatal(err)
				}
				if fd := fresh.Decide(f); fd.Verdict != d.Verdict {
					t.Errorf("#%d %s → %s: incremental %v, from scratch %v", i, a.from, a.to, d.Verdict, fd.Verdict)
				}
			}
		})
	}
}

// Mutations the tests make.

func swapRules(name string, dir policy.Direction, i, j int) func(*cnpWorld) {
	return func(w *cnpWorld) {
		c := w.cnp(name)
		if dir == policy.Ingress {
			c.Spec.Ingress[i], c.Spec.Ingress[j] = c.Spec.Ingress[j], c.Spec.Ingress[i]
		} else {
			c.Spec.Egress[i], c.Spec.Egress[j] = c.Spec.Egress[j], c.Spec.Egress[i]
		}
	}
}

func setPriority(name string, p int32) func(*cnpWorld) {
	return func(w *cnpWorld) { w.cnp(name).Spec.Priority = p }
}

func setAction(name string, dir policy.Direction, i int, a string) func(*cnpWorld) {
	return func(w *cnpWorld) {
		c := w.cnp(name)
		if dir == policy.Ingress {
			c.Spec.Ingress[i].Action = cnpv1alpha2.ClusterNetworkPolicyRuleAction(a)
		} else {
			c.Spec.Egress[i].Action = cnpv1alpha2.ClusterNetworkPolicyRuleAction(a)
		}
	}
}

// namedPort replaces the protocols of a rule with one destinationNamedPort.
func namedPort(name string, dir policy.Direction, i int, port string) func(*cnpWorld) {
	return func(w *cnpWorld) {
		c := w.cnp(name)
		protos := []cnpv1alpha2.ClusterNetworkPolicyProtocol{{DestinationNamedPort: port}}
		if dir == policy.Ingress {
			c.Spec.Ingress[i].Protocols = protos
		} else {
			c.Spec.Egress[i].Protocols = protos
		}
	}
}

// relabelNamespace replaces a namespace's labels (kubernetes.io/metadata.name stays, as the
// API server keeps it).
func relabelNamespace(ns string, labels map[string]string) func(*cnpWorld) {
	return func(w *cnpWorld) {
		for i, n := range w.state.Namespaces {
			if n.Name == nsPrefix+ns {
				l := map[string]string{corev1.LabelMetadataName: n.Name}
				for k, v := range labels {
					l[k] = v
				}
				w.state.Namespaces[i] = policy.Namespace{Name: n.Name, Labels: l}
			}
		}
	}
}

// prependAcceptToPods inserts, as egress rule 0, an Accept to the /32 (/128) of the given
// pods, as the inline-CIDR tests do.
func prependAcceptToPods(name string, pods ...string) func(*cnpWorld) {
	return func(w *cnpWorld) {
		c := w.cnp(name)
		var nets []cnpv1alpha2.CIDR
		for _, p := range pods {
			a := w.addr(p)
			nets = append(nets, cnpv1alpha2.CIDR(netip.PrefixFrom(a, a.BitLen()).String()))
		}
		rule := cnpv1alpha2.ClusterNetworkPolicyEgressRule{
			Name: "allow-egress-to-specific-podIPs", Action: cnpv1alpha2.ClusterNetworkPolicyRuleActionAccept,
			To: []cnpv1alpha2.ClusterNetworkPolicyEgressPeer{{Networks: nets}},
		}
		c.Spec.Egress = append([]cnpv1alpha2.ClusterNetworkPolicyEgressRule{rule}, c.Spec.Egress...)
	}
}

func deleteNetworkPolicy(ns, name string) func(*cnpWorld) {
	return func(w *cnpWorld) {
		w.state.Policies = slices.DeleteFunc(w.state.Policies, func(np *networkingv1.NetworkPolicy) bool {
			return np.Namespace == nsPrefix+ns && np.Name == name
		})
	}
}

func setPodLabel(key, value string) func(*cnpWorld) {
	return func(w *cnpWorld) { w.podLabels(key, func(l map[string]string) { l["conformance-role"] = value }) }
}

func removePodLabel(key string) func(*cnpWorld) {
	return func(w *cnpWorld) { w.podLabels(key, func(l map[string]string) { delete(l, "conformance-role") }) }
}

// podLabels changes the labels of a pod of the state (a copy: the compiler holds the old).
func (w *cnpWorld) podLabels(key string, change func(map[string]string)) {
	ns, name, _ := strings.Cut(key, "/")
	for i := range w.state.Pods {
		if p := &w.state.Pods[i]; p.Namespace == nsPrefix+ns && p.Name == name {
			p.Labels = maps.Clone(p.Labels)
			change(p.Labels)
			return
		}
	}
	w.t.Fatalf("no pod %s", key)
}
