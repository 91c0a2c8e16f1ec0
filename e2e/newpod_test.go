package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy/policytest"
)

// The new-pod window: a pod the agent does not know yet (its manifest has no address) is
// not judged as a stranger, and not let through unjudged either. Its new connections — to
// a pod that only lets it in, to a pod it may not reach, and from a pod it does not let
// in — are held until the agent learns its address (from the Node's spec.podCIDRs the
// agent knows the address is a pod's), then each is judged by the policy: the first goes
// through, the other two never do.
//
//	node-1: server (ingress only from role=api), other (no policy), new (role=api: egress
//	only to role=server, no ingress; address unknown at first)
func TestNewPodHeld(t *testing.T) {
	e := newEnv(t)
	e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/server", "app/other", "app/new")
	api := map[string]string{"role": "api"}
	pending := e.podObject("app/new", api)
	pending.Status = corev1.PodStatus{Phase: corev1.PodPending}
	objs := func(newPod *corev1.Pod) []any {
		return []any{
			e.Nodes["node-1"].Object(e.Nodes["node-1"].Name()),
			policytest.Namespace("app", nil),
			e.podObject("app/server", map[string]string{"role": "server"}),
			e.podObject("app/other", nil),
			newPod,
			policytest.NetworkPolicy("app", "server", policytest.Selector("role", "server"),
				policytest.Ingress(policytest.From(policytest.Pods(policytest.Selector("role", "api"))))),
			policytest.NetworkPolicy("app", "api", policytest.Selector("role", "api"), policytest.Ingress(),
				policytest.Egress(policytest.To(policytest.Pods(policytest.Selector("role", "server")), policytest.Port("80/TCP")))),
		}
	}
	e.Serve(80)
	e.write(objs(pending)...)
	e.start("--hold-timeout", "10s")

	type attempt struct {
		pr   probe
		fam  string
		done time.Time
		err  error
	}
	var attempts []*attempt
	for _, fam := range []string{"IPv4", "IPv6"} {
		for _, pr := range []probe{
			{from: "app/new", to: "app/server", port: 80, allow: true},
			{from: "app/new", to: "app/other", port: 80},
			{from: "app/other", to: "app/new", port: 80},
		} {
			attempts = append(attempts, &attempt{pr: pr, fam: fam})
		}
	}
	var wg sync.WaitGroup
	for _, a := range attempts {
		wg.Go(func() {
			a.err = e.probe(a.fam, a.pr, 6*time.Second)
			a.done = time.Now()
		})
	}
	// Every first SYN is held: none is answered while the agent does not know the pod.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := lab.Poll(ctx, 10*time.Millisecond, func() error {
		if n := e.metric("node-1", "podwall_datapath_held"); n < float64(len(attempts)) {
			return fmt.Errorf("%v packets held, want %d", n, len(attempts))
		}
		return nil
	})
	for _, a := range attempts {
		if !a.done.IsZero() && a.err == nil {
			t.Errorf("%s %s -> %s: connected while the agent did not know app/new", a.fam, a.pr.from, a.pr.to)
		}
	}
	if err != nil {
		wg.Wait()
		t.Fatalf("%v\n%s", err, e.Agents["node-1"].Logs())
	}
	gen := e.Generation("node-1")
	edited := time.Now()
	e.write(objs(e.podObject("app/new", api))...)
	known := e.waitGeneration("node-1", gen)
	wg.Wait()
	for _, a := range attempts {
		if got := a.err == nil; got != a.pr.allow {
			t.Errorf("%s %s -> %s: connected=%v once app/new is known, want %v (err %v)", a.fam, a.pr.from, a.pr.to, got, a.pr.allow, a.err)
		}
		if a.err == nil && a.done.Before(edited) {
			t.Errorf("%s %s -> %s: connected before the manifests gave app/new its address", a.fam, a.pr.from, a.pr.to)
		}
		if a.err == nil {
			t.Logf("%s %s -> %s: held, connected %v after the edit (/readyz reported the generation knowing app/new %v after it)",
				a.fam, a.pr.from, a.pr.to, a.done.Sub(edited).Round(100*time.Microsecond), known.Sub(edited).Round(100*time.Microsecond))
		}
	}
	if n := e.metric("node-1", "podwall_datapath_held_released_total"); n < float64(len(attempts)) {
		t.Errorf("held_released_total %v, want at least %d", n, len(attempts))
	}
	if n := e.metric("node-1", "podwall_datapath_held_expired_total"); n != 0 {
		t.Errorf("held_expired_total %v, want 0: every held packet was judged", n)
	}
}

