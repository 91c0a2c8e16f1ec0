// Package nft owns podwall's kernel ruleset: one private nftables table,
// programmed over netlink with github.com/google/nftables (no nft binary at
// run time).
//
// The table decides which packets the verdict engine sees. It sends to
// NFQUEUE only the first packet of each new connection that leaves an
// egress-isolated or enters an ingress-isolated local pod; everything else —
// established and related traffic, pods no policy selects — stays in the
// kernel. The chain never changes while the agent runs: policy changes only
// move pod addresses in and out of four sets, by element batches (Sync),
// and the verdict caches' elements come and go. If someone else removes or
// damages the table, Damage says so and the agent programs it again
// (below, "Lifecycle").
//
// # The ruleset
//
// As nft would write it, for queues 100-103, fail closed, pod interfaces
// "veth*" and "pw*", a deny cache of 2 s, revoked connections marked with
// bit 0x10000000 (native queue rendering; see below for compat):
//
//	table inet podwall {
//		set ingress4 { type ipv4_addr; }
//		set ingress6 { type ipv6_addr; }
//		set egress4 { type ipv4_addr; }
//		set egress6 { type ipv6_addr; }
//		set denied4 {
//			type ipv4_addr . ipv4_addr . inet_proto . inet_service
//			size 65536; flags timeout; timeout 2s
//		}
//		set denied6 {
//			type ipv6_addr . ipv6_addr . inet_proto . inet_service
//			size 65536; flags timeout; timeout 2s
//		}
//		set local4 { type ipv4_addr; }
//		set local6 { type ipv6_addr; }
//		set podranges4 { type ipv4_addr; flags interval; }
//		set podranges6 { type ipv6_addr; flags interval; }
//
//		chain forward {
//			type filter hook forward priority filter + 10; policy accept;
//			iifname "veth*" fib saddr . iif oif missing counter drop
//			iifname "pw*" fib saddr . iif oif missing counter drop
//			ct mark & 0x10000000 == 0x10000000 counter drop
//			ct state established,related accept
//			ip saddr . ip daddr . meta l4proto . th dport @denied4 counter drop
//			ip6 saddr . ip6 daddr . meta l4proto . th dport @denied6 counter drop
//			ip saddr @egress4 counter queue flags fanout to 100-103
//			ip6 saddr @egress6 counter queue flags fanout to 100-103
//			ip daddr @ingress4 counter queue flags fanout to 100-103
//			ip6 daddr @ingress6 counter queue flags fanout to 100-103
//			ip saddr @podranges4 ip saddr != @local4 counter queue flags fanout to 100-103
//			ip6 saddr @podranges6 ip6 saddr != @local6 counter queue flags fanout to 100-103
//			ip daddr @podranges4 ip daddr != @local4 counter queue flags fanout to 100-103
//			ip6 daddr @podranges6 ip6 daddr != @local6 counter queue flags fanout to 100-103
//		}
//	}
//
// In order: a packet from a pod interface must carry a source address that
// routes back through that interface (strict reverse-path check, so a pod
// cannot borrow another pod's — or a node's — address to slip past policy,
// nor inject forged packets into another pod's established connection);
// every packet of a connection revoked by a policy change is dropped, in
// either direction (package conntrack marks it; below); replies and ICMP
// errors of accepted connections never leave the kernel; a new packet of a
// flow the agent has just denied is dropped (the deny cache, below); new
// packets of isolated pods go to userspace — one per connection, since
// conntrack calls a connection established once a reply has passed (until
// then, every packet of it is new); so do new packets from or to an address
// of the node's pod ranges that no local pod known to the policy has (the
// new-pod window, below). With fail open each queue statement also carries
// bypass. A single queue is written "queue to N", without
// fanout. The counters serve Ruleset.Counters (packets sent to userspace per
// set, spoofed packets dropped, packets of revoked connections dropped,
// packets the deny cache dropped).
//
// # Before the established accept
//
// Whatever comes before "ct state established,related accept" costs every
// forwarded packet; whatever comes after costs the first packets of new
// connections only. Two checks must come before it all the same:
//
//   - The reverse-path check. After it, a pod could send a packet with the
//     address and port of another pod's open connection (UDP needs nothing
//     more; TCP a sequence number in the window) and conntrack would call it
//     established. Before it, every packet from a pod interface costs a fib
//     lookup: about 0.2 µs per packet on the test machine, measured with
//     BenchmarkEstablishedOrder (bench/README.md, "Anti-spoofing before the
//     established accept"). Conntrack itself still sees the forged packet in
//     prerouting, before the forward hook drops it: a forged RST can still
//     move an entry's TCP state (not its verdict).
//   - The revoked mark ("ct mark & M == M drop", Config.RevokedMark). Package
//     conntrack marks the entry of a connection a new policy denies instead of
//     deleting it: every later packet of the connection, whichever side sends
//     it, still belongs to that entry and is dropped here. Deleting the entry
//     let the side that spoke next start it afresh as a new connection in its
//     own direction, which could be allowed (an only egress-isolated pod's
//     server answering, the far end of a reverse shell). One ct load and
//     compare per packet.
//
// # The new-pod window
//
// local4/local6 hold the addresses of every local pod the policy in force knows, isolated or
// not; podranges4/podranges6 (interval sets) hold this node's pod ranges. The last four rules
// queue a new packet whose source or destination lies in the ranges but is no known local
// pod's: a pod the agent has not learnt yet, or an address no pod was given (which a pod on a
// bridge can take, since the whole bridge subnet passes the reverse-path check). Package
// datapath holds such a packet until the policy knows the address, or gives it the failure
// policy's verdict after a bound ("The new-pod window" there). SyncWindow moves the local
// addresses with the isolation sets in one transaction, by difference, and replaces the
// ranges (empty the set, add the ranges, a range inside another left out: the kernel refuses
// overlapping intervals) when they change; ProgramSyncWindow does the same as it programs.
// Sync and ProgramSync leave the window's sets as they are (empty in a new table: no range,
// nothing queued by these rules). The rules come after the isolation queue rules, so their
// counter (Counters.Window) counts only packets the isolation sets would have let through.
//
// Why by address range rather than by input interface ("a new packet from a pod interface
// whose source is no known pod's"): a packet from a pod interface has already passed the
// reverse-path check, so its source routes back through that interface — a veth's own
// host routes (the pod's addresses) or a bridge's subnet — which lie in the node's pod
// ranges when those are right; the range rules catch it whatever the interface is called
// (also on interfaces --pod-interfaces misses), and they also catch connections to a new
// pod, which no input interface tells apart. The ranges must be the addresses the CNI
// really gives this node's pods: with a CNI that ignores spec.podCIDRs (Calico's IPAM
// blocks), give them with --pod-cidr, or new pods are not held; a remote pod inside the
// configured ranges has its new connections queued (and judged at once, the policy knowing
// it).
//
// # The deny cache
//
// A denied connection attempt is rarely alone: a TCP client retransmits its
// SYN, a UDP sender repeats, a scanner comes back. Each repeat is new to
// conntrack (a dropped first packet leaves no connection) and would cost a
// queue round trip for a verdict the agent already gave. So the agent hands
// each denied flow to AddDenied, which adds it to denied4 or denied6 with a
// timeout of Config.DenyCacheTTL; until the element times out the kernel
// drops the flow's new packets itself. The key is the flow as the agent's
// verdict cache keys it (source, destination, protocol, destination port;
// the source port does not matter to policy), so the kernel only repeats a
// verdict the agent's own cache would have given. Only TCP, UDP and SCTP
// flows are cached: `th dport` is a port only for protocols that have one
// (flow.Proto.HasPorts), and ICMP floods are rare enough to leave to the
// queue.
//
// The cache must never shadow a new policy: a flow the old policy denied may
// be allowed by the new one, and its next packet must be judged by it.
// Every Sync of a new policy generation empties both sets in the same
// transaction that updates the address sets, and AddDenied refuses verdicts
// of any generation but the one the last Sync installed (ErrStale). The
// check and the addition happen under the lock Sync holds, and the agent
// publishes a generation only after syncing it, so once Sync returns, no
// verdict of the replaced policy is in the cache and none can enter. Program
// empties it too: after a restart the verdicts came from another process's
// policy. Config.DenyCacheTTL 0 leaves the sets and the rules out.
//
// # The allow cache
//
// Opt-in (Config.AllowCacheTTL, 0 by default): the mirror of the deny
// cache for allowed flows, so that a client opening connection after
// connection to the same pod costs one queue round trip per TTL, not one
// per connection. The agent hands each allowed flow it has judged before (a
// hit in its verdict cache: a flow seen once costs no addition) to
// AddAllowed; allowed4
// and allowed6 are sets of the same flow keys as the deny cache's, with
// per-element timeouts, and a rule after each deny-cache rule accepts a new
// packet found in them:
//
//	ip saddr . ip daddr . meta l4proto . th dport @allowed4 counter accept
//	ip6 saddr . ip6 daddr . meta l4proto . th dport @allowed6 counter accept
//
// (in the input and output chains gated like the deny cache's). Emptied
// with the deny cache by every Sync of a new generation and by Program,
// refused for any other generation (ErrStale) under the same lock: a new
// policy is never shadowed, and a tightening one has the connections it
// denies cut by the revoker as always. The price is visibility, which is
// why it is off by default: a connection the kernel accepts from the cache
// reaches neither the decision stream, nor the verdict counters, nor the
// flow history (what-if); Counters.AllowCached counts them.
//
// An element per flow and port, not per range of ports over which the
// policy's verdict is the same: such ranges were built and measured, and
// left out. An interval set of concatenations is rebuilt by the kernel on
// every commit (an addition of one element cost 80 µs into an empty set,
// 0.75 ms at 1,000 elements, 2.6 ms at 8,000, against 5–15 µs for this hash
// set at any size: BenchmarkLiveAddAllowed), and a key whose port is looked
// up in a map of port ranges first makes nft 1.0.6 abort when it lists the
// table. Clients that reuse a port — the usual case — hit the cache; a
// client opening each connection to another port is judged each time.
//
// Hook: forward, because it sees pod-to-pod traffic on one node and traffic
// between nodes, and it runs after every prerouting chain, so Service
// traffic is judged after kube-proxy's DNAT (iptables and nftables modes),
// against the real destination pod. Traffic between a pod and its own node
// never passes forward: the input and output chains judge it, below.
// The priority (filter + 10) is explained at ChainPriority.
//
// # A pod and its own node
//
// NetworkPolicy always allows a pod its own node, but a ClusterNetworkPolicy can cut it: an
// Admin egress Deny to `nodes`, or to a `networks` CIDR holding the node's address (traffic
// to a host-network pod is traffic to that address), and — since ingress peers are only
// namespaces and pods — for the node → pod direction only a rule the API fails closed (a
// Deny or Pass with no peers: it denies all). That traffic never crosses forward: a pod's
// packet to its node is the node's input, the node's packet to a pod (kubelet probes) its
// output. Two more base chains judge it, at the same priority and with the same queue
// statement as forward (bypass when failing open):
//
//	set nodeingress4 { type ipv4_addr; }
//	set nodeingress6 { type ipv6_addr; }
//	set nodeegress4 { type ipv4_addr; }
//	set nodeegress6 { type ipv6_addr; }
//	set nodeegresswindow4 { type ipv4_addr; flags interval; }
//	set nodeegresswindow6 { type ipv6_addr; flags interval; }
//	set nodeingresswindow4 { type ipv4_addr; flags interval; }
//	set nodeingresswindow6 { type ipv6_addr; flags interval; }
//
//	chain input {
//		type filter hook input priority filter + 10; policy accept;
//		ct mark & 0x10000000 == 0x10000000 counter drop
//		ct state established,related accept
//		iif "lo" accept
//		icmpv6 type 130-137 accept
//		icmpv6 type mld2-listener-report accept
//		ip saddr @nodeegress4 ip saddr . ip daddr . meta l4proto . th dport @denied4 counter drop
//		ip6 saddr @nodeegress6 ip6 saddr . ip6 daddr . meta l4proto . th dport @denied6 counter drop
//		ip saddr @nodeegress4 counter queue flags fanout to 100-103
//		ip6 saddr @nodeegress6 counter queue flags fanout to 100-103
//		ip saddr @nodeegresswindow4 ip saddr != @local4 counter queue flags fanout to 100-103
//		ip6 saddr @nodeegresswindow6 ip6 saddr != @local6 counter queue flags fanout to 100-103
//	}
//	chain output {
//		type filter hook output priority filter + 10; policy accept;
//		ct mark & 0x10000000 == 0x10000000 counter drop
//		ct state established,related accept
//		oif "lo" accept
//		icmpv6 type 130-137 accept
//		icmpv6 type mld2-listener-report accept
//		ip daddr @nodeingress4 ip saddr . ip daddr . meta l4proto . th dport @denied4 counter drop
//		ip6 daddr @nodeingress6 ip6 saddr . ip6 daddr . meta l4proto . th dport @denied6 counter drop
//		ip daddr @nodeingress4 counter queue flags fanout to 100-103
//		ip6 daddr @nodeingress6 counter queue flags fanout to 100-103
//		ip daddr @nodeingresswindow4 ip daddr != @local4 counter queue flags fanout to 100-103
//		ip6 daddr @nodeingresswindow6 ip6 daddr != @local6 counter queue flags fanout to 100-103
//	}
//
// The sets hold only the local pods some policy can cut off from their node
// (policy.Snapshot.LocalNodeJudged: nodeegress for pod → node, nodeingress for node → pod):
// with no ClusterNetworkPolicy they are empty and nothing between pods and their node is
// queued — kubelet probes never reach userspace. Only addresses local to the node reach
// input, so a pod's packet to another node's address still goes through forward; the node
// talking to itself (lo) is never queued, whatever its addresses. Nor is IPv6 link control
// (neighbour and router discovery, multicast listener discovery: ICMPv6 types 130–137 and
// 143), which conntrack never calls established: judged as a pod's traffic with its node, a
// Deny to networks holding ff02::/16 (::/0 after an Accept of the cluster's pods) would deny
// a pod's solicitations for its gateway, and with them all of its IPv6 traffic. Output runs after the
// output NAT chain (-100), so a node's connection to a Service is judged at the backend
// pod. Window.NodeIngress and Window.NodeEgress carry the elements: SyncWindow and
// ProgramSyncWindow move them by difference in the same transaction as the other sets;
// the chains, like forward, never change while running. Counters.NodeEgress and
// NodeIngress count the packets each chain queued. Like forward, both drop the packets of
// a connection marked revoked (Config.RevokedMark): the revoker sweeps a pod's connections
// with its node when a policy change denies them (conntrack.NodePolicy). Damage checks
// both chains and, with elements, the own-node sets.
//
// Both chains use forward's deny cache (the same sets denied4/denied6, emptied by every Sync
// of a new generation as above): a pod retrying a connection to its node that the agent
// denied (a TCP client's SYN retransmissions, a resolver repeating a query) has the repeats
// dropped in the kernel for the TTL, before the queue rules, and counted with the cache's
// other drops (Counters.DenyCached). A chain looks the flow up only for the pods it queues
// (the address in its own-node set first): the node's own traffic pays one lookup in that
// small set, not the flow key's. Without the cache (Config.DenyCacheTTL 0) the rules are
// left out here too.
//
// And the new-pod window ("The new-pod window" above) at these hooks: the last two rules of
// each chain queue a new packet between the node and an address of the own-node window's
// interval sets that no known local pod has (local4/local6) — a pod the agent has not learnt
// yet — and package datapath holds it until the policy knows the pod. Window.NodeEgressRanges
// and NodeIngressRanges fill the sets (SyncWindow replaces them with the pod ranges, like
// podranges4/6): the agent gives the node's pod ranges only for a direction in which some
// ClusterNetworkPolicy could deny a pod's traffic with its node (policy.Snapshot.NodeWindow),
// so with none the sets are empty and a new pod's packets to its node (a query to a
// node-local DNS cache) or the kubelet's first probes of it are never queued. The rules'
// counter is the window's (Counters.Window).
//
// # Queue rendering and the capability probe
//
// The queue verdict exists in two forms. Kernels with CONFIG_NFT_QUEUE get
// the native nft queue expression. Kernels without it (the CI kernel) get
// the iptables NFQUEUE target, revision 3 (struct xt_NFQ_info_v3: queue
// number, queue count, flags NFQ_FLAG_BYPASS and NFQ_FLAG_CPU_FANOUT),
// carried inside nftables by nft_compat; the kernel behaviour is the same.
// New probes which of the two the kernel accepts (Probe: a throwaway table
// created and deleted in one transaction) and ModeAuto picks native first.
// `nft list` (1.0.6) prints nothing for the compat target in an inet
// table — the rule looks like it ends after its counter — and warns that
// the table is "managed by iptables-nft"; Render and the tests show the
// target and its info bytes.
//
// # Lifecycle
//
// New opens the netlink connection (in the caller's network namespace or
// Config.NetNS) and probes; Program creates the table or takes
// over the one a previous run left, in one transaction that never unhooks
// the chain and keeps the set elements, so isolated pods are never
// unprotected across a restart; Sync reconciles the sets; ProgramSync does
// Program and the first Sync in one transaction (what the agent starts
// with: the hook never runs with sets that do not match its policy); Close(true)
// leaves the table to enforce the failure policy (Config.FailOpen) until
// the next agent takes over, Close(false) removes it on uninstall. Remove
// (`podwall cleanup`) deletes the table without an agent — after the agents
// are gone — and succeeds when there is none.
//
// Someone else can take the table away while the agent runs: `nft flush
// ruleset` (what restarting nftables.service does), `nft delete table inet
// podwall`, an emptied chain, a deleted rule, a dormant table, an emptied set.
// Damage compares the kernel's table with what Program installs (the table,
// its flags, its chain's rule count) and, when asked, the address sets with
// what the last Sync put in them, and describes the difference; the agent
// calls it every 200 ms (with the sets once a second) and, on damage, reports
// not ready, runs ProgramSync with the snapshot in force and counts a restore.
// Without the sets Damage costs two small netlink reads (0.1 to 0.7 ms under
// load), with them 1 to 3 ms for 110 pods isolated both ways (BenchmarkDamage).
//
// # Not covered
//
//   - kube-proxy in IPVS mode DNATs in the input hook and sends the packet
//     out through output and postrouting: such Service traffic never passes
//     forward. Covering it needs a postrouting chain, where iifname and fib
//     are not available.
//   - With a bridge CNI (flannel's cni0), pod-to-pod traffic on one node is
//     bridged, not routed: it reaches the forward hook only through
//     br_netfilter with net.bridge.bridge-nf-call-iptables and
//     -ip6tables set (kube-proxy needs the same), and then arrives on the
//     bridge device.
//   - The anti-spoofing rules only cover interfaces whose names match
//     Config.PodInterfacePrefixes; for a bridge CNI, a bridge prefix gives a
//     per-bridge (per-node pod subnet) rather than a per-pod check.
//
// This package defines no metrics; Ruleset.Counters exposes the rule
// counters (the agent exports the deny cache's as
// podwall_datapath_deny_cache_hits_total).
package nft
