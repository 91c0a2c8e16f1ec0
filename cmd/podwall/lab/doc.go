// Package lab is the product's network-namespace lab: it builds a
// Kubernetes-like network out of Linux network namespaces and runs the real
// podwall agent in it. `podwall demo` runs in it, and the end-to-end tests
// (e2e, e2e/kube) and the netns bench harness (bench/load) build on it. It
// holds nodes that route, pods wired to them the way ptp CNIs (Calico, the
// ptp plugin) do, external hosts outside the cluster, the servers and probes
// that show which connections pass, and `podwall run` started inside a node
// (Node.StartAgent) with its HTTP endpoints reached from there. It needs
// root, and as part of the binary it does not depend on package testing
// or on any test helper.
//
// # What the lab owns
//
// Everything it creates lives in namespaces named for the run; it never
// adds an address, route or link to the root namespace, and no lab
// namespace has a link to the root namespace, so lab traffic cannot leave
// the lab. A Lab owns:
//
//   - one "underlay" namespace holding bridge br0;
//   - one namespace per Node: a router (ip_forward, IPv6 forwarding,
//     rp_filter 0, no redirects) whose interface ul0 is plugged into br0
//     and carries the node addresses, with a route to every other node's
//     pod CIDRs (and to the external hosts behind other nodes) via that
//     node's underlay address;
//   - one namespace per Pod, joined to its node by a veth pair: inside,
//     eth0 holds the pod's /32 and /128 and default routes via 169.254.1.1
//     (onlink) and fe80::1, resolved by permanent neighbour entries to
//     ee:ee:ee:ee:ee:ee, the MAC of every node-side pod veth (as Calico
//     does); on the node, the veth is named VethPrefix+hash (default
//     "pw…", at most 15 characters) and has a host route to each pod
//     address with the node's underlay address as preferred source, so
//     node→pod traffic carries the node address;
//   - one namespace per external host, wired like a pod to the node given
//     as via, but with a node-side veth named "xh…" so that a firewall
//     matching pod interfaces by prefix leaves it alone;
//   - the servers started with ServeTCP, ServeUDP, ServeSCTP and TrapSYN.
//
// Duplicate address detection is off in every namespace and IPv6
// addresses are added with nodad, so IPv6 works as soon as AddPod returns.
// With br_netfilter loaded, the underlay namespace turns bridge-nf-call-*
// off so bridged frames skip netfilter there.
//
// # Addressing plan
//
// Addresses are the caller's; Plan and External hand out these:
//
//	pods       10.244.0.0/16, 10.244.<i>.0/24 for node i
//	           fd00:10:244::/56, fd00:10:244:<i>::/64 for node i
//	underlay   172.18.0.0/16, node i at 172.18.0.<i+1>
//	           fd00:172:18::/64, node i at fd00:172:18::<i+1>
//	externals  192.0.2.0/24, 2001:db8::/32 (External(j));
//	           198.51.100.0/24 is free for a second outside range
//
// A family may be left out (zero netip.Addr / netip.Prefix) for a
// single-stack lab.
//
// # Names and sweeping
//
// Every namespace is named "<prefix><runid>-<role>": prefix "pwlab-" by
// default, runid 6 random hex digits per Lab, role the name given to
// AddNode, AddPod or AddExternal (unique in the lab; "underlay" is
// reserved), e.g. "pwlab-3fa9c2-node-a". Namespaces are bind-mounted at
// /run/netns/<name>, so `ip netns exec <name> …` works (NS.Exec uses it).
//
// New records the run's owner in /run/pwlab/<runid>: "pid <pid>\nstart
// <ticks>\n", the creating process and its start time from /proc/<pid>/stat
// (so a recycled PID is not mistaken for the owner). Sweep(prefix,
// olderThan) deletes the namespaces of runs whose owner is gone — owner
// file missing or unreadable, or no process with that PID and start time —
// and that are at least olderThan old (the namespace inode's time), then
// the owner files of such runs. A live run is never swept, whatever its
// age, so Sweep is safe to call while other labs run. Owners in another
// PID namespace look dead: share a PID namespace with whoever sweeps.
//
// # Cleanup
//
// Close deletes everything and is idempotent: defer it right after New.
// It does not kill processes started with NS.Exec; they keep their
// namespace alive (unnamed) until they exit. For signals, a program wires
// SIGINT/SIGTERM to Close (signal.NotifyContext, then return through the
// deferred Close); a test binary killed by a signal or SIGKILL leaves its
// namespaces behind, and the next run's Sweep removes them, because the
// owner PID is then gone. Tests should call Sweep(DefaultPrefix, 0) once
// before building labs (TestMain).
//
// # Running code in a namespace
//
// NS.Do runs a function on an OS thread switched into the namespace;
// sockets opened there stay in it, which is how the servers and probes
// work. The probes (ProbeTCP, ProbeUDP, ProbeSCTP, ProbeICMP) succeed only
// when a reply proves the path works both ways; failures wrap ErrNoReply
// (silent drop), ErrRefused (RST or port unreachable) or ErrUnreachable.
// Dial and Echo hold one connection open, e.g. across a policy change.
// This kernel has no SCTP sockets: ProbeSCTP sends an INIT crafted with
// gopacket on a raw socket and a SCTPServer answers INIT ACK from raw
// sockets. SpoofSYN, TrapSYN and ProbeSpoofedSYN send a TCP SYN with a
// forged source and observe whether it arrives, to test anti-spoofing.
// Without podwall the lab delivers spoofed packets (nodes do no
// reverse-path filtering), except that an IPv4 packet whose forged source
// is an address of the receiving namespace itself is dropped on input as
// a martian by the kernel.
//
// # The agent in a node
//
// Node.StartAgent runs `ip netns exec <node> podwall run` with the
// manifests (or --kubeconfig) given, the metrics listener on
// 127.0.0.1:9090 and the debug listener on 127.0.0.1:9091 (or
// AgentConfig.DebugAddr, e.g. the node's address, for a client on the
// underlay) of the node's namespace and --pod-interfaces naming the lab's
// pod veths. Agent.Get,
// Agent.Metrics (parsed with package scrape), Agent.Generation and
// Agent.WaitGeneration talk to those listeners from inside the namespace;
// Agent.Stop and Agent.Kill end the process (it also dies with its parent).
// Pod.Object, Node.Object and DBPolicy are the Kubernetes objects of the
// lab for the agent's manifests (policy/manifests.Write) or an API server.
package lab