// On a bridge, a pod can send from any unused address of the bridge's subnet: the reverse
// path check passes (the subnet routes back through the bridge), and the address belongs to
// no pod, so no isolation set has it. The pod's namespace isolates its egress, so nothing it
// sends may pass unjudged: a SYN from an unused pod-range address (--pod-cidr) is held, no
// pod ever gets the address, and at --hold-timeout the failure policy drops it. The lab
// alone delivers it. The pod's own address is judged (denied); a bridged pod that nothing
// isolates works.
func TestBridgeUnusedAddress(t *testing.T) {
	e := newEnv(t)
	n := e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/server")
	v4, v6 := n.BridgeSubnets()
	addBridged := func(key string, host byte) {
		a4 := v4.Addr().As4()
		a4[3] += host
		a6 := v6.Addr().As16()
		a6[15] += host
		p, err := n.AddPodWith(strings.ReplaceAll(key, "/", "-"), netip.AddrFrom4(a4), netip.AddrFrom16(a6), lab.PodOptions{Bridge: true})
		if err != nil {
			t.Fatal(err)
		}
		e.Pods[key] = p
	}
	addBridged("tenant/mallory", 2)
	addBridged("app/bridged", 3)
	e.write(
		policytest.Namespace("app", nil),
		policytest.Namespace("tenant", nil),
		e.podObject("app/server", nil),
		e.podObject("app/bridged", nil),
		e.podObject("tenant/mallory", nil),
		policytest.NetworkPolicy("tenant", "deny-egress", policytest.Selector(), policytest.Egress()),
	)
	e.Serve(80)
	const port = 7777
	trap, err := lab.TrapSYN(e.Pods["app/server"].NS, port)
	if err != nil {
		t.Fatal(err)
	}
	unused4, unused6 := v4.Addr().As4(), v6.Addr().As16()
	unused4[3] += 50
	unused6[15] += 50
	server := e.Pods["app/server"]
	send := func(t *testing.T, want bool) {
		var syns []lab.SpoofedSYN
		for _, pair := range [][2]netip.Addr{{netip.AddrFrom4(unused4), server.IPv4}, {netip.AddrFrom16(unused6), server.IPv6}} {
			syn, err := lab.SpoofSYN(e.Pods["tenant/mallory"].NS, pair[0], netip.AddrPortFrom(pair[1], port))
			if err != nil {
				t.Fatal(err)
			}
			syns = append(syns, syn)
		}
		deadline := time.Now().Add(1500 * time.Millisecond) // well past --hold-timeout
		for _, syn := range syns {
			err := trap.Wait(context.Background(), syn, max(time.Until(deadline), time.Millisecond))
			if got := err == nil; got != want {
				t.Errorf("SYN from unused bridge address %v: arrived=%v, want %v", syn.Src.Addr(), got, want)
			}
		}
	}
	e.Warm()
	t.Run("lab alone", func(t *testing.T) { send(t, true) })
	e.start("--pod-cidr", n.PodCIDRv4.String(), "--pod-cidr", n.PodCIDRv6.String(), "--hold-timeout", "300ms")
	t.Run("podwall", func(t *testing.T) { send(t, false) })
	if got := e.metric("node-1", "podwall_datapath_held_expired_total"); got < 2 {
		t.Errorf("held_expired_total %v, want at least 2 (one SYN per family)", got)
	}
	e.check(
		probe{from: "tenant/mallory", to: "app/server", port: 80, allow: false},
		probe{from: "app/bridged", to: "app/server", port: 80, allow: true},
		probe{from: "app/server", to: "app/bridged", port: 80, allow: true},
	)
}

// A pod whose interface matches no --pod-interfaces prefix is not checked for spoofing:
// the agent says so, naming the interface and the pod, at start and when such a pod
// appears, and counts the interfaces in podwall_datapath_pod_interfaces_uncovered.
func TestUncoveredPodInterface(t *testing.T) {
	e := newEnv(t)
	n := e.AddNode("node-1", 1)
	e.AddPods("node-1", "app/covered")
	add := func(key, hostIf string, j int) {
		a4, a6 := lab.Plan(1).Pod(j)
		p, err := n.AddPodWith(strings.ReplaceAll(key, "/", "-"), a4, a6, lab.PodOptions{HostIf: hostIf})
		if err != nil {
			t.Fatal(err)
		}
		e.Pods[key] = p
	}
	add("app/eks", "enitest0", 5)
	objs := []any{policytest.Namespace("app", nil), e.podObject("app/covered", nil), e.podObject("app/eks", nil)}
	e.write(objs...)
	e.start()
	waitWarning := func(iface, pod string, gauge float64) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := lab.Poll(ctx, 20*time.Millisecond, func() error {
			logs := e.Agents["node-1"].Logs()
			found := false
			for _, line := range strings.Split(logs, "\n") {
				if strings.Contains(line, "pod interface not covered") && strings.Contains(line, "interface="+iface) && strings.Contains(line, pod) {
					found = true
				}
			}
			if !found {
				return fmt.Errorf("no warning naming %s and %s", iface, pod)
			}
			if g := e.metric("node-1", "podwall_datapath_pod_interfaces_uncovered"); g != gauge {
				return fmt.Errorf("pod_interfaces_uncovered %v, want %v", g, gauge)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%v\n%s", err, e.Agents["node-1"].Logs())
		}
	}
	waitWarning("enitest0", "app/eks", 1)
	if strings.Contains(e.Agents["node-1"].Logs(), "interface="+e.Pods["app/covered"].HostVeth) {
		t.Errorf("the covered pod's interface %s was named in a warning", e.Pods["app/covered"].HostVeth)
	}

	add("app/azure", "azvtest0", 6)
	e.rewrite(append(objs, e.podObject("app/azure", nil))...)
	waitWarning("azvtest0", "app/azure", 2)
}
